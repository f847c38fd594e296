"""Rate-distortion optimised quantization (RDOQ) at encode time; the decoder and the format are unchanged.

Plain quantization gives every element the nearest level ``q0 = round(x / step)``. RDOQ looks at one more
candidate, the level one step toward the tensor's center (``q0 - 1`` for ``q0 > center``, ``q0 + 1`` below;
for ``q0 = center ± 1`` that is the center itself), and keeps whichever minimises

    J(q) = (x - x̂(q))^2 + λ · bits(q),    λ = c · step^2

where ``x̂(q)`` is exactly what the decoder returns (spec 4.3) and ``bits(q)`` is the cost of the symbol in
the entropy model the tensor will actually be coded with: ``P - log2 f(token) + raw bits`` of the ``ans``
frequency table (spec 4.4) built from the plain symbols, then rebuilt once from the RDOQ symbols (two
passes), or the exp-Golomb length for ``codec="eg"``. At high rate the slope of a uniform quantizer is
dD/dR = -2 ln 2 · step^2 / 12 ≈ -0.116 step^2, so ``c`` near 0.1 trades bits and squared error at the
exchange rate the step itself sets; ``DEFAULT_C`` was chosen by measurement (``results/rdoq.md``).

Because the coder is order-0 (one static table per tensor, no context), the choice for one element does
not change the cost of another except through the table, so per-element decisions with an iterated table
are what a trellis would find too; a trellis pays only with context modelling or dependent quantization,
both of which would change the decoder (``results/rdoq.md``).

Bounds. The alternative level is taken only where it stays within ``bound`` (checked on the decoded value,
like ``quant.quantize`` does): with ``max_error=E`` that is ``E`` exactly (strict), so the hard bound
holds; with ``rel_step``/``bits`` it is one ``step`` plus the dtype's rounding slack (``quant.ROUNDING``)
instead of ``step/2``.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import math

import numba
import numpy as np
from numba import prange

from ..parallel import launch, serial_twin
from ..quantize import quant
from ..quantize.quant import _dequant
from . import rans
from .golomb import _ctlz

DEFAULT_C = 0.12  # λ = c·step²: see results/rdoq.md
PASSES = 2  # table from plain symbols, then from RDOQ symbols
_BLOCK = 1 << 16
UNUSED_TOKEN_EXTRA = 2.0  # a token absent from the table costs P + this (it would also need a table entry)


@numba.njit(inline="always")
def _sym_bits(uu, cost, s, m, eg_k):
    """Bits of zigzag symbol ``uu``: ans token cost + raw bits (eg_k < 0), else the EG-eg_k length."""
    if eg_k >= 0:
        v = np.uint64(uu) + (np.uint64(1) << np.uint64(eg_k))
        e = 63 - np.int64(_ctlz(v))
        return np.float64(2 * e - eg_k + 1)
    tok, nb, r = rans._token(np.int64(uu), s, m)
    if tok < cost.size:
        return cost[tok] + np.float64(nb)
    return cost[-1] + np.float64(nb)  # the last entry is the cost of an unused token


@numba.njit(parallel=True, nogil=True, cache=True)
def _rdoq(x, u0, out, step64, step32, center, mode, lam, bound, slack_rel, slack_abs, cost, s, m, eg_k):
    """``out[i]``: ``u0[i]`` or the symbol one level toward ``center``, whichever has the smaller
    ``err^2 + lam * bits`` (the alternative only within the bound). Per block: (max error of the output,
    number changed)."""
    n = x.size
    nblocks = (n + _BLOCK - 1) // _BLOCK
    stats = np.zeros((nblocks, 2), np.float64)
    for b in prange(nblocks):
        maxerr = 0.0
        changed = 0
        for i in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
            uu = np.int64(u0[i])
            out[i] = u0[i]
            d = (uu >> 1) ^ -(uu & 1)
            xv = np.float64(x[i])
            e0 = _dequant(center + d, mode, step32, step64) - xv
            err = abs(e0)
            if uu != 0:
                da = d - 1 if d > 0 else d + 1
                ua = (da << 1) ^ (da >> 63)
                xa = _dequant(center + da, mode, step32, step64)
                ea = xa - xv
                if abs(ea) < np.inf and abs(ea) <= bound + slack_rel * (abs(xv) + abs(xa)) + slack_abs:
                    j0 = e0 * e0 + lam * _sym_bits(uu, cost, s, m, eg_k)
                    ja = ea * ea + lam * _sym_bits(ua, cost, s, m, eg_k)
                    if ja < j0:
                        out[i] = np.uint32(ua)
                        changed += 1
                        err = abs(ea)
            if err > maxerr:
                maxerr = err
        stats[b, 0] = maxerr
        stats[b, 1] = changed
    return stats


_rdoq_serial = serial_twin(_rdoq)


def ans_costs(u: np.ndarray) -> tuple:
    """(cost per token + one trailing entry for unused tokens, s, m) of the ``ans`` model built for ``u``."""
    model, _ = rans.build_model(u)
    f = model.freqs.astype(np.float64)
    P = float(model.prob_bits)
    cost = np.empty(f.size + 1, np.float64)
    with np.errstate(divide="ignore"):
        cost[:-1] = np.where(f > 0, P - np.log2(np.maximum(f, 1.0)), P + UNUSED_TOKEN_EXTRA)
    cost[-1] = P + UNUSED_TOKEN_EXTRA
    return cost, model.s, model.m


DEFAULT_ON = False  # rdoq=None with rel_step=/bits= (max_error=: off); see results/rdoq.md


def resolve(value, strict: bool) -> float:
    """The c an ``rdoq=`` argument means: None -> the mode's default, True -> DEFAULT_C, False -> 0."""
    from ..container.errors import EncodeError

    if value is None:
        return 0.0 if strict or not DEFAULT_ON else DEFAULT_C
    if value is True:
        return DEFAULT_C
    if value is False:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise EncodeError(f"rdoq= must be True, False or a finite number c >= 0 (λ = c·step²), got {value!r}")
    return float(value)


def apply(t, qr, step: float, center: int, max_error, eg_k: int) -> tuple:
    """(symbols, max |x - x̂|) of ``codec.LossyTensor`` ``t`` after RDOQ of its plain result ``qr``."""
    r = refine(t.x, qr.u, step, center, t.dtype, c=t.rdoq, bound=max_error, strict=max_error is not None,
               eg_k=eg_k if t.codec == "eg" else -1)
    return r.u, (qr.max_error if r.max_error is None else r.max_error)


class RdoqResult:
    __slots__ = ("u", "max_error", "n_changed")


def refine(x: np.ndarray, u0: np.ndarray, step: float, center: int, dtype: str, c: float = DEFAULT_C,
           bound: float | None = None, strict: bool = False, eg_k: int = -1,
           passes: int = PASSES) -> RdoqResult:
    """RDOQ symbols for flat ``x`` given its checked plain symbols ``u0`` (``quant.quantize(...).u``).

    ``bound``: the largest error an element may get (default ``step``); ``strict`` as in
    ``quant.quantize`` (no dtype rounding slack; for ``max_error=``). ``eg_k >= 0`` costs symbols with
    EG-k lengths instead of the ``ans`` table. ``max_error``: the largest |x - x̂| of the result.
    """
    r = RdoqResult()
    r.u, r.max_error, r.n_changed = u0, None, 0  # max_error None: unchanged from the plain quantizer
    if x.size == 0 or not c > 0:
        return r
    bound = step if bound is None else bound
    rel, ab = (0.0, 0.0) if strict else quant.ROUNDING[dtype]
    lam = float(c) * float(step) * float(step)  # inf, not OverflowError, where step^2 leaves float64
    if not math.isfinite(lam):
        return r  # F64 steps beyond 1e154: squared errors overflow too; plain rounding stands
    with np.errstate(over="ignore"):  # F64 steps beyond binary32 (the kernel uses the float64 one)
        step32 = np.float32(step)
    mode = quant.MODE_OF_DTYPE[dtype]
    u = u0
    for _ in range(max(1, passes)):
        if eg_k >= 0:
            cost, s, m = np.zeros(1), 0, 0
        else:
            cost, s, m = ans_costs(u)
        out = np.empty_like(u0)
        st = launch(_rdoq, _rdoq_serial, x, u0, out, float(step), step32, np.int64(center), mode,
                    lam, float(bound), rel, ab, cost, np.int64(s), np.int64(m), np.int64(eg_k), work=x.size)
        u = out
        if eg_k >= 0:
            break  # the EG cost does not depend on the histogram
    r.u = u
    r.max_error = float(st[:, 0].max()) if st.size else 0.0
    r.n_changed = int(st[:, 1].sum())
    if dtype == "F16":
        _fix_f16(x, u0, r, step, center, bound, rel, ab)
    return r


def _fix_f16(x, u0, r, step, center, bound, rel, ab):
    """F16 output rounding is checked in numpy (numba has no float16): undo changes that break the bound."""
    ch = np.flatnonzero(r.u != u0)
    uu = r.u[ch].astype(np.int64)
    q = center + ((uu >> 1) ^ -(uu & 1))
    xv = x[ch].astype(np.float64)
    xh = (q.astype(np.float32) * np.float32(step)).astype(np.float16).astype(np.float64)
    err = np.abs(xh - xv)
    bad = (err == np.inf) | (err > bound + rel * (np.abs(xv) + np.abs(xh)) + ab)
    r.u[ch[bad]] = u0[ch[bad]]
    r.n_changed = int(ch.size - bad.sum())
    ua = r.u.astype(np.int64)
    xh = ((center + ((ua >> 1) ^ -(ua & 1))).astype(np.float32) * np.float32(step)).astype(np.float16)
    r.max_error = float(np.abs(xh.astype(np.float64) - x.astype(np.float64)).max())
