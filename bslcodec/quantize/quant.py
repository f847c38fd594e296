"""Uniform quantization with a checked error bound: floats <-> zigzag symbols (spec 4.3).

Decoded value: binary32 product ``float32(q) * step`` (one rounding), then RNE to the tensor's dtype;
binary64 for F64. The encoder computes exactly that and checks every element against its bound; where
rounding breaks it, it tries the neighbouring level.

Bounds: with ``strict`` (``max_error=``) every element must meet ``|x - x̂| <= bound`` exactly; otherwise
the bound is ``step/2`` plus half a unit in the last place of the output dtype (``ROUNDING``), the
unavoidable cost of handing back values in the tensor's own dtype.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import math

import numba
import numpy as np
from numba import prange
from numba.core import types
from numba.extending import overload

from ..container.dtypes import BFLOAT16
from ..container.limits import MAX_SYMBOL_MAGNITUDE
from ..parallel import SERIAL_BELOW, launch, serial_twin

_F32, _BF16, _F64 = 0, 1, 2
MODE_OF_DTYPE = {"F32": _F32, "BF16": _BF16, "F64": _F64, "F16": _F32}
_BLOCK = 1 << 16
# Relative and absolute half-ulp of each output dtype: the rounding slack of non-strict bounds.
ROUNDING = {"F64": (2.0**-53, 0.0), "F32": (2.0**-24, 2.0**-150), "BF16": (2.0**-8, 2.0**-134),
            "F16": (2.0**-11, 2.0**-25)}


def step_for_dtype(step: float, dtype: str, round_down: bool = False) -> float:
    """The step as the file stores it: binary32 (binary64 for F64). ``round_down`` keeps step <= given."""
    if dtype == "F64":
        return float(step)
    s = np.float32(step)
    if round_down and float(s) > step:
        s = np.nextafter(s, np.float32(0))
    return float(s)


def f64_of(v):
    """float64 of one element as the kernels read it (numba only): a float as it is, a uint16 as the bf16
    value of those bits (exact: the 16 bits are the top half of the binary32). Kernels that take bf16
    tensors as their uint16 bit patterns (``bf16_bits``) read them without a widened float32 copy."""
    raise NotImplementedError("numba only")


@overload(f64_of)
def _f64_of(v):
    if isinstance(v, types.Integer) and v.bitwidth == 16 and not v.signed:
        return lambda v: np.float64(np.uint32(np.uint32(v) << np.uint32(16)).view(np.float32))
    return lambda v: np.float64(v)


def bf16_bits(flat: np.ndarray) -> np.ndarray:
    """The uint16 bit patterns of 1-D bf16 ``flat`` (a view where it is contiguous): what ``moments``,
    ``dq_search.quantize`` and ``ggd.fit`` take for a bf16 tensor instead of its float32 widening."""
    return np.ascontiguousarray(flat).view(np.uint16)


@numba.njit(inline="always")
def _dequant(q, mode, step32, step64):
    if mode == _F64:
        return np.float64(q) * step64
    y = np.float32(np.float32(q) * step32)
    if mode == _BF16:
        b = np.uint32(y.view(np.uint32))
        b = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
        y = np.uint32(b).view(np.float32)
    return np.float64(y)


@numba.njit(inline="always")
def store_dequant(out, e, q, mode, step32, step64):
    """Write level ``q`` dequantized to ``out[e]`` (spec 4.3), as the decoders do.

    mode 0: binary32 ``float32(q) * step``; 1: that product as bf16 bits (RNE); 2: binary64; 3: q itself.
    """
    if mode == 0:
        out[e] = np.float32(q) * step32
    elif mode == 1:
        f = np.float32(np.float32(q) * step32)
        b = np.uint32(f.view(np.uint32))
        b = b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))
        out[e] = np.uint16(b >> np.uint32(16))
    elif mode == 2:
        out[e] = np.float64(q) * step64
    else:
        out[e] = q


@numba.njit(nogil=True, cache=True)
def _quantize_block(x, b0, b1, inv, step64, step32, center, mode, bound, slack_rel, slack_abs, u, stats, b):
    """The exact per-element quantizer of elements [b0, b1): nearest level, then its neighbours where
    rounding to the output dtype breaks the bound; fills ``stats[b]``."""
    maxerr = 0.0
    nbad = 0
    nonfinite = 0
    overflow = 0
    lim = np.float64(MAX_SYMBOL_MAGNITUDE)
    for i in range(b0, b1):
        xv = np.float64(x[i])
        if not np.isfinite(xv):
            nonfinite += 1
            u[i] = 0
            continue
        qf = np.rint(xv * inv)
        if abs(qf) >= lim or abs(qf - np.float64(center)) >= lim:
            overflow += 1
            u[i] = 0
            continue
        q = np.int64(qf)
        xh = _dequant(q, mode, step32, step64)
        err = abs(xh - xv)
        allowed = bound + slack_rel * (abs(xv) + abs(xh)) + slack_abs
        if err > allowed or err == np.inf:  # a level that decodes to +-inf (F64 near 1e308) serves no finite x
            for cand in (q - 1, q + 1):
                if abs(cand) < MAX_SYMBOL_MAGNITUDE and abs(cand - center) < MAX_SYMBOL_MAGNITUDE:
                    e2 = abs(_dequant(cand, mode, step32, step64) - xv)
                    if e2 < err:
                        err = e2
                        q = cand
            if err == np.inf or err > bound + slack_rel * (abs(xv) + abs(xv) + err) + slack_abs:
                nbad += 1
        if err > maxerr:
            maxerr = err
        d = q - center
        u[i] = np.uint32((d << 1) ^ (d >> 63))
    stats[b, 0] = maxerr
    stats[b, 1] = nbad
    stats[b, 2] = nonfinite
    stats[b, 3] = overflow


@numba.njit(inline="always")
def _fast_tail(xv, qf, xh, cf, lim, bound, slack_rel, slack_abs):
    """What ``_quantize_fast`` keeps of one element whose decoded value is ``xh``: (within its bound and
    range, its error's bits (err >= 0: integer order is float order), its zigzag symbol), branch-free."""
    err = abs(xh - xv)
    ok = (err <= bound + slack_rel * (abs(xv) + abs(xh)) + slack_abs) & (err < np.inf) & (abs(qf) < lim) & \
        (abs(qf - cf) < lim)  # err inf: the level decodes to +-inf, whose slack would be inf too
    d = qf - cf
    a = abs(d)
    return ok, np.float64(err).view(np.int64), np.uint32(np.int32(a + a - np.float64(d < 0)))


@numba.njit(nogil=True, cache=True)
def _quantize_fast(x, b0, b1, inv, step32, step64, center, mode, bound, slack_rel, slack_abs, u):
    """The quantizer's common case, branch-free so that it vectorizes: nearest level of every element of
    [b0, b1). Returns (max error, number of elements that need ``_quantize_block``: non-finite, out of
    range, or over their bound at the nearest level). Where that number is 0 its ``u`` and max error are
    exactly ``_quantize_block``'s."""
    lim = np.float64(MAX_SYMBOL_MAGNITUDE)
    cf = np.float64(center)
    maxbits = np.int64(0)
    nok = 0  # flagged elements leave garbage in u and maxerr: the caller then redoes the whole block
    if mode == _F64:
        for i in range(np.uint64(b0), np.uint64(b1)):
            xv = np.float64(x[i])
            qf = np.rint(xv * inv)
            xh = qf * step64
            ok, errbits, u[i] = _fast_tail(xv, qf, xh, cf, lim, bound, slack_rel, slack_abs)
            nok += ok
            maxbits = max(maxbits, errbits)
    elif mode == _BF16:
        for i in range(np.uint64(b0), np.uint64(b1)):
            xv = np.float64(x[i])
            qf = np.rint(xv * inv)
            y = np.float32(np.float32(qf) * step32)
            bb = np.uint32(y.view(np.uint32))
            bb = (bb + np.uint32(0x7FFF) + ((bb >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
            xh = np.float64(np.uint32(bb).view(np.float32))
            ok, errbits, u[i] = _fast_tail(xv, qf, xh, cf, lim, bound, slack_rel, slack_abs)
            nok += ok
            maxbits = max(maxbits, errbits)
    else:
        for i in range(np.uint64(b0), np.uint64(b1)):
            xv = np.float64(x[i])
            qf = np.rint(xv * inv)
            xh = np.float64(np.float32(np.float32(qf) * step32))
            ok, errbits, u[i] = _fast_tail(xv, qf, xh, cf, lim, bound, slack_rel, slack_abs)
            nok += ok
            maxbits = max(maxbits, errbits)
    return np.int64(maxbits).view(np.float64), (b1 - b0) - nok


@numba.njit(parallel=True, nogil=True, cache=True)
def _quantize(x, step64, step32, center, mode, bound, slack_rel, slack_abs, u):
    """Fill ``u`` with zigzag symbols; per-block (max error, bad-bound count, non-finite count, overflow).

    Each block runs the vectorizable fast pass; a block where any element needs more (a non-finite value,
    a level out of range, a bound broken by rounding) is redone by the exact per-element loop."""
    n = x.size
    inv = 1.0 / step64  # a multiply instead of a divide; the bound check below catches any rounding slip
    nblocks = (n + _BLOCK - 1) // _BLOCK
    stats = np.zeros((nblocks, 4), np.float64)
    for b in prange(nblocks):
        b0 = b * _BLOCK
        b1 = min(n, (b + 1) * _BLOCK)
        maxerr, nflag = _quantize_fast(x, b0, b1, inv, step32, step64, center, mode, bound, slack_rel, slack_abs, u)
        if nflag:
            _quantize_block(x, b0, b1, inv, step64, step32, center, mode, bound, slack_rel, slack_abs, u, stats, b)
        else:
            stats[b, 0] = maxerr
    return stats


@numba.njit(parallel=True, nogil=True, cache=True)
def _moments(x):
    n = x.size
    nblocks = (n + _BLOCK - 1) // _BLOCK
    acc = np.zeros((nblocks, 3), np.float64)
    for b in prange(nblocks):
        s1 = 0.0
        s2 = 0.0
        bad = 0.0
        for i in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
            v = f64_of(x[i])
            if np.isfinite(v):
                s1 += v
                s2 += v * v
            else:
                bad += 1
        acc[b, 0] = s1
        acc[b, 1] = s2
        acc[b, 2] = bad
    return acc


@numba.njit(parallel=True, nogil=True, cache=True)
def _widen_bf16(b, out):
    """bf16 bit patterns ``b`` (uint16) to binary32 ``out``: the 16 bits are the top half of the binary32
    (exact for every value, NaN payloads included), what ``astype(float32)`` computes one element at a time."""
    n = b.size
    nblocks = (n + _BLOCK - 1) // _BLOCK
    o = out.view(np.uint32)
    for k in prange(nblocks):
        for i in range(k * _BLOCK, min(n, (k + 1) * _BLOCK)):
            o[i] = np.uint32(b[i]) << np.uint32(16)


_quantize_serial = serial_twin(_quantize)
_moments_serial = serial_twin(_moments)
_widen_bf16_serial = serial_twin(_widen_bf16)


def as_float32(flat: np.ndarray) -> np.ndarray:
    """A binary32 copy of 1-D ``flat`` (bf16 or F16): the values ``flat.astype(np.float32)`` gives. bf16 is
    widened in parallel by its bits (numpy's bf16 cast runs one element at a time, on one core: ~6 ns an
    element, the encoder's largest single-threaded stage on a big tensor)."""
    if flat.dtype == BFLOAT16:
        out = np.empty(flat.size, np.float32)
        launch(_widen_bf16, _widen_bf16_serial, np.ascontiguousarray(flat).view(np.uint16), out, work=flat.size)
        return out
    return flat.astype(np.float32)


SMALL_MOMENTS = True  # a tensor below SERIAL_BELOW elements: _small_moments (Python floats); False: numpy's


def _small_moments(x: np.ndarray):
    """``moments`` of a tensor that ``launch`` runs serially (one block) with Python floats in place of
    numpy scalars under ``errstate`` (~6 of its ~13 us a 4,096-element tensor, one call a tensor of a save):
    the same IEEE operations (numpy's sum over one block row is 0.0 + it: a -0.0 becomes 0.0, kept here;
    Python's float ``*`` and ``-`` overflow to inf silently, as numpy's do under errstate; ``math.sqrt`` and
    ``np.sqrt`` are both correctly rounded), so the same floats; None where the result is not finite (the
    general path's rescaling)."""
    s1, s2, bad = _moments_serial(x)[0].tolist()
    s1, s2, bad = 0.0 + s1, 0.0 + s2, 0.0 + bad
    n_bad = int(bad)
    n = x.size - n_bad
    if n == 0:
        return 0.0, 0.0, n_bad
    mean = s1 / n
    std = math.sqrt(max(s2 / n - mean * mean, 0.0))
    if not (math.isfinite(mean) and math.isfinite(std)):
        return None
    return mean, std, n_bad


def moments(x: np.ndarray) -> tuple:
    """(mean, std about the mean, number of non-finite values) of flat ``x`` (floats, or the uint16 bits of
    bf16 values: ``bf16_bits``), one parallel pass."""
    if x.size == 0:
        return 0.0, 0.0, 0
    if SMALL_MOMENTS and x.size < SERIAL_BELOW:
        got = _small_moments(x)
        if got is not None:
            return got
    with np.errstate(over="ignore", invalid="ignore"):  # overflowing sums are handled below
        acc = launch(_moments, _moments_serial, x, work=x.size).sum(axis=0)
    n_bad = int(acc[2])
    n = x.size - n_bad
    if n == 0:
        return 0.0, 0.0, n_bad
    with np.errstate(over="ignore", invalid="ignore"):
        mean = acc[0] / n
        std = np.sqrt(max(acc[1] / n - mean * mean, 0.0))
    if not (np.isfinite(mean) and np.isfinite(std)):
        # sums of huge finite values (float64 near 1e308, squares beyond 1e154) overflowed: again on x / max|x|;
        # mean and std of the scaled values are at most 1, so scaling back cannot overflow
        if x.dtype == np.uint16:  # bf16 bits (sums of bf16 squares stay far below float64's range)
            x = x.view(BFLOAT16).astype(np.float32)
        big = float(np.max(np.abs(x[np.isfinite(x)]).astype(np.float64)))
        m, sd, _ = moments(x.astype(np.float64) / big)
        return m * big, sd * big, n_bad
    return float(mean), float(std), n_bad


class QuantResult:
    __slots__ = ("u", "max_error", "n_bad", "n_nonfinite", "n_overflow")


def quantize(x: np.ndarray, step: float, center: int, dtype: str, bound: float | None = None,
             strict: bool = False) -> QuantResult:
    """Quantize flat float32/float64 ``x`` (values of a ``dtype`` tensor) with the stored ``step``.

    ``n_bad`` counts elements over their bound (``bound``, default step/2; see the module docstring).
    """
    r = QuantResult()
    r.u = np.empty(x.size, np.uint32)
    bound = step / 2 if bound is None else bound
    rel, ab = (0.0, 0.0) if strict else ROUNDING[dtype]
    with np.errstate(over="ignore"):  # float64 steps beyond binary32 (F64 tensors use the float64 one)
        step32 = np.float32(step)
    st = launch(_quantize, _quantize_serial, x, float(step), step32, np.int64(center),
                MODE_OF_DTYPE[dtype], bound, rel, ab, r.u, work=x.size)
    r.max_error = float(st[:, 0].max()) if st.size else 0.0
    r.n_bad, r.n_nonfinite, r.n_overflow = (int(v) for v in st[:, 1:].sum(axis=0)) if st.size else (0, 0, 0)
    if dtype == "F16" and x.size and not (r.n_nonfinite or r.n_overflow):
        _fix_f16(x, step, center, r, bound, rel, ab)
    return r


def _fix_f16(x, step, center, r, bound, rel, ab):
    """F16 rounding is checked in numpy (numba has no float16): retry neighbours where it breaks the bound."""
    step32 = np.float32(step)
    u = r.u.astype(np.int64)
    q = center + ((u >> 1) ^ -(u & 1))
    xv = x.astype(np.float64)
    err = np.abs((q.astype(np.float32) * step32).astype(np.float16).astype(np.float64) - xv)
    allowed = bound + rel * 2 * np.abs(xv) + ab
    bad = np.flatnonzero(err > allowed)
    for delta in (-1, 1):
        if not bad.size:
            break
        cand = q[bad] + delta
        e2 = np.abs((cand.astype(np.float32) * step32).astype(np.float16).astype(np.float64) - xv[bad])
        better = e2 < err[bad]
        q[bad[better]] = cand[better]
        err[bad[better]] = e2[better]
        bad = bad[err[bad] > allowed[bad]]
    d = q - center
    r.u = ((d << 1) ^ (d >> 63)).astype(np.uint32)
    r.n_bad = int(bad.size)
    r.max_error = float(err.max())
