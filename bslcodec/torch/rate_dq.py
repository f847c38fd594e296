"""Differentiable rate of the default codec (dependent quantization + rANS, ``ans-dq``, spec 4.6), computed
on the parameters' own device, for one process, DDP and FSDP2 (DTensor-sharded parameters).

Model. ``save_file``'s default quantizes a tensor ``W`` (n elements) with step ``Δ = rel_step · 0.575 · std(W)``
and center ``c = rint(mean / Δ)``; with ``v = w / Δ - c`` the trellis (``bslcodec.codecs.dq_search``) stores
an index ``k`` per element: about ``v / 2`` where the state machine is in quantizer Q0 (even levels) and
``(v + sgn v) / 2`` in Q1 (odd levels and zero), each about half of the time, and rANS codes the indices
with the tensor's own histogram. So the payload is modelled as ``n`` times the entropy of the 50/50 mixture
of the histograms of ``y0 = v / 2`` and ``y1 = (v + sgn v) / 2`` rounded. Costed with the ans coder's own
model (``rans.estimate_size`` of the mixture's token histogram) this is within 0.3 % of the real payload
on generalized-Gaussian tensors of shape >= 0.8 at rel_step <= 1/4, within 1.3 % at shape 0.5
(``tests/test_torch_rate_dq.py``, ``results/training.md``).

Surrogate (every step). A histogram of ``y0`` and ``y1`` (bins of ``b`` indices, ``b`` a power of two set
at each refresh so the tensor's range fits ``2 HALF_BINS + 1`` bins) gives a code length per bin,
``L = log2(2n / count) + log2 b``. The value is the histogram's own total, ``½ Σ_bins count · L`` (n times
the mixture's entropy, tracking reshaped weights between refreshes); the gradient is that of the
surrogate ``Σ_i ½ (L̃(y0_i) + L̃(y1_i))``, ``L̃`` linear between bin centers, whose slope is the first-order
change of ``n·H`` when one weight moves mass from one bin to the next (the gradient of the entropy of a
histogram coder). The step goes through the std, so the gradient has the std term as well (the rate,
like the file, does not change with the tensor's scale).
Per tensor the value is ``n·H + n · delta``; ``delta`` calibrates it at each refresh, to the encoder's
own size (``calibrate="exact"``) or to the ans estimate of the mixture histogram (``calibrate="hist"``,
no encoder run: what a big model on a GPU wants).

Distributed. Parameters that are DTensors (FSDP2's ``fully_shard``) are used through their local shards;
the per-tensor sums (moments, histograms, max, value) are all-reduced over the mesh, so every rank computes
the same step, histogram, code lengths and loss as one process would, and each rank's gradient is the
one-process gradient of its shard (no communication in backward: the one global sum the std term needs is
taken in forward). Under DDP every rank holds whole parameters and computes the same numbers without
communication; DDP then averages identical rate gradients.

Kernels. All covered tensors are handled together (:class:`DQRate`'s flat layout: one padded float32 copy
of them a step), in four passes whatever their number: moments; histogram; slopes of ``L`` and their sum
with ``w``; the gradient in place. On CUDA these are Triton kernels (``rate_dq_triton``, when Triton
imports), on CPU Numba kernels (``rate_dq_cpu``), elsewhere eager torch on the flat buffer (``BACKEND``
below picks one). ``rate_dq_ref.DQRateRef`` is the per-tensor engine they replaced, kept as the reference
(same values and gradients: ``tests/test_torch_rate_dq.py``); the step-time overhead of both is
``tools/bench/rate_overhead.py``'s (``results/training.md``).
"""

import math

import numpy as np
import torch

from ..codecs import rans
from ..container.errors import EncodeError
from ..pipeline.codec import ANS_LANE_SYMBOLS
from ..quantize import dq

HALF_BINS = 2048  # histogram bins each side of the center (4097 x 4 bytes fits a CUDA block's shared memory)
ROW = 4096  # elements per row of the flat layout (a tensor is padded to whole rows)
BACKEND = "auto"  # "auto": Numba kernels on CPU, Triton on CUDA when it imports, else eager torch; or one of
#                   "numba", "triton", "torch" (eager torch on the flat layout) for every engine made after
_SMOOTH = 0.5  # pseudo-count per bin: an empty bin costs log2(4n) bits, not infinity
_FINE_S, _FINE_M = rans.FINE_S, rans.FINE_M


def local_and_group(p):
    """(local tensor, process group or None) of a parameter: a DTensor's shard on a 1-D mesh."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return p, None
    if not isinstance(p, DTensor):
        return p, None
    if p.device_mesh.ndim != 1:
        raise EncodeError("RateLoss: DTensor parameters are supported on a 1-D device mesh (FSDP2) only")
    return p.to_local(), p.device_mesh.get_group()


def full_tensor(p):
    """The whole tensor of a parameter (a DTensor is gathered: a collective every rank must join)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover
        return p
    return p.full_tensor() if isinstance(p, DTensor) else p


def _all_reduce(t, group, op=None):
    if group is not None:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op, group=group)
    return t


def _tokens(k):
    """The ans coder's fine tokens (split s=12, m=4, ``rans._token``) of indices ``k`` (int64)."""
    u = torch.where(k >= 0, 2 * k, -2 * k - 1)
    big = u >= (1 << _FINE_S)
    e = torch.frexp(u.clamp_min(1).double())[1].long() - 1  # floor(log2 u), exact for u < 2^53
    nb = (e - _FINE_M).clamp_min(0)
    tok = (1 << _FINE_S) + ((e - _FINE_S) << _FINE_M) + ((u >> nb) - (1 << _FINE_M))
    return torch.where(big, tok, u)


class _Engine:
    """What both dq rate engines share: the covered parameters (checked: one process group, one device)
    and the per-tensor state RateLoss reads and sets."""

    def __init__(self, params, n, rel):
        self.params = list(params)
        locals_groups = [local_and_group(p) for p in self.params]
        groups = {id(g): g for _, g in locals_groups if g is not None}
        if len(groups) > 1:
            raise EncodeError("RateLoss: parameters sharded over different process groups")
        if groups and any(g is None for _, g in locals_groups):
            raise EncodeError("RateLoss: some covered parameters are DTensors and some are not; "
                              "cover only sharded (or only whole) parameters")
        self.group = next(iter(groups.values()), None)
        dev = {lt.device for lt, _ in locals_groups}
        if len(dev) != 1:
            raise EncodeError(f"RateLoss: covered parameters on several devices ({sorted(map(str, dev))})")
        self.device = dev.pop()
        T = len(self.params)
        f64 = {"dtype": torch.float64, "device": self.device}
        self.n = torch.tensor(n, **f64)
        self.rel = torch.tensor(rel, **f64)
        self.delta = torch.zeros(T, **f64)
        self.bin = torch.ones(T, **f64)  # bin width in indices (a power of two)
        self.last = None  # per-tensor bits of the last call (a device tensor)
        self.through_std = True  # the gradient's std term (RateLoss(detach_std=True) turns it off)
        self._locals_groups = locals_groups

    def _local(self):
        return [local_and_group(p)[0] for p in self.params]

    def step_center(self, mean, var):
        step = self.rel * dq.STEP_FACTOR * var.sqrt()
        return step, torch.round(mean / step)


class DQRate(_Engine):
    """The estimate for a fixed list of (global numel, parameter) of one device; ``rel`` per tensor.

    Flat layout: every step the local tensors are copied, each padded with zeros to whole rows of ``ROW``
    elements, into one float32 buffer ``F`` of shape [rows, ROW]; a row belongs to one tensor (``row_t``),
    so per-tensor numbers broadcast over rows and every pass covers all tensors at once. The number of
    kernels a step does not grow with the number of tensors. The passes (moments; histogram; slopes and
    their sum with ``w``; the gradient in place) are four fused kernels on CUDA with Triton
    (:mod:`bslcodec.torch.rate_dq_triton`) and on CPU (Numba, :mod:`bslcodec.torch.rate_dq_cpu`), eager
    torch operations on ``F`` elsewhere (``backend``). The gradients are views of one flat buffer.
    :class:`bslcodec.torch.rate_dq_ref.DQRateRef` is the per-tensor reference."""

    def __init__(self, params, n, rel):
        super().__init__(params, n, rel)
        locals_groups, T = self._locals_groups, len(self.params)
        f64 = {"dtype": torch.float64, "device": self.device}
        # the flat layout: tensor t has local numel m_t, rows [r0_t, r1_t), pad_t zeros after its elements
        m = [lt.numel() for lt, _ in locals_groups]
        rows = [-(-k // ROW) for k in m]
        r1 = np.cumsum(rows, dtype=np.int64)
        r0 = r1 - np.asarray(rows, dtype=np.int64)
        self.local_numel, self.pad = m, [r * ROW - k for r, k in zip(rows, m)]
        self.row_start, self.rows = r0.tolist(), int(r1[-1]) if T else 0
        dl = {"dtype": torch.long, "device": self.device}
        self.row_t = torch.repeat_interleave(torch.arange(T, **dl), torch.tensor(rows, **dl))  # [R]
        self.row_t32 = self.row_t.to(torch.int32)
        valid = np.full(self.rows, ROW, dtype=np.int32)
        last = r1[np.asarray(rows) > 0] - 1
        valid[last] = (np.asarray(m)[np.asarray(rows) > 0] - (last - r0[np.asarray(rows) > 0]) * ROW)
        self.row_valid = torch.tensor(valid, dtype=torch.int32, device=self.device)  # [R] elements in use
        self.last_rows = torch.tensor(last, **dl)  # the rows that hold padding (or none)
        self.seg = (torch.tensor(r0, **dl), torch.tensor(r1, **dl))  # rows of a tensor, for segment sums
        self.npad = torch.tensor(self.pad, **f64)
        self._zeros = torch.zeros(max(self.pad, default=0), dtype=torch.float32, device=self.device)
        self.backend = "torch"
        if self.device.type == "cpu" and BACKEND in ("auto", "numba"):
            self.backend = "numba"
            self._np = {"row_t": self.row_t.numpy(), "row0": np.ascontiguousarray(r0),
                        "row1": np.ascontiguousarray(r1), "valid": valid}
        elif self.device.type == "cuda" and BACKEND in ("auto", "triton") or BACKEND == "triton":
            try:
                from . import rate_dq_triton  # noqa: F401  (Triton present)

                self.backend = "triton"
            except ImportError:
                if BACKEND == "triton":
                    raise

    def flat(self, locs):
        """The local tensors as float32 [rows, ROW], each padded with zeros to whole rows (one copy)."""
        parts = []
        for lt, pad in zip(locs, self.pad):
            if lt.numel():
                parts.append(lt.detach().reshape(-1).float())
            if pad:
                parts.append(self._zeros[:pad])
        if not parts:
            return torch.zeros(0, ROW, dtype=torch.float32, device=self.device)
        return torch.cat(parts).view(self.rows, ROW)

    def _segment_sum(self, x):
        """Per-row float64 values [R, k] -> per-tensor sums [T, k] (rows of a tensor are consecutive;
        a difference of prefix sums: deterministic, one kernel). The prefix sums run along the last
        dimension of the transposed [k, R] copy: CUDA scans an outer dimension with one thread per column
        (k = 1 or 2 threads over ~14,000 rows: 1.8 ms on an H100, 40 % of the rate term's GPU time), the last
        dimension in parallel; on CPU both are the same serial sum."""
        if not x.shape[0]:
            return x.new_zeros(1, x.shape[1])[self.seg[1]]
        xt = x.t().contiguous()
        cs = torch.cat([torch.zeros_like(xt[:, :1]), xt.cumsum(1)], 1)
        return (cs[:, self.seg[1]] - cs[:, self.seg[0]]).t()

    def moments(self, F):
        """(mean, var) per tensor of the whole tensors (float64, all ranks equal)."""
        if self.backend == "triton":
            from . import rate_dq_triton

            s = rate_dq_triton.row_moments(F)
        elif self.backend == "numba":
            from . import rate_dq_cpu

            s = torch.from_numpy(rate_dq_cpu.row_moments(F.numpy()))
        else:
            s = torch.stack([F.sum(1, dtype=torch.float64), F.square().sum(1, dtype=torch.float64)], 1)
        s = _all_reduce(self._segment_sum(s), self.group)
        mean = s[:, 0] / self.n
        var = (s[:, 1] / self.n - mean * mean).clamp_min(1e-30)
        return mean, var

    # ------------------------------------------------------------ refresh-time statistics (no gradient)

    def _v64(self, F, step, center):
        """v = w / step - center in float64 [R, ROW] (refresh only)."""
        return F.double().div_(step[self.row_t, None]).sub_(center[self.row_t, None])

    @torch.no_grad()
    def set_bins(self):
        """Bin widths: the smallest power of two for which twice the largest |y| fits HALF_BINS bins."""
        F = self.flat(self._local())
        mean, var = self.moments(F)
        step, center = self.step_center(mean, var)
        v = self._v64(F, step, center).abs_()
        if len(self.last_rows):  # the padding of a tensor's last row is not one of its elements
            cols = torch.arange(ROW, device=self.device)
            v[self.last_rows] *= cols[None, :] < self.row_valid[self.last_rows, None]
        mx = torch.zeros(len(self.params), dtype=torch.float64, device=self.device)
        mx.scatter_reduce_(0, self.row_t, v.amax(1) if len(v) else v.new_zeros(0), "amax")
        mx = mx * 0.5 + 1.0
        import torch.distributed as dist

        _all_reduce(mx, self.group, dist.ReduceOp.MAX if self.group is not None else None)
        self.bin = torch.exp2(torch.ceil(torch.log2(2 * mx / HALF_BINS)).clamp_min(0))

    @torch.no_grad()
    def hist_bits(self):
        """Per tensor: the ans coder's estimate (bits) of the mixture of the Q0 and Q1 index histograms,
        from the fine token histogram (``rans.estimate_size``): the payload without running the trellis."""
        F = self.flat(self._local())
        mean, var = self.moments(F)
        step, center = self.step_center(mean, var)
        T = len(self.params)
        if self.backend == "numba":
            from . import rate_dq_cpu

            a = self._np
            h = torch.from_numpy(rate_dq_cpu.token_histogram(F.numpy(), a["row0"], a["row1"], a["valid"], step.numpy(),
                                                             center.numpy()))
            return self._estimate(_all_reduce(h.double(), self.group))
        v = self._v64(F, step, center)
        del F
        lim = float(1 << 23)
        off = (self.row_t * rans.FINE_K)[:, None]
        h = torch.zeros(T * rans.FINE_K, dtype=torch.float64, device=self.device)
        vp = -center  # the padding zeros' v
        for y, yp in ((0.5 * v, 0.5 * vp), (0.5 * (v + torch.sign(v)), 0.5 * (vp + torch.sign(vp)))):
            tok = _tokens(torch.round(y).clamp_(-lim, lim).long()).add_(off)
            h += torch.bincount(tok.reshape(-1), minlength=T * rans.FINE_K).double()
            del tok
            tp = _tokens(torch.round(yp).clamp(-lim, lim).long()) + torch.arange(T, device=self.device) * rans.FINE_K
            h.index_add_(0, tp, -self.npad)
        return self._estimate(_all_reduce(h.view(T, rans.FINE_K), self.group))

    @staticmethod
    def _estimate(h):
        h = h.cpu().numpy().astype(np.int64)
        return [8.0 * rans.estimate_size(hist=h[t], lane_symbols=ANS_LANE_SYMBOLS) / 2 if h[t].sum() else 0.0
                for t in range(h.shape[0])]

    # ------------------------------------------------------------ the estimate

    def _positions(self, F, inv, center, sc, rt=None):
        """P0, P1 = y0 / b, y1 / b clamped to [-K, K] (float32 [R, ROW]; eager path). ``rt``: the rows'
        tensors (default the layout's)."""
        K = HALF_BINS
        rt = self.row_t if rt is None else rt
        v = F * inv[rt, None]
        v -= center[rt, None]
        s = sc[rt, None]
        P0 = (v * s).clamp_(-K, K)
        P1 = v.add_(torch.sign(v)).mul_(s).clamp_(-K, K)
        return P0, P1

    def _hist(self, F, inv, center, sc):
        """Counts of round(P0) and round(P1) per tensor and bin (float64 [T, 2K+1]), padding excluded."""
        T, K = len(self.params), HALF_BINS
        nb = 2 * K + 1
        if self.backend == "triton":
            from . import rate_dq_triton

            return rate_dq_triton.histogram(F, self.row_t32, self.row_valid, inv, center, sc, T).double()
        if self.backend == "numba":
            from . import rate_dq_cpu

            a = self._np
            return torch.from_numpy(rate_dq_cpu.histogram(F.numpy(), a["row0"], a["row1"], a["valid"], inv.numpy(),
                                                          center.numpy(), sc.numpy())).double()
        h = torch.zeros(T * nb, dtype=torch.float64, device=self.device)
        off = (self.row_t * nb)[:, None]
        for P in self._positions(F, inv, center, sc):
            idx = P.add_(K + 0.5).floor_().long().add_(off)  # histc's bins: floor(P - (-K - 0.5)) in float32
            h += torch.bincount(idx.reshape(-1), minlength=T * nb).double()
            del idx
        # the padding zeros (v = -center) were counted: take them out
        tix = torch.arange(T, device=self.device)
        for P in self._positions(torch.zeros(T, 1, dtype=torch.float32, device=self.device), inv, center, sc, tix):
            h.index_add_(0, P.add_(K + 0.5).floor_().long().view(-1) + tix * nb, -self.npad)
        return h.view(T, nb)

    def _slopes(self, F, inv, center, sc, L, gscale):
        """G = d bits / d w without the std term (float32 [R, ROW]) and per-row sums of G * w (float64)."""
        K = HALF_BINS
        nb = 2 * K + 1
        if self.backend == "triton":
            from . import rate_dq_triton

            return rate_dq_triton.slopes(F, self.row_t32, self.row_valid, inv, center, sc, L, gscale)
        if self.backend == "numba":
            from . import rate_dq_cpu

            G, gw = rate_dq_cpu.slopes(F.numpy(), self._np["row_t"], self._np["valid"], inv.numpy(), center.numpy(),
                                       sc.numpy(), L.numpy(), gscale.numpy())
            return torch.from_numpy(G), torch.from_numpy(gw)
        Lf = L.reshape(-1)
        off = (self.row_t * nb + K)[:, None]
        G = None
        for P in self._positions(F, inv, center, sc):
            i0 = P.floor_().clamp_(max=K - 1).long().add_(off)
            slope = Lf[i0 + 1].sub_(Lf[i0])  # bits per bin
            G = slope if G is None else G.add_(slope)
            del i0
        G.mul_(gscale[self.row_t, None])
        return G, (G * F).sum(1, dtype=torch.float64)

    def compute(self, want_grad, locs=None):
        """(per-tensor bits incl. calibration [T] float64, gradient context or None). No autograd."""
        locs = self._local() if locs is None else locs
        with torch.no_grad():
            try:
                return self._compute(want_grad, locs)
            except Exception as e:  # a Triton that cannot compile here: warn once, run the torch path
                self._triton_failed(e)
                return self._compute(want_grad, locs)

    def _triton_failed(self, e):
        if self.backend != "triton" or BACKEND == "triton":
            raise e
        import warnings

        warnings.warn(f"RateLoss: the Triton kernels failed ({type(e).__name__}: {e}); using eager torch "
                      "operations", RuntimeWarning, stacklevel=4)
        self.backend = "torch"

    def _compute(self, want_grad, locs):
        F = self.flat(locs)
        mean, var = self.moments(F)
        step, center = self.step_center(mean, var)
        inv = (1.0 / step).float()
        c32 = center.float()
        sc = (0.5 / self.bin).float()
        hist = _all_reduce(self._hist(F, inv, c32, sc), self.group)
        # code length per bin: L = log2(2n) - log2(count) + log2(b); the value is the histogram's (half
        # of the two coordinates' total: n x the mixture's entropy), the gradient the slope of L linear
        # between bin centers (the first-order change of that total when a weight moves)
        h32 = hist.float()
        L = (torch.log2(2 * self.n) + torch.log2(self.bin)).float()[:, None] - torch.log2(h32 + _SMOOTH)
        total = (hist * L.double()).sum(1)
        bits = 0.5 * total + self.n * self.delta
        self.last = bits
        if not want_grad:
            return bits, None
        # d bits / d w = ½ (s0 + s1) · d y / d w, d y / d w = 1 / (2 Δ), per bin: / b
        gscale = (0.25 / self.bin * inv.double()).float()
        G, gw_rows = self._slopes(F, inv, c32, sc, L.contiguous(), gscale)
        gw = _all_reduce(self._segment_sum(gw_rows[:, None])[:, 0], self.group)
        return bits, (F, G, gw, mean, var)

    def grads(self, c, scale):
        """Per covered parameter: ``scale`` x d(total bits)/d(local shard), local shapes (None: empty).
        Views of one flat buffer (the context's slopes, overwritten)."""
        F, G, gw, mean, var = c
        scale = torch.as_tensor(scale, device=self.device)
        beta = (gw / (self.n * var)).float() * scale.float() * float(self.through_std)  # the std term
        m32 = mean.float()
        if self.backend == "triton":
            from . import rate_dq_triton

            try:
                rate_dq_triton.gradient(F, G, self.row_t32, scale.float().reshape(1), beta, m32)
            except Exception as e:  # G is untouched if the kernel did not launch
                self._triton_failed(e)
        if self.backend == "numba":
            from . import rate_dq_cpu

            rate_dq_cpu.gradient(F.numpy(), G.numpy(), self._np["row_t"], float(scale), beta.numpy(), m32.numpy())
        elif self.backend == "torch":
            G.mul_(scale.float()).sub_(F.sub_(m32[self.row_t, None]).mul_(beta[self.row_t, None]))
        flat = G.view(-1)
        locs = self._local()
        out = [None] * len(self.params)
        for t, (lt, r0, m) in enumerate(zip(locs, self.row_start, self.local_numel)):
            if m:
                out[t] = flat[r0 * ROW: r0 * ROW + m].view(lt.shape).to(lt.dtype)
        return out


class DQBits(torch.autograd.Function):
    """``scale`` x the summed estimate of all tensors of a :class:`DQRate` as one autograd node."""

    @staticmethod
    def forward(ctx, engine, scale, *locs):
        bits, c = engine.compute(True, list(locs))
        ctx.engine, ctx.c, ctx.scale = engine, c, scale
        ctx.shapes = [(lt.shape, lt.dtype, lt.device) for lt in locs]
        return (bits.sum() * scale).float()

    @staticmethod
    def backward(ctx, grad):
        if ctx.c is None:
            raise RuntimeError("RateLoss: backward through the same rate() twice")
        gs = ctx.engine.grads(ctx.c, grad.double() * ctx.scale)
        ctx.c = None
        return (None, None, *[g if g is not None else torch.zeros(s, dtype=d, device=v)
                              for g, (s, d, v) in zip(gs, ctx.shapes)])


def dq_reference_bits(w: torch.Tensor, rel: float, bin_width: float = 1.0, delta: float = 0.0) -> tuple:
    """The estimate of one whole tensor in plain float64 torch (slow; the tests' oracle): (value in bits,
    surrogate whose autograd gradient is the rate gradient)."""
    w = w.double().reshape(-1)
    n = w.numel()
    var, mean = torch.var_mean(w, correction=0)
    step = rel * dq.STEP_FACTOR * var.clamp_min(1e-30).sqrt()
    center = torch.round(mean.detach() / step.detach())
    v = w / step - center
    K = HALF_BINS
    total = 0.0
    ys = (0.5 * v, 0.5 * (v + torch.sign(v.detach())))
    ps = [(y / bin_width).clamp(-K, K) for y in ys]
    counts = torch.zeros(2 * K + 1, dtype=torch.float64)
    for p in ps:
        counts += torch.bincount(torch.floor(p.detach() + 0.5).long() + K, minlength=2 * K + 1).double()
    L = math.log2(2 * n) + math.log2(bin_width) - torch.log2(counts + _SMOOTH)
    value = 0.5 * float((counts * L).sum()) + n * delta
    for p in ps:
        i0 = p.detach().floor().clamp(max=K - 1).long()
        total = total + (L[i0 + K] + (p - i0) * (L[i0 + K + 1] - L[i0 + K])).sum()
    return value, 0.5 * total
