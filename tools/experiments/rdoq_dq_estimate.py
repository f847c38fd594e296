"""How much would dependent (trellis-coded) quantization save? An estimate, not a codec: it needs a new
decoder; written before bslcodec had one (it does now: codec ans-dq, bslcodec/dq.py, results/dq.md).

Run: ``python tools/experiments/rdoq_dq_estimate.py [--n 262144]`` -> a markdown table on stdout.

Dependent quantization as in VVC / NNR (NNCodec's ``use_dq``): two scalar quantizers, Q0 with the even
multiples of Δ and Q1 with the odd multiples and zero; a 4-state machine driven by the parity of each
transmitted index picks the quantizer of the next element; the encoder chooses the indices of a whole
sequence with a Viterbi search minimising (x - x̂)² + λ·bits. Bits are ideal order-0 code lengths with
one table per quantizer (two contexts), re-estimated from the chosen indices (3 passes). The baseline is
what bslcodec stores: plain rounding to multiples of a step, ideal order-0 entropy of the levels (RDOQ
changes it by < 0.01 bits/weight at these rates, see tools/experiments/rdoq_synthetic.py). Both curves are swept over
the step; DQ also over λ = c·Δ² (its best c at each rate); compared at equal MSE.
"""

import argparse
import sys

import numba
import numpy as np

NEXT = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], np.int64)  # state x parity -> next state (VVC)
KMAX = 1 << 14


@numba.njit(cache=True)
def _viterbi(x, delta, lam, bits0, bits1):
    """Indices k (one per element) and reconstructions; bitsQ[k + KMAX] = code length under quantizer Q."""
    n = x.size
    cost = np.full(4, np.inf)
    cost[0] = 0.0
    back_state = np.empty((n, 4), np.int8)
    back_k = np.empty((n, 4), np.int32)
    for i in range(n):
        new = np.full(4, np.inf)
        nk = np.zeros(4, np.int32)
        ns = np.zeros(4, np.int8)
        v = x[i] / delta
        for s in range(4):
            if cost[s] == np.inf:
                continue
            q1 = s >= 2
            # candidate indices: the two levels around v in this quantizer, and zero
            if not q1:  # levels 2k
                kc = np.floor(v / 2.0)
                cands = (np.int64(kc), np.int64(kc) + 1, np.int64(0))
            else:  # levels 2k - sgn(k)
                kc = np.floor((v + (1.0 if v > 0 else -1.0)) / 2.0)
                cands = (np.int64(kc), np.int64(kc) + 1, np.int64(0))
            for j in range(3):
                k = cands[j]
                if abs(k) >= KMAX:
                    continue
                if not q1:
                    lev = 2 * k
                else:
                    lev = 2 * k - (1 if k > 0 else (-1 if k < 0 else 0))
                e = x[i] - lev * delta
                b = bits1[k + KMAX] if q1 else bits0[k + KMAX]
                c = cost[s] + e * e + lam * b
                t = NEXT[s, k & 1]
                if c < new[t]:
                    new[t] = c
                    nk[t] = k
                    ns[t] = s
        for t in range(4):
            back_k[i, t] = nk[t]
            back_state[i, t] = ns[t]
        cost = new
    s = np.argmin(cost)
    ks = np.empty(n, np.int64)
    qsel = np.empty(n, np.int8)
    for i in range(n - 1, -1, -1):
        ks[i] = back_k[i, s]
        s = back_state[i, s]
        qsel[i] = 1 if s >= 2 else 0
    return ks, qsel


def _lengths(k, counts_floor=0.5):
    h = np.bincount(k + KMAX, minlength=2 * KMAX).astype(np.float64) + counts_floor / (2 * KMAX)
    return -np.log2(h / h.sum())


def dq_point(x, delta, c, passes=3):
    lam = c * delta * delta
    k0 = np.rint(x / (2 * delta)).astype(np.int64)  # start: Q0 everywhere
    b0 = b1 = _lengths(k0)
    for _ in range(passes):
        ks, qsel = _viterbi(x, delta, lam, b0, b1)
        b0, b1 = _lengths(ks[qsel == 0]), _lengths(ks[qsel == 1])
    lev = np.where(qsel == 1, 2 * ks - np.sign(ks), 2 * ks)
    mse = float(np.mean((x - lev * delta) ** 2))
    bits = 0.0
    for sel in (0, 1):
        kk = ks[qsel == sel]
        if kk.size:
            p = np.bincount(kk + KMAX) / kk.size
            p = p[p > 0]
            bits += -kk.size * float((p * np.log2(p)).sum())
    return bits / x.size, mse


def plain_point(x, step):
    q = np.rint(x / step).astype(np.int64)
    p = np.bincount(q - q.min()) / q.size
    p = p[p > 0]
    return -float((p * np.log2(p)).sum()), float(np.mean((x - q * step) ** 2))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1 << 18)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(7)
    print("| source | plain bits/w (ideal order-0) | MSE / σ² | DQ bits/w at that MSE | DQ saves |")
    print("|---|---|---|---|---|")
    for name, x in (("Laplace", rng.laplace(0, 1 / np.sqrt(2), a.n)), ("Gauss", rng.normal(0, 1, a.n)),
                    ("GG ν=0.7", None)):
        if x is None:
            g = rng.gamma(1 / 0.7, 1.0, a.n) ** (1 / 0.7)
            x = g * rng.choice([-1.0, 1.0], a.n)
        x = x / x.std()
        curves = []
        for c in (0.06, 0.1, 0.15):
            pts = np.array([dq_point(x, 2.0 ** e, c) for e in np.arange(-8.5, -0.49, 0.125)])
            o = np.argsort(pts[:, 1])
            curves.append((np.log(pts[o, 1]), pts[o, 0]))
        for rel in (1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64):
            b, mse = plain_point(x, rel)
            dq = min(float(np.interp(np.log(mse), lm, bb)) for lm, bb in curves)  # the best c at this MSE
            print(f"| {name} | {b:.3f} | {mse:.3e} | {dq:.3f} | {b - dq:+.3f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
