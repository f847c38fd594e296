"""``ggd.fit`` of many small tensors at once (issue 19): the shape's 62 bisection steps run on every tensor
together, three ``gammaln`` calls a step on arrays instead of three a tensor, so a 4,096-element tensor's fit
costs its moments (~20 us) rather than ~65 us.

The same floats as ``ggd.fit`` tensor by tensor (tests/test_small_save.py compares them): the moments are
computed as it computes them (numpy's reductions on the same values); each step takes the same
``sqrt`` (correctly rounded either way), scipy's ``gammaln`` elementwise (the same function per element) and
``math.exp`` of each element (not numpy's ``exp``, whose SIMD loops may round differently).
"""

from __future__ import annotations

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import math

import numba
import numpy as np

from ..quantize import ggd
from ..quantize.quant import f64_of
from .gridpoints import PAIRWISE_WIDE_MAX, pairwise_wide

COMPILED = True  # the moments of small tensors by _moments_many (one call a dtype); False: _moments one by one


def _moments(x: np.ndarray):
    """(target ratio, m2, big) as ``ggd.fit`` computes them, or the fit itself where it ends early (a change
    to ``ggd.fit``'s moments must come here too: the test of ``fit_many`` says where they part)."""
    s = ggd.sample(x)
    big = float(np.max(np.abs(s))) if s.size else 0.0
    if not big > 0 or not math.isfinite(big):
        return 2.0, 0.0
    s = s / big
    s = s - s.mean()
    m1 = np.abs(s).mean()
    m2 = (s * s).mean()
    if not m1 > 0:
        return 2.0, 0.0
    return m2 / (m1 * m1), m2, big


@numba.njit(nogil=True, cache=True)  # (nogil: the encoder runs the fits beside the allocation)
def _moments_kernel(buf, lo, hi, target, m2s, bigs, full):
    """``_moments`` of each ``buf[lo[i]:hi[i]]`` (1 to ``PAIRWISE_WIDE_MAX`` elements: its whole sample):
    ``full[i]`` False where ``_moments`` ends early ((2.0, 0.0)), else its (target, m2, big). The same
    operations: float64 of each element, the largest magnitude (NaN if any is NaN, as ``np.max``), the
    elementwise division, subtraction, ``abs`` and product, and each mean as numpy's sum in its pairwise
    order (``0.0 +``: its start) divided by the count."""
    s = np.empty(max(1, (hi - lo).max()))
    t = np.empty(s.size)
    for i in range(lo.size):
        n = hi[i] - lo[i]
        big, nan = 0.0, False
        for j in range(n):
            v = f64_of(buf[lo[i] + j])
            s[j] = v
            a = abs(v)
            nan = nan or np.isnan(a)
            big = max(big, a)
        if nan:
            big = np.nan
        full[i] = False
        if not big > 0 or not np.isfinite(big):
            continue
        for j in range(n):
            s[j] = s[j] / big
        mean = (0.0 + pairwise_wide(s, 0, n)) / n
        for j in range(n):
            s[j] = s[j] - mean
        for j in range(n):
            t[j] = abs(s[j])
        m1 = (0.0 + pairwise_wide(t, 0, n)) / n
        for j in range(n):
            t[j] = s[j] * s[j]
        m2 = (0.0 + pairwise_wide(t, 0, n)) / n
        if not m1 > 0:
            continue
        full[i] = True
        target[i], m2s[i], bigs[i] = m2 / (m1 * m1), m2, big
    return 0


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.uint16))  # (uint16: bf16 bits)


def _moments_many(xs: list) -> list:
    """``[_moments(x) for x in xs]``: the tensors of 1 to ``PAIRWISE_WIDE_MAX`` elements (sampled whole by
    ``ggd.sample``) in one ``_moments_kernel`` call per dtype, the others one by one."""
    out = [None] * len(xs)
    groups = {}
    for i, x in enumerate(xs):
        if COMPILED and x.dtype in _KERNEL_DTYPES and 0 < x.size <= min(PAIRWISE_WIDE_MAX, ggd.FIT_SAMPLES):
            groups.setdefault(x.dtype, []).append(i)
        else:
            out[i] = _moments(x)
    for idx in groups.values():
        flats = [xs[i].reshape(-1) for i in idx]
        sizes = np.array([f.size for f in flats], np.int64)
        hi = np.cumsum(sizes)
        lo = hi - sizes
        k = len(idx)
        target, m2, big, full = np.empty(k), np.empty(k), np.empty(k), np.empty(k, np.bool_)
        _moments_kernel(np.concatenate(flats), lo, hi, target, m2, big, full)
        for j, i in enumerate(idx):
            out[i] = (float(target[j]), float(m2[j]), float(big[j])) if full[j] else (2.0, 0.0)
    return out


def _ratios(nu: np.ndarray) -> np.ndarray:
    """``ggd._moment_ratio`` of each element."""
    g = ggd._gammaln()
    v = g(1 / nu) + g(3 / nu) - 2 * g(2 / nu)
    return np.array([math.exp(t) for t in v.tolist()])


def fit_many(xs: list) -> list:
    """``[ggd.fit(x) for x in xs]``."""
    out = [None] * len(xs)
    todo = []
    for i, got in enumerate(_moments_many(xs)):
        if len(got) == 2:
            out[i] = got
        else:
            todo.append((i,) + got)
    if not todo:
        return out
    target = np.array([float(t[1]) for t in todo])
    edge_lo, edge_hi = _ratios(np.array([ggd.NU_MIN])), _ratios(np.array([ggd.NU_MAX]))
    lo = np.full(len(todo), ggd.NU_MIN)
    hi = np.full(len(todo), ggd.NU_MAX)
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        above = _ratios(mid) > target
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    nu = np.sqrt(lo * hi).tolist()
    from scipy import special

    for j, (i, t, m2, big) in enumerate(todo):
        if t >= edge_lo[0]:
            n = ggd.NU_MIN
        elif t <= edge_hi[0]:
            n = ggd.NU_MAX
        else:
            n = nu[j]
        alpha = math.sqrt(m2 * math.exp(special.gammaln(1 / n) - special.gammaln(3 / n)))
        out[i] = (n, min(alpha * big, float(np.finfo(np.float64).max)))
    return out
