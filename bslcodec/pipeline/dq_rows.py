"""``dq_search._group`` (the dq trellis of one group of 32 lanes) laid out as ``dq_search._group_tab`` lays
out the bf16 table path, for the small tensors of ``dq_batch`` (issue 19's per-tensor cost).

``_group`` keeps its costs, next costs and candidate costs in separate arrays and reads each state's
predecessors from a table, so its 8 state updates a row are loops whose arrays may overlap (as far as the
compiler knows) and run one lane at a time. Here, as in ``_group_tab``: the candidates of a row
(``_row_dists`` + ``_row_rates``, the same code) are copied into rows 16.. of one buffer that also holds the
costs (two sets of 8 rows, used in turn), the 8 updates are ``dq_search._state`` with constant
predecessors, the choices packed 2 bits a state, and the traceback is ``_group``'s own. The same sums,
compared in the same order, so the same symbols, largest error and lanes without a path;
tests/test_dq_batch.py compares it with ``dq_search._quantize_serial``.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import math

import numba
import numpy as np

from ..codecs.dq_search import (
    _UNREACHABLE,
    PRED_P,
    PRED_S,
    _bits,
    _kc,
    _row_dists,
    _state,
)
from ..container.limits import LANES
from ..quantize.dq import N_STATES, level
from ..quantize.quant import _dequant, f64_of


@numba.njit(inline="always")
def _updates(t, co, no, wk, pk):
    """The row's 8 state updates, costs from rows ``co``.. to rows ``no``.. (each a constant where inlined)."""
    _state(t, 0, PRED_S[0, 0], PRED_S[0, 1], PRED_P[0, 0], PRED_P[0, 1], co, no, wk, pk, LANES)
    _state(t, 1, PRED_S[1, 0], PRED_S[1, 1], PRED_P[1, 0], PRED_P[1, 1], co, no, wk, pk, LANES)
    _state(t, 2, PRED_S[2, 0], PRED_S[2, 1], PRED_P[2, 0], PRED_P[2, 1], co, no, wk, pk, LANES)
    _state(t, 3, PRED_S[3, 0], PRED_S[3, 1], PRED_P[3, 0], PRED_P[3, 1], co, no, wk, pk, LANES)
    _state(t, 4, PRED_S[4, 0], PRED_S[4, 1], PRED_P[4, 0], PRED_P[4, 1], co, no, wk, pk, LANES)
    _state(t, 5, PRED_S[5, 0], PRED_S[5, 1], PRED_P[5, 0], PRED_P[5, 1], co, no, wk, pk, LANES)
    _state(t, 6, PRED_S[6, 0], PRED_S[6, 1], PRED_P[6, 0], PRED_P[6, 1], co, no, wk, pk, LANES)
    _state(t, 7, PRED_S[7, 0], PRED_S[7, 1], PRED_P[7, 0], PRED_P[7, 1], co, no, wk, pk, LANES)


@numba.njit(inline="always")
def _rates_into(jn, lam, rate, tokbits, s_tok, m_tok, dist, kk, wk):
    """``_row_rates`` into rows 16 + 3q (dpe), 17 + 3q (dpo), 18 + 3q (dz) of ``wk``: the same sums, the
    indices within the table in a loop without the rare exact costing (which vectorizes), then those beyond
    it, costed exactly as there."""
    last = rate.size - 1
    half = rate.size // 2
    r0 = rate[half]
    for q1 in range(2):
        out = 0
        for j in range(jn):
            k = kk[q1, j]
            i = k + half
            inside = np.uint64(i) < np.uint64(last)
            out += not inside
            i = i if inside else 0
            c0 = dist[2 * q1, j] + rate[i]
            c1 = dist[2 * q1 + 1, j] + rate[i + 1]
            odd = (k & 1) == 1
            wk[16 + 3 * q1, j] = c1 if odd else c0
            wk[17 + 3 * q1, j] = c0 if odd else c1
            wk[18 + 3 * q1, j] = math.inf if (k == 0) | (k == -1) else dist[4, j] + r0
        if out:
            for j in range(jn):
                k = kk[q1, j]
                if not np.uint64(k + half) < np.uint64(last):
                    c0 = dist[2 * q1, j] + lam * _bits(k, tokbits, s_tok, m_tok)
                    c1 = dist[2 * q1 + 1, j] + lam * _bits(k + 1, tokbits, s_tok, m_tok)
                    odd = (k & 1) == 1
                    wk[16 + 3 * q1, j] = c1 if odd else c0
                    wk[17 + 3 * q1, j] = c0 if odd else c1


@numba.njit(inline="always")
def _dists(x, base, jn, center, mode, step32, step64, inv, bound, slack_rel, slack_abs, f16, dist, kk):
    """``_row_dists`` with ``mode`` and ``f16`` as constants (one copy each: no branch on them per element)."""
    if f16:
        _row_dists(x, base, jn, center, mode, step32, step64, inv, bound, slack_rel, slack_abs, True, dist, kk)
    elif mode == 0:
        _row_dists(x, base, jn, center, 0, step32, step64, inv, bound, slack_rel, slack_abs, False, dist, kk)
    elif mode == 1:
        _row_dists(x, base, jn, center, 1, step32, step64, inv, bound, slack_rel, slack_abs, False, dist, kk)
    else:
        _row_dists(x, base, jn, center, 2, step32, step64, inv, bound, slack_rel, slack_abs, False, dist, kk)


@numba.njit(nogil=True, cache=True)
def group(x, center, mode, step32, step64, lam, bound, slack_rel, slack_abs, f16, rate, tokbits, s_tok, m_tok, u,
          wk, pk, dist, kk, cur):
    """``dq_search._group`` of all of ``x`` (at most one group: ``LANES`` x ``pk.shape[0]`` elements), the
    symbols into ``u``: (largest |x - x̂|, lanes without an admissible path). ``wk``: (24, LANES) float64,
    zeroed (a partial row's last lanes read candidates never set); ``pk``: (rows, LANES) uint16; the rest
    ``_group``'s (``scratch``)."""
    ng = x.size
    inv = 1.0 / step64
    nl = min(LANES, ng)
    rows = (ng + LANES - 1) // LANES
    for s in range(N_STATES):
        for j in range(LANES):
            wk[s, j] = 0.0 if s == 0 else _UNREACHABLE
    for t in range(rows):
        base = LANES * t
        jn = min(LANES, ng - base)
        _dists(x, base, jn, center, mode, step32, step64, inv, bound, slack_rel, slack_abs, f16, dist, kk)
        _rates_into(jn, lam, rate, tokbits, s_tok, m_tok, dist, kk, wk)
        # every row updates all 32 lanes (as _group_tab: the lanes past a partial last row compute from stale
        # candidates; their choices are never read and their costs are put back below)
        if t & 1:
            _updates(t, 8, 0, wk, pk)
        else:
            _updates(t, 0, 8, wk, pk)
        if jn < LANES:
            co = 8 * (t & 1)
            for s in range(N_STATES):
                for j in range(jn, LANES):
                    wk[8 - co + s, j] = wk[co + s, j]
    fo = 8 * (rows & 1)
    bad = 0
    for j in range(nl):  # (_group's traceback, its choices from the packed bits)
        s = 0
        for q in range(1, N_STATES):
            if wk[fo + q, j] < wk[fo + s, j]:
                s = q
        if wk[fo + s, j] >= _UNREACHABLE:
            bad += 1
            s = -1
        cur[j] = s
    maxerr = 0.0
    for t in range(rows - 1, -1, -1):
        base = LANES * t
        jn = min(LANES, ng - base)
        for j in range(jn):
            s = cur[j]
            if s < 0:
                continue
            ch = (np.int64(pk[t, j]) >> (2 * s)) & 3
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


def scratch(lane_symbols: int) -> tuple:
    """(wk, pk, dist, kk, cur) for ``group``."""
    return (np.zeros((16 + 8, LANES)), np.zeros((lane_symbols, LANES), np.uint16), np.empty((5, LANES)),
            np.empty((2, LANES), np.int64), np.empty(LANES, np.int64))
