"""The runtime of compressed-resident weights (:mod:`bslcodec.torch.compressed`): the compressed weights,
the units decoded together, and :class:`CompressedModel`, whose forward pre-hooks decode a unit into a scratch
slot just before it runs (with ``prefetch``, the next unit on a side stream) and drop it after."""

from __future__ import annotations

import torch
from torch import nn

from ..codecs import params as _params
from ..container.errors import FormatError

__all__ = ["CompressedModel"]

_ALIGN = 256  # byte alignment of payloads and of weights inside a scratch slot
_MODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # kernel MODE of the output dtype
_TORCH_DTYPE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


DEFAULT_TYPES = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_EXTRA_TYPE_NAMES = ("Conv1D",)  # transformers' GPT-2 style Conv1D (weight used in its own forward)
_BLOCK = 256
_MAX_GRID = 1 << 20

_MULTI_NAMES = ("bsl_multi_f32", "bsl_multi_f16", "bsl_multi_bf16")  # bslcodec/gpu/_kernel_src.py MULTI_SOURCE


def _align(n: int, a: int = _ALIGN) -> int:
    return n + (-n % a)


def _multi_module(device_index: int):
    from ..gpu._eg import multi_module

    return multi_module(device_index)


class _Weight:
    """One compressed tensor: where its payload is, how to decode it, and where it is used."""

    __slots__ = ("name", "entry", "where", "shape", "dtype", "numel", "nbytes", "placeholder", "payload",
                 "pay_off", "offs_off", "G", "head_padded", "n_words", "step", "center", "S", "sites", "codec",
                 "prep", "table_dev", "wstart_dev")

    def __init__(self, name, entry, where, dtype):
        self.name, self.entry, self.where = name, entry, where
        self.shape = tuple(entry.shape)
        self.dtype = dtype
        self.numel = entry.numel
        self.nbytes = self.numel * torch.empty((), dtype=dtype).element_size()
        self.placeholder = torch.empty(self.shape, dtype=dtype, device="meta")
        self.sites = []  # (module, attribute name)
        self.payload = None  # CPU: uint8 numpy view; GPU: uint8 CUDA tensor view
        self.codec = entry.codec
        self.prep = self.table_dev = self.wstart_dev = None  # ans on the GPU: checked layout, table, group starts

    def ans_job(self, out):
        """The ``bslcodec.gpu._ans`` job that decodes this (``ans`` or ``ans-dq``) weight into ``out``."""
        return {"name": self.where, "payload": self.payload, "n_elems": self.numel, "lane_symbols": self.S,
                "step": self.step, "center": self.center, "dtype": self.dtype, "out": out, "prepared": self.prep,
                "table_dev": self.table_dev, "wstart_dev": self.wstart_dev, "dq": self.codec == "ans-dq"}


class _Unit:
    """Weights decoded together before ``module`` runs."""

    def __init__(self, name, module):
        self.name, self.module = name, module
        self.items = []  # (weight, [(module, attr) sites inside this unit])
        self.offsets = []  # byte offset of each item inside a scratch slot
        self.nbytes = 0
        self.views = {}  # slot -> [(module, attr, view)]
        self.launches = {}  # slot -> [(kernel, grid, args)]
        self.jobs = {}  # slot -> [jobs tensor per launch] (kept alive)

    def add(self, weight, sites):
        self.offsets.append(self.nbytes)
        self.items.append((weight, sites))
        self.nbytes = _align(self.nbytes + weight.nbytes)


def _module_ok(mod, types) -> bool:
    return isinstance(mod, types) or type(mod).__name__ in _EXTRA_TYPE_NAMES


class CompressedModel:
    """The state of a model loaded by :func:`load_compressed` (``model._bsl_compressed``).

    ``summary()``: bytes resident and per unit; ``weight(name)``: a fresh decoded copy of one weight;
    ``check()``: raise if a decode since the last check saw a corrupt payload (GPU); ``remove()``: put dense
    parameters back and drop the hooks. ``missing_keys`` / ``unexpected_keys`` as ``load_state_dict`` reports.
    """

    def __init__(self, model, device, prefetch, kernel):
        self.model = model
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.cuda = self.device.type == "cuda"
        self.prefetch = bool(prefetch) and self.cuda
        self.kernel = kernel if self.cuda else "cpu"
        self.weights = {}  # name -> _Weight
        self.units = []
        self.dense_names = []
        self.missing_keys, self.unexpected_keys = [], []
        self.payload_buf = None
        self.offs_buf = None
        self.slots = []
        self._hooks = []
        self._trace, self._trace_set, self._next = [], set(), None
        self.owner, self.ready, self.free = [], [], []
        self._pending = None
        self._last_slot = 0
        self.stats = {"decodes": 0, "prefetch_hits": 0, "prefetch_issued": 0, "fresh_decodes": 0}

    # ------------------------------------------------------------------ sizes
    def summary(self) -> dict:
        dense = sum(p.numel() * p.element_size() for p in self.model.parameters())
        dense += sum(b.numel() * b.element_size() for b in self.model.buffers())
        comp = sum(w.payload.numel() if isinstance(w.payload, torch.Tensor) else w.payload.size
                   for w in self.weights.values())
        return {
            "device": str(self.device), "kernel": self.kernel, "prefetch": self.prefetch,
            "compressed_tensors": len(self.weights),
            "compressed_elements": sum(w.numel for w in self.weights.values()),
            "compressed_bytes": comp,
            "resident_bytes": (self.payload_buf.numel() if self.payload_buf is not None else 0)
            + (self.offs_buf.numel() * 8 if self.offs_buf is not None else 0)
            + sum(w.table_dev.numel() * 8 + w.wstart_dev.numel() * 8 for w in self.weights.values()
                  if w.table_dev is not None),
            "decoded_bytes": sum(w.nbytes for w in self.weights.values()),
            "scratch_bytes": sum(s.numel() for s in self.slots),
            "dense_bytes": dense,
            "dense_tensors_from_file": len(self.dense_names),
            "units": len(self.units),
            "largest_unit_bytes": max((u.nbytes for u in self.units), default=0),
            **self.stats,
        }

    # ------------------------------------------------------------------ decoding
    def _decode_weight(self, w, out, check=False):
        """Decode ``w`` into the flat tensor ``out`` (its dtype) on the current stream / CPU."""
        if self.cuda and w.codec in _params.ANS_CODECS:
            from ..gpu._ans import decode_ans_many

            decode_ans_many([w.ans_job(out)], device=self.device, check=check)
        elif self.cuda:
            from ..gpu._eg import decode_eg

            decode_eg(w.payload, w.numel, w.S, w.step, w.center, w.dtype, device=self.device, out=out, check=check)
        else:
            # the CPU decoders (numba): only where the GPU does not decode
            from ..pipeline.codec import decode_flat

            arr = decode_flat(w.entry, w.payload, w.where)
            from ..pipeline.arrays import _to_framework

            out.copy_(_to_framework(arr, "pt", "cpu"))

    def _decode_unit(self, u, slot, stream=None):
        self.stats["decodes"] += 1
        if self.kernel == "multi":
            stream = stream if stream is not None else torch.cuda.current_stream(self.device)
            for launch in u.launches[slot]:
                if isinstance(launch, tuple):  # eg: (kernel, grid, args)
                    fn, grid, args = launch
                    fn((grid,), (_BLOCK,), args, stream=stream)
                else:  # ans: a bslcodec.gpu._ans.Launch
                    launch.run(stream)
            return
        ctx = torch.cuda.stream(stream) if stream is not None else _nullcontext()
        with ctx:
            for (w, _), flat in zip(u.items, _flat_views(u, slot)):
                self._decode_weight(w, flat)

    def weight(self, name: str) -> torch.Tensor:
        """A fresh decoded copy of compressed weight ``name`` (on the model's device)."""
        w = self.weights[name]
        out = torch.empty(w.numel, dtype=w.dtype, device=self.device)
        self._decode_weight(w, out, check=True)
        return out.view(w.shape)

    def check(self):
        """Raise FormatError when a GPU decode since the last check flagged a corrupt payload."""
        if self.cuda and self._err is not None:
            code = int(self._err.item())
            if code:
                self._err.zero_()
                raise FormatError(f"compressed weights: the GPU decoder flagged a corrupt payload (code {code})")

    # ------------------------------------------------------------------ hooks
    def _record_trace(self, u):
        if self._next is not None:
            return
        if u in self._trace_set:  # a unit seen again: the trace is one forward (or the part before a repeat)
            self._next = {a: b for a, b in zip(self._trace, self._trace[1:] + self._trace[:1])}
            return
        self._trace.append(u)
        self._trace_set.add(u)

    def _acquire(self, u, stream):
        """The slot that holds ``u`` decoded, ready for ``stream`` to read."""
        for s, owner in enumerate(self.owner):
            if owner is u:
                if self.ready[s] is not None:
                    stream.wait_event(self.ready[s])
                    self.ready[s] = None
                    self.stats["prefetch_hits"] += 1
                if self._pending == s:
                    self._pending = None
                return s
        n = len(self.slots)
        if n == 1:
            s = 0
        else:
            s = 1 - self._pending if self._pending is not None else 1 - self._last_slot
        if self.ready[s] is not None:  # a prefetch into s that was not used: write after it
            stream.wait_event(self.ready[s])
            self.ready[s] = None
        if self._pending == s:
            self._pending = None
        self.owner[s] = None
        self._decode_unit(u, s, stream)
        self.owner[s] = u
        return s

    def _prefetch_after(self, u, s):
        nxt = self._next.get(u) if self._next else None
        if nxt is None or nxt is u or any(o is nxt for o in self.owner):
            return
        t = 1 - s
        side = self._side
        side.wait_event(self.free[t])  # the last reader of slot t is done with it
        if self.ready[t] is not None:
            self.ready[t] = None  # an unused prefetch: same stream, so the new decode is ordered after it
        self.owner[t] = None
        self._decode_unit(nxt, t, side)
        ev = torch.cuda.Event()
        ev.record(side)
        self.ready[t] = ev
        self.owner[t] = nxt
        self._pending = t
        self.stats["prefetch_issued"] += 1

    def _fresh(self, u):
        self.stats["fresh_decodes"] += 1
        for w, sites in u.items:
            t = torch.empty(w.numel, dtype=w.dtype, device=self.device)
            self._decode_weight(w, t)
            t = t.view(w.shape)
            for m, a in sites:
                m.__dict__[a] = t

    def _pre(self, u):
        def hook(module, args):
            if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
                self._fresh(u)
                return None
            if self.cuda:
                self._record_trace(u)
                stream = torch.cuda.current_stream(self.device)
                s = self._acquire(u, stream)
                self._last_slot = s
                if self.prefetch:
                    self._prefetch_after(u, s)
            else:
                s = 0
                self._decode_unit(u, 0)
            for m, a, v in u.views[s]:
                m.__dict__[a] = v
            return None
        return hook

    def _post(self, u):
        def hook(module, args, output):
            for w, sites in u.items:
                for m, a in sites:
                    m.__dict__[a] = w.placeholder
            if self.cuda and len(self.slots) > 1:
                self.free[self._last_slot].record(torch.cuda.current_stream(self.device))
            return None
        return hook

    def _register(self):
        for u in self.units:
            self._hooks.append(u.module.register_forward_pre_hook(self._pre(u)))
            try:
                self._hooks.append(u.module.register_forward_hook(self._post(u), always_call=True))
            except TypeError:  # older torch
                self._hooks.append(u.module.register_forward_hook(self._post(u)))

    def remove(self):
        """Put dense (decoded) parameters back into the modules, drop the hooks and the device buffers."""
        for w in self.weights.values():
            p = nn.Parameter(self.weight(w.name), requires_grad=False)
            for m, a in w.sites:
                m.__dict__.pop(a, None)
                m._parameters[a] = p
        for h in self._hooks:
            h.remove()
        self._hooks, self.units, self.weights, self.slots = [], [], {}, []
        self.payload_buf = self.offs_buf = None
        if getattr(self.model, "_bsl_compressed", None) is self:
            del self.model._bsl_compressed
        return self.model

    def verify_kernels(self) -> dict:
        """Decode every unit with the per-forward path and compare bit for bit with ``decode_eg`` (GPU self-check)."""
        bad = []
        stream = torch.cuda.current_stream(self.device) if self.cuda else None
        for u in self.units:
            self.owner[0] = None
            self._decode_unit(u, 0, stream)
            for (w, _), view in zip(u.items, _flat_views(u, 0)):
                want = self.weight(w.name).reshape(-1)
                if not torch.equal(view.view(_int_of(w.dtype)), want.view(_int_of(w.dtype))):
                    bad.append(w.name)
        self.owner = [None] * len(self.slots)
        self.ready = [None] * len(self.slots)
        self._pending = None
        self.check()
        return {"units": len(self.units), "weights": sum(len(u.items) for u in self.units), "mismatches": bad}


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _int_of(dtype):
    return {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}.get(dtype, dtype)


def _flat_views(u, slot):
    """The flat scratch view of each item of ``u`` in ``slot`` (one per weight, not per site)."""
    return u.flat[slot]
