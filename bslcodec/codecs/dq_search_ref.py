"""Reference (plain Python, slow) of the dq trellis search in :mod:`bslcodec.codecs.dq_search`: one Viterbi
search per lane, written as the algorithm reads. The fast kernel must give the same symbols bit for bit
(tests/test_dq_search.py); use it on small inputs only (~10^4 elements a second)."""

import math

import numpy as np

from ..container.limits import LANES, MAX_SYMBOL_MAGNITUDE
from ..quantize.dq import N_STATES, NEXT_STATE

_UNREACHABLE = 1e300


def dequant(q: int, mode: int, step32, step64: float) -> float:
    """Spec 4.3's decoded value of level ``q`` as a Python float (mode 0 binary32, 1 bf16, 2 binary64)."""
    if mode == 2:
        return float(np.float64(q) * np.float64(step64))
    y = np.float32(np.float32(q) * np.float32(step32))
    if mode == 1:
        b = int(y.view(np.uint32))
        b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
        y = np.uint32(b).view(np.float32)
    return float(y)


def f16_round(y: float) -> float:
    return float(np.float64(np.float16(y))) if abs(y) < 65520.0 else math.copysign(math.inf, y)


def level(k: int, state: int) -> int:
    return 2 * k - (state & 1) * ((k > 0) - (k < 0))


def bits(k: int, tokbits: np.ndarray, s_tok: int, m_tok: int, no_token_bits: float) -> float:
    """Ideal code length of index ``k`` (zigzag symbol u): token bits + raw bits (spec 4.4's token split)."""
    u = (k << 1) ^ (k >> 63) if k >= 0 else ((-k) << 1) - 1
    if u < (1 << s_tok):
        return float(tokbits[u]) if u < tokbits.size else no_token_bits
    e = u.bit_length() - 1
    nb = e - m_tok
    tok = (1 << s_tok) + ((e - s_tok) << m_tok) + ((u >> nb) - (1 << m_tok))
    tb = float(tokbits[tok]) if tok < tokbits.size else no_token_bits
    return tb + nb


def lane(x, e0, T, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, f16, tokbits, s_tok, m_tok,
         no_token_bits, u):
    """Viterbi search of one lane (elements e0 + 32t, t < T): writes the zigzag symbols of the chosen indices
    to ``u``; returns (largest |x - x̂|, 1 if some element had no admissible level else 0). Candidates of
    each quantizer: the two indices around x, then 0; ties go to the first (state, candidate) in that order."""
    inv = 1.0 / step64
    cost = [0.0] + [_UNREACHABLE] * (N_STATES - 1)
    back = []
    for t in range(T):
        xv = float(x[e0 + LANES * t])
        v = xv * inv - center
        new = [_UNREACHABLE] * N_STATES
        choice = [None] * N_STATES
        for q1 in range(2):
            kc = math.floor(v * 0.5) if q1 == 0 else math.floor((v + (1.0 if v > 0 else -1.0)) * 0.5)
            cands = [kc, kc + 1] + ([] if kc in (0, -1) else [0])
            costed = []
            for k in cands:
                lv = level(k, q1)
                q = center + lv
                if abs(q) >= MAX_SYMBOL_MAGNITUDE or abs(lv) >= MAX_SYMBOL_MAGNITUDE:
                    continue
                xh = dequant(q, mode, step32, step64)
                if f16:
                    xh = f16_round(xh)
                err = abs(xh - xv)
                if err > bound + slack_rel * (abs(xv) + abs(xh)) + slack_abs:
                    continue
                en = err * inv
                costed.append((k, en * en + lam * bits(k, tokbits, s_tok, m_tok, no_token_bits)))
            for s in range(q1, N_STATES, 2):
                if cost[s] >= _UNREACHABLE:
                    continue
                for k, d in costed:
                    c = cost[s] + d
                    ns = NEXT_STATE[s][k & 1]
                    if c < new[ns]:
                        new[ns], choice[ns] = c, (k, s)
        if min(new) >= _UNREACHABLE:
            return 0.0, 1
        cost = new
        back.append(choice)
    s = min(range(N_STATES), key=lambda j: (cost[j], j))
    maxerr = 0.0
    for t in range(T - 1, -1, -1):
        k, ps = back[t][s]
        e = e0 + LANES * t
        maxerr = max(maxerr, abs(dequant(center + level(k, ps), mode, step32, step64) - float(x[e])))
        u[e] = (k << 1) if k >= 0 else ((-k) << 1) - 1
        s = ps
    return maxerr, 0


def quantize_pass(x, lane_symbols, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, f16, tokbits,
                  s_tok, m_tok, no_token_bits, u) -> np.ndarray:
    """One trellis pass over every group: per group (largest |x - x̂|, lanes without an admissible path)."""
    n = x.size
    gsize = LANES * lane_symbols
    G = (n + gsize - 1) // gsize
    stats = np.zeros((G, 2), np.float64)
    for g in range(G):
        start = g * gsize
        ng = min(n, start + gsize) - start
        for j in range(min(LANES, ng)):
            T = (ng - j + LANES - 1) // LANES
            me, bad = lane(x, start + j, T, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, f16,
                           tokbits, s_tok, m_tok, no_token_bits, u)
            stats[g, 0] = max(stats[g, 0], me)
            stats[g, 1] += bad
    return stats


def quantize(x: np.ndarray, step: float, center: int, dtype: str, lane_symbols: int, c: float = 0.1,
             bound: float | None = None, strict: bool = False, passes: int = 1) -> tuple:
    """``dq_search.quantize`` written out: (symbols u, largest |x - x̂|, lanes without a path)."""
    from ..quantize.dq import BOUND_FACTOR
    from ..quantize.quant import MODE_OF_DTYPE, ROUNDING
    from . import rans
    from .dq_search import _NO_TOKEN_BITS, token_bits

    mode = MODE_OF_DTYPE[dtype]
    bound = BOUND_FACTOR * step if bound is None else bound
    rel, ab = (0.0, 0.0) if strict else ROUNDING[dtype]
    lim = MAX_SYMBOL_MAGNITUDE - 1
    u = np.empty(x.size, np.uint32)
    for i in range(x.size):  # pass 0: plain Q0 rounding
        k = int(min(max(np.rint((float(x[i]) / step - center) * 0.5), -lim), lim))
        u[i] = (k << 1) if k >= 0 else ((-k) << 1) - 1
    n_bad, max_error = 0, 0.0
    for _ in range(passes):
        model, _ = rans.build_model(u)
        out = np.zeros(x.size, np.uint32)
        st = quantize_pass(x, lane_symbols, center, mode, np.float32(step), float(step), float(c), float(bound), rel,
                           ab, dtype == "F16", token_bits(model), model.s, model.m, _NO_TOKEN_BITS, out)
        u = out
        n_bad = int(st[:, 1].sum()) if st.size else 0
        max_error = float(st[:, 0].max()) if st.size else 0.0
        if n_bad:
            break
    return u, max_error, n_bad
