"""RDOQ vs plain quantization on synthetic generalized-Gaussian tensors: bits/weight at equal relative L2 error.

Run: ``python tools/experiments/rdoq_synthetic.py [--n 1048576] [--cs 0.05,0.1,0.2]`` -> a markdown table on stdout
(pasted into results/rdoq.md). For each GG shape ν and each c (λ = c·step²) the step is swept on a fine
log grid; bits are real ``ans`` payload bytes (``rans.encode`` of the final symbols, tables included),
error is ‖x - x̂‖/‖x‖ of the decoded values. The RDOQ curve is interpolated (linear in log error) at the
plain curve's errors, so each row compares the two at equal error.
"""

import argparse
import sys

import numpy as np

from bslcodec.codecs import rans, rdoq
from bslcodec.pipeline import codec
from bslcodec.quantize import quant


def gg(rng, nu, n):
    """Generalized-Gaussian samples of shape ``nu``, unit std."""
    g = rng.gamma(1 / nu, 1.0, n) ** (1 / nu)
    x = g * rng.choice([-1.0, 1.0], n)
    return (x / x.std()).astype(np.float32)


def point(x, step, c):
    qr = quant.quantize(x, step, 0, "F32")
    u = rdoq.refine(x, qr.u, step, 0, "F32", c=c).u if c else qr.u
    model, _ = rans.build_model(u)
    nbytes = len(rans.encode(u, codec.ANS_LANE_SYMBOLS, model))
    q = (u.astype(np.int64) >> 1) ^ -(u.astype(np.int64) & 1)
    err = np.linalg.norm((q * np.float32(step)).astype(np.float32) - x) / np.linalg.norm(x)
    return 8 * nbytes / x.size, float(err)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1 << 20)
    ap.add_argument("--cs", default="0.05,0.1,0.15,0.2,0.3")
    ap.add_argument("--nus", default="0.5,1,2")
    ap.add_argument("--rels", default="2,1,0.5,0.25,0.125,0.0625,0.03125")
    a = ap.parse_args(argv)
    cs = [float(v) for v in a.cs.split(",")]
    rels = [float(v) for v in a.rels.split(",")]
    rng = np.random.default_rng(12)
    print("| GG ν | plain rel_step | plain bits/w | rel L2 err | " + " | ".join(f"RDOQ c={c} bits/w" for c in cs)
          + " |")
    print("|---" * (4 + len(cs)) + "|")
    for nu in (float(v) for v in a.nus.split(",")):
        x = gg(rng, nu, a.n)
        fine = 2.0 ** np.arange(np.log2(min(rels)) - 1.5, np.log2(max(rels)) + 0.01, 0.125)
        curves = {c: np.array([point(x, quant.step_for_dtype(r, "F32"), c) for r in fine]) for c in cs}
        for r in rels:
            b0, e0 = point(x, quant.step_for_dtype(r, "F32"), 0.0)
            cells = []
            for c in cs:
                bits, err = curves[c][:, 0], curves[c][:, 1]
                o = np.argsort(np.log(err))
                le = np.log(err[o])
                if not le[0] <= np.log(e0) <= le[-1]:
                    cells.append("–")
                    continue
                cells.append(f"{np.interp(np.log(e0), le, bits[o]):.4f} ({np.interp(np.log(e0), le, bits[o]) - b0:+.4f})")
            print(f"| {nu:g} | {r:g} | {b0:.4f} | {e0:.5f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
