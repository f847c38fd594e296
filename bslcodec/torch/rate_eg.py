"""The exp-Golomb rate surrogate of :class:`bslcodec.torch.RateLoss` (plain rounding, ``max_error``):
the soft code length, its fused CPU kernels (Numba) and its calibration against the coder.

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
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import contextlib
import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ..codecs import golomb
from ..pipeline.codec import LANE_SYMBOLS

_LN2 = math.log(2.0)


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
