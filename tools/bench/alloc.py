"""Rate allocation inside format v1: a coarser step for the word-embedding table (real model only).

Every ``eg`` tensor carries its own step, so an encoder may give tensors different relative steps. For
a sentence-embedding model the token-embedding table (51.6 % of the weights) is looked up, not multiplied,
and its error reaches the output more weakly than a matrix's. This script encodes all-MiniLM-L6-v2 with
``rel_step = c`` for every tensor except ``embeddings.word_embeddings.weight``, which gets ``m·c``, and
measures bits/weight, errors and embedding cosine. Output: results/peers/alloc.json (read by report.py).

    python tools/bench/alloc.py
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(ROOT, "tools"), ROOT]

from bslcodec import codec  # noqa: E402

EMB = "embeddings.word_embeddings.weight"


@contextlib.contextmanager
def step_multiplier(mult: dict):
    """Within the block, tensor ``name`` is quantized with its usual step times ``mult[name]``."""
    orig = codec.LossyTensor.step_for

    def step_for(self, settings, rel_step=None):
        s = orig(self, settings, rel_step)
        m = mult.get(self.name)
        return s if m is None else codec.quant.step_for_dtype(s * m, self.dtype)

    codec.LossyTensor.step_for = step_for
    try:
        yield
    finally:
        codec.LossyTensor.step_for = orig


def main():
    import bslcodec
    import minilm

    sd = minilm.load_original()
    names = sorted(sd)
    n = sum(v.size for v in sd.values())
    flat = np.concatenate([sd[k].ravel() for k in names]).astype(np.float64)
    norm = np.linalg.norm(flat)
    rows = []
    for lab, c in (("1/16", 1 / 16), ("1/22", 1 / 22), ("1/32", 1 / 32), ("1/64", 1 / 64)):
        for m in (2, 4):
            with step_multiplier({EMB: m}):
                blob = bslcodec.save(sd, rel_step=c)
            back = bslcodec.load(blob)
            d = np.concatenate([back[k].ravel() for k in names]).astype(np.float64) - flat
            cm, cmin = minilm.cosine_vs_original(back)
            rows.append({"codec": "bslcodec", "rel_step": lab, "emb_mult": m, "bpw": 8 * len(blob) / n, "rel_l2": float(np.linalg.norm(d) / norm),
                         "max_abs_err": float(np.abs(d).max()), "cos_mean": cm, "cos_min": cmin})
            print(time.strftime("%H:%M:%S"), rows[-1], flush=True)
    # the same allocation for NNCodec (qp_per_tensor; qp_density 2: +8 qp = 4x step), for fairness
    import peers

    nnc = peers.import_peers()["nnc"]
    if nnc is not None:
        import tempfile

        tmp = tempfile.mkdtemp(prefix="nnc-alloc-")
        for qp in (-38, -42, -46):
            t = time.perf_counter()
            bs = bytes(nnc.compress(dict(sd), bitstream_path=os.path.join(tmp, "b.nnc"), qp=qp, use_dq=True,
                                    qp_per_tensor={EMB: qp + 8}, return_bitstream=True))
            back = nnc.decompress(bytearray(bs))
            d = np.concatenate([np.asarray(back[k], np.float32).ravel() for k in names]).astype(np.float64) - flat
            cm, cmin = minilm.cosine_vs_original(back)
            rows.append({"codec": "NNCodec", "qp": qp, "emb_qp": qp + 8, "emb_mult": 4, "bpw": 8 * len(bs) / n,
                         "rel_l2": float(np.linalg.norm(d) / norm), "max_abs_err": float(np.abs(d).max()),
                         "cos_mean": cm, "cos_min": cmin, "seconds": time.perf_counter() - t})
            print(time.strftime("%H:%M:%S"), rows[-1], flush=True)
    out = os.path.join(ROOT, "results", "peers", "alloc.json")
    with open(out, "w") as fh:
        json.dump({"tensor": EMB, "rows": rows, "command": "python tools/bench/alloc.py"}, fh, indent=1)
    print("wrote", out)


if __name__ == "__main__":
    main()
