"""Numba kernels of the dq rate estimate on CPU (:class:`bslcodec.torch.rate_dq.DQRate`): the same four
passes over the flat layout ``F`` [rows, ROW] as the Triton kernels of :mod:`bslcodec.torch.rate_dq_triton`
(moments; histogram; slopes and their sum with ``w``; the gradient in place), one loop each for all covered
tensors. The eager torch path needs ~30 passes and int64 index tensors for the same numbers.

The arithmetic is the eager path's, in float32 and in the same order (no fastmath: a weight moved across a
bin edge by a contracted multiply-add would change its slope); the sums of the moments and of G·w are
float64, in another order than torch's (differences of ~1e-16 relative). Launched through
:func:`bslcodec.parallel.launch` (rows in parallel; the histogram by tensor, so no two threads add to
one tensor's counts).
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np
from numba import prange

from ..codecs import rans
from ..parallel import launch, serial_twin
from .rate_dq import HALF_BINS
from .rate_eg import PARALLEL_MIN, _keep_torch_threads

_K = HALF_BINS
_NB = 2 * HALF_BINS + 1
_FINE_S, _FINE_M = rans.FINE_S, rans.FINE_M


@numba.njit(inline="always")
def _pos(w, iv, ce, s):
    """P0, P1 (float32): v = w iv - ce; y0 = v s, y1 = (v + sgn v) s, clamped to [-K, K]."""
    k = np.float32(_K)
    v = w * iv - ce
    sg = np.float32(v > 0) - np.float32(v < 0)
    p0 = min(max(v * s, -k), k)
    p1 = min(max((v + sg) * s, -k), k)
    return p0, p1


@numba.njit(inline="always")
def _floor_index(p):
    """floor(p) capped at K - 1, plus K (p in [-K, K]): the left bin center of a slope. int() truncates
    (a libm floor call per element costs ~2x the whole loop)."""
    i = int(p)
    i -= p < i  # truncation rounds a negative non-integer up
    return min(i, _K - 1) + _K  # in [0, 2K - 1]


@numba.njit(parallel=True, cache=True)
def _moments(F, out):
    for r in prange(F.shape[0]):
        s1 = 0.0
        s2 = 0.0
        for i in range(F.shape[1]):
            w = F[r, i]
            s1 += np.float64(w)
            s2 += np.float64(w * w)
        out[r, 0] = s1
        out[r, 1] = s2


@numba.njit(parallel=True, cache=True)
def _hist(F, row0, row1, row_valid, inv, cen, sc, hist):
    half = np.float32(_K + 0.5)
    for t in prange(row0.size):
        iv, ce, s = inv[t], cen[t], sc[t]
        h = hist[t]
        for r in range(row0[t], row1[t]):
            row = F[r]
            for i in range(row_valid[r]):
                p0, p1 = _pos(row[i], iv, ce, s)
                h[int(p0 + half)] += 1  # histc's bin floor(P + K + 0.5) in float32; P + K + 0.5 > 0
                h[int(p1 + half)] += 1


@numba.njit(parallel=True, cache=True)
def _slopes(F, row_t, row_valid, inv, cen, sc, S, gscale, G, gw):
    for r in prange(F.shape[0]):
        t = row_t[r]
        iv, ce, s, gs = inv[t], cen[t], sc[t], gscale[t]
        St, row, Gr = S[t], F[r], G[r]
        acc = 0.0
        for i in range(row_valid[r]):
            w = row[i]
            p0, p1 = _pos(w, iv, ce, s)
            i0 = _floor_index(p0)
            i1 = _floor_index(p1)
            g = (St[i0] + St[i1]) * gs
            Gr[i] = g
            acc += np.float64(g * w)
        for i in range(row_valid[r], F.shape[1]):
            Gr[i] = 0.0
        gw[r] = acc


@numba.njit(parallel=True, cache=True)
def _gradient(F, G, row_t, scale, beta, mean):
    for r in prange(F.shape[0]):
        t = row_t[r]
        be, mu = beta[t], mean[t]
        for i in range(F.shape[1]):
            G[r, i] = G[r, i] * scale - (F[r, i] - mu) * be


@numba.njit(inline="always")
def _token(y):
    """The ans coder's fine token (``rate_dq._tokens``) of the index round(y) (half to even, |y| <= 2^23)."""
    k = np.int64(np.rint(min(max(y, -8388608.0), 8388608.0)))
    u = 2 * k if k >= 0 else -2 * k - 1
    if u < (1 << _FINE_S):
        return u
    e = _FINE_S
    while (u >> (e + 1)) > 0:  # floor(log2 u)
        e += 1
    return (1 << _FINE_S) + ((e - _FINE_S) << _FINE_M) + ((u >> max(e - _FINE_M, 0)) - (1 << _FINE_M))


@numba.njit(parallel=True, cache=True)
def _token_hist(F, row0, row1, row_valid, step, center, hist):
    for t in prange(row0.size):
        st, ce = step[t], center[t]
        h = hist[t]
        for r in range(row0[t], row1[t]):
            row = F[r]
            for i in range(row_valid[r]):
                v = np.float64(row[i]) / st - ce
                sg = np.float64(v > 0) - np.float64(v < 0)
                h[_token(0.5 * v)] += 1
                h[_token(0.5 * (v + sg))] += 1


_moments_serial = serial_twin(_moments)
_token_hist_serial = serial_twin(_token_hist)
_hist_serial = serial_twin(_hist)
_slopes_serial = serial_twin(_slopes)
_gradient_serial = serial_twin(_gradient)


def _run(kernel, serial, *args, work):
    if work < PARALLEL_MIN:  # waking the thread pool costs more than the loop (on a busy machine, far more)
        return serial(*args)
    with _keep_torch_threads():
        return launch(kernel, serial, *args, work=work)


def row_moments(F: np.ndarray) -> np.ndarray:
    """[R, 2] float64: per row sum w, sum w² (squares in float32, sums in float64)."""
    out = np.empty((F.shape[0], 2))
    _run(_moments, _moments_serial, F, out, work=F.size)
    return out


def histogram(F, row0, row1, row_valid, inv, cen, sc) -> np.ndarray:
    """[T, 2K+1] int64 counts of round(P0) and round(P1) of the real elements (histc's bins)."""
    hist = np.zeros((row0.size, _NB), dtype=np.int64)
    _run(_hist, _hist_serial, F, row0, row1, row_valid, inv, cen, sc, hist, work=F.size)
    return hist


def token_histogram(F, row0, row1, row_valid, step, center) -> np.ndarray:
    """[T, FINE_K] int64: the fine token histogram of both index coordinates of the real elements (refresh,
    ``calibrate="hist"``), in float64 as ``DQRate.hist_bits``'s eager path computes it."""
    hist = np.zeros((row0.size, rans.FINE_K), dtype=np.int64)
    _run(_token_hist, _token_hist_serial, F, row0, row1, row_valid, step, center, hist, work=F.size)
    return hist


def slopes(F, row_t, row_valid, inv, cen, sc, L, gscale):
    """(G float32 [R, ROW], 0 on padding; per-row sum G·w float64 [R]). ``L`` [T, 2K+1] float32: code
    lengths per bin; the kernel reads its differences (bits per bin, [T, 2K]: one look-up a coordinate)."""
    S = np.ascontiguousarray(L[:, 1:] - L[:, :-1])
    G = np.empty_like(F)
    gw = np.empty(F.shape[0])
    _run(_slopes, _slopes_serial, F, row_t, row_valid, inv, cen, sc, S, gscale, G, gw, work=F.size)
    return G, gw


def gradient(F, G, row_t, scale, beta, mean) -> None:
    """G <- scale G - beta[t] (F - mean[t]) in place."""
    _run(_gradient, _gradient_serial, F, G, row_t, np.float32(scale), beta, mean, work=F.size)

