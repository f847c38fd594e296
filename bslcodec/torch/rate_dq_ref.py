"""The rate estimate of the default codec, computed the slow, obvious way: the reference for
:class:`bslcodec.torch.rate_dq.DQRate` (tests compare their values and gradients; ``tools/bench/train_gpu.py
--only-overhead`` times both in one process). The model and the surrogate are those described in
:mod:`bslcodec.torch.rate_dq`.

Select it for a :class:`bslcodec.torch.RateLoss` ``rate`` with ``rate._dq_cls = DQRateRef`` before the
first call."""

import numpy as np
import torch

from ..codecs import rans
from ..pipeline.codec import ANS_LANE_SYMBOLS
from .rate_dq import _SMOOTH, HALF_BINS, _all_reduce, _Engine, _tokens


class DQRateRef(_Engine):
    """The estimate for a fixed list of (global numel, parameter) of one device; ``rel`` per tensor.

    Eager torch operations per group of equal-size tensors (per-tensor ``histc``): the engine before the
    flat layout of :class:`bslcodec.torch.rate_dq.DQRate`, kept as its reference (same interface)."""

    def __init__(self, params, n, rel):
        super().__init__(params, n, rel)
        locals_groups = self._locals_groups
        # same local numel: one stacked [T_g, n_g] pass (a transformer has a handful of shapes)
        by_numel = {}
        for i, (lt, _) in enumerate(locals_groups):
            if lt.numel():
                by_numel.setdefault(lt.numel(), []).append(i)
        self.groups = list(by_numel.values())
        # the groups' rows as device index tensors: indexing a CUDA tensor with a Python list copies the
        # list from pageable memory, which waits for the stream (a sync every step)
        self.gidx = [torch.tensor(idx, dtype=torch.long, device=self.device) for idx in self.groups]

    def _rows(self, locs, idx):
        return torch.stack([locs[i].detach().reshape(-1).float() for i in idx])

    def moments(self, locs, Ws=None):
        """(mean, var) per tensor of the whole tensors (float64, all ranks equal). ``Ws``: the groups'
        stacked rows, if the caller has them already."""
        T = len(self.params)
        s = torch.zeros(T, 2, dtype=torch.float64, device=self.device)
        for k, (idx, gi) in enumerate(zip(self.groups, self.gidx)):
            W = self._rows(locs, idx) if Ws is None else Ws[k]
            s[gi] = torch.stack([W.sum(1, dtype=torch.float64), W.square().sum(1, dtype=torch.float64)], 1)
        _all_reduce(s, self.group)
        mean = s[:, 0] / self.n
        var = (s[:, 1] / self.n - mean * mean).clamp_min(1e-30)
        return mean, var

    # ------------------------------------------------------------ refresh-time statistics (no gradient)

    @torch.no_grad()
    def set_bins(self):
        """Bin widths: the smallest power of two for which twice the largest |y| fits HALF_BINS bins."""
        locs = self._local()
        mean, var = self.moments(locs)
        step, center = self.step_center(mean, var)
        mx = torch.zeros(len(self.params), dtype=torch.float64, device=self.device)
        for idx, gi in zip(self.groups, self.gidx):
            W = self._rows(locs, idx).double()
            v = W / step[gi, None] - center[gi, None]
            mx[gi] = v.abs().amax(1) * 0.5 + 1.0
        import torch.distributed as dist

        _all_reduce(mx, self.group, dist.ReduceOp.MAX if self.group is not None else None)
        self.bin = torch.exp2(torch.ceil(torch.log2(2 * mx / HALF_BINS)).clamp_min(0))

    @torch.no_grad()
    def hist_bits(self):
        """Per tensor: the ans coder's estimate (bits) of the mixture of the Q0 and Q1 index histograms,
        from the fine token histogram (``rans.estimate_size``): the payload without running the trellis."""
        locs = self._local()
        mean, var = self.moments(locs)
        step, center = self.step_center(mean, var)
        T = len(self.params)
        h = torch.zeros(T, rans.FINE_K, dtype=torch.float64, device=self.device)
        for idx, gi in zip(self.groups, self.gidx):
            W = self._rows(locs, idx).double()
            v = W / step[gi, None] - center[gi, None]
            lim = float(1 << 23)
            for y in (0.5 * v, 0.5 * (v + torch.sign(v))):
                tok = _tokens(torch.round(y).clamp(-lim, lim).long())
                tok = tok + torch.arange(len(idx), device=self.device)[:, None] * rans.FINE_K
                h[gi] += torch.bincount(tok.reshape(-1), minlength=len(idx) * rans.FINE_K
                                         ).view(len(idx), rans.FINE_K).double()
        h = _all_reduce(h, self.group).cpu().numpy().astype(np.int64)
        return [8.0 * rans.estimate_size(hist=h[t], lane_symbols=ANS_LANE_SYMBOLS) / 2 if h[t].sum() else 0.0
                for t in range(T)]

    # ------------------------------------------------------------ the estimate

    def compute(self, want_grad, locs=None):
        """(per-tensor bits incl. calibration [T] float64, gradient context or None). No autograd."""
        locs = self._local() if locs is None else locs
        with torch.no_grad():
            Ws = [self._rows(locs, idx) for idx in self.groups]  # stacked once: moments and positions
            mean, var = self.moments(locs, Ws)
            step, center = self.step_center(mean, var)
            inv = (1.0 / step).float()
            T = len(self.params)
            K = HALF_BINS
            nb = 2 * K + 1
            pos = {}  # group -> (W, P0, P1): weights and bin positions y / b (float32 [T_g, n_g])
            hist = torch.zeros(T, nb, dtype=torch.float32, device=self.device)
            for gi, (idx, ix) in enumerate(zip(self.groups, self.gidx)):
                W = Ws[gi]
                v = W * inv[ix, None] - center[ix, None].float()
                sc = (0.5 / self.bin[ix]).float()[:, None]
                P0 = (v * sc).clamp_(-K, K)  # y0 / b
                P1 = torch.addcmul(v, torch.sign(v), torch.ones_like(sc)).mul_(sc).clamp_(-K, K)  # y1 / b
                del v
                for P in (P0, P1):
                    for r, t in enumerate(idx):  # bins centered on -K..K
                        hist[t] += torch.histc(P[r], bins=nb, min=-K - 0.5, max=K + 0.5)
                pos[gi] = (W, P0, P1) if want_grad else None
            del Ws
            _all_reduce(hist, self.group)
            # code length per bin: L = log2(2n) - log2(count) + log2(b); the value is the histogram's
            # (half of the two coordinates' total: n x the mixture's entropy), the gradient the slope of L
            # linear between bin centers (the first-order change of that total when a weight moves)
            L = (torch.log2(2 * self.n) + torch.log2(self.bin)).float()[:, None] - torch.log2(hist + _SMOOTH)
            total = (hist.double() * L.double()).sum(1)
            gw = torch.zeros(T, dtype=torch.float64, device=self.device)
            ctx = {}
            for gi, ix in enumerate(self.gidx if want_grad else ()):
                W, P0, P1 = pos.pop(gi)
                Lg = L[ix]
                G = None
                for P in (P0, P1):
                    i0 = P.floor().clamp_(max=K - 1)
                    i0 = i0.long().add_(K)
                    slope = torch.gather(Lg, 1, i0 + 1).sub_(torch.gather(Lg, 1, i0))  # bits per bin
                    G = slope if G is None else G.add_(slope)
                    del i0
                # d bits / d w = ½ (s0 + s1) · d y / d w, d y / d w = 1 / (2 Δ), per bin: / b
                G.mul_((0.25 / self.bin[ix] * inv[ix].double()).float()[:, None])
                gw[ix] = (G * W).sum(1, dtype=torch.float64)
                ctx[gi] = (W, G)
            bits = 0.5 * total + self.n * self.delta
            self.last = bits
            if not want_grad:
                return bits, None
            return bits, (ctx, _all_reduce(gw, self.group), mean, var)

    def grads(self, c, scale):
        """Per covered parameter: ``scale`` x d(total bits)/d(local shard), local shapes (None: empty)."""
        ctx, gw, mean, var = c
        beta = (gw / (self.n * var)).float() * scale * float(self.through_std)  # the std term: Δ ∝ std(W)
        locs = self._local()
        out = [None] * len(self.params)
        for gi, (idx, ix) in enumerate(zip(self.groups, self.gidx)):
            W, G = ctx[gi]
            g = G.mul_(scale).sub_(W.sub_(mean[ix].float()[:, None]).mul_(beta[ix, None]))
            for r, t in enumerate(idx):
                out[t] = g[r].view(locs[t].shape).to(locs[t].dtype)
        return out
