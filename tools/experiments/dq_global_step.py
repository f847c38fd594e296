"""Codec against codec at NNCodec's own allocation: one global step for every quantized tensor.

NNCodec quantizes every tensor with the same step (its ``qp``), which is what minimises the total squared
error for a given rate, so at equal relative L2 error over the whole model it has an allocation advantage
over bslcodec's default rule (step ∝ each tensor's std, which tracks the embedding cosine better).
``sensitivity={name: numel}`` makes bslcodec's steps equal too (step ∝ sqrt(n_i / s_i)), so this compares
the codecs at the same allocation. Prints bits/weight and rel-L2 for dq and plain rounding, and NNCodec's
points from ``results/peers/bench.json`` (same model, same run conditions are not needed: sizes and
errors are deterministic).

    python tools/experiments/dq_global_step.py
"""

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import bslcodec  # noqa: E402
from bslcodec.pipeline import codec  # noqa: E402


def main():
    import minilm

    sd = minilm.load_original()
    x2 = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in sd.values())
    n = sum(v.size for v in sd.values())
    st = codec.Settings(rel_step=0.1)
    sens = {k: float(v.size) for k, v in sd.items() if codec.wants_lossy(k, v, "F32", st)}
    rows = []
    for c in (1 / 8, 1 / 11.3, 1 / 16, 1 / 22.6, 1 / 32):
        for q in ("dq", "uniform"):
            b = bslcodec.save(sd, sensitivity=sens, expert={"rel_step": c, "quantizer": q})
            dec = bslcodec.load(b)
            d2 = sum(float(np.sum((dec[k].astype(np.float64) - v) ** 2)) for k, v in sd.items())
            rows.append((q, c, 8 * len(b) / n, float(np.sqrt(d2 / x2))))
            print(f"{q:8s} rel_step 1/{1 / c:.3g}: {rows[-1][2]:.3f} b/w, rel L2 {rows[-1][3]:.4g}", flush=True)
    bench = json.loads((ROOT / "results/peers/bench.json").read_text())
    nnc = sorted((r["bpw"], r["rel_l2"]) for r in bench["real"]["rows"]
                 if r.get("family") == "NNCodec (DQ on)" and "error" not in r)
    print("NNCodec (dq on):", ", ".join(f"{b:.3f} b/w @ {e:.4g}" for b, e in nnc))
    for q in ("dq", "uniform"):
        pts = sorted((np.log(e), b) for qq, c, b, e in rows if qq == q)
        le, bb = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        diffs = [float(np.interp(np.log(e), le, bb)) - b for b, e in nnc if le[0] <= np.log(e) <= le[-1]]
        print(f"{q}: bslcodec − NNCodec at equal rel L2, global step: " + ", ".join(f"{d:+.3f}" for d in diffs))


if __name__ == "__main__":
    main()
