"""Dependent quantization (``quantizer="dq"``, codec ``ans-dq``) against plain rounding: rate-distortion.

Real payloads, both coded with the ``ans`` entropy stage, so the difference is the quantizer alone.

1. Synthetic tensors (Laplace, Gauss, generalized Gaussian ν = 0.7; 2^20 float32 weights each): the plain
   curve over rel_step (bits/weight of the ``ans`` payload, MSE); for each dq setting the bits at its MSE,
   against the plain curve's bits at that MSE (log-MSE interpolation): the saving at equal MSE. Also the
   design choices: the search's λ = c·Δ² (c = 0.05, 0.1, 0.2), the bound (1, 1.5, 2 steps) and the passes.
2. all-MiniLM-L6-v2 through ``encode_checkpoint`` (the CLI's path): plain and dq at the same rel_steps;
   bits/weight of the whole file, relative L2 error over all float weights, embedding cosine (50 sentences).

    python tools/experiments/dq_rd.py --md results/dq.md
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from bslcodec.codecs import dq_search, rans  # noqa: E402
from bslcodec.quantize import dq, quant

S = 1024


def _payload_bits(u: np.ndarray) -> float:
    model, _ = rans.build_model(u)
    return 8 * len(rans.encode(u, S, model)) / u.size


def plain_point(x, rel):
    step = float(np.float32(rel * x.std()))
    r = quant.quantize(x, step, 0, "F32")
    u = r.u.astype(np.int64)
    q = (u >> 1) ^ -(u & 1)
    return _payload_bits(r.u), float(np.mean((q.astype(np.float32) * np.float32(step) - x) ** 2))


def dq_point(x, rel, c=dq_search.DEFAULT_C, bound=dq.BOUND_FACTOR, passes=dq_search.PASSES):
    step = float(np.float32(rel * dq.STEP_FACTOR * x.std()))
    t = time.perf_counter()
    r = dq_search.quantize(x, step, 0, "F32", S, c=c, bound=bound * step, passes=passes)
    dt = time.perf_counter() - t
    u = r.u.astype(np.int64)
    lv = dq.levels((u >> 1) ^ -(u & 1), S)
    mse = float(np.mean((lv.astype(np.float32) * np.float32(step) - x) ** 2))
    return _payload_bits(r.u), mse, r.max_error / step, dt


def sources(n, rng):
    g = rng.gamma(1 / 0.7, 1.0, n) ** (1 / 0.7) * rng.choice([-1.0, 1.0], n)
    for name, x in (("Laplace", rng.laplace(0, 1, n)), ("Gauss", rng.normal(0, 1, n)), ("GG ν=0.7", g)):
        yield name, (x / x.std() * 0.02).astype(np.float32)


def synthetic(args, out):
    rng = np.random.default_rng(7)
    out += ["## 1. Synthetic tensors", "",
            f"{args.n:,} float32 weights each, std 0.02. Bits: the `ans` payload per weight (table and lane "
            "flushes included). `dq saves`: plain's bits at dq's MSE (interpolated on plain's curve, 16 "
            "points a factor 2^0.25 apart) minus dq's bits. Default search: c = "
            f"{dq_search.DEFAULT_C}, bound {dq.BOUND_FACTOR} steps, {dq_search.PASSES} pass.", "",
            "| source | rel_step | plain bits/w | dq bits/w | dq MSE / plain MSE (same rel_step) | dq saves at equal MSE, bits/w | dq max err / Δ |",
            "|---|---|---|---|---|---|---|"]
    design = []
    for name, x in sources(args.n, rng):
        curve = np.array([plain_point(x, 2.0 ** -e) for e in np.arange(1.0, 7.01, 0.25)])
        o = np.argsort(curve[:, 1])
        lm, bb = np.log(curve[o, 1]), curve[o, 0]
        for e in (2, 3, 4, 5, 6):
            rel = 2.0 ** -e
            bp, mp = plain_point(x, rel)
            b, m, me, _ = dq_point(x, rel)
            save = float(np.interp(np.log(m), lm, bb)) - b
            out.append(f"| {name} | 1/{2 ** e} | {bp:.4f} | {b:.4f} | {m / mp:.3f} | {save:+.4f} | {me:.3f} |")
            print(out[-1], flush=True)
        if name == "Laplace":
            for label, kw in (("c = 0.05", dict(c=0.05)), ("c = 0.2", dict(c=0.2)), ("bound 1.0 Δ", dict(bound=1.0)),
                              ("bound 2.0 Δ", dict(bound=2.0)), ("2 passes", dict(passes=2)), ("default", {})):
                for e in (3, 5):
                    b, m, me, dt = dq_point(x, 2.0 ** -e, **kw)
                    save = float(np.interp(np.log(m), lm, bb)) - b
                    design.append(f"| {label} | 1/{2 ** e} | {b:.4f} | {save:+.4f} | {me:.3f} | {dt:.2f} |")
                    print(design[-1], flush=True)
    out += ["", "Design choices (Laplace): each row changes one thing from the default.", "",
            "| search | rel_step | dq bits/w | saves at equal MSE | max err / Δ | trellis s |", "|---|---|---|---|---|---|"]
    out += design + [""]


def minilm_part(args, out):
    import minilm

    from bslcodec.files.checkpoint import encode_checkpoint, load_tensors

    src = minilm.model_dir()
    orig = minilm.load_original()
    x2 = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in orig.values())
    out += ["## 2. all-MiniLM-L6-v2", "",
            "Whole `.bsl` file over all weights (1-D tensors stay lossless in both); rel L2 = ||W − Ŵ|| / ||W|| "
            "over all float weights; cosine: mean over the 50 sentences of `tools/minilm.py`. "
            "`dq saves at equal rel L2`: plain's bits interpolated at dq's rel L2 (log scale) minus dq's.", "",
            "| rel_step | plain bits/w | plain rel L2 | plain cos | dq bits/w | dq rel L2 | dq cos | dq saves at equal rel L2 | encode s plain / dq |",
            "|---|---|---|---|---|---|---|---|---|"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for e in (3, 3.5, 4, 4.5, 5, 6):
            rel = 2.0 ** -e
            row = [rel]
            for q in ("uniform", "dq"):
                p = Path(tmp) / f"{q}.bsl"
                t = time.perf_counter()
                res = encode_checkpoint(src, p, overwrite=True, progress=False, expert={"rel_step": rel, "quantizer": q})
                te = time.perf_counter() - t
                dec = load_tensors(p)
                d2 = sum(float(np.sum((dec[k].astype(np.float64) - v) ** 2)) for k, v in orig.items())
                cos = minilm.cosine_vs_original(dec)[0]
                row += [res.bits_per_weight, float(np.sqrt(d2 / x2)), cos, te]
            rows.append(row)
            print(row, flush=True)
    pl = np.array([(r[1], np.log(r[2])) for r in rows])
    o = np.argsort(pl[:, 1])
    for r in rows:
        save = float(np.interp(np.log(r[6]), pl[o, 1], pl[o, 0])) - r[5]
        inside = pl[o, 1][0] <= np.log(r[6]) <= pl[o, 1][-1]
        out.append(f"| 1/{1 / r[0]:.3g} | {r[1]:.3f} | {r[2]:.4g} | {r[3]:.6f} | {r[5]:.3f} | {r[6]:.4g} | {r[7]:.6f} | "
                   f"{save:+.3f}{'' if inside else ' (extrapolated)'} | {r[4]:.1f} / {r[8]:.1f} |")
    out.append("")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1 << 20)
    ap.add_argument("--md", default=None)
    ap.add_argument("--skip-minilm", action="store_true")
    args = ap.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = ["# Dependent quantization vs plain rounding", "",
           f"`python tools/experiments/dq_rd.py` at commit {commit}, {platform.machine()} with {os.cpu_count()} CPU(s), "
           f"{time.strftime('%Y-%m-%d')}. Both quantizers' symbols are coded with the `ans` stage (spec 4.4 / 4.6).", ""]
    synthetic(args, out)
    if not args.skip_minilm:
        minilm_part(args, out)
    text = "\n".join(out) + "\n"
    if args.md:
        Path(args.md).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
