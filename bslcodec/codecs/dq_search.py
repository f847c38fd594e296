"""The encoder of dependent quantization: a Viterbi search per lane over the 8-state trellis of
:mod:`bslcodec.quantize.dq` minimising ``(x − x̂)²/Δ² + c·bits``, bits from the ans model of the previous pass."""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import math

import numba
import numpy as np
from numba import prange

from ..container.limits import LANES, MAX_SYMBOL_MAGNITUDE
from ..parallel import launch, serial_twin
from ..quantize.dq import BOUND_FACTOR, N_STATES, NEXT_STATE, f16_round, level
from ..quantize.quant import MODE_OF_DTYPE, ROUNDING, _dequant, f64_of
from . import rans
from .rans_model import FINE_K, FINE_M, FINE_S, _token
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
    if u < 0:  # |k| >= 2^62 (x/Δ near 1e19): the zigzag overflows; such an index is far out of range (its
        return _NO_TOKEN_BITS + 64.0  # distance is +inf, so it never wins) and must not index the table
    if u < (np.int64(1) << s_tok):
        return tokbits[u] if u < tokbits.size else _NO_TOKEN_BITS
    e = 63 - np.int64(_ctlz(np.uint64(u)))
    nb = e - m_tok
    tok = (np.int64(1) << s_tok) + ((e - s_tok) << m_tok) + ((u >> nb) - (np.int64(1) << m_tok))
    tb = tokbits[tok] if tok < tokbits.size else _NO_TOKEN_BITS
    return tb + nb


# predecessors of each state (NEXT_STATE inverted): state ns is reached from PRED_S[ns][0] < PRED_S[ns][1],
# both of one quantizer, by an index of parity PRED_P[ns][i]
_PRED = tuple(tuple(sorted((s, p) for s in range(N_STATES) for p in range(2) if NEXT_STATE[s][p] == ns))
              for ns in range(N_STATES))
PRED_S = np.array([[s for s, _ in pr] for pr in _PRED], np.int64)
PRED_P = np.array([[p for _, p in pr] for pr in _PRED], np.int64)
_Q0_BLOCK = 1 << 18  # elements of a parallel part of the first-pass histograms
_RATE_TABLE = 4096  # λ·bits tabulated for |k| < 2048 (32 KiB: stays in L1/L2); other indices are costed exactly


@numba.njit(inline="always")
def _kc(v, q1):
    """The lower of the two indices of quantizer ``q1`` around ``v`` (x/Δ − center): its levels are 2k (Q0)
    or 2k − sgn(k) (Q1), so the pair kc, kc + 1 brackets v."""
    if q1 == 0:
        return np.int64(math.floor(v * 0.5))
    return np.int64(math.floor((v + (1.0 if v > 0 else -1.0)) * 0.5))


@numba.njit(inline="always")
def _dist(k, q1, xv, center, mode, step32, step64, inv, bound, slack_rel, slack_abs, f16):
    """(x − x̂)²/Δ² of index ``k`` in quantizer ``q1`` for value ``xv``; +inf where its level is out of range
    or breaks the bound (such a candidate never wins: +inf + rate is never below a cost)."""
    sg = (k > 0) - (k < 0)
    lv = 2 * k - q1 * sg
    q = center + lv
    ok = (abs(q) < MAX_SYMBOL_MAGNITUDE) & (abs(lv) < MAX_SYMBOL_MAGNITUDE)
    xh = _dequant(q, mode, step32, step64)
    if f16:  # a constant where it is inlined (_row_dists's two copies): the F16 rounding, or nothing
        xh = f16_round(xh)
    err = abs(xh - xv)
    ok &= not (err > bound + slack_rel * (abs(xv) + abs(xh)) + slack_abs)
    en = err * inv
    return en * en if ok else math.inf


@numba.njit(inline="always")
def _row_dists(x, base, jn, center, mode, step32, step64, inv, bound, slack_rel, slack_abs, f16, dist, kk):
    """For elements x[base + j], j < jn: ``kk[q, j]`` the lower index of quantizer q's pair around x;
    ``dist`` rows 2q, 2q + 1 the distances of that pair, row 4 that of index 0 (level 0 in both)."""
    for j in range(jn):
        xv = f64_of(x[base + j])
        v = xv * inv - center
        dist[4, j] = _dist(np.int64(0), 0, xv, center, mode, step32, step64, inv, bound, slack_rel, slack_abs, f16)
        for q1 in range(2):
            k = _kc(v, q1)
            kk[q1, j] = k
            dist[2 * q1, j] = _dist(k, q1, xv, center, mode, step32, step64, inv, bound, slack_rel, slack_abs, f16)
            dist[2 * q1 + 1, j] = _dist(k + 1, q1, xv, center, mode, step32, step64, inv, bound, slack_rel,
                                        slack_abs, f16)


@numba.njit(inline="always")
def _row_rates(jn, lam, rate, tokbits, s_tok, m_tok, dist, kk, dpe, dpo, dz):
    """The row's candidate costs from ``_row_dists``: ``dpe[q, j]`` / ``dpo[q, j]`` distance + λ·bits of quantizer
    q's even / odd index of the pair, ``dz[q, j]`` that of index 0 (+inf where 0 is in the pair); λ·bits from
    the table (``rate[half + k]`` = λ·``_bits``, the same float64), indices beyond it exactly (rare)."""
    last = rate.size - 1
    half = rate.size // 2
    r0 = rate[half]
    for q1 in range(2):
        for j in range(jn):
            k = kk[q1, j]
            i = k + half
            if np.uint64(i) < np.uint64(last):  # k and k + 1 in the table
                c0 = dist[2 * q1, j] + rate[i]
                c1 = dist[2 * q1 + 1, j] + rate[i + 1]
            else:
                c0 = dist[2 * q1, j] + lam * _bits(k, tokbits, s_tok, m_tok)
                c1 = dist[2 * q1 + 1, j] + lam * _bits(k + 1, tokbits, s_tok, m_tok)
            odd = (k & 1) == 1
            dpe[q1, j] = c1 if odd else c0
            dpo[q1, j] = c0 if odd else c1
            dz[q1, j] = math.inf if (k == 0) | (k == -1) else dist[4, j] + r0


@numba.njit(nogil=True, cache=True)
def _rate_table(lam, tokbits, s_tok, m_tok, size):
    """λ·``_bits`` of the indices k = −size/2 .. size/2 − 1 at ``[k + size/2]`` (the same float64 values)."""
    out = np.empty(size, np.float64)
    for i in range(size):
        out[i] = lam * _bits(np.int64(i - size // 2), tokbits, s_tok, m_tok)
    return out


@numba.njit(nogil=True, cache=True)
def _group(x, start, ng, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, f16, rate, tokbits, s_tok,
           m_tok, u, cost, new, dpe, dpo, dz, dist, kk, cur, choice):
    """The Viterbi search of the ≤ 32 lanes of one group (elements start .. start+ng), all lanes at once: row t
    holds element t of every lane (x[start + 32t + j], contiguous), so each step is a loop over lanes.
    Per row and quantizer the candidates are the index pair around x (one even, one odd) and 0; an index of
    parity p leads every state to one successor, so each state's new cost is the best of ≤ 3 (predecessor,
    candidate) sums, compared in the reference's order (predecessors ascending, then pair before 0, strict <)
    so that ties resolve as there. ``choice[t, ns, j]``: bit 1 = second predecessor, bit 0 = the 0 candidate.
    Returns (largest |x - x̂|, lanes without an admissible path)."""
    inv = 1.0 / step64
    S = N_STATES
    nl = min(LANES, ng)
    rows = (ng + LANES - 1) // LANES
    for s in range(S):
        for j in range(LANES):
            cost[s, j] = 0.0 if s == 0 else _UNREACHABLE
    for t in range(rows):
        base = start + LANES * t
        jn = min(LANES, ng - LANES * t)
        # candidates of both quantizers for the row's ≤ 32 elements: distances (a loop without table reads,
        # which vectorizes; F16 rounding in its own copy), then λ·bits from the table (``rate[u]`` = λ·``_bits``,
        # the same float64), symbols beyond it exactly (rare)
        if f16:
            _row_dists(x, base, jn, center, mode, step32, step64, inv, bound, slack_rel, slack_abs, True, dist, kk)
        else:
            _row_dists(x, base, jn, center, mode, step32, step64, inv, bound, slack_rel, slack_abs, False, dist, kk)
        _row_rates(jn, lam, rate, tokbits, s_tok, m_tok, dist, kk, dpe, dpo, dz)
        for ns in range(S):
            sa, sb = PRED_S[ns, 0], PRED_S[ns, 1]
            pa, pb = PRED_P[ns, 0], PRED_P[ns, 1]
            q1 = sa & 1
            for j in range(jn):
                ca, cb = cost[sa, j], cost[sb, j]
                best = _UNREACHABLE
                ch = 0
                if pa == 0:
                    c = ca + dpe[q1, j]
                    if c < best:
                        best, ch = c, 0
                    c = ca + dz[q1, j]
                    if c < best:
                        best, ch = c, 1
                else:
                    c = ca + dpo[q1, j]
                    if c < best:
                        best, ch = c, 0
                if pb == 0:
                    c = cb + dpe[q1, j]
                    if c < best:
                        best, ch = c, 2
                    c = cb + dz[q1, j]
                    if c < best:
                        best, ch = c, 3
                else:
                    c = cb + dpo[q1, j]
                    if c < best:
                        best, ch = c, 2
                new[ns, j] = best
                choice[t, ns, j] = ch
        for ns in range(S):
            for j in range(jn):
                cost[ns, j] = new[ns, j]
    # trace back all lanes row by row (32 independent chains side by side, not one long dependent chain);
    # state -1 marks a lane without an admissible path (its symbols are not written)
    maxerr = 0.0
    bad = 0
    for j in range(nl):
        s = 0
        for q in range(1, S):
            if cost[q, j] < cost[s, j]:
                s = q
        if cost[s, j] >= _UNREACHABLE:  # some element of this lane had no admissible level
            bad += 1
            s = -1
        cur[j] = s
    for t in range(rows - 1, -1, -1):
        jn = min(LANES, ng - LANES * t)
        base = start + LANES * t
        for j in range(jn):
            s = cur[j]
            if s < 0:
                continue
            ch = choice[t, s, j]
            i = ch >> 1
            ps = PRED_S[s, i]
            xv = f64_of(x[base + j])
            k = _kc(xv * inv - center, ps & 1)
            k += (k & 1) != PRED_P[s, i]
            k = np.int64(0) if ch & 1 else k
            xh = _dequant(center + level(k, ps), mode, step32, step64)
            maxerr = max(maxerr, abs(xh - xv))
            u[base + j] = np.uint32((k << 1) ^ (k >> 63))
            cur[j] = ps
    return maxerr, bad


@numba.njit(nogil=True, cache=True)
def _groups(x, g0, g1, lane_symbols, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, f16, rate,
            tokbits, s_tok, m_tok, u, stats):
    """Groups [g0, g1) of one pass, one after another (the unit a thread runs); fills ``stats[g]``."""
    n = x.size
    gsize = LANES * lane_symbols
    cost = np.empty((N_STATES, LANES), np.float64)
    new = np.empty((N_STATES, LANES), np.float64)
    dpe = np.empty((2, LANES), np.float64)
    dpo = np.empty((2, LANES), np.float64)
    dz = np.empty((2, LANES), np.float64)
    dist = np.empty((5, LANES), np.float64)
    kk = np.empty((2, LANES), np.int64)
    cur = np.empty(LANES, np.int64)
    choice = np.empty((lane_symbols, N_STATES, LANES), np.uint8)
    for g in range(g0, g1):
        start = g * gsize
        ng = min(n, start + gsize) - start
        me, bad = _group(x, start, ng, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, f16, rate,
                         tokbits, s_tok, m_tok, u, cost, new, dpe, dpo, dz, dist, kk, cur, choice)
        stats[g, 0] = me
        stats[g, 1] = bad


@numba.njit(parallel=True, nogil=True, cache=True)
def _quantize(x, lane_symbols, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, f16, rate, tokbits,
              s_tok, m_tok, u):
    gsize = LANES * lane_symbols
    G = (x.size + gsize - 1) // gsize
    stats = np.zeros((G, 2), np.float64)
    for g in prange(G):
        gi = np.int64(g)  # (int64 as in the typing before the parfor rewrite: one compiled signature, not two)
        _groups(x, gi, gi + 1, lane_symbols, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, f16,
                rate, tokbits, s_tok, m_tok, u, stats)
    return stats


_quantize_serial = serial_twin(_quantize)


# ---- bf16 tensors: every per-element quantity of the search is a function of the element's 16 bits, so it is
# computed once per distinct value (a few thousand in a weight tensor) into tables the trellis reads by value

_N_BF16 = 1 << 16
TABLE_MIN = 1 << 16  # bf16 tensors of at least this many elements take the table path (quantize)


@numba.njit(parallel=True, nogil=True, cache=True)
def _value_counts(x, parts):
    """How often each of the 65,536 bit patterns occurs in uint16 ``x`` (int64), counted in ``parts``."""
    n = x.size
    part = np.zeros((parts, _N_BF16), np.int64)
    for p in prange(parts):
        for i in range(n * p // parts, n * (p + 1) // parts):
            part[p, x[i]] += 1
    out = np.zeros(_N_BF16, np.int64)
    for p in range(parts):
        for v in range(_N_BF16):
            out[v] += part[p, v]
    return out


_value_counts_serial = serial_twin(_value_counts)


@numba.njit(nogil=True, cache=True)
def _q0_hist_of_values(vals, counts, step, center):
    """``_q0_hist`` (summed) of a tensor given as its distinct values and their counts: the same rounding of
    each value, its count added to the token's bin."""
    lim = MAX_SYMBOL_MAGNITUDE - 1
    hist = np.zeros(FINE_K, np.int64)
    for i in range(vals.size):
        k = np.rint((f64_of(vals[i]) / step - center) * 0.5)
        k = min(max(k, -lim), lim)
        ki = np.int64(k)
        tok, nb, r = _token((ki << 1) ^ (ki >> 63), FINE_S, FINE_M)
        hist[tok] += counts[i]
    return hist


@numba.njit(nogil=True, cache=True)
def _value_tables(vals, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, rate, tokbits, s_tok,
                  m_tok):
    """For each distinct value (uint16 bits, ``vals``), what ``_group`` computes of an element of that value, by
    the same code. ``cst[i]``: (dpe, dpo, dz) of Q0 then of Q1 (``_row_dists`` + ``_row_rates``). ``back[i]``:
    for quantizer q and index parity p, column 2q + p: |x̂ − x| of the pair's index of parity p (float64 bits),
    column 4: that of index 0, columns 5 + q: the zigzag symbols (uint32) of the pair's indices of parity 0
    and 1 (what the traceback computes with ``_kc``, the parity fix and ``_dequant``). ``umax``: the largest
    symbol of a candidate with a finite cost (no other is ever chosen: a sum with +inf is never below a cost)."""
    nv = vals.size
    inv = 1.0 / step64
    cst = np.zeros((nv, 8), np.float64)  # (rows of 64 bytes)
    back = np.zeros((nv, 8), np.uint64)
    dpe = np.empty((2, LANES), np.float64)
    dpo = np.empty((2, LANES), np.float64)
    dz = np.empty((2, LANES), np.float64)
    dist = np.empty((5, LANES), np.float64)
    kk = np.empty((2, LANES), np.int64)
    umax = np.int64(0)
    for base in range(0, nv, LANES):
        jn = min(LANES, nv - base)
        _row_dists(vals, base, jn, center, mode, step32, step64, inv, bound, slack_rel, slack_abs, False, dist, kk)
        _row_rates(jn, lam, rate, tokbits, s_tok, m_tok, dist, kk, dpe, dpo, dz)
        for j in range(jn):
            i = base + j
            xv = f64_of(vals[i])
            for q1 in range(2):
                cst[i, 3 * q1] = dpe[q1, j]
                cst[i, 3 * q1 + 1] = dpo[q1, j]
                cst[i, 3 * q1 + 2] = dz[q1, j]
                for p in range(2):
                    k = kk[q1, j]
                    k += (k & 1) != p
                    xh = _dequant(center + level(k, q1), mode, step32, step64)
                    back[i, 2 * q1 + p] = np.float64(abs(xh - xv)).view(np.uint64)
                    sym = np.uint32((k << 1) ^ (k >> 63))
                    back[i, 5 + q1] |= np.uint64(sym) << np.uint64(32 * p)
                    if cst[i, 3 * q1 + p] < math.inf:  # (dpe: the even index's cost, dpo: the odd one's)
                        umax = max(umax, np.int64(sym))
            xh = _dequant(center + level(np.int64(0), 0), mode, step32, step64)
            back[i, 4] = np.float64(abs(xh - xv)).view(np.uint64)
    return cst, back, umax


@numba.njit(inline="always")
def _state(t, ns, sa, sb, pa, pb, co, no, wk, pk, jn):
    """``_group``'s update of state ``ns`` (constant predecessors ``sa`` < ``sb``, parities ``pa``, ``pb``) for
    lanes < ``jn``: costs from rows ``co`` + state of ``wk``, to row ``no`` + ``ns``; the row's candidate costs
    in rows 16 + 3q + (0: dpe, 1: dpo, 2: dz); the choice's 2 bits at bit 2·ns of ``pk[t, j]``. (Inlined where
    every argument but ``t`` and ``jn`` is a constant: each state's own branches, rows without overlap checks.)"""
    de = 16 + 3 * (sa & 1)
    for j in range(jn):
        ca, cb = wk[co + sa, j], wk[co + sb, j]
        best = _UNREACHABLE
        ch = 0
        if pa == 0:
            c = ca + wk[de, j]
            if c < best:
                best, ch = c, 0
            c = ca + wk[de + 2, j]
            if c < best:
                best, ch = c, 1
        else:
            c = ca + wk[de + 1, j]
            if c < best:
                best, ch = c, 0
        if pb == 0:
            c = cb + wk[de, j]
            if c < best:
                best, ch = c, 2
            c = cb + wk[de + 2, j]
            if c < best:
                best, ch = c, 3
        else:
            c = cb + wk[de + 1, j]
            if c < best:
                best, ch = c, 2
        wk[no + ns, j] = best
        if ns == 0:
            pk[t, j] = np.uint16(ch)
        else:
            pk[t, j] |= np.uint16(ch << (2 * ns))


assert N_STATES == 8  # (_group_tab's 8 updates a row, and 2 bits a state in the uint16 choices)
# the traceback's step from state s by choice ch: predecessor | its index's parity << 3 | index 0 chosen << 4
_BACK_STEP = np.array([PRED_S[s, ch >> 1] | (PRED_P[s, ch >> 1] << 3) | ((ch & 1) << 4)
                       for s in range(N_STATES) for ch in range(4)], np.int64)


@numba.njit(inline="always")
def _back_row(t, base, jn, cur, pk, rix, back, u, maxe):
    """One row of the traceback, lanes < ``jn``: symbols and errors from the value's ``back`` row."""
    for j in range(jn):
        s = cur[j]
        sc = s & 7  # (a lane without a path, s = -1, reads any state and writes nothing)
        st = _BACK_STEP[sc * 4 + ((np.int64(pk[t, j]) >> (2 * sc)) & 3)]
        ps = st & 7
        col = 2 * (ps & 1) + ((st >> 3) & 1)
        r = np.int64(rix[t, j])
        zero = (st >> 4) & 1
        e = np.uint64(back[r, 4] if zero else back[r, col]).view(np.float64)
        sym = np.uint32(0) if zero else np.uint32((back[r, 5 + (col >> 1)] >> np.uint64(32 * (col & 1)))
                                                  & np.uint64(0xFFFFFFFF))
        if s >= 0:
            maxe[j] = max(maxe[j], e)
            u[base + j] = sym  # (a uint16 u only where every symbol that can be chosen fits)
            cur[j] = ps


@numba.njit(nogil=True, cache=True)
def _group_tab(x, start, ng, remap, cst, back, u, wk, cur, pk, rix, maxe):
    """``_group`` of a bf16 tensor (``x`` its uint16 bits) from the value tables (``_value_tables``, rows by
    ``remap[bits]``): the same costs in the same state updates (one buffer ``wk`` for the costs, two sets of 8
    rows used in turn, and the candidates, so that the loops need no checks for overlapping arrays), the
    choices packed 2 bits a state; so the same symbols, largest error and lanes without a path."""
    nl = min(LANES, ng)
    rows = (ng + LANES - 1) // LANES
    for s in range(N_STATES):
        for j in range(LANES):
            wk[s, j] = 0.0 if s == 0 else _UNREACHABLE
    for t in range(rows):
        base = start + LANES * t
        jn = min(LANES, ng - LANES * t)
        for j in range(jn):
            r = remap[x[base + j]]
            rix[t, j] = r
            for c in range(6):
                wk[16 + c, j] = cst[r, c]
        # the 8 state updates, each with its predecessors as constants, written out (not a helper inlined
        # twice: numba's inlining copies the whole scope of the callee per block, which made this kernel's
        # compile take ~3x as long); every row, the partial last one too, updates all 32 lanes (the lanes
        # past a partial row compute from stale candidates, their choices are never read, and their costs are
        # put back below), so there are two copies of the updates, not three
        co = 8 * (t & 1)  # this row's costs in rows co.., the next row's in 8 - co..
        if co:
            _state(t, 0, PRED_S[0, 0], PRED_S[0, 1], PRED_P[0, 0], PRED_P[0, 1], 8, 0, wk, pk, LANES)
            _state(t, 1, PRED_S[1, 0], PRED_S[1, 1], PRED_P[1, 0], PRED_P[1, 1], 8, 0, wk, pk, LANES)
            _state(t, 2, PRED_S[2, 0], PRED_S[2, 1], PRED_P[2, 0], PRED_P[2, 1], 8, 0, wk, pk, LANES)
            _state(t, 3, PRED_S[3, 0], PRED_S[3, 1], PRED_P[3, 0], PRED_P[3, 1], 8, 0, wk, pk, LANES)
            _state(t, 4, PRED_S[4, 0], PRED_S[4, 1], PRED_P[4, 0], PRED_P[4, 1], 8, 0, wk, pk, LANES)
            _state(t, 5, PRED_S[5, 0], PRED_S[5, 1], PRED_P[5, 0], PRED_P[5, 1], 8, 0, wk, pk, LANES)
            _state(t, 6, PRED_S[6, 0], PRED_S[6, 1], PRED_P[6, 0], PRED_P[6, 1], 8, 0, wk, pk, LANES)
            _state(t, 7, PRED_S[7, 0], PRED_S[7, 1], PRED_P[7, 0], PRED_P[7, 1], 8, 0, wk, pk, LANES)
        else:
            _state(t, 0, PRED_S[0, 0], PRED_S[0, 1], PRED_P[0, 0], PRED_P[0, 1], 0, 8, wk, pk, LANES)
            _state(t, 1, PRED_S[1, 0], PRED_S[1, 1], PRED_P[1, 0], PRED_P[1, 1], 0, 8, wk, pk, LANES)
            _state(t, 2, PRED_S[2, 0], PRED_S[2, 1], PRED_P[2, 0], PRED_P[2, 1], 0, 8, wk, pk, LANES)
            _state(t, 3, PRED_S[3, 0], PRED_S[3, 1], PRED_P[3, 0], PRED_P[3, 1], 0, 8, wk, pk, LANES)
            _state(t, 4, PRED_S[4, 0], PRED_S[4, 1], PRED_P[4, 0], PRED_P[4, 1], 0, 8, wk, pk, LANES)
            _state(t, 5, PRED_S[5, 0], PRED_S[5, 1], PRED_P[5, 0], PRED_P[5, 1], 0, 8, wk, pk, LANES)
            _state(t, 6, PRED_S[6, 0], PRED_S[6, 1], PRED_P[6, 0], PRED_P[6, 1], 0, 8, wk, pk, LANES)
            _state(t, 7, PRED_S[7, 0], PRED_S[7, 1], PRED_P[7, 0], PRED_P[7, 1], 0, 8, wk, pk, LANES)
        if jn < LANES:  # the last row, partial: the lanes past it keep their costs
            for s in range(N_STATES):
                for j in range(jn, LANES):
                    wk[8 - co + s, j] = wk[co + s, j]
    fo = 8 * (rows & 1)
    bad = 0
    for j in range(nl):
        s = 0
        for q in range(1, N_STATES):
            if wk[fo + q, j] < wk[fo + s, j]:
                s = q
        if wk[fo + s, j] >= _UNREACHABLE:  # some element of this lane had no admissible level
            bad += 1
            s = -1
        cur[j] = s
        maxe[j] = 0.0
    for t in range(rows - 1, -1, -1):
        jn = min(LANES, ng - LANES * t)
        base = start + LANES * t
        if jn == LANES:
            _back_row(t, base, LANES, cur, pk, rix, back, u, maxe)
        else:
            _back_row(t, base, jn, cur, pk, rix, back, u, maxe)
    maxerr = 0.0
    for j in range(nl):
        maxerr = max(maxerr, maxe[j])
    return maxerr, bad


@numba.njit(nogil=True, cache=True)
def _groups_tab(x, g0, g1, lane_symbols, remap, cst, back, u, stats):
    """``_groups`` of the table path."""
    n = x.size
    gsize = LANES * lane_symbols
    wk = np.zeros((16 + 8, LANES), np.float64)  # (zeros: a partial row's last lanes read candidates never set)
    cur = np.empty(LANES, np.int64)
    maxe = np.empty(LANES, np.float64)
    pk = np.empty((lane_symbols, LANES), np.uint16)
    rix = np.empty((lane_symbols, LANES), np.uint16)
    for g in range(g0, g1):
        start = g * gsize
        ng = min(n, start + gsize) - start
        me, bad = _group_tab(x, start, ng, remap, cst, back, u, wk, cur, pk, rix, maxe)
        stats[g, 0] = me
        stats[g, 1] = bad


@numba.njit(parallel=True, nogil=True, cache=True)
def _quantize_tab(x, lane_symbols, remap, cst, back, u):
    gsize = LANES * lane_symbols
    G = (x.size + gsize - 1) // gsize
    stats = np.zeros((G, 2), np.float64)
    for g in prange(G):
        _groups_tab(x, np.int64(g), np.int64(g) + 1, lane_symbols, remap, cst, back, u, stats)
    return stats


_quantize_tab_serial = serial_twin(_quantize_tab)



@numba.njit(parallel=True, nogil=True, cache=True)
def _q0_hist(x, step, center):
    """The first pass's model input: the fine ans token histogram (``rans_model.fine_histogram``'s bins, one
    row per block) of the zigzag symbols of plain Q0 rounding, k = rint((x / Δ − center) / 2) clipped to
    |k| < 2^24 (what the trellis mostly picks). One pass over ``x``, no symbol array; blocks in parallel."""
    lim = MAX_SYMBOL_MAGNITUDE - 1
    n = x.size
    nb_ = (n + _Q0_BLOCK - 1) // _Q0_BLOCK
    part = np.zeros((nb_, FINE_K), np.int64)
    for b in prange(nb_):
        for i in range(b * _Q0_BLOCK, min(n, (b + 1) * _Q0_BLOCK)):
            k = np.rint((f64_of(x[i]) / step - center) * 0.5)
            k = min(max(k, -lim), lim)
            ki = np.int64(k)
            tok, nb, r = _token((ki << 1) ^ (ki >> 63), FINE_S, FINE_M)
            part[b, tok] += 1
    return part


_q0_hist_serial = serial_twin(_q0_hist)


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
             bound: float | None = None, strict: bool = False, passes: int = PASSES, build_model=None) -> DQResult:
    """Indices (as zigzag symbols ``u``) of flat ``x`` under DQ with step Δ = ``step``; a bf16 ``x`` may be
    given as its uint16 bits (``quant.bf16_bits``: read without a float32 copy).

    ``bound``: the largest |x - x̂| allowed (default 1.5 Δ, with the output dtype's rounding slack unless
    ``strict``). ``n_bad``: lanes where some element had no level within the bound (the caller shrinks the
    step or stores the tensor exactly; the symbols of those lanes are left unwritten). For F16 the values
    and the bound are those after the rounding to F16. ``u`` is uint32, or uint16 (a bf16 tensor of at least
    ``TABLE_MIN`` elements whose every choosable symbol fits). ``build_model``: what models the symbols of each
    pass (default ``rans.build_model``; the encoder passes ``pipeline.ans_model.build_model``, the same model
    in one compiled call for small tensors).
    """
    r = DQResult()
    build_model = rans.build_model if build_model is None else build_model
    mode = MODE_OF_DTYPE[dtype]
    bound = BOUND_FACTOR * step if bound is None else bound
    rel, ab = (0.0, 0.0) if strict else ROUNDING[dtype]
    with np.errstate(over="ignore"):  # float64 steps beyond binary32 (F64 tensors use the float64 one)
        step32 = np.float32(step)
    # bf16 bits: each distinct value's costs once, in tables (_value_tables); else every element's in the search
    tab = dtype == "BF16" and x.dtype == np.uint16 and x.size >= TABLE_MIN
    if tab:
        parts = max(1, min(2 * numba.get_num_threads(), -(-x.size // _Q0_BLOCK)))
        counts = launch(_value_counts, _value_counts_serial, x, parts, work=x.size)
        vals = np.flatnonzero(counts).astype(np.uint16)
        remap = np.zeros(_N_BF16, np.uint16)
        remap[vals] = np.arange(vals.size, dtype=np.uint16)
        hist = _q0_hist_of_values(vals, counts[vals], float(step), np.int64(center))
    else:
        # pass 0: the model of plain Q0 rounding (k = round(v / 2)), whose symbols are what the first
        # trellis will mostly pick (their histogram only: the trellis writes every symbol of a lane with a path)
        hist = launch(_q0_hist, _q0_hist_serial, x, float(step), np.int64(center), work=x.size).sum(axis=0)
    u = None if tab else np.empty(x.size, np.uint32)
    for p in range(passes):
        model, _bits_ = build_model(None if p == 0 else u, hist=hist if p == 0 else None)
        tokbits = token_bits(model)
        rate = _rate_table(float(c), tokbits, model.s, model.m, _RATE_TABLE)
        # a later pass writes its symbols over the ones its model came from (read only by build_model)
        if tab:
            cst, back, umax = _value_tables(vals, np.int64(center), mode, step32, float(step), float(c),
                                            float(bound), rel, ab, rate, tokbits, model.s, model.m)
            if u is None:  # uint16 symbols where every symbol the search can choose fits (half the memory)
                u = np.empty(x.size, np.uint16 if umax < (1 << 16) else np.uint32)
            st = launch(_quantize_tab, _quantize_tab_serial, x, lane_symbols, remap, cst, back, u, work=x.size)
        else:
            st = launch(_quantize, _quantize_serial, x, lane_symbols, np.int64(center), mode, step32,
                        float(step), float(c), float(bound), rel, ab, dtype == "F16", rate, tokbits, model.s,
                        model.m, u, work=x.size)
        r.n_bad = int(st[:, 1].sum()) if st.size else 0
        r.max_error = float(st[:, 0].max()) if st.size else 0.0
        if r.n_bad:
            break
    r.u = u
    return r
