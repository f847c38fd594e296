"""Differentiable rate of ``.bsl`` codecs for training (the BackSlash regulariser, arXiv 2504.16968).

:class:`RateLoss` takes ``expert={"quantizer": q}`` as ``save_file`` does. The default (``"auto"``:
dependent quantization with ``bits`` or a ``rel_step``, the codec ``ans-dq`` that ``save_file`` writes by
default) is estimated by :mod:`bslcodec.torch.rate_dq` (on the parameters' device, all tensors in four fused
passes; DDP and FSDP2); the exp-Golomb surrogate of :mod:`bslcodec.torch.rate_eg` (its math, fused kernels and
calibration) serves ``"uniform"`` (plain rounding, and ``max_error``). This module holds the rate loss
itself: which parameters it covers, the refresh (the encoder's own analysis) and the estimate and its
gradient. :func:`bslcodec.torch.save_trained` (:mod:`bslcodec.torch.trained`) writes the file with the
parameters the rate loss assumed.

Usage::

    rate = RateLoss(model, lam=0.05, expert={"rel_step": 1/8})  # lam: loss units per bit/weight (dq: ans-dq)
    loss = task_loss + rate()                                 # or: rate.attach() (gradient hooks)
    rate.bits(), rate.total_bits, rate.bits_per_weight        # logging
    save_trained(model, "model.bsl", rate=rate)               # encode with exactly these parameters
"""

import fnmatch
import math

import numpy as np
import torch

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
from .rate_eg import (
    _ANS_OVERHEAD_PER_SYMBOL,
    _Batch,
    _FusedAll,
    _FusedBits,
    _fused_grad,
    _fused_value,
    _gg_soft_mean,
    _keep_torch_threads,
    _numba_threads_for,
    _overhead_bits,
    _SoftBits,
)

_LN2 = math.log(2.0)


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    from ..pipeline.arrays import as_numpy

    return as_numpy(t.detach())




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
DRIFT = 0.05  # dq: refresh early once the per-tensor estimates moved this much (Σ|b - b_ref| / Σ b_ref)


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
    :mod:`bslcodec.torch.rate_dq`'s (on the parameters' device, Triton kernels on CUDA, Numba on CPU; DDP
    and FSDP2 DTensor shards supported); with ``"uniform"`` it is this module's exp-Golomb surrogate (one process).
    ``refresh_every``: the most steps between re-estimations (GG fit, orders, calibration). With dq a refresh
    also comes earlier when the estimate has drifted: once the lossy tensors' bits have moved by
    Σ|b − b_refresh| / Σ b_refresh > ``rate.drift`` (default ``DRIFT`` = 5 %) since the last refresh, because
    training that reshapes the weights makes the calibration stale (a char LM fine-tuned at λ=3 and 10:
    at most 1.8–2.7 % off the written payload along training instead of 7.8–8.0 %, 8–10 refreshes in 300
    steps instead of 3: ``results/training.md``). The measure is of values every rank shares, so every rank refreshes at
    the same step; ``rate.drift = math.inf`` turns it off; ``rate.refreshes`` counts refreshes. ``calibrate``:
    "exact" (the encoder's own size at each refresh; with FSDP every rank gathers and encodes every
    tensor), "gg" (plain rounding: the GG model only) or "hist" (dq: the ans estimate of the modelled
    index histogram, computed on the device; no encoder run). ``eps``: surrogate smoothing width, in steps.
    ``fused`` (``"uniform"``): CPU float32 tensors go through batched Numba kernels, three calls a step
    for all tensors together (else, and on GPU, torch operations a tensor). A refresh runs the encoder's own analysis
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
        self.refreshes = 0  # refreshes so far (every refresh_every steps, or earlier on drift: _drifted)
        self._refreshed_at = None  # self.steps at the last refresh
        self._ref = None  # dq: per-tensor bits right after the last refresh (device), and Σ of them
        self._pending = None  # CUDA: (pinned host scalar, event) of the drift measure of the previous step
        self.drift = DRIFT
        self._hooks = []
        self._batch = None  # the lossy tensors as one _Batch (CPU float32), rebuilt at a refresh
        self._hook_grads = None  # hook mode: state -> rate gradient of the current backward pass
        self._dq = None  # dq: the rate_dq.DQRate of the lossy tensors, rebuilt when that set changes
        self._dq_cls = rate_dq.DQRate  # (rate_dq_ref.DQRateRef: the per-tensor reference, for comparisons)
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
        self.refreshes += 1
        self._refreshed_at, self._pending = self.steps, None

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
        self._ref = (want, want.sum().clamp_min(1.0))
        for st in lossy:
            st.k, st.nu, st.alpha = 0, float("nan"), float("nan")

    def _dq_engine(self):
        """The DQRate of the lossy tensors at the current rel_step (None if every tensor is stored exactly)."""
        lossy = [st for st in self.states if not st.lossless]
        if not lossy:
            self._dq = None
            return None
        if self._dq is None or [id(p) for p in self._dq.params] != [id(st.param) for st in lossy]:
            self._dq = self._dq_cls([st.param for st in lossy], [st.n for st in lossy],
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
        if (self._refreshed_at is None or self.steps - self._refreshed_at >= self.refresh_every
                or self._drifted()):
            self.refresh()
        self.steps += 1

    def _drifted(self) -> bool:
        """dq: whether the estimate has moved more than ``self.drift`` since the last refresh, measured as
        Σ_t |b_t - b_t(refresh)| / Σ_t b_t(refresh) over the lossy tensors' bits of the last call (values
        every rank computes from all-reduced histograms: the same decision on every rank). The calibration
        ``delta`` is fitted at a refresh; it stays right while the histograms keep their shape and goes
        stale as training reshapes them, which moves their entropy. On CUDA the measure is read one step
        late (copied to host memory without waiting; an event says when it is there), so a step does not
        wait for the device."""
        eng = self._dq
        if self.quantizer != "dq" or eng is None or self._ref is None or eng.last is None:
            return False
        ref, tot = self._ref
        if eng.last is ref or eng.last.shape != ref.shape:
            return False
        with torch.no_grad():
            d = (eng.last - ref).abs().sum() / tot
        if eng.device.type != "cuda":
            return float(d) > self.drift
        prev, self._pending = self._pending, None
        host = torch.empty((), dtype=torch.float64, pin_memory=True)
        host.copy_(d, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self._pending = (host, ev)
        if prev is None:
            return False
        prev[1].synchronize()
        return float(prev[0]) > self.drift

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
