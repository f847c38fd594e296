"""Compressed-resident weights: ``load_compressed(model, path, device="cuda")``.

The weights of a model stay compressed in device memory, as the ``eg`` payloads of the ``.bsl`` file (spec
4.3), and are decoded just in time before each *unit* runs (a transformer block, or one module), into a
reusable scratch buffer, then dropped. GPU memory is then about the compressed size plus the scratch (one unit,
or two with ``prefetch=True``) plus the weights that are stored exactly (norms, biases)::

    import torch, bslcodec
    from bslcodec.torch.compressed import load_compressed
    with torch.device("meta"):
        model = MyModel(config)            # or any model on the CPU; its weights are replaced
    cm = load_compressed(model, "model.bsl", device="cuda")
    with torch.inference_mode():
        y = model(x)
    print(cm.summary())                    # bytes resident, scratch, units

How it works:

* Every parameter of an ``nn.Linear`` / ``nn.Embedding`` / ``nn.Conv*`` (``types=``) whose file entry is lossy
  (``eg`` or ``ans``) is removed from its module. Its payload goes to the device once,
  into one ``uint8`` buffer, with the per-group word offsets of the GPU decoder computed once at load time.
  Outside a forward the module's attribute (``linear.weight``) is a ``meta`` tensor of the right shape and
  dtype; during the module's forward it is a view of the scratch buffer holding the decoded values.
* Units: with ``unit="block"`` (default) the children of the model's largest ``nn.ModuleList`` (its transformer
  layers) are units, so each layer's weights are decoded together, in one kernel launch per dtype, by a forward
  pre-hook on the layer; everything else (embeddings, the LM head) is one unit per module. ``unit="module"``
  makes every module its own unit.
* ``prefetch=True`` (CUDA): two scratch slots; while unit *i* runs on the current stream, unit *i+1* (in the
  order seen in the first forward) is decoded on a side stream into the other slot. Events order every write
  after the last reader of the slot, and every reader after its decode; a unit that was not predicted is
  decoded on the current stream, so any call order stays correct (only the overlap is lost).
* With autograd recording (``torch.is_grad_enabled()`` outside ``inference_mode``) each forward decodes into
  fresh tensors instead of the shared scratch, because autograd may keep a weight until ``backward``.

Decoded values are exactly those of ``bslcodec.load_file``: the GPU path runs the same per-thread decoder as
``bslcodec.gpu.decode_eg`` (a multi-tensor entry point compiled from the same CUDA source), and every payload is
decoded once with all checks at load time (``validate=True``), so the per-forward launches skip the error read.

Limits: inference only (no gradients reach the compressed weights); a weight must be used by its own module's
forward (true of HF models; a model that reads ``other_module.weight`` directly would see the meta placeholder);
no CUDA graphs / ``torch.compile`` (the hooks are Python); units must not nest.
"""

from __future__ import annotations

import dataclasses as _dataclasses
import os
import warnings

import numpy as np
import torch
from torch import nn

from ..codecs import transcode as _transcode
from ..codecs.golomb import word_offsets as eg_word_offsets
from ..container.errors import BslError, FormatError
from ..container.limits import LANES
from ..pipeline import codec as _codec

__all__ = ["load_compressed", "CompressedModel"]

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
        self._cupy_streams = {}
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
    def _cupy_stream(self, stream):
        cs = self._cupy_streams.get(stream.cuda_stream)
        if cs is None:
            from ..gpu._eg import _cupy_stream

            cs = self._cupy_streams[stream.cuda_stream] = _cupy_stream(stream)
        return cs

    def _decode_weight(self, w, out, check=False):
        """Decode ``w`` into the flat tensor ``out`` (its dtype) on the current stream / CPU."""
        if self.cuda and w.codec in _codec.ANS_CODECS:
            from ..gpu._ans import decode_ans_many

            decode_ans_many([w.ans_job(out)], device=self.device, check=check)
        elif self.cuda:
            from ..gpu._eg import decode_eg

            decode_eg(w.payload, w.numel, w.S, w.step, w.center, w.dtype, device=self.device, out=out, check=check)
        else:
            arr = _codec.decode_flat(w.entry, w.payload, w.where)
            from ..pipeline.arrays import _to_framework

            out.copy_(_to_framework(arr, "pt", "cpu"))

    def _decode_unit(self, u, slot, stream=None):
        self.stats["decodes"] += 1
        if self.kernel == "multi":
            import cupy

            with cupy.cuda.Device(self.device.index), self._cupy_stream(stream):
                for launch in u.launches[slot]:
                    if isinstance(launch, tuple):  # eg: (kernel, grid, args)
                        fn, grid, args = launch
                        fn((grid,), (_BLOCK,), args)
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


def _find_sites(model):
    """id(param) -> (param, [(qualified name, module, attr)]); same for buffers (shared tensors grouped)."""
    params, buffers = {}, {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        for attr, p in mod._parameters.items():
            if p is not None:
                params.setdefault(id(p), (p, []))[1].append((f"{mname}.{attr}" if mname else attr, mod, attr))
        for attr, b in mod._buffers.items():
            if b is not None and attr not in mod._non_persistent_buffers_set:
                buffers.setdefault(id(b), (b, []))[1].append((f"{mname}.{attr}" if mname else attr, mod, attr))
    # named_modules(remove_duplicate=False) can list a module twice under one name: keep each site once
    for table in (params, buffers):
        for k, (t, sites) in table.items():
            seen, uniq = set(), []
            for s in sites:
                if s[0] not in seen:
                    seen.add(s[0])
                    uniq.append(s)
            table[k] = (t, uniq)
    return params, buffers


def _block_units(model, site_modules):
    """Module name of the block owning each compressed module: children of the largest nn.ModuleList."""
    best, best_count = None, 0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 1:
            prefix = f"{name}." if name else ""
            count = sum(1 for m in site_modules if m.startswith(prefix))
            if count > best_count:
                best, best_count = (name, mod), count
    return best


def load_compressed(model: nn.Module, path, device="cuda", *, unit: str = "block", prefetch: bool = False,
                    types=DEFAULT_TYPES, strict: bool = True, validate: bool = True,
                    kernel: str = "multi", gpu_codec: str = "keep") -> CompressedModel:
    """Load the ``.bsl`` weights at ``path`` into ``model`` on ``device``, keeping lossy weights compressed.

    ``path``: a ``.bsl`` file or a folder written by ``bslcodec encode`` (shards included). ``model``: on the
    CPU or on the ``meta`` device (then every tensor must come from the file, except non-persistent buffers
    that the caller has already built for real). Compressed: parameters of modules of ``types`` whose entry is
    ``eg`` with a float dtype the GPU decoder writes (on the CPU: any lossy codec). Everything else is decoded
    and placed on ``device`` as ordinary parameters and buffers; tied parameters stay tied.

    ``unit``: ``"block"`` or ``"module"`` (see the module docstring); ``prefetch``: decode the next unit on a
    side stream (CUDA, two scratch slots); ``kernel``: ``"multi"`` (one launch per unit and dtype) or
    ``"decode_eg"`` (``bslcodec.gpu.decode_eg`` per tensor, slower to launch). ``gpu_codec``: ``"keep"`` the
    file's entropy stage, or ``"eg"``: on a GPU, re-code ``ans`` payloads as ``eg`` at load time
    (``bslcodec.codecs.transcode``; same symbols, same decoded values, ~5 % more memory, faster per-layer decoding:
    results/inference.md). ``strict``: raise RuntimeError,
    before anything changes, when the file lacks a key of ``model.state_dict()`` or has one the model does not.
    Returns the :class:`CompressedModel` (also ``model._bsl_compressed``).
    """
    from ..files.api import _Source
    from ..files.readers import bsl_files
    from ..pipeline.arrays import _to_framework

    if unit not in ("block", "module"):
        raise BslError(f"unit must be 'block' or 'module', not {unit!r}")
    if kernel not in ("multi", "decode_eg"):
        raise BslError(f"kernel must be 'multi' or 'decode_eg', not {kernel!r}")
    if gpu_codec not in ("keep", "eg"):
        raise BslError(f"gpu_codec must be 'keep' or 'eg', not {gpu_codec!r}")
    dev = torch.device(device)
    if getattr(model, "_bsl_compressed", None) is not None:
        raise BslError("this model already has compressed weights (call ._bsl_compressed.remove() first)")
    if dev.type == "cuda":
        import bslcodec.gpu  # noqa: F401  (GpuUnavailableError, an ImportError, when it cannot run here)
    cm = CompressedModel(model, dev, prefetch, kernel)
    dev = cm.device

    sources = []
    try:
        located = {}
        for f in bsl_files(path):
            src = _Source(path=os.fspath(f))
            sources.append(src)
            for name in src.entries:
                if name in located:
                    raise BslError(f"{path}: tensor {name!r} is in two files")
                located[name] = src
        params, buffers = _find_sites(model)

        # ---------------------------------------------------------- names (strict check before any change)
        expected, covered = set(), set()
        for table in (params, buffers):
            for _, sites in table.values():
                names = [s[0] for s in sites]
                expected.update(names)
                if any(n in located for n in names):
                    covered.update(names)
        cm.missing_keys = sorted(expected - covered)
        cm.unexpected_keys = sorted(set(located) - expected)
        if strict and (cm.missing_keys or cm.unexpected_keys):
            parts = []
            if cm.missing_keys:
                parts.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in cm.missing_keys) + ".")
            if cm.unexpected_keys:
                parts.append("Unexpected key(s) in state_dict: "
                             + ", ".join(f'"{k}"' for k in cm.unexpected_keys) + ".")
            raise RuntimeError(f"Error(s) in loading state_dict for {type(model).__name__} from {path}:\n\t"
                               + "\n\t".join(parts))

        # ---------------------------------------------------------- which parameters stay compressed
        plan = []  # (weight, param, sites)
        dense = []  # (tensor, sites, is_param, file name)
        for table, is_param in ((params, True), (buffers, False)):
            for t, sites in table.values():
                fname = next((s[0] for s in sites if s[0] in located), None)
                if fname is None:
                    continue
                src = located[fname]
                e = src.entry(fname)
                if tuple(e.shape) != tuple(t.shape):
                    raise RuntimeError(f"{path}: tensor {fname!r} has shape {tuple(e.shape)} in the file, "
                                       f"{tuple(t.shape)} in the model")
                target = t.dtype if t.dtype in _MODE else _TORCH_DTYPE.get(e.dtype)
                # kept compressed: the lossy codecs (eg, ans, ans-dq), whose payloads are several times smaller
                # than the values; lossless ones (raw, zstd, fexp) are decoded at load time
                ok = is_param and e.codec in _codec.QUANTIZED_CODECS and e.numel > 0 and \
                    all(_module_ok(m, types) for _, m, _ in sites)
                if ok and cm.cuda:
                    # the GPU writes fl32(q*step) rounded to the output dtype: equal to decode-then-cast only
                    # when the file holds F32, or the output is the file's own dtype
                    ok = e.codec in _codec.QUANTIZED_CODECS and e.dtype in ("F32", "F16", "BF16") and target in _MODE and \
                        (e.dtype == "F32" or target == _TORCH_DTYPE[e.dtype])
                if ok:
                    w = _Weight(fname, e, f"{src.where}: tensor {fname!r}", target)
                    w.sites = [(m, a) for _, m, a in sites]
                    plan.append((w, src))
                else:
                    dense.append((t, sites, is_param, fname))

        # ---------------------------------------------------------- payloads to the device
        recoded = {}  # name -> eg payload (numpy) of an ans weight, with gpu_codec="eg" on a GPU
        if cm.cuda and gpu_codec == "eg":
            for w, src in plan:
                if w.entry.codec == "ans":
                    _, center, s = _codec._check_ans_params(w.entry, w.where)
                    try:
                        eg = _transcode.ans_to_eg(src.payload(w.entry), w.entry.numel, s, center)
                    except FormatError as exc:
                        raise FormatError(f"{w.where}: {exc}") from None
                    recoded[w.name] = np.frombuffer(eg, np.uint8)
        total = sum(_align(recoded[w.name].size if w.name in recoded else w.entry.length) for w, src in plan)
        offs_parts, offs_total = [], 0
        if cm.cuda:
            cm.payload_buf = torch.empty(max(total, 1), dtype=torch.uint8, device=dev)
        else:
            cm.payload_buf = torch.empty(max(total, 1), dtype=torch.uint8)
        pos = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only mmap views: only read
            for w, src in plan:
                e = w.entry
                mv = recoded.get(w.name)
                if mv is not None:  # eg from here on; step and center are the ans entry's
                    e = _dataclasses.replace(e, codec="eg", length=mv.size,
                                             params=dict(e.params, lane_symbols=_transcode.EG_LANE_SYMBOLS))
                    w.codec = "eg"
                else:
                    mv = src.payload(e)  # checksum verified here
                length = e.length
                host = torch.from_numpy(np.frombuffer(mv, np.uint8))
                cm.payload_buf[pos:pos + length].copy_(host)
                w.payload = cm.payload_buf[pos:pos + length] if cm.cuda else cm.payload_buf[pos:pos + length].numpy()
                if cm.cuda and e.codec in _codec.ANS_CODECS:
                    from ..gpu._ans import Prepared

                    w.step, w.center, w.S = _codec._check_ans_params(e, w.where)
                    try:
                        w.prep = Prepared(mv, e.numel, w.S)
                    except FormatError as exc:
                        raise FormatError(f"{w.where}: {exc}") from None
                    w.table_dev = torch.from_numpy(w.prep.gpu_table).to(dev)
                    w.wstart_dev = torch.from_numpy(w.prep.wstart).to(dev)
                elif cm.cuda:
                    step, center, s = _codec._check_eg_params(e, w.where)
                    try:
                        offs, head_padded, n_words = eg_word_offsets(mv, e.numel, s)
                    except FormatError as exc:
                        raise FormatError(f"{w.where}: {exc}") from None
                    w.step, w.center, w.S = step, center, s
                    w.G, w.head_padded, w.n_words = offs.size - 1, head_padded, n_words
                    w.offs_off = offs_total
                    offs_parts.append(offs)
                    offs_total += offs.size + (-offs.size % 2)  # 16-byte aligned starts
                    if offs.size % 2:
                        offs_parts.append(np.zeros(1, np.int64))
                del host, mv
                pos += _align(length)
        if cm.cuda:
            cm.offs_buf = torch.from_numpy(np.concatenate(offs_parts) if offs_parts else np.zeros(2, np.int64)).to(dev)
        for w, _ in plan:
            cm.weights[w.name] = w

        # ---------------------------------------------------------- dense tensors from the file
        load_cuda = None
        if cm.cuda:
            try:
                from ..gpu import load_to_cuda as load_cuda
            except ImportError:
                load_cuda = None
        for t, sites, is_param, fname in dense:
            src = located[fname]
            e = src.entry(fname)
            if load_cuda is not None and e.codec in _codec.QUANTIZED_CODECS and e.dtype in ("F32", "F16", "BF16"):
                value = load_cuda(src, dev, names=[fname])[fname]
            else:
                value = _to_framework(src.tensor(fname), "pt", "cpu")
            value = value.to(device=dev, dtype=t.dtype if t.is_floating_point() and value.is_floating_point()
                             else value.dtype)
            new = nn.Parameter(value, requires_grad=t.requires_grad) if is_param else value
            for _, m, a in sites:
                (m._parameters if is_param else m._buffers)[a] = new
            cm.dense_names.append(fname)
    finally:
        for src in sources:
            src.close()

    # ---------------------------------------------------------- remove the compressed parameters
    for w in cm.weights.values():
        for m, a in w.sites:
            m._parameters.pop(a, None)
            m.__dict__[a] = w.placeholder
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise BslError(f"{len(left)} tensor(s) of the model are on the meta device and not in the file "
                       f"(build them for real first): {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}")
    model.to(dev)

    # ---------------------------------------------------------- units and scratch
    site_mods = {}
    names_of = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    for w in cm.weights.values():
        for m, a in w.sites:
            site_mods.setdefault(names_of[id(m)], m)
    block = _block_units(model, site_mods) if unit == "block" else None
    units = {}

    def unit_for(mname, mod):
        if block is not None:
            bname, blist = block
            prefix = f"{bname}." if bname else ""
            if mname.startswith(prefix):
                idx = mname[len(prefix):].split(".", 1)[0]
                key = f"{prefix}{idx}"
                if key not in units:
                    units[key] = _Unit(key, blist[int(idx)])
                return units[key]
        if mname not in units:
            units[mname] = _Unit(mname, mod)
        return units[mname]

    for w in cm.weights.values():
        by_unit = {}
        for m, a in w.sites:
            u = unit_for(names_of[id(m)], m)
            by_unit.setdefault(id(u), (u, []))[1].append((m, a))
        for u, sites in by_unit.values():
            u.add(w, sites)
    cm.units = list(units.values())
    n_slots = 2 if cm.prefetch else 1
    slot_bytes = max((u.nbytes for u in cm.units), default=0)
    cm.slots = [torch.empty(max(slot_bytes, 1), dtype=torch.uint8, device=dev) for _ in range(n_slots)]
    cm.owner, cm.ready = [None] * n_slots, [None] * n_slots
    cm.free = [torch.cuda.Event() for _ in range(n_slots)] if cm.cuda else [None] * n_slots
    cm._side = torch.cuda.Stream(dev) if cm.prefetch else None
    cm._err = torch.zeros(1, dtype=torch.int32, device=dev) if cm.cuda else None
    for u in cm.units:
        u.flat = {}
        for s, slot in enumerate(cm.slots):
            flats, views = [], []
            for (w, sites), off in zip(u.items, u.offsets):
                flat = slot[off:off + w.nbytes].view(w.dtype)
                flats.append(flat)
                v = flat.view(w.shape)
                views += [(m, a, v) for m, a in sites]
            u.flat[s], u.views[s] = flats, views
    if cm.cuda and kernel == "multi":
        try:
            _build_launches(cm)
        except Exception as exc:  # noqa: BLE001 - NVRTC/CuPy trouble: the per-tensor decoder still works
            warnings.warn(f"bslcodec: multi-tensor GPU kernel unavailable ({exc!r}); using decode_eg per tensor")
            cm.kernel = "decode_eg"

    # ---------------------------------------------------------- validate once with every check
    if cm.cuda and validate:
        for u in cm.units:
            for (w, _), flat in zip(u.items, u.flat[0]):
                try:
                    cm._decode_weight(w, flat, check=True)
                except FormatError as exc:
                    raise FormatError(f"{w.where}: {exc}") from None
        if cm.kernel == "multi" and cm.units:
            # self-check of the multi-tensor launch on the largest unit against decode_eg, bit for bit
            u = max(cm.units, key=lambda x: x.nbytes)
            saved = {}
            cm.owner[0] = None
            cm._decode_unit(u, 0, torch.cuda.current_stream(dev))
            for (w, _), flat in zip(u.items, u.flat[0]):
                saved[w.name] = flat.clone()
            for (w, _), flat in zip(u.items, u.flat[0]):
                it = _int_of(w.dtype)
                if not torch.equal(saved[w.name].view(it), cm.weight(w.name).view(-1).view(it)):
                    warnings.warn("bslcodec: the multi-tensor GPU kernel disagrees with decode_eg; using decode_eg")
                    cm.kernel = "decode_eg"
                    break
            del saved
            cm.check()
            cm.stats["decodes"] = 0
    cm._register()
    model._bsl_compressed = cm
    return cm


def _build_launches(cm):
    """Per unit and slot: job tables (on the device) and the kernel arguments of each launch."""
    mod = _multi_module(cm.device.index)
    fns = [mod.get_function(n) for n in _MULTI_NAMES]
    offs0 = cm.offs_buf.data_ptr()
    for u in cm.units:
        for s in range(len(cm.slots)):
            by_mode, ans_jobs = {}, []
            for (w, _), flat in zip(u.items, u.flat[s]):
                if w.codec in _codec.ANS_CODECS:
                    ans_jobs.append(w.ans_job(flat))
                else:
                    by_mode.setdefault(_MODE[w.dtype], []).append((w, flat))
            launches, keep = [], []
            if ans_jobs:  # every ans weight of the unit, whatever its dtype: one launch
                from ..gpu._ans import Launch

                launches.append(Launch(ans_jobs, cm.device, err=cm._err))
            for mode, items in sorted(by_mode.items()):
                rows, first = [], 0
                for w, flat in items:
                    step_bits = int(np.float32(w.step).view(np.uint32))
                    rows.append([w.payload.data_ptr(), w.numel, w.S.bit_length() - 1, w.G, offs0 + 8 * w.offs_off,
                                 w.head_padded, w.n_words, step_bits, w.center, flat.data_ptr(), first, 0])
                    first += LANES * w.G
                jobs = torch.tensor(rows, dtype=torch.int64).to(cm.device)
                keep.append(jobs)
                grid = min(-(-first // _BLOCK), _MAX_GRID)
                args = (np.uint64(jobs.data_ptr()), np.int32(len(rows)), np.int64(first),
                        np.uint64(cm._err.data_ptr()))
                launches.append((fns[mode], max(grid, 1), args))
            u.launches[s], u.jobs[s] = launches, keep
