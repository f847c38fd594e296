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

from ..codecs import params as _params
from ..codecs.golomb_header import word_offsets as eg_word_offsets
from ..container.errors import BslError, FormatError
from ..container.format import QUANTIZED_CODECS
from ..container.limits import LANES

__all__ = ["load_compressed", "CompressedModel"]

from .compressed_model import (  # noqa: F401 - CompressedModel: part of this module's API
    _MODE,
    _MULTI_NAMES,
    _TORCH_DTYPE,
    DEFAULT_TYPES,
    _BLOCK,
    _MAX_GRID,
    CompressedModel,
    _align,
    _int_of,
    _module_ok,
    _multi_module,
    _Unit,
    _Weight,
)

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
    from ..files.readers import bsl_files
    from ..files.source import _Source
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
                ok = is_param and e.codec in QUANTIZED_CODECS and e.numel > 0 and \
                    all(_module_ok(m, types) for _, m, _ in sites)
                if ok and cm.cuda:
                    # the GPU writes fl32(q*step) rounded to the output dtype: equal to decode-then-cast only
                    # when the file holds F32, or the output is the file's own dtype
                    ok = e.codec in QUANTIZED_CODECS and e.dtype in ("F32", "F16", "BF16") and target in _MODE and \
                        (e.dtype == "F32" or target == _TORCH_DTYPE[e.dtype])
                if ok:
                    w = _Weight(fname, e, f"{src.where}: tensor {fname!r}", target)
                    w.sites = [(m, a) for _, m, a in sites]
                    plan.append((w, src))
                else:
                    dense.append((t, sites, is_param, fname))

        # ---------------------------------------------------------- payloads to the device
        recoded = {}  # name -> eg payload (numpy) of an ans weight, with gpu_codec="eg" on a GPU
        eg_lane_symbols = None  # the recoded payloads' lane length
        if cm.cuda and gpu_codec == "eg":
            # its coders import numba: only for gpu_codec="eg"
            from ..codecs import transcode as _transcode

            eg_lane_symbols = _transcode.EG_LANE_SYMBOLS
            for w, src in plan:
                if w.entry.codec == "ans":
                    _, center, s = _params.check_ans(w.entry, w.where)
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
                                             params=dict(e.params, lane_symbols=eg_lane_symbols))
                    w.codec = "eg"
                else:
                    mv = src.payload(e)  # checksum verified here
                length = e.length
                host = torch.from_numpy(np.frombuffer(mv, np.uint8))
                cm.payload_buf[pos:pos + length].copy_(host)
                w.payload = cm.payload_buf[pos:pos + length] if cm.cuda else cm.payload_buf[pos:pos + length].numpy()
                if cm.cuda and e.codec in _params.ANS_CODECS:
                    from ..gpu._ans import Prepared

                    w.step, w.center, w.S = _params.check_ans(e, w.where)
                    try:
                        w.prep = Prepared(mv, e.numel, w.S)
                    except FormatError as exc:
                        raise FormatError(f"{w.where}: {exc}") from None
                    w.table_dev = torch.from_numpy(w.prep.gpu_table).to(dev)
                    w.wstart_dev = torch.from_numpy(w.prep.wstart).to(dev)
                elif cm.cuda:
                    step, center, s = _params.check_eg(e, w.where)
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
            if load_cuda is not None and e.codec in QUANTIZED_CODECS and e.dtype in ("F32", "F16", "BF16"):
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
        except Exception as exc:  # noqa: BLE001 - NVRTC trouble: the per-tensor decoder still works
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
                if w.codec in _params.ANS_CODECS:
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
