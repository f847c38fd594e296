"""The encoder of dependent quantization: a Viterbi search per lane over the 8-state trellis of
:mod:`bslcodec.quantize.dq` minimising ``(x − x̂)²/Δ² + c·bits``, bits from the ans model of the previous pass."""

import math

import numba
import numpy as np
from numba import prange

from ..container.limits import LANES, MAX_SYMBOL_MAGNITUDE
from ..parallel import launch, serial_twin
from ..quantize.dq import BOUND_FACTOR, N_STATES, f16_round, level, next_state
from ..quantize.quant import MODE_OF_DTYPE, ROUNDING, _dequant
from . import rans
from .golomb import _ctlz

DEFAULT_C = 0.1  # λ = c·Δ² in the search (0.05-0.2 differ by < 0.001 bits/weight: results/dq.md)
PASSES = 1  # trellis passes, each with the ans model of the symbols before it (pass 1: of Q0 rounding);
# a second pass changes the size by < 0.001 bits/weight on Laplacian data and doubles the time
_UNREACHABLE = 1e300
_NO_TOKEN_BITS = 24.0  # cost of a token the current model lacks (the next model gets it)


@numba.njit(inline="always")
def _bits(k, tokbits, s_tok, m_tok):
    """Ideal code length of index k (zigzag symbol u) under the token model: token bits + raw bits."""
    u = np.int64((k << 1) ^ (k >> 63))
    if u < (np.int64(1) << s_tok):
        return tokbits[u] if u < tokbits.size else _NO_TOKEN_BITS
    e = 63 - np.int64(_ctlz(np.uint64(u)))
    nb = e - m_tok
    tok = (np.int64(1) << s_tok) + ((e - s_tok) << m_tok) + ((u >> nb) - (np.int64(1) << m_tok))
    tb = tokbits[tok] if tok < tokbits.size else _NO_TOKEN_BITS
    return tb + nb


@numba.njit(cache=True)
def _lane(x, e0, T, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, f16, tokbits, s_tok, m_tok,
          bk, bs, u):
    """Viterbi search of one lane (elements e0 + 32t, t < T); writes the zigzag symbols of the chosen
    indices to ``u``. Returns (largest |x - x̂|, 0) or (.., 1) when some element had no admissible
    level (a bound broken by output rounding, or |q| >= 2^24). Each quantizer's candidates (the two
    levels around x, and 0) are costed once per element and relaxed from its 4 states."""
    inv = 1.0 / step64
    lim = MAX_SYMBOL_MAGNITUDE
    S = N_STATES
    cost = np.empty(S, np.float64)
    new = np.empty(S, np.float64)
    cost[:] = _UNREACHABLE
    cost[0] = 0.0
    ck = np.empty(3, np.int64)  # candidates of one quantizer: index, and its distortion + rate cost
    cd = np.empty(3, np.float64)
    for t in range(T):
        xv = np.float64(x[e0 + LANES * t])
        v = xv * inv - center
        new[:] = _UNREACHABLE
        for q1 in range(2):  # the states of one quantizer (σ & 1 == q1) share its candidates and costs
            live = False
            for s in range(q1, S, 2):
                live |= cost[s] < _UNREACHABLE
            if not live:
                continue
            if q1 == 0:
                kc = np.int64(math.floor(v * 0.5))
            else:
                kc = np.int64(math.floor((v + (1.0 if v > 0 else -1.0)) * 0.5))
            nc = 0
            for ci in range(2 if (kc == 0 or kc == -1) else 3):
                k = kc + ci if ci < 2 else np.int64(0)
                lv = level(k, q1)
                q = center + lv
                if abs(q) >= lim or abs(lv) >= lim:
                    continue
                xh = _dequant(q, mode, step32, step64)
                if f16:  # F16 tensors decode to binary32, then round to F16
                    xh = f16_round(xh)
                err = abs(xh - xv)
                if err > bound + slack_rel * (abs(xv) + abs(xh)) + slack_abs:
                    continue
                en = err * inv
                ck[nc] = k
                cd[nc] = en * en + lam * _bits(k, tokbits, s_tok, m_tok)
                nc += 1
            for s in range(q1, S, 2):
                cs = cost[s]
                if cs >= _UNREACHABLE:
                    continue
                for ci in range(nc):
                    k = ck[ci]
                    c = cs + cd[ci]
                    ns = next_state(s, k)
                    if c < new[ns]:
                        new[ns] = c
                        bk[t, ns] = k
                        bs[t, ns] = s
        best = _UNREACHABLE
        for s in range(S):
            cost[s] = new[s]
            best = min(best, new[s])
        if best >= _UNREACHABLE:
            return 0.0, 1
    s = 0
    for j in range(1, S):
        if cost[j] < cost[s]:
            s = j
    maxerr = 0.0
    for t in range(T - 1, -1, -1):
        k = bk[t, s]
        ps = bs[t, s]
        e = e0 + LANES * t
        xh = _dequant(center + level(k, ps), mode, step32, step64)
        maxerr = max(maxerr, abs(xh - np.float64(x[e])))
        u[e] = np.uint32((k << 1) ^ (k >> 63))
        s = ps
    return maxerr, 0


@numba.njit(parallel=True, cache=True)
def _quantize(x, lane_symbols, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, f16, tokbits, s_tok,
              m_tok, u):
    n = x.size
    gsize = LANES * lane_symbols
    G = (n + gsize - 1) // gsize
    stats = np.zeros((G, 2), np.float64)
    for g in prange(G):
        bk = np.empty((lane_symbols, N_STATES), np.int64)
        bs = np.empty((lane_symbols, N_STATES), np.int8)
        start = g * gsize
        ng = min(n, start + gsize) - start
        for j in range(min(LANES, ng)):
            T = (ng - j + LANES - 1) // LANES
            me, bad = _lane(x, start + j, T, center, mode, step32, step64, lam, bound, slack_rel, slack_abs,
                            f16, tokbits, s_tok, m_tok, bk, bs, u)
            stats[g, 0] = max(stats[g, 0], me)
            stats[g, 1] += bad
    return stats


_quantize_serial = serial_twin(_quantize)


def token_bits(model) -> np.ndarray:
    """Code length of every token under an ans ``Model`` (``_NO_TOKEN_BITS`` where its frequency is 0)."""
    f = np.asarray(model.freqs, np.float64)
    out = np.full(f.size, _NO_TOKEN_BITS)
    live = f > 0
    out[live] = model.prob_bits - np.log2(f[live])
    return out


class DQResult:
    __slots__ = ("u", "max_error", "n_bad")


def quantize(x: np.ndarray, step: float, center: int, dtype: str, lane_symbols: int, c: float = DEFAULT_C,
             bound: float | None = None, strict: bool = False, passes: int = PASSES) -> DQResult:
    """Indices (as zigzag symbols ``u``) of flat ``x`` under DQ with step Δ = ``step``.

    ``bound``: the largest |x - x̂| allowed (default 1.5 Δ, with the output dtype's rounding slack unless
    ``strict``). ``n_bad``: lanes where some element had no level within the bound (the caller shrinks the
    step or stores the tensor exactly). For F16 the values and the bound are those after the rounding to
    F16.
    """
    r = DQResult()
    mode = MODE_OF_DTYPE[dtype]
    bound = BOUND_FACTOR * step if bound is None else bound
    rel, ab = (0.0, 0.0) if strict else ROUNDING[dtype]
    # pass 0: the model of plain Q0 rounding (k = round(v / 2)), whose symbols are what the first
    # trellis will mostly pick
    k0 = np.rint((x.astype(np.float64) / step - center) * 0.5)
    k0 = np.clip(k0, -(MAX_SYMBOL_MAGNITUDE - 1), MAX_SYMBOL_MAGNITUDE - 1).astype(np.int64)
    u = ((k0 << 1) ^ (k0 >> 63)).astype(np.uint32)
    del k0
    out = np.empty(x.size, np.uint32)
    for _ in range(passes):
        model, _bits_ = rans.build_model(u)
        st = launch(_quantize, _quantize_serial, x, lane_symbols, np.int64(center), mode, np.float32(step),
                    float(step), float(c), float(bound), rel, ab, dtype == "F16", token_bits(model), model.s,
                    model.m, out)
        u, out = out, u
        r.n_bad = int(st[:, 1].sum()) if st.size else 0
        r.max_error = float(st[:, 0].max()) if st.size else 0.0
        if r.n_bad:
            break
    r.u = u
    return r

