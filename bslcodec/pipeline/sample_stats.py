"""The statistics of the allocation's small samples that its rounding kernels take as given (issue 19): each
sample's sum in ``allocation._round_into``'s serial order, its smallest and largest value, and whether every
value is finite, in one pass over all samples (``gridpoints.sums`` and ``gridpoints.extremes``, the reference,
read them twice, as float64).

A sample's sum is one serial chain of float64 additions (~4 cycles an element); here the chains of up to four
samples of one length run side by side, each still added in its own order, so each sum is the reference's
float. The samples may be float32 (where every value is one, as ``round_many_fast`` reads them): converted to
float64 exactly, so the same numbers. nogil: ``allocation._split_call`` runs ranges of samples side by side.
"""

import numba
import numpy as np


@numba.njit(inline="always")
def _one(xs, a, b):
    """(sum, smallest, largest, all finite) of xs[a:b], as gridpoints.sums and gridpoints.extremes take them."""
    s, lo, hi, fin = 0.0, np.inf, -np.inf, True
    for t in range(a, b):
        v = np.float64(xs[t])
        s += v
        fin = fin and np.isfinite(v)
        lo = min(lo, v)
        hi = max(hi, v)
    return s, lo, hi, fin


@numba.njit(nogil=True, cache=True)
def sums_extremes(xs, lo, hi, s0, xmin, xmax, ok):
    """For each sample ``xs[lo[i]:hi[i]]``: ``s0[i]`` its serial sum, ``xmin[i]``/``xmax[i]`` its extremes,
    ``ok[i]`` whether it is non-empty and finite (``gridpoints.extremes``' ``ok``)."""
    n = lo.size
    i = 0
    while i < n:
        m = hi[i] - lo[i]
        if i + 4 <= n and hi[i + 1] - lo[i + 1] == m and hi[i + 2] - lo[i + 2] == m and hi[i + 3] - lo[i + 3] == m:
            # four samples of one length: four independent chains, each in its own serial order
            a0, a1, a2, a3 = lo[i], lo[i + 1], lo[i + 2], lo[i + 3]
            s_0, s_1, s_2, s_3 = 0.0, 0.0, 0.0, 0.0
            for t in range(m):
                s_0 += np.float64(xs[a0 + t])
                s_1 += np.float64(xs[a1 + t])
                s_2 += np.float64(xs[a2 + t])
                s_3 += np.float64(xs[a3 + t])
            s0[i], s0[i + 1], s0[i + 2], s0[i + 3] = s_0, s_1, s_2, s_3
            for j in range(i, i + 4):  # (min/max/finite: no chain, the order does not matter)
                _, xmin[j], xmax[j], fin = _extremes(xs, lo[j], hi[j])
                ok[j] = fin and m > 0
            i += 4
        else:
            s0[i], xmin[i], xmax[i], fin = _one(xs, lo[i], hi[i])
            ok[i] = fin and m > 0
            i += 1


@numba.njit(inline="always")
def _extremes(xs, a, b):
    lo, hi, fin = np.inf, -np.inf, True
    for t in range(a, b):
        v = np.float64(xs[t])
        fin = fin and np.isfinite(v)
        lo = min(lo, v)
        hi = max(hi, v)
    return 0.0, lo, hi, fin
