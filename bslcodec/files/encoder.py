"""The encoder behind ``save_file`` / ``save`` / ``encode``: a state dict and resolved knobs
(:mod:`bslcodec.pipeline.knobs`) -> (entries, payloads, metadata), and writing them as one ``.bsl`` file.

Each tensor is read, fitted and coded on a pool of threads (:mod:`bslcodec.files.pool`); with a fixed step
(``max_error``, a ``rel_step``) they stream one by one; the allocation targets (``bits``, ``rel_error``, the
default) first fit every tensor, then solve for the steps (:mod:`bslcodec.pipeline.allocation`).
"""

import json
import math
import sys
import warnings

from ..container.dtypes import dtype_name
from ..container.errors import BslError, EncodeError, QualityWarning
from ..container.format import PREAMBLE_BYTES, Entry, build_header, build_preamble, checksum, minor_for, place
from ..container.limits import MAX_NAME_BYTES
from ..pipeline import codec as _codec
from ..pipeline.allocation import K_MAX, K_MIN, WARN_REL_ERROR, Allocation, correction, steps_for
from ..pipeline.arrays import as_numpy
from ..pipeline.codec import LossyTensor
from ..pipeline.ratecontrol import TOLERANCE, overhead_guess
from . import pool as _pool


def _check_inputs(tensors, metadata):
    from collections.abc import Mapping

    if not isinstance(tensors, Mapping):
        raise EncodeError(f"tensors must be a dict of name -> array, got {type(tensors).__name__}")
    for name in tensors:
        if not isinstance(name, str) or not name or len(_utf8(name)) > MAX_NAME_BYTES:
            raise EncodeError(f"tensor names must be non-empty strings of at most {MAX_NAME_BYTES} bytes: {name!r}")
    if metadata is not None and not isinstance(metadata, dict):
        raise EncodeError(f"metadata must be a dict of str -> str, got {type(metadata).__name__}")
    metadata = dict(metadata or {})
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise EncodeError(f"metadata must map str to str; bad item {k!r}: {v!r}")
        _utf8(k), _utf8(v)
    return metadata


def _utf8(s: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 header (spec 3) can hold it
        raise EncodeError(f"{s[:80]!r} is not valid Unicode (lone surrogate); names and metadata must be "
                          "UTF-8 encodable") from None


_INFO = ("gg_nu", "gg_scale", "max_abs_error", "k")  # informational params (spec 4.3), not needed to decode
FITS_BESIDE = True  # the allocation modes' GG fits on a thread of their own where a core is free (False: first)
SETTINGS_KEY = "bslcodec.settings"  # metadata key (reserved prefix "bslcodec.") with the options used


class _Progress:
    """Per-tensor progress: a tqdm bar for ``progress=True``, or calls of a user callable
    ``progress(phase, name, nbytes)`` with phase "fit", "encode" (per tensor) or "search" (name ""); called
    from one thread at a time (tensors are encoded on several)."""

    def __init__(self, progress, n_tensors):
        import threading

        self.fn, self.bar, self.lock = None, None, threading.Lock()
        if callable(progress):
            self.fn = progress
        elif progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=n_tensors, desc="encode", unit="tensor", file=sys.stderr)

    def __call__(self, phase, name="", nbytes=0):
        with self.lock:
            if self.fn is not None:
                self.fn(phase, name, nbytes)
            elif self.bar is not None and phase == "encode":
                self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _named(exc: BslError, name: str) -> BslError:
    msg = str(exc)
    return type(exc)(msg if repr(name) in msg else f"tensor {name!r}: {msg}")


def _encode_tensors(tensors, metadata, knobs, sensitivity, progress, part=None, label=None) -> tuple:
    """(entries, payloads, metadata) of ``tensors`` encoded with ``knobs``.

    ``part``: None for a whole output file; a list when these tensors are one shard (or part) of a larger
    output whose ``bits=`` target the caller checks as a whole: a target out of this part's reach is then no
    error here. A part with no tensor whose step the allocation can choose (only small 1-D tensors at their
    fixed fine step, constant or exact ones) is written at its fixed steps; one whose tensors cannot reach
    the target comes as close as they allow and appends a note to the list (the caller raises if the whole
    output then misses the target). ``label``: what a QualityWarning names (the input file of a folder's
    shard, so that a folder's warnings say which file each is about)."""
    metadata = _check_inputs(tensors, metadata)
    settings = knobs.settings()
    codec = knobs.codec
    report = _Progress(progress, len(tensors))
    names = sorted(tensors)
    weights = [_nbytes(tensors, name) for name in names]

    lazy = hasattr(tensors, "nbytes")  # a file read on access (checkpoint._LazyTensors): read again, not held

    def load(name):
        return as_numpy(tensors[name], name)

    def prepare(name, hold=True):
        """(name, array or None, dtype, LossyTensor or None, fine or None, shape, bytes): the tensor read
        (``tensors`` may load lazily) and fitted; ``fine``: the (codec, params, payload) of a small 1-D
        tensor that the allocation modes quantize at a fixed fine step (``codec.wants_fine``). ``hold=False``
        (a search that codes the tensors later, several times): a lazily read tensor is let go here and read
        again when coded, so that the search does not hold the whole file (issue 18's peak-memory bound)."""
        try:
            arr = load(name)
            dt = dtype_name(arr.dtype)
            report("fit", name, arr.nbytes)
            lt = fine = None
            if _codec.wants_lossy(name, arr, dt, settings):
                lt = LossyTensor(name, arr, dt)
                if codec is not None:  # None: codec.DEFAULT_CODEC ("auto")
                    lt.codec = codec
                lt.rdoq = settings.rdoq
                lt.quantizer = settings.quantizer
            elif _codec.wants_fine(name, arr, dt, settings):
                got = _codec.fine_tensor(name, arr, dt)
                if got is not None and codec not in (None, "auto"):
                    got[0].codec = codec  # the entropy stage the user named
                coded = got[0].encode(got[0].step_at(got[1])) if got is not None else None
                if coded is not None:  # else stored exactly
                    # header bytes are most of a small tensor's cost: leave out the informational params
                    # (GG fit, measured error, EG order; spec 4.3)
                    fine = (coded[0], {k: v for k, v in coded[1].items() if k not in _INFO}, coded[2])
        except BslError as exc:
            raise _named(exc, name) from None
        shape, nbytes = arr.shape, arr.nbytes
        if not hold and lazy and fine is None:
            if lt is not None:
                lt.release(lambda: load(name))
            arr = None
        return name, arr, dt, lt, fine, shape, nbytes

    def code(item, rel, pre=None):
        """(entry, payload) of one prepared tensor at ``rel_step`` ``rel`` (None: the settings' own);
        ``pre``: a list holding its ``lt.encode`` already made (``_codec.encode_small``)."""
        name, arr, dt, lt, fine, shape, nbytes = item
        # in the allocation modes a tensor the allocation left out (constant, or a mean square beyond float64:
        # allocation.weights) has no step: stored exactly
        no_step = rel is None and (settings.bits is not None or settings.default)
        if pre:
            coded = pre[0]
        else:
            coded = fine if fine is not None else (
                lt.encode(lt.step_for(settings, rel), settings.max_error) if lt is not None and not no_step else None)
        if coded is not None:
            cname, params, payload = coded  # cname: "eg", "ans" or "ans-dq"
        else:
            cname, params, payload = _codec.encode_lossless(arr if arr is not None else load(name))
        entry = Entry(name, dt, shape, cname, params)
        entry.checksum = checksum(payload)
        report("encode", name, nbytes)
        return entry, payload

    fitted = None  # the GG fits' thread (join), where they run beside the allocation
    try:
        allocate = settings.bits is not None or settings.default  # the equal-slope allocation (allocation.py)
        used = {k: v for k, v in (("max_error", settings.max_error), ("rel_step", settings.rel_step),
                                  ("bits", settings.bits)) if v is not None}
        if allocate:
            used.pop("rel_step", None)
            used["allocation"] = "equal-slope"
            if settings.default:
                used["rel_error"] = settings.rel_error
        if settings.lossless:
            used["lossless"] = list(settings.lossless)
        if sensitivity is not None:
            used["sensitivity"] = True
        if codec not in (None, "auto"):
            used["codec"] = codec
        if settings.rdoq:
            used["rdoq"] = settings.rdoq  # bound: one step (max_error=: max_error), not step/2
        if settings.quantizer != "uniform":
            used["quantizer"] = settings.quantizer  # dq: bound 1.5 steps (bslcodec.quantize.dq)
        if sensitivity is not None and settings.max_error is not None:
            raise EncodeError("sensitivity= redistributes steps; it cannot be combined with max_error=")
        metadata[SETTINGS_KEY] = json.dumps(used, sort_keys=True)

        if not allocate and sensitivity is None:
            # streaming: each tensor read, fitted, coded and let go on its own (bslcodec.files.pool)
            done = _pool.run(lambda name: code(prepare(name), None), names, weights)
            entries, payloads = [e for e, _ in done], [p for _, p in done]
            place(entries, [len(p) for p in payloads])
            return entries, payloads, metadata

        prepared = _pool.run(lambda name: prepare(name, hold=False), names, weights)
        lossy = {it[0]: it[3] for it in prepared if it[3] is not None}
        n_threads = _pool.threads(own=True) if allocate else 1
        if FITS_BESIDE and allocate and n_threads > 1:
            # the GG fits (informational params, read only when a tensor is coded) beside the allocation's
            # search: their compiled moments and its compiled rounding passes run side by side
            fitted = _pool.beside(lambda: _codec.fit_small(lossy.values()))
        else:
            _codec.fit_small(lossy.values())
            fitted = lambda: None
        if sensitivity is not None:
            if allocate:
                sensitivity = _codec.check_sensitivity(lossy, sensitivity)
            else:
                _codec.apply_sensitivity(lossy, sensitivity)

        def _small_first(todo, rel_of) -> dict:
            """{i: [coded]} of the small dq tensors among ``todo``, coded together (``_codec.encode_small``:
            one compiled call a thread for all of them, not ~15 calls each between Python steps)."""
            if settings.max_error is not None:  # (its strict bound's retries: LossyTensor's own)
                return {}
            jobs = [(i, prepared[i][3], rel_of[i]) for i in todo
                    if prepared[i][3] is not None and prepared[i][4] is None and rel_of[i] is not None]
            got = _codec.encode_small([(lt, lt.step_for(settings, rel)) for _, lt, rel in jobs],
                                      _pool.threads(own=True))
            return {jobs[j][0]: [coded] for j, coded in got.items()}

        def encode_all(rels=None, only=None, prev=None, sized=True):
            """(entries, payloads, file size); ``rels``: name -> rel_step (the allocation) or None (the
            settings' own); ``only``: code just these names, the others taken from ``prev``; ``sized``:
            False where the caller drops the size (building the header, ~280 bytes of JSON a tensor and its
            zstd frame, costs ~8 us a tensor)."""
            fitted()  # (the fits made: before any tensor's params)
            todo = [i for i, it in enumerate(prepared) if only is None or it[0] in only]
            rel_of = {i: None if rels is None else rels.get(prepared[i][0]) for i in todo}
            pre = _small_first(todo, rel_of)
            done = _pool.run(lambda i: code(prepared[i], rel_of[i], pre.get(i)), todo, [weights[i] for i in todo])
            entries = list(prev[0]) if prev else [None] * len(prepared)
            payloads = list(prev[1]) if prev else [None] * len(prepared)
            for i, (e, p) in zip(todo, done):
                entries[i], payloads[i] = e, p
            if any(e is None for e in entries):
                return entries, payloads, None
            end = place(entries, [len(p) for p in payloads])
            if not sized:
                return entries, payloads, None
            return entries, payloads, PREAMBLE_BYTES + len(build_header(entries, metadata)[0]) + end

        if not allocate:  # rel_step= with sensitivity=
            entries, payloads, _ = encode_all(sized=False)
            return entries, payloads, metadata
        alloc = Allocation(lossy, sensitivity, n_threads)
        if settings.default:
            pos, _, _ = alloc.solve(rel_error=settings.rel_error)
            entries, payloads, _ = encode_all(steps_for(alloc, pos, lossy), sized=False)
            return entries, payloads, metadata
        n_weights = sum(math.prod(it[5]) for it in prepared)
        if n_weights == 0:
            raise EncodeError("bits= needs at least one element to encode")
        report("search")
        # what the allocation does not choose (exact and fine tensors) is coded first: its size is fixed
        first = encode_all(only={it[0] for it in prepared if it[0] not in alloc.curves})
        fixed = 8 * sum(len(p) for it, p in zip(prepared, first[1]) if p is not None)
        fixed += overhead_guess(len(prepared))
        target = settings.bits * n_weights
        if not alloc.curves:  # only fixed-step (small 1-D), constant or exact tensors: nothing to allocate
            if part is not None:  # written as it is: the caller reports the whole output's bits/weight
                return first[0], first[1], metadata
            raise EncodeError(f"bits={settings.bits} cannot apply: this file holds no tensor whose step the "
                              f"allocation can choose (only small 1-D tensors, stored at a fixed fine step, and "
                              f"constant or exact ones); it takes {8 * first[2] / n_weights:.3f} bits/weight")
        pos, predicted, _ = alloc.solve(target_bits=target - fixed)
        if not abs(predicted + fixed - target) <= TOLERANCE * target:
            lo = alloc.totals({n: K_MAX for n in alloc.curves})[0] + fixed
            hi = alloc.totals({n: K_MIN for n in alloc.curves})[0] + fixed
            span = (f"this file spans {lo / n_weights:.3f} to {hi / n_weights:.3f} bits/weight (of which "
                    f"{fixed / n_weights:.3f} fixed: header, small 1-D and exact tensors)")
            if part is None:
                raise EncodeError(f"bits={settings.bits} is out of reach: {span}")
            part.append(span)  # as close as it gets: the caller checks the whole output
        rels = steps_for(alloc, pos, lossy)
        entries, payloads, size = encode_all(rels, only=set(alloc.curves), prev=first[:2])
        miss = target - 8 * size
        if abs(miss) > TOLERANCE * target and alloc.curves:
            # the prediction was off: shift the largest tensors' steps to absorb the difference
            report("search")
            actual = {e.name: 8 * len(p) for e, p in zip(entries, payloads) if e.name in alloc.curves}
            moved = correction(alloc, pos, actual, miss)
            pos.update(moved)
            entries, payloads, size = encode_all(steps_for(alloc, pos, lossy), only=set(moved),
                                                 prev=(entries, payloads))
        rel_error = math.sqrt(alloc.totals(pos)[1] / alloc.ms_total) if alloc.ms_total > 0 else 0.0
        if rel_error > WARN_REL_ERROR:
            where = f"{label}: " if label else ""
            warnings.warn(f"{where}bits={settings.bits}: the quantized weights' relative L2 error is about "
                          f"{100 * rel_error:.1f} % (above {100 * WARN_REL_ERROR:g} %): the model may be broken; "
                          f"check its outputs or ask for more bits", QualityWarning, stacklevel=3)
        return entries, payloads, metadata
    finally:
        if fitted is not None:  # no fit thread outlives this call (an error or Ctrl-C in the search): its
            leaving = sys.exc_info()[1]  # compiled code must not run on while the interpreter shuts down
            try:
                fitted()  # (at once where encode_all joined it already)
            except BaseException:  # an error already on its way out wins over the fits' own
                if leaving is None:
                    raise
        report.close()


def _nbytes(tensors, name) -> int:
    """Input bytes of ``tensors[name]`` without loading it where ``tensors`` can say (``.nbytes(name)``)."""
    if hasattr(tensors, "nbytes") and callable(tensors.nbytes):
        return int(tensors.nbytes(name))
    v = tensors[name]
    try:
        nb = getattr(v, "nbytes", None)  # a torch sparse tensor raises RuntimeError here
    except Exception:  # noqa: BLE001 - as_numpy will say what is wrong
        nb = None
    if isinstance(nb, int):
        return nb
    try:  # torch
        return int(v.numel() * v.element_size())
    except Exception:  # noqa: BLE001 - anything else: as_numpy will say what is wrong
        return 0


def _write(fh, entries, payloads, metadata):
    header, flags = build_header(entries, metadata)
    fh.write(build_preamble(header, minor_for(entries, flags), flags))
    fh.write(header)
    pos = 0
    for e, p in zip(entries, payloads):
        fh.write(b"\0" * (e.offset - pos))
        fh.write(p)
        pos = e.offset + e.length
