"""The per-curve steps of the allocation's lambda search (``allocation.Curve.at``, ``within``,
``bits_mse``), compiled and run over every curve of a file in one call (issue 19).

A default save of 300 small matrices spent ~420 us a tensor in the Python of these steps (~18 bisection
steps, each ~9 passes over the curves, each pass ~500 grid point look-ups a tensor). Here a pass over all
curves is one compiled call on the curves' grid points as arrays (``Grid``). The float operations are the
Python methods' own, in the same order, with the same libm functions (``math.log``, ``math.log2``, ``**``:
numba calls the C library as CPython does), and Python's ``min``/``max``/``round`` spelled out, so the
positions are the same floats (tests/test_allocation.py runs both and compares).

A pass stops a curve at the first grid point it needs that is not evaluated yet, as ``Allocation._each``
does: the caller evaluates those points (in one batch) and runs the pass again for those curves.
"""

from __future__ import annotations

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import math

import numba
import numpy as np

AT, WITHIN, BITS_MSE = 0, 1, 2
NONE = np.int64(-(1 << 40))  # no point missing


@numba.njit(inline="always")
def _point(B, D, H, c, k, k_min):
    i = k - k_min
    return B[c, i], D[c, i], H[c, i]


@numba.njit(inline="always")
def _slope(B, D, H, c, k, k_min, n, w):
    """(``Curve.slope``, missing grid point or NONE)."""
    b0, d0, h0 = _point(B, D, H, c, k, k_min)
    if not h0:
        return 0.0, k
    b1, d1, h1 = _point(B, D, H, c, k + 1, k_min)
    if not h1:
        return 0.0, k + 1
    dd = (d1 - d0) * n * w
    if dd <= 0:
        return (math.inf if b1 <= b0 else 0.0), NONE
    x = b0 - b1
    return (0.0 if 0.0 > x else x) / dd, NONE  # noqa: FURB136 - Python's max(x, 0.0), spelled out


@numba.njit(nogil=True, cache=True)  # (compiled on its own: see run_pass)
def _bits_mse(B, D, H, c, kf, k_min):
    """(bits, MSE, missing grid point or NONE) of ``Curve.bits_mse``."""
    k = np.int64(math.floor(kf))
    f = kf - k
    b0, d0, h0 = _point(B, D, H, c, k, k_min)
    if not h0:
        return 0.0, 0.0, k
    if f == 0:
        return b0, d0, NONE
    b1, d1, h1 = _point(B, D, H, c, k + 1, k_min)
    if not h1:
        return 0.0, 0.0, k + 1
    if d0 > 0 and d1 > 0:
        d = d0 * (d1 / d0) ** f
    else:
        d = d0 + f * (d1 - d0)
    return b0 + f * (b1 - b0), d, NONE


@numba.njit(nogil=True, cache=True)  # (compiled on its own: see run_pass)
def _at(B, D, H, c, lam, n, w, std2, k_min, k_max, grid, c_grid):
    """(``Curve.at(lam)``, missing grid point or NONE); ``c_grid`` = 2 ** (2 / GRID) - 1."""
    s2 = 12 / (grid * lam * w * c_grid)
    k0 = 0.0
    if s2 > 0 and math.isfinite(s2):
        k0 = np.rint(grid * 0.5 * math.log2(s2 / std2))  # Python's round: half to even
    kf = min(max(k0, float(k_min)), float(k_max - 1))
    k = np.int64(kf)
    while k < k_max - 1:
        s, miss = _slope(B, D, H, c, k, k_min, n, w)
        if miss != NONE:
            return 0.0, miss
        if not s >= lam:
            break
        k += 1
    while k > k_min:
        s, miss = _slope(B, D, H, c, k - 1, k_min, n, w)
        if miss != NONE:
            return 0.0, miss
        if not s < lam:
            break
        k -= 1
    if k == k_min or k == k_max - 1:
        return float(k), NONE
    a, miss = _slope(B, D, H, c, k - 1, k_min, n, w)
    if miss != NONE:
        return 0.0, miss
    b, miss = _slope(B, D, H, c, k, k_min, n, w)
    if miss != NONE:
        return 0.0, miss
    if not (math.isfinite(a) and a > 0 and b > 0):
        return float(k), NONE
    f = (math.log(a) - math.log(lam)) / (math.log(a) - math.log(b)) if a != b else 0.5
    f = 0.0 if 0.0 > f else f  # noqa: FURB136 - Python's max(f, 0.0) (NaN and -0.0 as it treats them)
    f = 1.0 if 1.0 < f else f  # noqa: FURB136 - then Python's min(., 1.0)
    return k - 0.5 + f, NONE


@numba.njit(nogil=True, cache=True)  # (compiled on its own: see run_pass)
def _within(B, D, H, c, cap, kf, k_min):
    """(``Curve.within(cap, kf)``, missing grid point or NONE)."""
    _, d, miss = _bits_mse(B, D, H, c, kf, k_min)
    if miss != NONE:
        return 0.0, miss
    if d <= cap:
        return kf, NONE
    k = np.int64(math.floor(kf))
    while k > k_min:
        _, dk, hk = _point(B, D, H, c, k, k_min)
        if not hk:
            return 0.0, k
        if not dk > cap:
            break
        k -= 1
    _, d0, h0 = _point(B, D, H, c, k, k_min)
    if not h0:
        return 0.0, k
    top = kf if kf < k + 1 else float(k + 1)  # Python's min(k + 1, kf)
    _, d1, miss = _bits_mse(B, D, H, c, top, k_min)
    if miss != NONE:
        return 0.0, miss
    if d0 > cap or not (d1 > d0 > 0):
        return float(k), NONE
    return k + math.log(cap / d0) / math.log(d1 / d0) * (top - k), NONE


@numba.njit(nogil=True, cache=True)
def run_pass(kind, idx, B, D, H, n, w, std2, lam, cap, kf, k_min, k_max, grid, c_grid, out, out2, miss):
    """One pass of ``kind`` over the curves ``idx``: ``AT`` (``out`` = position at ``lam``), ``WITHIN``
    (``out`` = the position at or below ``kf[c]`` within ``cap[c]``) or ``BITS_MSE`` (``out``, ``out2`` =
    bits and MSE at ``kf[c]``); ``miss[j]``: the grid point curve ``idx[j]`` lacks, or NONE. ``_at``,
    ``_within`` and ``_bits_mse`` are called, not inlined: numba's inlining copies a callee's whole scope per
    block, and the three inlined (with their own inlined ``_slope`` / ``_point``) made this kernel's compile
    take ~1.4x as long on a first run; one call per curve costs nothing measurable."""
    for j in range(idx.size):
        c = idx[j]
        if kind == AT:
            v, m = _at(B, D, H, c, lam, n[c], w[c], std2[c], k_min, k_max, grid, c_grid)
        elif kind == WITHIN:
            v, m = _within(B, D, H, c, cap[c], kf[c], k_min)
        else:
            v, d, m = _bits_mse(B, D, H, c, kf[c], k_min)
            out2[c] = d
        out[c] = v
        miss[j] = m


@numba.njit(nogil=True, cache=True)
def look(B, D, H, n, w, std2, ms, lam, ms_total, cap2, clamp, k_min, k_max, grid, c_grid, pos, b, d, miss):
    """``Allocation.positions(lam)`` and the (bits, MSE) of every curve there in one call: the ``AT`` pass,
    then (``clamp``) three times the totals' ``BITS_MSE`` pass and the ``WITHIN`` pass at the cap
    ``cap2 * (sse / ms_total) * ms[c]``, then ``BITS_MSE`` at the positions: ``pos``, ``b``, ``d``; returns
    (True, total bits) with the sums in ``allocation._sums``' order. At the first pass where some curve
    lacks a grid point it stops: ``miss[c]`` that point (NONE for the others), (False, 0.0); the caller
    evaluates them and calls again (every pass before gives the same floats again: its points are unchanged),
    so the points are asked for in the batches ``Allocation._pass`` asks for them, and the same numbers come
    out. One compiled call a search step instead of ~9 passes each with its Python (issue 19)."""
    nc = n.size
    lacking = False
    for c in range(nc):
        pos[c], miss[c] = _at(B, D, H, c, lam, n[c], w[c], std2[c], k_min, k_max, grid, c_grid)
        lacking = lacking or miss[c] != NONE
    if lacking:
        return False, 0.0
    if clamp:
        for _ in range(3):  # clamping lowers the model's error, which tightens the cap: iterate
            sse = 0.0
            for c in range(nc):
                _, dc, miss[c] = _bits_mse(B, D, H, c, pos[c], k_min)
                lacking = lacking or miss[c] != NONE
                sse += dc * n[c]
            if lacking:
                return False, 0.0
            cap_s = cap2 * (sse / ms_total)  # (Python's REL_CAP ** 2 * e2, then times each ms)
            for c in range(nc):
                b[c], miss[c] = _within(B, D, H, c, cap_s * ms[c], pos[c], k_min)
                lacking = lacking or miss[c] != NONE
            if lacking:
                return False, 0.0
            pos[:] = b
    bits = 0.0
    for c in range(nc):
        b[c], d[c], miss[c] = _bits_mse(B, D, H, c, pos[c], k_min)
        lacking = lacking or miss[c] != NONE
        bits += b[c]
    if lacking:
        return False, 0.0
    return True, bits
