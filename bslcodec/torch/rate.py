"""Differentiable rate of ``.bsl`` codecs for training (the BackSlash regulariser, arXiv 2504.16968).

:class:`RateLoss` takes ``expert={"quantizer": q}`` as ``save_file`` does. The default (``"auto"``:
dependent quantization with ``bits`` or a ``rel_step``, the codec ``ans-dq`` that ``save_file`` writes by
default) is estimated by :mod:`bslcodec.torch.rate_dq` (torch operations on the parameters' device, DDP and
FSDP2); this module's exp-Golomb surrogate below serves ``"uniform"`` (plain rounding, and ``max_error``).

The encoder (spec 4.3) spends on a tensor ``W`` with step ``s``::

    q_i = rint(w_i / s),  u_i = zigzag(q_i - center),  len_k(u) = 2 floor(log2(u + 2^k)) - k + 1

bits per symbol (order ``k`` per group of 32 x 512 symbols, chosen within ±2 of the order the fitted
generalized Gaussian implies), plus 16 bits per lane of 512 symbols, 8 bits per group and word padding.

The length is piecewise constant in ``w``, so it has no useful gradient. The rate loss uses the smooth
surrogate (``x = w / s - center``, ``a = sqrt(x^2 + eps^2) - eps``, a smooth ``|x|`` whose slope is 0 at 0)::

    soft_k(x) = 2 log2(2 a + 2^k) - k + 1

which is exact at ``x = 0`` (``k + 1`` bits), passes through the top of each jump of the true length and
has the true length's average slope. Its gradient is finite everywhere. Per tensor the estimate is::

    bits(W) = sum_i soft_k(x_i) - n * delta

where ``delta`` (bits/element) calibrates the surrogate against the true length and holds all payload
overhead. Every ``refresh_every`` steps, without gradient, the state is re-estimated exactly as the
encoder does it (``bslcodec.pipeline.codec.LossyTensor``: mean and std, GG shape/scale, step, center, the orders
it would pick), and ``delta`` is set from either

* ``calibrate="exact"`` (default): the real payload size the encoder would write for the current weights
  (so at a refresh the estimate *is* the encoded size, to the bit), or
* ``calibrate="gg"``: the fitted GG model only, ``delta = E_GG[soft_k] - E_GG[len_k] - overhead/n``.

Entropy stage. The default encoder (``codec="auto"``, ``bslcodec.pipeline.codec.DEFAULT_CODEC``) writes each
quantized tensor with whichever of ``eg`` (the exp-Golomb code above) and ``ans`` (rANS over an adaptive
symbol histogram, within ~0.3-0.8 % of the symbols' empirical entropy) is smaller; on trained weights that
is usually ``ans``, ~3-11 % below ``eg`` (``results/entropy_stage.md``). The surrogate models only the
``eg`` code length, so:

* its *value* is right at every refresh either way: ``calibrate="exact"`` takes ``delta`` from the size
  the encoder itself reports for the tensor (``LossyTensor.size``: the ans estimate, ~0.2 %, when ans
  wins), and ``calibrate="gg"`` uses the GG entropy when that is below the expected eg length;
* between refreshes it changes by what the eg length changes, not by what the ans size changes. The eg
  length of a symbol is ``-log2`` of a fixed prior (``2^-len``), the ans cost ``-log2`` of the histogram
  it adapts to, so the two move apart as the distribution's *shape* changes (weights piling up at zero
  save more under ans, which can spend well under 1 bit on a frequent zero, than under eg, which spends
  at least ``k + 1``). Its gradient is therefore the eg code's, pointing the same way (towards fewer,
  smaller symbols) but not the exact ans gradient. The drift is removed at the next refresh, so
  ``refresh_every`` bounds it (tests and ``results/training.md``: ~0.1 % at the end of training with a
  refresh every 50 steps; up to 10 % 50 steps after a refresh while strong lambda reshapes the weights).

The step is the encoder's: ``max_error`` fixes it (``float32(2 max_error)``); with rel_step ``c`` it is
``c * std(W)`` (std about the mean, recomputed every step) and the gradient flows through the std as well
(``detach_std=False``), so the rate is, like the real file, invariant to the tensor's scale: it rewards a
peakier distribution, not smaller weights. ``bits=B`` picks, at each refresh, the one ``c`` for which the
covered tensors' payload is ``B`` bits/weight, and then behaves like rel_step ``c``.

Usage::

    rate = RateLoss(model, lam=0.05, expert={"rel_step": 1/8})  # lam: loss units per bit/weight (dq: ans-dq)
    loss = task_loss + rate()                                 # or: rate.attach() (gradient hooks)
    rate.bits(), rate.total_bits, rate.bits_per_weight        # logging
    save_trained(model, "model.bsl", rate=rate)               # encode with exactly these parameters
"""

import contextlib
import fnmatch
import json
import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ..codecs import golomb
from ..container.dtypes import dtype_name
from ..container.errors import EncodeError
from ..pipeline.codec import (
    LANE_SYMBOLS,
    SMALL_1D,
    LossyTensor,
    Settings,
    encode_lossless,
)
from ..pipeline import knobs
from ..pipeline.ratecontrol import choose_rel_step
from ..quantize import ggd
from . import rate_dq

_LN2 = math.log(2.0)
METADATA_KEY = "bslcodec.rate"


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    from ..pipeline.arrays import as_numpy

    return as_numpy(t.detach())


# ---------------------------------------------------------------- fused CPU kernels (Numba)
# One pass for the moments, one for the value and derivative, one for the gradient: the torch path below
# needs about twenty. log2 is a bit-level exponent plus a degree-6 polynomial of the mantissa (|error| <
# 6e-6 bits), so the loops vectorize.

_BLOCK = 1 << 15
_LOG2_POLY = (5.065333098651475e-06, 1.4423954826705352, -0.7169868747326539, 0.4538562412336224,
              -0.27235315795313786, 0.11790518317850462, -0.024825606615626536)


@intrinsic
def _f32_bits(typingctx, x):
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def _bits_f32(typingctx, x):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


_C0, _C1, _C2, _C3, _C4, _C5, _C6 = (np.float32(c) for c in _LOG2_POLY)


@numba.njit(inline="always", fastmath=True)
def _fast_log2(v):
    """log2 of a positive normal float32."""
    b = _f32_bits(v)
    e = np.float32(np.int32(b >> np.int32(23)) - np.int32(127))
    t = _bits_f32((b & np.int32(0x7FFFFF)) | np.int32(0x3F800000)) - np.float32(1.0)
    return e + (_C0 + t * (_C1 + t * (_C2 + t * (_C3 + t * (_C4 + t * (_C5 + t * _C6))))))


def _moments_py(w):
    n = w.size
    nb = (n + _BLOCK - 1) // _BLOCK
    acc = np.zeros((nb, 2))
    for b in prange(nb):
        v = w[b * _BLOCK: min(n, (b + 1) * _BLOCK)]  # a slice: non-negative indices, so loops vectorize
        s1 = 0.0
        s2 = 0.0
        for i in range(v.size):
            x = np.float64(v[i])
            s1 += x
            s2 += x * x
        acc[b, 0] = s1
        acc[b, 1] = s2
    return acc


def _soft_py(w, inv, center, pk, eps, dx):
    """sum log2(2 a + 2^k), sum dx*w; dx = 4/ln2 * x / (t * den) (d soft / d x) written to ``dx``."""
    n = w.size
    nb = (n + _BLOCK - 1) // _BLOCK
    acc = np.zeros((nb, 2))
    inv32, c32, pk32 = np.float32(inv), np.float32(center), np.float32(pk)
    e32, ee32, g32 = np.float32(eps), np.float32(eps * eps), np.float32(4.0 / math.log(2.0))
    for b in prange(nb):
        lo = b * _BLOCK
        hi = min(n, lo + _BLOCK)
        wv = w[lo:hi]
        dv = dx[lo:hi]
        s = np.float32(0.0)
        a = np.float32(0.0)
        for i in range(hi - lo):
            wi = wv[i]
            x = wi * inv32 - c32
            t = np.sqrt(x * x + ee32)
            den = np.float32(2.0) * (t - e32) + pk32
            s += _fast_log2(den)
            d = g32 * x / (t * den)
            dv[i] = d
            a += d * wi
        acc[b, 0] = s
        acc[b, 1] = a
    return acc


def _grad_py(dx, w, alpha, beta, mean, out):
    """out = alpha * dx - beta * (w - mean)."""
    n = w.size
    nb = (n + _BLOCK - 1) // _BLOCK
    a32, b32, m32 = np.float32(alpha), np.float32(beta), np.float32(mean)
    for b in prange(nb):
        lo = b * _BLOCK
        hi = min(n, lo + _BLOCK)
        dv = dx[lo:hi]
        wv = w[lo:hi]
        ov = out[lo:hi]
        for i in range(hi - lo):
            ov[i] = a32 * dv[i] - b32 * (wv[i] - m32)


# Parallel variants for large tensors; small ones run on the calling thread (waking a thread pool costs
# more than the work, and on a busy machine far more).
PARALLEL_MIN = 1 << 20
_KERNELS = {}
for _name, _fn in (("moments", _moments_py), ("soft", _soft_py), ("grad", _grad_py)):
    _KERNELS[_name, True] = numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")(_fn)
    _KERNELS[_name, False] = numba.njit(cache=True, fastmath=True, error_model="numpy")(_fn)


def _kernel(name, n):
    return _KERNELS[name, n >= PARALLEL_MIN]


@contextlib.contextmanager
def _numba_threads_for(n):
    """Run the encoder's Numba kernels on one thread for a small tensor (see PARALLEL_MIN)."""
    if n >= PARALLEL_MIN:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(old)


@contextlib.contextmanager
def _keep_torch_threads():
    """Numba's OpenMP threading layer shares the OpenMP runtime with torch: a parallel Numba kernel (or
    ``numba.set_num_threads``) resets the thread count torch uses. Put torch's back afterwards."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def _fused_value(w, rel, step, k, eps, detach_std):
    """(value bits without the (1-k)n term, context for the gradient) of a CPU float32 tensor, no autograd.

    rel: relative step (step = rel * std) or None (fixed ``step``)."""
    flat = w.detach().reshape(-1)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    a = flat.numpy()
    n = a.size
    m = _kernel("moments", n)(a).sum(axis=0)
    mean = m[0] / n
    var = max(m[1] / n - mean * mean, 1e-30)
    if rel is not None:
        step = float(rel) * math.sqrt(var)
    inv = 1.0 / step
    center = float(np.rint(mean * inv))
    dx = np.empty_like(a)
    acc = _kernel("soft", n)(a, inv, center, float(2 ** k), float(eps), dx).sum(axis=0)
    value = 2.0 * acc[0] + (1 - k) * n
    ctx = (a, dx, inv, acc[1], mean, var, n, rel is not None and not detach_std)
    return value, ctx


def _fused_grad(ctx, scale):
    """d(value)/dw times ``scale``, as a numpy array (flat)."""
    a, dx, inv, sum_dxw, mean, var, n, through_std = ctx
    beta = scale * sum_dxw * inv / (n * var) if through_std else 0.0
    out = np.empty_like(a)
    _kernel("grad", n)(dx, a, scale * inv, beta, mean, out)
    return out


class _FusedBits(torch.autograd.Function):
    """Estimate of one CPU float32 tensor with the gradient through the std (rel_step) built in."""

    @staticmethod
    def forward(ctx, w, rel, step, k, eps, detach_std):
        value, c = _fused_value(w, rel, step, k, eps, detach_std)
        ctx.c, ctx.shape = c, w.shape
        return torch.tensor(value, dtype=torch.float64)

    @staticmethod
    def backward(ctx, grad):
        g = _fused_grad(ctx.c, float(grad))
        ctx.c = None
        return torch.from_numpy(g).view(ctx.shape), None, None, None, None, None


# ---------------------------------------------------------------- all covered tensors in one call a pass
# Per step the rate loss runs three passes (moments; value and derivative; gradient) over every covered
# tensor. Calling a kernel per tensor costs ~20-80 us of Python and dispatch a tensor, as much as the
# arithmetic for a small model, so the batched kernels take the parameters' addresses and walk all of
# them in one call: work items of at most _BLOCK elements (tensor, address of the first element, length,
# offset in one flat derivative buffer). The derivative buffer becomes the gradient in place.


@intrinsic
def _f32_ptr(typingctx, addr):
    sig = types.CPointer(types.float32)(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.PointerType(ir.FloatType()))

    return sig, codegen


def _moments_all_py(addr, length, acc):
    for j in prange(addr.size):
        v = numba.carray(_f32_ptr(addr[j]), length[j])
        s1 = 0.0
        s2 = 0.0
        for i in range(v.size):
            x = np.float64(v[i])
            s1 += x
            s2 += x * x
        acc[j, 0] = s1
        acc[j, 1] = s2


def _soft_all_py(addr, length, tix, off, inv, center, pk, eps, want_dx, dx, acc):
    """Per item: sum log2(2 a + 2^k) and (want_dx) sum dx*w, dx written to ``dx[off:off+length]``."""
    e32, ee32, g32 = np.float32(eps), np.float32(eps * eps), np.float32(4.0 / math.log(2.0))
    for j in prange(addr.size):
        t_ = tix[j]
        inv32, c32, pk32 = np.float32(inv[t_]), np.float32(center[t_]), np.float32(pk[t_])
        wv = numba.carray(_f32_ptr(addr[j]), length[j])
        s = np.float32(0.0)
        a = np.float32(0.0)
        if want_dx:
            dv = dx[off[j]:off[j] + length[j]]
            for i in range(wv.size):
                wi = wv[i]
                x = wi * inv32 - c32
                t = np.sqrt(x * x + ee32)
                den = np.float32(2.0) * (t - e32) + pk32
                s += _fast_log2(den)
                d = g32 * x / (t * den)
                dv[i] = d
                a += d * wi
        else:
            for i in range(wv.size):
                x = wv[i] * inv32 - c32
                t = np.sqrt(x * x + ee32)
                s += _fast_log2(np.float32(2.0) * (t - e32) + pk32)
        acc[j, 0] = s
        acc[j, 1] = a


def _grad_all_py(addr, length, tix, off, alpha, beta, mean, dx):
    """dx[off:off+length] <- alpha * dx - beta * (w - mean), per item (in place)."""
    for j in prange(addr.size):
        t_ = tix[j]
        a32, b32, m32 = np.float32(alpha[t_]), np.float32(beta[t_]), np.float32(mean[t_])
        wv = numba.carray(_f32_ptr(addr[j]), length[j])
        dv = dx[off[j]:off[j] + length[j]]
        for i in range(wv.size):
            dv[i] = a32 * dv[i] - b32 * (wv[i] - m32)


for _name, _fn in (("moments_all", _moments_all_py), ("soft_all", _soft_all_py), ("grad_all", _grad_all_py)):
    _KERNELS[_name, True] = numba.njit(parallel=True, cache=True, fastmath=True, error_model="numpy")(_fn)
    _KERNELS[_name, False] = numba.njit(cache=True, fastmath=True, error_model="numpy")(_fn)


class _Batch:
    """The covered CPU float32 tensors of a :class:`RateLoss` as one set of work items (fixed layout)."""

    def __init__(self, states):
        self.states = states
        self.params = [st.param for st in states]
        self.n = np.array([st.n for st in states], dtype=np.int64)
        self.total = int(self.n.sum())
        self.offsets = np.concatenate([[0], np.cumsum(self.n)[:-1]]).astype(np.int64)
        t, lo = [], []
        for i, n in enumerate(self.n):
            starts = np.arange(0, n, _BLOCK, dtype=np.int64)
            t.append(np.full(starts.size, i, dtype=np.int64))
            lo.append(starts)
        self.tix = np.concatenate(t)
        lo = np.concatenate(lo)
        self.length = np.minimum(self.n[self.tix] - lo, _BLOCK).astype(np.int64)
        self.off = self.offsets[self.tix] + lo  # offset in the flat buffer (and, x4, bytes into the tensor)
        self.lo4 = 4 * lo
        self.first = np.searchsorted(self.tix, np.arange(len(states)))  # first item of each tensor
        self.parallel = self.total >= PARALLEL_MIN

    def usable(self) -> bool:
        return all(p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous()
                   for p in self.params)

    def addresses(self):
        base = np.fromiter((p.data_ptr() for p in self.params), dtype=np.int64, count=len(self.params))
        return base[self.tix] + self.lo4

    def value(self, *args):
        if not self.parallel:
            return self._value(*args)
        with _keep_torch_threads():
            return self._value(*args)

    def grad(self, ctx, scale):
        """The flat gradient of ``scale * sum(values)`` (the derivative buffer, overwritten)."""
        if not self.parallel:
            return self._grad(ctx, scale)
        with _keep_torch_threads():
            return self._grad(ctx, scale)

    def _value(self, rel, step, k, eps, detach_std, delta, want_dx):
        """(per-tensor value bits (calibrated), context for the gradient or None).

        rel: per-tensor relative steps (step = rel * std), or None (fixed per-tensor ``step``)."""
        addr = self.addresses()
        par = self.parallel
        m = np.empty((addr.size, 2))
        _KERNELS["moments_all", par](addr, self.length, m)
        m = np.add.reduceat(m, self.first, axis=0)
        n = self.n
        mean = m[:, 0] / n
        var = np.maximum(m[:, 1] / n - mean * mean, 1e-30)
        if rel is not None:
            step = rel * np.sqrt(var)
        inv = 1.0 / step
        center = np.rint(mean * inv)
        pk = np.exp2(k.astype(np.float64))
        dx = np.empty(self.total if want_dx else 0, dtype=np.float32)
        acc = np.empty((addr.size, 2))
        _KERNELS["soft_all", par](addr, self.length, self.tix, self.off, inv, center, pk, float(eps), want_dx,
                                  dx, acc)
        acc = np.add.reduceat(acc, self.first, axis=0)
        value = 2.0 * acc[:, 0] + (1 - k) * n - n * delta
        if not want_dx:
            return value, None
        through_std = rel is not None and not detach_std
        return value, (addr, dx, inv, acc[:, 1], mean, var, through_std)

    def _grad(self, ctx, scale):
        addr, dx, inv, sum_dxw, mean, var, through_std = ctx
        beta = scale * sum_dxw * inv / (self.n * var) if through_std else np.zeros_like(inv)
        _KERNELS["grad_all", self.parallel](addr, self.length, self.tix, self.off, scale * inv, beta, mean, dx)
        return dx

    def split(self, flat):
        """Per-tensor views (parameter shapes) of a flat numpy buffer, as torch tensors."""
        t = torch.from_numpy(flat)
        return [t[o:o + n].view(p.shape) for o, n, p in zip(self.offsets.tolist(), self.n.tolist(), self.params)]


class _FusedAll(torch.autograd.Function):
    """``scale`` x the summed estimate of all covered tensors as one autograd node (CPU float32 only):
    three batched Numba calls a step for all tensors, no per-tensor autograd bookkeeping."""

    @staticmethod
    def forward(ctx, rate, scale, *params):
        total, c = rate._batch_value(want_dx=True)
        ctx.c, ctx.scale, ctx.batch = c, scale, rate._batch
        return torch.tensor(total * scale, dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad):
        if ctx.c is None:
            raise RuntimeError("RateLoss: backward through the same rate() twice")
        flat = ctx.batch.grad(ctx.c, float(grad) * ctx.scale)
        ctx.c = None
        return (None, None, *ctx.batch.split(flat))


class _SoftBits(torch.autograd.Function):
    """sum_i soft_k(w_i * inv - center), in one fused pass; the derivative is computed in forward."""

    @staticmethod
    def forward(ctx, w, inv, center, k: int, eps: float):
        x = w.detach().float() * inv.detach()
        x.sub_(center)
        t = x.square().add_(eps * eps).sqrt_()
        den = t.sub(eps).mul_(2.0).add_(float(2 ** k))
        total = torch.log2(den).sum().mul_(2.0).add_((1 - k) * x.numel())
        # d soft / d x = 4 / ln2 * x / (t * den)
        dx = x.div_(t.mul_(den)).mul_(4.0 / _LN2)
        ginv = (dx * w.detach().float()).sum() if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(dx, inv.detach(), ginv if ginv is not None else torch.empty(0))
        ctx.w_dtype = w.dtype
        return total

    @staticmethod
    def backward(ctx, grad):
        dx, inv, ginv = ctx.saved_tensors
        gw = (dx * (grad * inv)).to(ctx.w_dtype) if ctx.needs_input_grad[0] else None
        gi = grad * ginv if ctx.needs_input_grad[1] else None
        return gw, gi, None, None, None


def soft_bits(w: torch.Tensor, step, center: float = 0.0, k: int = 0, eps: float = 0.5) -> torch.Tensor:
    """Differentiable surrogate of the EG-k bits of ``w`` quantized with ``step`` (no calibration)."""
    if not torch.is_tensor(step):
        step = torch.tensor(float(step), dtype=torch.float32, device=w.device)
    return _SoftBits.apply(w, 1.0 / step, float(center), int(k), float(eps))


def exact_lengths(w: torch.Tensor, step: float, center: int, k: int) -> torch.Tensor:
    """Per element, the true EG-k code length (bits) the encoder writes for ``w`` with ``step``."""
    q = torch.round(w.detach().double() * (1.0 / float(step))) - center
    u = torch.where(q >= 0, 2 * q, -2 * q - 1)
    _, e = torch.frexp(u + float(2 ** k))  # v = m * 2^e with m in [0.5, 1): floor(log2 v) = e - 1
    return (2 * (e.double() - 1) - k + 1)


def _overhead_bits(n: int) -> float:
    """Expected payload bits that are not code words: lane tables, orders, padding (spec 4.3)."""
    g = golomb.n_groups(n, LANE_SYMBOLS)
    return 8.0 * golomb.table_bytes(g) + 32.0 * g + 64.0


def _gg_soft_mean(nu: float, alpha: float, step: float, k: int, eps: float) -> float:
    """E[soft_k(x / step)] for x ~ GG(nu, alpha), by quadrature on the folded density."""
    if alpha <= 0:
        return float(k + 1)
    from scipy import stats

    tail = alpha * (40.0 ** (1 / nu))
    z = np.linspace(0.0, tail / step, 20001)
    pdf = 2 * stats.gennorm.pdf(z * step, nu, scale=alpha) * step
    a = np.sqrt(z * z + eps * eps) - eps
    s = 2 * np.log2(2 * a + 2.0 ** k) - k + 1
    trap = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    return float(trap(s * pdf, z) / trap(pdf, z))


_ANS_OVERHEAD_PER_SYMBOL = 24 / 1024  # lane flushes of an ANS coder, should the encoder use one


def _memo_code(lt):
    """Make ``lt.code`` remember its results: a refresh asks for the code of the same step twice (its own
    call and, for the size of another entropy coder, ``LossyTensor.size``), and each costs a quantization,
    an order search and a GG order estimate."""
    orig, memo = lt.code, {}

    def code(step, max_error=None, **kw):
        opts = tuple(sorted(kw.items()))
        key = (float(step), max_error, opts)
        if key not in memo:
            memo[key] = orig(step, max_error, **kw)
            out = memo[key]
            if out is not None and max_error is not None:
                # the same symbols as an unbounded call at the step it settled on (the bound only checks)
                memo.setdefault((float(out[0]["step"]), None, opts), out)
        return memo[key]

    lt.code = code


def _other_coders(lt) -> bool:
    """Whether the encoder may code this tensor with something other than ``eg`` (an encoder with a
    per-tensor choice of entropy coder sets ``LossyTensor.codec``; the v1 spec encoder has only eg)."""
    return getattr(lt, "codec", "eg") != "eg"


class _TensorState:
    __slots__ = ("name", "param", "n", "calls", "k", "nu", "alpha", "step", "center", "delta",
                 "exact_bits", "lossless", "last", "rel")

    def __init__(self, name, param):
        self.name, self.param, self.n, self.calls = name, param, param.numel(), 0
        self.k, self.nu, self.alpha, self.step, self.center = 0, 2.0, 0.0, 1.0, 0
        self.delta, self.exact_bits, self.lossless, self.last, self.rel = 0.0, 0.0, False, None, None


RATE_EXPERT = ("rel_step", "quantizer")  # the expert keys the rate loss models


class RateLoss:
    """BackSlash rate term: ``lam`` x (estimated ``.bsl`` payload bits per weight of the covered tensors).

    ``model``: an ``nn.Module`` (or an iterable of ``(name, parameter)``). Covered: parameters whose name
    matches one of ``include`` (fnmatch; default all) and none of ``exclude``, and that the encoder
    quantizes (float, not a small 1-D tensor: ``bslcodec.pipeline.codec.wants_lossy``). ``lam`` is in loss units per
    bit/weight: ``rate()`` returns ``lam * bits / n_weights`` (a 0-d tensor with a gradient).

    Step: at most one of ``bits``, ``max_error`` (as in ``bslcodec.save_file``) or ``expert={"rel_step": c}``;
    none gives rel_step 1/64 (the rate loss models one relative step for every covered tensor, not the
    encoder's default allocation, so ``rel_error=`` is not taken). ``expert={"quantizer": q}``: as
    ``save_file``'s (``"auto"``: dependent quantization, the default codec ``ans-dq``, unless
    ``max_error``; ``"uniform"``: plain rounding). The old keywords ``rel_step=``, ``quantizer=`` still
    work with a DeprecationWarning. With dq the estimate is
    :mod:`bslcodec.torch.rate_dq`'s (torch operations on the parameters' device; DDP and FSDP2 DTensor
    shards supported); with ``"uniform"`` it is this module's exp-Golomb surrogate (one process).
    ``refresh_every``: steps between re-estimations (GG fit, orders, calibration). ``calibrate``:
    "exact" (the encoder's own size at each refresh; with FSDP every rank gathers and encodes every
    tensor), "gg" (plain rounding: the GG model only) or "hist" (dq: the ans estimate of the modelled
    index histogram, computed on the device; no encoder run). ``eps``: surrogate smoothing width, in steps.
    ``fused``: CPU float32 tensors go through batched Numba kernels, three calls a step for all tensors
    together (else, and on GPU, torch operations a tensor). A refresh runs the encoder's own analysis
    (GG fit, quantization, order choice and, for ``codec="auto"``, the ans size estimate) on every tensor:
    about 0.2 ms per 1k weights, so ``refresh_every`` sets its share of the step time.
    """

    def __init__(self, model, lam: float = 0.0, *, bits=None, max_error=None, include=None, exclude=None,
                 refresh_every: int = 100, calibrate: str = "exact", eps: float = 0.5, detach_std: bool = False,
                 fused: bool = True, expert=None, **deprecated):
        k = knobs.resolve(bits, None, max_error, None, expert, deprecated, where="RateLoss", allowed=RATE_EXPERT)
        self.quantizer = k.quantizer
        if self.quantizer == "dq" and max_error is not None:
            raise EncodeError("RateLoss: quantizer='dq' with max_error= is not modelled (use bits= or rel_step)")
        self.settings = Settings(max_error=k.max_error, rel_step=k.rel_step, bits=k.bits, quantizer=self.quantizer)
        ok = ("exact", "hist") if self.quantizer == "dq" else ("exact", "gg")
        if calibrate not in ok:
            raise ValueError(f"calibrate must be one of {ok} with quantizer={self.quantizer!r}, not {calibrate!r}")
        if refresh_every < 1:
            raise ValueError("refresh_every must be >= 1")
        self.lam, self.refresh_every, self.calibrate = float(lam), int(refresh_every), calibrate
        self.eps, self.detach_std, self.fused = float(eps), bool(detach_std), bool(fused)
        self.include = tuple([include] if isinstance(include, str) else include or ("*",))
        self.exclude = tuple([exclude] if isinstance(exclude, str) else exclude or ())
        named = model.named_parameters() if isinstance(model, torch.nn.Module) else model
        self.states = []
        seen = set()
        for name, p in named:
            if id(p) in seen or not p.is_floating_point():
                continue
            if not any(fnmatch.fnmatchcase(name, pat) for pat in self.include):
                continue
            if any(fnmatch.fnmatchcase(name, pat) for pat in self.exclude):
                continue
            if p.numel() == 0 or (p.ndim <= 1 and p.numel() <= SMALL_1D):
                continue  # the encoder stores these exactly (bslcodec.pipeline.codec.wants_lossy)
            seen.add(id(p))
            self.states.append(_TensorState(name, p))
        if not self.states:
            raise EncodeError("RateLoss: no parameter matches include/exclude and is quantized by the encoder")
        self.n_weights = sum(s.n for s in self.states)
        self.rel = self.settings.rel_step  # the relative step in force (bits= sets it at each refresh)
        self.steps = 0
        self._hooks = []
        self._batch = None  # the lossy tensors as one _Batch (CPU float32), rebuilt at a refresh
        self._hook_grads = None  # hook mode: state -> rate gradient of the current backward pass
        self._dq = None  # dq: the rate_dq.DQRate of the lossy tensors, rebuilt when that set changes
        if self.quantizer == "uniform" and any(rate_dq.local_and_group(st.param)[1] is not None
                                               for st in self.states):
            raise EncodeError("RateLoss: sharded (DTensor) parameters need quantizer='dq' (the default with "
                              "bits= or a rel_step)")

    # ------------------------------------------------------------ refresh (no gradient)

    def _lossy_tensor(self, st):
        arr = _as_numpy(rate_dq.full_tensor(st.param))
        with _numba_threads_for(st.n):
            lt = LossyTensor(st.name, arr, dtype_name(arr.dtype))
        lt.quantizer = self.quantizer
        _memo_code(lt)
        return lt, arr

    @torch.no_grad()
    def refresh(self) -> None:
        """Re-estimate every tensor's step, center, order, GG fit and calibration, as the encoder would."""
        with _keep_torch_threads():
            self._refresh()

    def _refresh(self):
        if self.quantizer == "dq":
            return self._refresh_dq()
        lts = [self._lossy_tensor(st) for st in self.states]
        if self.settings.bits is not None:
            with _numba_threads_for(max(st.n for st in self.states)):
                self.rel, _ = choose_rel_step([lt for lt, _ in lts], [], self.settings.bits, self.n_weights,
                                              overhead_bits=0)
        for st, (lt, arr) in zip(self.states, lts):
            with _numba_threads_for(st.n):
                self._refresh_one(st, lt, arr)
        self._rebuild_batch()

    def _refresh_dq(self):
        """dq: the rel_step (bits=), which tensors are stored exactly, bin widths and calibration."""
        lts = None
        if self.calibrate == "exact" or self.settings.bits is not None:
            lts = [self._lossy_tensor(st) for st in self.states]
        if self.settings.bits is not None:
            with _numba_threads_for(max(st.n for st in self.states)):
                self.rel, _ = choose_rel_step([lt for lt, _ in lts], [], self.settings.bits, self.n_weights,
                                              overhead_bits=0)
        if self.calibrate == "exact":
            target = []
            for st, (lt, arr) in zip(self.states, lts):
                with _numba_threads_for(st.n):
                    size = lt.size(lt.step_for(self.settings, self.rel))
                if size is None or size >= arr.nbytes:  # the encoder stores it exactly
                    st.lossless, st.exact_bits = True, 8.0 * len(encode_lossless(arr)[2])
                else:
                    st.lossless, st.exact_bits = False, 8.0 * size
                target.append(st.exact_bits)
        else:  # the ans estimate of the modelled index histogram (every tensor on its device)
            for st in self.states:
                st.lossless = False
            self._dq_engine()
            target = self._dq.hist_bits()
            for st, t in zip(self.states, target):
                raw = 8.0 * st.n * st.param.element_size()
                st.lossless, st.exact_bits = t >= raw, min(raw, t)
        for st in self.states:
            st.rel = self.rel
        eng = self._dq_engine()
        if eng is None:
            return
        eng.set_bins()
        eng.delta.zero_()
        surrogate, _ = eng.compute(False)
        lossy = [st for st in self.states if not st.lossless]
        want = torch.tensor([st.exact_bits for st in lossy], dtype=torch.float64, device=eng.device)
        eng.delta.copy_((want - surrogate) / eng.n)
        eng.last = want
        for st in lossy:
            st.k, st.nu, st.alpha = 0, float("nan"), float("nan")

    def _dq_engine(self):
        """The DQRate of the lossy tensors at the current rel_step (None if every tensor is stored exactly)."""
        lossy = [st for st in self.states if not st.lossless]
        if not lossy:
            self._dq = None
            return None
        if self._dq is None or [id(p) for p in self._dq.params] != [id(st.param) for st in lossy]:
            self._dq = rate_dq.DQRate([st.param for st in lossy], [st.n for st in lossy],
                                      [self.rel] * len(lossy))
            self._dq.through_std = not self.detach_std
        self._dq.rel.fill_(self.rel)
        return self._dq

    def _lossless_bits(self) -> float:
        return sum(st.exact_bits for st in self.states if st.lossless)

    def _dq_call(self, scale):
        eng = self._dq
        if eng is None:
            return torch.tensor(self._lossless_bits() * scale, dtype=torch.float32)
        const = self._lossless_bits() * scale
        locs = eng._local()
        if torch.is_grad_enabled() and any(p.requires_grad for p in eng.params):
            return rate_dq.DQBits.apply(eng, scale, *locs) + const
        bits, _ = eng.compute(False, locs)
        return (bits.sum() * scale + const).float()

    def _sync_last(self):
        """dq: copy the engine's per-tensor bits of the last call into the states (one device sync)."""
        if self.quantizer != "dq":
            return
        eng = self._dq
        vals = iter(eng.last.tolist() if eng is not None and eng.last is not None else [])
        for st in self.states:
            st.last = st.exact_bits if st.lossless else next(vals, None)

    def _rebuild_batch(self):
        """The lossy tensors as one _Batch and their refresh-time parameters as arrays."""
        lossy = [st for st in self.states if not st.lossless]
        if self._batch is None or [id(st) for st in self._batch.states] != [id(st) for st in lossy]:
            self._batch = _Batch(lossy) if self.fused and lossy else None
        if self._batch is not None:
            b = self._batch
            b.step = np.array([st.step for st in lossy], dtype=np.float64)
            b.k = np.array([st.k for st in lossy], dtype=np.float64)
            b.delta = np.array([st.delta for st in lossy], dtype=np.float64)
            b.rel = (None if self.settings.max_error is not None
                     else np.array([st.rel for st in lossy], dtype=np.float64))

    def _batch_ready(self) -> bool:
        """Whether this step can use the batched CPU kernels (all lossy tensors CPU float32 contiguous)."""
        return self._batch is not None and self._batch.usable()

    def _batch_value(self, want_dx):
        """(total estimated bits, gradient context); sets every state's ``last``."""
        b = self._batch
        value, c = b.value(b.rel, b.step, b.k, self.eps, self.detach_std, b.delta, want_dx)
        for st, v in zip(b.states, value.tolist()):
            st.last = v
        total = float(value.sum())
        for st in self.states:
            if st.lossless:
                st.last = st.exact_bits
                total += st.exact_bits
        return total, c

    def _refresh_one(self, st, lt, arr):
        st.nu, st.alpha, st.rel = lt.nu, lt.alpha, self.rel
        step = lt.step_for(self.settings, self.rel)
        coded = lt.code(step, self.settings.max_error)
        exact = None
        if coded is not None:
            params, ks, lens, _ = coded
            exact = 8 * golomb.payload_size(LANE_SYMBOLS, lens)
            if _other_coders(lt):
                # an encoder that may pick another entropy coder (the smaller payload): its own size
                size = lt.size(float(params["step"]))
                exact = exact if size is None else 8 * size
            if exact >= 8 * arr.nbytes:
                exact = None  # the encoder stores it exactly instead
        if exact is None:
            st.lossless, st.exact_bits, st.delta = True, 8.0 * len(encode_lossless(arr)[2]), 0.0
            return
        st.lossless, st.exact_bits = False, float(exact)
        st.step, st.center = float(params["step"]), int(params["center"])
        st.k = int(params["k"]) if "k" in params else ggd.best_order(st.nu, st.alpha, st.step)
        if self.calibrate == "exact":
            s = float(self._soft(st, st.param.detach()))
            st.delta = (s - st.exact_bits) / st.n
        else:
            soft_mean = _gg_soft_mean(st.nu, st.alpha, st.step, st.k, self.eps)
            model_bits = ggd.expected_bits(st.nu, st.alpha, st.step, st.k) + _overhead_bits(st.n) / st.n
            if _other_coders(lt):  # the GG entropy (what an arithmetic/ANS coder approaches) if smaller
                ent = ggd.entropy_bits(st.nu, st.alpha, st.step) + _ANS_OVERHEAD_PER_SYMBOL
                model_bits = ent if lt.codec == "ans" else min(model_bits, ent)
            st.delta = soft_mean - model_bits

    # ------------------------------------------------------------ the estimate

    def _step_center(self, st, w):
        """(step, center) as 0-d tensors: the encoder's step (through the std with rel_step, differentiable
        unless detach_std) and center = rint(mean / step)."""
        wf = w.float()
        if self._rel(st) is None:
            step = torch.tensor(st.step, dtype=torch.float32, device=w.device)
            mean = wf.detach().mean()
        else:
            var, mean = torch.var_mean(wf, correction=0)
            std = var.clamp_min(1e-30).sqrt()
            step = st.rel * (std.detach() if self.detach_std else std)
            mean = mean.detach()
        return step, torch.round(mean / step.detach())

    def _rel(self, st):
        return None if self.settings.max_error is not None else st.rel

    def _fusable(self, w):
        return self.fused and w.device.type == "cpu" and w.dtype == torch.float32

    def _soft(self, st, w):
        if self._fusable(w):
            return _FusedBits.apply(w, self._rel(st), st.step, st.k, self.eps, self.detach_std)
        step, center = self._step_center(st, w)
        return _SoftBits.apply(w, 1.0 / step, center, st.k, self.eps)

    def tensor_bits(self, st, w=None) -> torch.Tensor:
        """The estimate for one tensor state (differentiable in ``w``, default its parameter; plain
        rounding only: the dq estimate is of all tensors together, see :meth:`estimate_now`)."""
        if self.quantizer == "dq":
            raise NotImplementedError("RateLoss.tensor_bits: plain rounding only; use estimate_now()")
        w = st.param if w is None else w
        if st.lossless:
            return torch.tensor(st.exact_bits, device=w.device)
        return self._soft(st, w) - st.n * st.delta

    def _tick(self):
        if self.steps % self.refresh_every == 0:
            self.refresh()
        self.steps += 1

    def __call__(self) -> torch.Tensor:
        """``lam * estimated bits / n_weights``, differentiable; also updates :meth:`bits`."""
        self._tick()
        scale = self.lam / self.n_weights
        if self.quantizer == "dq":
            return self._dq_call(scale)
        if self._batch_ready():
            params = self._batch.params
            if torch.is_grad_enabled() and any(p.requires_grad for p in params):
                return _FusedAll.apply(self, scale, *params)
            total, _ = self._batch_value(want_dx=False)  # no graph: the value only (one pass fewer)
            return torch.tensor(total * scale, dtype=torch.float32)
        total = None
        for st in self.states:
            b = self.tensor_bits(st)
            st.last = b.detach()
            total = b if total is None else total + b
        return (total * scale).float()

    # ------------------------------------------------------------ gradient-hook mode

    def attach(self) -> "RateLoss":
        """Add the rate gradient to each covered parameter's gradient during ``backward()`` (for loops that
        cannot change their loss). Undo with :meth:`detach`. Counts one step per backward pass."""
        self.detach()
        for st in self.states:
            st.calls = self.steps

            def hook(g, st=st):
                st.calls += 1
                if st.calls > self.steps:  # the first hook of a new backward pass: one step
                    self._tick()
                    self._hook_grads = None
                    if self.quantizer == "dq":
                        self._hook_grads = self._dq_hook_grads()
                    elif self._batch_ready():  # all tensors at once: the weights do not change in backward
                        _, c = self._batch_value(want_dx=bool(self.lam))
                        if self.lam:
                            b = self._batch
                            grads = b.split(b.grad(c, self.lam / self.n_weights))
                            self._hook_grads = {id(s): gr for s, gr in zip(b.states, grads)}
                        else:
                            self._hook_grads = {}
                if self._hook_grads is not None:
                    gr = self._hook_grads.get(id(st))
                    return g if gr is None else g + gr.to(g.dtype)
                if st.lossless:
                    st.last = torch.tensor(st.exact_bits)
                    return g
                if self._fusable(st.param):
                    value, c = _fused_value(st.param, self._rel(st), st.step, st.k, self.eps, self.detach_std)
                    st.last = torch.tensor(value - st.n * st.delta)
                    if not self.lam:
                        return g
                    return g + torch.from_numpy(_fused_grad(c, self.lam / self.n_weights)).view(g.shape)
                with torch.enable_grad():
                    w = st.param.detach().requires_grad_(True)
                    b = self.tensor_bits(st, w)
                    st.last = b.detach()
                    if st.lossless or not self.lam:
                        return g
                    (gr,) = torch.autograd.grad(b * (self.lam / self.n_weights), w)
                return g + gr.to(g.dtype)
            self._hooks.append(st.param.register_hook(hook))
        return self

    def _dq_hook_grads(self) -> dict:
        eng = self._dq
        if eng is None:
            return {}
        if eng.group is not None:
            raise EncodeError("RateLoss.attach: not with sharded (DTensor) parameters; use loss + rate()")
        _, c = eng.compute(bool(self.lam))
        if not self.lam:
            return {}
        grads = eng.grads(c, self.lam / self.n_weights)
        return {id(st): g for st, g in zip([s for s in self.states if not s.lossless], grads)}

    def detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    # ------------------------------------------------------------ logging

    def bits(self) -> dict:
        """name -> estimated payload bits at the last call (None before the first)."""
        self._sync_last()
        return {st.name: (None if st.last is None else float(st.last)) for st in self.states}

    @property
    def total_bits(self) -> float:
        self._sync_last()
        vals = [float(st.last) for st in self.states if st.last is not None]
        return float(sum(vals)) if vals else float("nan")

    @property
    def bits_per_weight(self) -> float:
        return self.total_bits / self.n_weights

    @torch.no_grad()
    def estimate_now(self) -> dict:
        """name -> current estimate in bits, without a refresh (what the rate loss would say now)."""
        if self.quantizer == "dq":
            if self._dq is not None:
                self._dq.compute(False)
            self._sync_last()
            return {st.name: float(st.last) for st in self.states}
        return {st.name: float(self.tensor_bits(st)) for st in self.states}

    @torch.no_grad()
    def exact_bits(self) -> dict:
        """name -> the payload bits the encoder would write for the current weights (no state change)."""
        with _keep_torch_threads():
            return self._exact_bits()

    def _exact_bits(self):
        out = {}
        rel = self.rel
        lts = [self._lossy_tensor(st) for st in self.states]
        if self.settings.bits is not None:
            with _numba_threads_for(max(st.n for st in self.states)):
                rel, _ = choose_rel_step([lt for lt, _ in lts], [], self.settings.bits, self.n_weights,
                                         overhead_bits=0)
        for st, (lt, arr) in zip(self.states, lts):
            with _numba_threads_for(st.n):
                size = lt.size(lt.step_for(self.settings, rel))
            out[st.name] = 8.0 * (size if size is not None and size < arr.nbytes
                                  else len(encode_lossless(arr)[2]))
        return out

    def summary(self) -> list:
        """Per tensor: name, numel, order k, GG shape/scale, step, estimated and refresh-time exact bits."""
        self._sync_last()
        return [{"name": st.name, "numel": st.n, "k": st.k, "gg_nu": st.nu, "gg_scale": st.alpha,
                 "step": st.step, "lossless": st.lossless,
                 "bits": None if st.last is None else float(st.last), "exact_bits_at_refresh": st.exact_bits}
                for st in self.states]

    def encode_settings(self, refresh: bool = True) -> dict:
        """The options that reproduce this rate loss's parameters, as the file's metadata records them
        (``encoded_with``): ``{"max_error": E}``, or ``{"rel_step": c, "quantizer": q}``, which is
        ``save_file``'s ``expert=``."""
        if self.settings.max_error is not None:
            return {"max_error": self.settings.max_error}
        if self.settings.bits is not None and refresh:
            self.refresh()
        return {"rel_step": self.rel, "quantizer": self.quantizer}


def save_trained(model, path=None, *, rate: RateLoss | None = None, bits=None, max_error=None, include=None,
                 exact=None, metadata=None, expert=None, **deprecated):
    """Encode trained weights with exactly the parameters a :class:`RateLoss` assumed.

    ``model``: an ``nn.Module`` (its ``state_dict()``) or a dict name -> tensor. Give the ``rate`` used in
    training, or the same ``bits`` / ``max_error`` / ``expert`` (and ``include``) it was built with;
    ``exact``: name patterns stored bit-exact (as in ``save_file``).
    ``bits=`` resolves, as the rate loss does, to the one ``rel_step`` at which the covered tensors meet
    the target, and the whole file is then written with that ``rel_step`` (the encoder's step, center and
    orders are then those the rate loss computed). A CoLA model's layer layout is stored in the metadata,
    so :func:`bslcodec.torch.load_trained` can rebuild it. Returns the file's bytes when ``path`` is None.
    """
    from ..files import api
    from .cola import COLA_METADATA_KEY, cola_spec

    given = knobs.resolve(bits, None, max_error, exact, expert, deprecated, where="save_trained",
                          allowed=RATE_EXPERT)
    rate_kw = {k: v for k, v in given.new_kwargs().items() if k != "exact"}
    if isinstance(model, torch.nn.Module):
        tensors = dict(model.state_dict())
        if rate is None:
            rate = RateLoss(model, 0.0, include=include, **rate_kw)
    else:
        tensors = dict(model)
        if rate is None:
            rate = RateLoss(list((k, v) for k, v in tensors.items()), 0.0, include=include, **rate_kw)
    kw = rate.encode_settings(refresh=True)
    meta = dict(metadata or {})
    meta[METADATA_KEY] = json.dumps({"lam": rate.lam, **{k: v for k, v in (
        ("rel_step", rate.settings.rel_step), ("max_error", rate.settings.max_error),
        ("bits", rate.settings.bits)) if v is not None}, "encoded_with": kw})
    if isinstance(model, torch.nn.Module):
        spec = cola_spec(model)
        if spec:
            meta[COLA_METADATA_KEY] = json.dumps(spec)
    tensors = {k: rate_dq.full_tensor(v).detach() for k, v in tensors.items()}  # FSDP: whole tensors
    # the new spelling of encode_settings(): max_error=, or expert rel_step and quantizer
    save_kw = {"max_error": kw["max_error"]} if "max_error" in kw else {"expert": kw}
    if path is None:
        return api.save(tensors, metadata=meta, exact=given.exact, **save_kw)
    api.save_file(tensors, path, metadata=meta, exact=given.exact, **save_kw)
    return None
