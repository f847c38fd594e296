"""The statistics of the allocation's small samples that its rounding kernels take as given (issue 19): each
sample's sum in ``allocation._round_into``'s serial order, its smallest and largest value, and whether every
value is finite, in one pass over all samples (``gridpoints.sums`` and ``gridpoints.extremes``, the reference,
read them twice, as float64).

A sample's sum is one serial chain of float64 additions (~4 cycles an element); here the chains of up to four
samples of one length run side by side, each still added in its own order, so each sum is the reference's
float. The samples may be float32 (where every value is one, as ``round_many_fast`` reads them): converted to
float64 exactly, so the same numbers. nogil: ``allocation._split_call`` runs ranges of samples side by side.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

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
    ``ok[i]`` whether it is non-empty and finite (``gridpoints.extremes``' ``ok``). Each sample's running
    sum, minimum and maximum are taken element by element in its own order, as the reference takes them (so
    the same floats, a zero's sign included); the finiteness from the sum: a finite sum has only finite
    terms, else each value is looked at."""
    n = lo.size
    i = 0
    while i < n:
        m = hi[i] - lo[i]
        if i + 4 <= n and hi[i + 1] - lo[i + 1] == m and hi[i + 2] - lo[i + 2] == m and hi[i + 3] - lo[i + 3] == m:
            # four samples of one length: four independent chains, each in its own serial order
            a0, a1, a2, a3 = lo[i], lo[i + 1], lo[i + 2], lo[i + 3]
            s_0, s_1, s_2, s_3 = 0.0, 0.0, 0.0, 0.0
            l0, l1, l2, l3 = np.inf, np.inf, np.inf, np.inf
            h0, h1, h2, h3 = -np.inf, -np.inf, -np.inf, -np.inf
            for t in range(m):
                v0, v1, v2, v3 = np.float64(xs[a0 + t]), np.float64(xs[a1 + t]), np.float64(xs[a2 + t]), \
                    np.float64(xs[a3 + t])
                s_0 += v0
                s_1 += v1
                s_2 += v2
                s_3 += v3
                l0, l1, l2, l3 = min(l0, v0), min(l1, v1), min(l2, v2), min(l3, v3)
                h0, h1, h2, h3 = max(h0, v0), max(h1, v1), max(h2, v2), max(h3, v3)
            s0[i], s0[i + 1], s0[i + 2], s0[i + 3] = s_0, s_1, s_2, s_3
            xmin[i], xmin[i + 1], xmin[i + 2], xmin[i + 3] = l0, l1, l2, l3
            xmax[i], xmax[i + 1], xmax[i + 2], xmax[i + 3] = h0, h1, h2, h3
            for j in range(i, i + 4):
                ok[j] = m > 0 and (np.isfinite(s0[j]) or _finite(xs, lo[j], hi[j]))
            i += 4
        else:
            s0[i], xmin[i], xmax[i], fin = _one(xs, lo[i], hi[i])
            ok[i] = fin and m > 0
            i += 1


@numba.njit
def _finite(xs, a, b):
    """Whether every value of xs[a:b] is finite."""
    for t in range(a, b):
        if not np.isfinite(np.float64(xs[t])):
            return False
    return True
