"""Generalized-Gaussian (GG) model of a tensor and the exp-Golomb order it implies.

Density: f(x) = nu / (2 alpha Gamma(1/nu)) * exp(-(|x| / alpha)^nu).
The shape is fitted by moment matching (Sharifi & Leon-Garcia 1995): the ratio E[x^2] / E[|x|]^2 equals
Gamma(1/nu) Gamma(3/nu) / Gamma(2/nu)^2, which falls monotonically in nu; we invert it by bisection.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import math

import numba
import numpy as np

from ..container.limits import MAX_EG_ORDER
from .quant import f64_of

NU_MIN, NU_MAX = 0.05, 8.0
FIT_SAMPLES = 1 << 20  # a deterministic strided sample of at most this many elements


_GAMMALN = []  # scipy.special.gammaln, imported on first use: keeps `import bslcodec` light


def _gammaln():
    if not _GAMMALN:
        from scipy.special import gammaln

        _GAMMALN.append(gammaln)
    return _GAMMALN[0]


def _moment_ratio(nu: float) -> float:
    # called ~60 times a fit: the import statement alone was ~40 % of a call
    g = _GAMMALN[0] if _GAMMALN else _gammaln()
    return math.exp(g(1 / nu) + g(3 / nu) - 2 * g(2 / nu))


@numba.njit(nogil=True, cache=True)
def _strided_f64(x, stride):
    """float64 of every ``stride``-th element of ``x`` (bf16 bits widened exactly: ``quant.f64_of``)."""
    out = np.empty((x.size + stride - 1) // stride, np.float64)
    for i in range(out.size):
        out[i] = f64_of(x[i * stride])
    return out


def sample(x: np.ndarray) -> np.ndarray:
    """Every ``stride``-th element as float64; ``x`` may be the uint16 bits of bf16 values (quant.bf16_bits)."""
    flat = x.reshape(-1)
    stride = max(1, flat.size // FIT_SAMPLES)
    if flat.dtype == np.uint16 and flat.flags.c_contiguous:  # bf16 bits: one array, no uint32/float32 steps
        return _strided_f64(flat, stride)
    s = flat[::stride]
    if s.dtype == np.uint16:  # bf16 bits: the top half of the binary32 (exact)
        s = (s.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return s.astype(np.float64)


def fit(x: np.ndarray) -> tuple:
    """(nu, alpha) of the zero-mean GG fitted to ``x - mean(x)``; (2.0, 0.0) for a constant tensor. ``x``
    may be the uint16 bits of bf16 values (``quant.bf16_bits``)."""
    s = sample(x)  # (a fresh array: the steps below write into it and one scratch array, no temporaries)
    tmp = np.abs(s)
    big = float(np.max(tmp)) if s.size else 0.0
    if not big > 0 or not math.isfinite(big):
        return 2.0, 0.0
    np.divide(s, big, out=s)  # values up to 1e308 (float64): sums and squares would overflow
    np.subtract(s, s.mean(), out=s)
    m1 = np.abs(s, out=tmp).mean()
    m2 = np.multiply(s, s, out=tmp).mean()
    if not m1 > 0:
        return 2.0, 0.0
    target = m2 / (m1 * m1)
    lo, hi = NU_MIN, NU_MAX
    if target >= _moment_ratio(lo):
        nu = lo
    elif target <= _moment_ratio(hi):
        nu = hi
    else:
        for _ in range(60):
            mid = math.sqrt(lo * hi)
            if _moment_ratio(mid) > target:
                lo = mid
            else:
                hi = mid
        nu = math.sqrt(lo * hi)
    from scipy import special

    alpha = math.sqrt(m2 * math.exp(special.gammaln(1 / nu) - special.gammaln(3 / nu)))
    return nu, min(alpha * big, float(np.finfo(np.float64).max))


def symbol_probabilities(nu: float, alpha: float, step: float, max_symbol: int = 1 << 16) -> np.ndarray:
    """P(q = i) for i = 0, ±1, ... under GG(nu, alpha) quantized with ``step``, as p[|i|] (two-sided mass
    for i != 0 split evenly: p[i] is the mass of +i alone); the tail beyond max_symbol folds onto it."""
    if alpha <= 0 or step <= 0:
        p = np.zeros(2)
        p[0] = 1.0
        return p
    # Enough symbols to hold all but ~1e-12 of the mass, capped.
    tail = (alpha / step) * (30.0 ** (1 / nu))  # in steps; inf for float64 tensors near 1e308
    m = max_symbol if not tail < max_symbol else int(max(2, math.ceil(tail) + 1))
    from scipy import stats

    with np.errstate(over="ignore"):  # edges past float64 (steps near 1e308) are +inf: cdf 1
        edges = (np.arange(m + 1) + 0.5) * step
    cdf = stats.gennorm.cdf(edges, nu, scale=alpha)
    p = np.empty(m + 1)
    p[0] = 2 * cdf[0] - 1
    p[1:] = np.diff(cdf)
    p[m] += 1 - cdf[-1]
    return np.maximum(p, 0)


def expected_bits(nu: float, alpha: float, step: float, k: int) -> float:
    """Expected EG-k code length (bits/symbol) of zigzag-mapped GG symbols."""
    p = symbol_probabilities(nu, alpha, step)
    i = np.arange(p.size, dtype=np.float64)
    # zigzag: +i -> 2i, -i -> 2i - 1 (i > 0); lengths 2*floor(log2(u + 2^k)) - k + 1
    def length(u):
        return 2 * np.floor(np.log2(u + 2.0**k)) - k + 1
    pos = length(2 * i)
    neg = length(np.maximum(2 * i - 1, 0))
    return float(p[0] * pos[0] + (p[1:] * (pos[1:] + neg[1:])).sum())


def entropy_bits(nu: float, alpha: float, step: float) -> float:
    """Entropy (bits/symbol) of the quantized GG symbols: the bound any coder of them meets."""
    p = symbol_probabilities(nu, alpha, step)
    full = np.concatenate([p[:1], p[1:], p[1:]])
    full = full[full > 0]
    return float(-(full * np.log2(full)).sum())


def best_order(nu: float, alpha: float, step: float) -> int:
    """The EG order with the smallest expected length under the fitted GG."""
    if alpha <= 0:
        return 0
    guess = int(np.clip(round(math.log2(min(max(alpha / step, 1.0), 2.0**MAX_EG_ORDER))), 0, MAX_EG_ORDER))
    cands = range(max(0, guess - 3), min(MAX_EG_ORDER, guess + 3) + 1)
    return min(cands, key=lambda k: expected_bits(nu, alpha, step, k))
