"""The public API: ``save_file / load_file / safe_open / save / load / encode / decode``.

Example::

    >>> import numpy as np, bslcodec
    >>> w = np.random.default_rng(0).normal(0, 0.02, (256, 256)).astype(np.float32)
    >>> blob = bslcodec.save({"w": w}, max_error=1e-4)
    >>> back = bslcodec.load(blob)["w"]
    >>> bool(np.abs(back - w).max() <= 1e-4)
    True
"""

import json
import math
import mmap
import os
import stat
import sys
import tempfile
import warnings

import numpy as np

from ..container.dtypes import dtype_name
from ..container.errors import BslError, ChecksumError, EncodeError, FormatError, QualityWarning
from ..container.format import (
    PREAMBLE_BYTES,
    Entry,
    build_header,
    build_preamble,
    checksum,
    minor_for,
    parse_header,
    place,
    read_header_length,
)
from ..container.limits import MAX_NAME_BYTES
from ..pipeline import codec as _codec
from ..pipeline.allocation import K_MAX, K_MIN, WARN_REL_ERROR, Allocation, correction, steps_for
from ..pipeline.arrays import _to_framework, as_numpy
from ..pipeline import knobs as _knobs
from ..pipeline.codec import LossyTensor
from ..pipeline.ratecontrol import TOLERANCE, overhead_guess
from . import pool as _pool

FRAMEWORKS = ("np", "numpy", "pt", "torch")


# ---------------------------------------------------------------- writing

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


def encode_tensors(tensors: dict, *, metadata=None, bits=None, rel_error=None, max_error=None, sensitivity=None,
                   exact=None, expert=None, progress=False, **deprecated) -> tuple:
    """Encode a state dict into (entries, payloads, metadata) without writing anything; the options are
    :func:`save_file`'s.

    The metadata gains ``bslcodec.settings``: JSON of the options used (``bits=``, ``rel_error=`` and the
    default add ``"allocation": "equal-slope"``; each tensor's step is in its params), which ``bslcodec
    verify`` reads to know each tensor's bound.
    """
    knobs = _knobs.resolve(bits, rel_error, max_error, exact, expert, deprecated, where="encode_tensors")
    return _encode_tensors(tensors, metadata, knobs, sensitivity, progress)


def _encode_tensors(tensors, metadata, knobs, sensitivity, progress) -> tuple:
    metadata = _check_inputs(tensors, metadata)
    settings = knobs.settings()
    codec = knobs.codec
    report = _Progress(progress, len(tensors))
    names = sorted(tensors)
    weights = [_nbytes(tensors, name) for name in names]

    def prepare(name):
        """(name, array, dtype, LossyTensor or None, fine or None): the tensor read (``tensors`` may load
        lazily) and fitted; ``fine``: the (codec, params, payload) of a small 1-D tensor that the allocation
        modes quantize at a fixed fine step (``codec.wants_fine``)."""
        try:
            arr = as_numpy(tensors[name], name)
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
        return name, arr, dt, lt, fine

    def code(item, rel):
        """(entry, payload) of one prepared tensor at ``rel_step`` ``rel`` (None: the settings' own)."""
        name, arr, dt, lt, fine = item
        # in the allocation modes a tensor the allocation left out (constant, or a mean square beyond float64:
        # allocation.weights) has no step: stored exactly
        no_step = rel is None and (settings.bits is not None or settings.default)
        coded = fine if fine is not None else (
            lt.encode(lt.step_for(settings, rel), settings.max_error) if lt is not None and not no_step else None)
        if coded is not None:
            cname, params, payload = coded  # cname: "eg", "ans" or "ans-dq"
        else:
            cname, params, payload = _codec.encode_lossless(arr)
        entry = Entry(name, dt, arr.shape, cname, params)
        entry.checksum = checksum(payload)
        report("encode", name, arr.nbytes)
        return entry, payload

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

        prepared = _pool.run(prepare, names, weights)
        lossy = {it[0]: it[3] for it in prepared if it[3] is not None}
        if sensitivity is not None:
            if allocate:
                sensitivity = _codec.check_sensitivity(lossy, sensitivity)
            else:
                _codec.apply_sensitivity(lossy, sensitivity)

        def encode_all(rels=None, only=None, prev=None):
            """(entries, payloads, file size); ``rels``: name -> rel_step (the allocation) or None (the
            settings' own); ``only``: code just these names, the others taken from ``prev``."""
            todo = [i for i, it in enumerate(prepared) if only is None or it[0] in only]
            done = _pool.run(lambda i: code(prepared[i], None if rels is None else rels.get(prepared[i][0])),
                             todo, [weights[i] for i in todo])
            entries = list(prev[0]) if prev else [None] * len(prepared)
            payloads = list(prev[1]) if prev else [None] * len(prepared)
            for i, (e, p) in zip(todo, done):
                entries[i], payloads[i] = e, p
            if any(e is None for e in entries):
                return entries, payloads, None
            end = place(entries, [len(p) for p in payloads])
            return entries, payloads, PREAMBLE_BYTES + len(build_header(entries, metadata)) + end

        if not allocate:  # rel_step= with sensitivity=
            entries, payloads, _ = encode_all()
            return entries, payloads, metadata
        alloc = Allocation(lossy, sensitivity)
        if settings.default:
            pos, _, _ = alloc.solve(rel_error=settings.rel_error)
            entries, payloads, _ = encode_all(steps_for(alloc, pos, lossy))
            return entries, payloads, metadata
        n_weights = sum(it[1].size for it in prepared)
        if n_weights == 0:
            raise EncodeError("bits= needs at least one element to encode")
        report("search")
        # what the allocation does not choose (exact and fine tensors) is coded first: its size is fixed
        first = encode_all(only={it[0] for it in prepared if it[0] not in alloc.curves})
        fixed = 8 * sum(len(p) for it, p in zip(prepared, first[1]) if p is not None)
        fixed += overhead_guess(len(prepared))
        target = settings.bits * n_weights
        pos, predicted, _ = alloc.solve(target_bits=target - fixed)
        if not abs(predicted + fixed - target) <= TOLERANCE * target:
            lo = alloc.totals({n: K_MAX for n in alloc.curves})[0] + fixed
            hi = alloc.totals({n: K_MIN for n in alloc.curves})[0] + fixed
            raise EncodeError(f"bits={settings.bits} is out of reach: this file spans {lo / n_weights:.3f} to "
                              f"{hi / n_weights:.3f} bits/weight")
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
            warnings.warn(f"bits={settings.bits}: the quantized weights' relative L2 error is about "
                          f"{100 * rel_error:.1f} % (above {100 * WARN_REL_ERROR:g} %): the model may be broken; "
                          f"check its outputs or ask for more bits", QualityWarning, stacklevel=3)
        return entries, payloads, metadata
    finally:
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
    header = build_header(entries, metadata)
    fh.write(build_preamble(header, minor_for(entries)))
    fh.write(header)
    pos = 0
    for e, p in zip(entries, payloads):
        fh.write(b"\0" * (e.offset - pos))
        fh.write(p)
        pos = e.offset + e.length


def save(tensors: dict, *, metadata=None, bits=None, rel_error=None, max_error=None, sensitivity=None, exact=None,
         expert=None, **deprecated) -> bytes:
    """Encode ``tensors`` into the bytes of a ``.bsl`` file (the options are :func:`save_file`'s)."""
    import io

    knobs = _knobs.resolve(bits, rel_error, max_error, exact, expert, deprecated, where="save")
    entries, payloads, metadata = _encode_tensors(tensors, metadata, knobs, sensitivity, False)
    buf = io.BytesIO()
    _write(buf, entries, payloads, metadata)
    return buf.getvalue()


def save_file(tensors: dict, path, *, metadata=None, bits=None, rel_error=None, max_error=None, sensitivity=None,
              exact=None, expert=None, progress=False, **deprecated) -> None:
    """Write ``tensors`` (name -> numpy array or torch tensor) to ``path`` as a ``.bsl`` file.

    Float tensors are quantized to at most one target (docs/using.md):

    - ``bits=B``: size; the file averages B bits/weight (within 2 %), steps split across tensors at equal
      slope; a :class:`~bslcodec.QualityWarning` when the weights' relative L2 error comes out above 5 %.
    - ``rel_error=r``: quality; the same allocation at a relative L2 error ‖W − Ŵ‖/‖W‖ of all quantized
      weights of about ``r`` (no tensor's above ~4 r). The default (no target): ``r = 2^-8`` (0.39 %).
    - ``max_error=E``: a guarantee; ``|x - x̂| <= E`` for every element (plain rounding, one step).

    ``sensitivity`` (name -> output distortion per unit squared weight error, e.g. from
    :func:`bslcodec.calibrate.sensitivity`) weighs each tensor's error in the allocation (not with
    ``max_error``). ``exact``: fnmatch patterns of tensor names stored bit-exact, or True for every
    tensor (floats with the ``fexp`` codec where it is smallest); integer and bool tensors are always
    exact, and small 1-D float tensors (norms, biases) are quantized at a fine fixed step (std/256) or
    stored exactly where that is smaller.

    ``expert``: a dict for the escape hatch, any of ``quantizer`` (``"auto"``: dependent quantization,
    codec ``ans-dq``, except plain rounding with ``max_error``, a named ``codec`` or ``rdoq``;
    ``"uniform"``; ``"dq"``), ``codec`` (``"auto"``: ans or ans-dq, whichever is smaller per tensor;
    ``"eg"``: exp-Golomb, the GPU's layer-by-layer format; ``"ans"``), ``rdoq`` (c: rate-distortion
    optimised plain rounding, λ = c·step², bound one step) and ``rel_step`` (no allocation: every tensor's
    step = rel_step x its std; then no target). The old keywords ``lossless``, ``rel_step``,
    ``quantizer``, ``codec``, ``rdoq`` still work, with a ``DeprecationWarning``.
    ``progress``: True for a tqdm bar, or a callable ``progress(phase, name, nbytes)``.
    The write is atomic: a temporary file in the same folder, fsync, then rename.
    """
    knobs = _knobs.resolve(bits, rel_error, max_error, exact, expert, deprecated, where="save_file")
    entries, payloads, metadata = _encode_tensors(tensors, metadata, knobs, sensitivity, progress)
    atomic_write(path, lambda fh: _write(fh, entries, payloads, metadata))


_TMP_SUFFIX = ".bsl-tmp"
_STALE_AFTER_S = 600  # a temp file whose writer we cannot prove dead is left alone this long


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


_OLD_SUFFIX = ".bsl-old"  # a folder output being replaced (--overwrite) is moved into one of these first


def lock_temp(fd: int) -> None:
    """Mark a temp file or folder (its open ``fd``) as live for :func:`remove_stale_temps`: LOCK_EX held
    until ``fd`` is closed."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass


def remove_stale_temps(path) -> list:
    """Delete temp files and folders that an interrupted write to ``path`` left behind (a process killed
    by SIGKILL or a power loss cannot clean up after itself): ``.<name>.<pid>-<random>.bsl-tmp`` of
    :func:`atomic_write` and the CLI's staged outputs, and ``.bsl-old`` folders of an interrupted
    ``--overwrite`` (whose old output is put back where no new one arrived). One is deleted only when no
    writer holds its lock and its writer process is gone (or it is older than ``_STALE_AFTER_S``).
    Returns the deleted paths."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): leave them; they are named .<file>.<pid>-<random>.bsl-tmp
        return []
    import shutil
    import time

    path = os.path.abspath(os.fspath(path))
    folder, base = os.path.split(path)
    prefix = f".{base}."
    removed = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith((_TMP_SUFFIX, _OLD_SUFFIX))
                 and "." not in n[len(prefix):-len(_TMP_SUFFIX)]]  # not ".out.bsl.<pid>-..." for "out"
    except OSError:
        return removed
    for name in names:
        tmp = os.path.join(folder, name)
        try:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live writer holds LOCK_EX while it writes
        except OSError:
            os.close(fd)
            continue
        try:
            pid = name[len(prefix):-len(_TMP_SUFFIX)].split("-")[0]
            st = os.fstat(fd)
            if not ((pid.isdigit() and not _pid_alive(int(pid))) or time.time() - st.st_mtime > _STALE_AFTER_S):
                continue
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(tmp)
            else:
                old = os.path.join(tmp, "x")
                if name.endswith(_OLD_SUFFIX) and os.path.lexists(old) and not os.path.lexists(path):
                    os.rename(old, path)  # killed between moving the old output aside and the new one in
                shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)  # releases the lock
    return removed


def atomic_write(path, write) -> None:
    """Call ``write(fh)`` on a temp file beside ``path``; fsync and rename it into place, or remove it.

    The temp file (``.<name>.<pid>-<random>.bsl-tmp``, same folder, so the rename is atomic) is locked
    while it is written; a later write to the same path deletes the temp files of writers that were
    killed (see :func:`remove_stale_temps`). Readers see the old file or the complete new one, never a
    part; after a crash or power loss, the new file is either complete (fsync before rename, then fsync
    of the folder) or absent.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}-", suffix=_TMP_SUFFIX,
                                   dir=folder)
    except OSError as exc:  # a missing folder, no permission, a file where the folder should be
        raise BslError(f"{path}: cannot write into {folder}: {exc.strerror}") from None
    try:
        lock_temp(fd)  # marks the temp file live for remove_stale_temps
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a saved model gets the usual file mode
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# ---------------------------------------------------------------- reading

class _Source:
    """Read-only bytes of a file (memory-mapped) or a buffer, with its parsed index."""

    def __init__(self, data=None, path=None):
        self.path, self._mmap, self._fh = path, None, None
        where = f"{path}" if path is not None else "<bytes>"
        if path is not None:
            try:
                # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
                self._fh = open(fd, "rb")
            except OSError as exc:
                raise BslError(f"{path}: cannot open: {exc.strerror}") from None
            st = os.fstat(self._fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                self.close()
                raise BslError(f"{path}: not a regular file")
            size = st.st_size
            if size == 0:
                self.close()
                raise FormatError(f"{path}: empty file, not a .bsl file")
            self._mmap = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
            self.buf = memoryview(self._mmap)
        else:
            self.buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        try:
            size = len(self.buf)
            hlen, hsum, minor = read_header_length(bytes(self.buf[:PREAMBLE_BYTES]), size)
            self.index = parse_header(self.buf[PREAMBLE_BYTES:PREAMBLE_BYTES + hlen], hsum, minor, size)
        except FormatError as exc:
            self.close()
            raise type(exc)(f"{where}: {exc}") from None
        self.where = where
        self.entries = {e.name: e for e in self.index.entries}

    def entry(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            raise KeyError(f"{self.where}: no tensor named {name!r}") from None

    def payload(self, e: Entry, verify: bool = True):
        start = self.index.data_start + e.offset
        mv = self.buf[start:start + e.length]
        if verify and checksum(mv) != e.checksum:
            raise ChecksumError(f"{self.where}: tensor {e.name!r}: payload checksum mismatch (corrupted file)")
        return mv

    def tensor(self, name: str) -> np.ndarray:
        e = self.entry(name)
        return _codec.decode(e, self.payload(e), f"{self.where}: tensor {name!r}")

    def close(self):
        buf = getattr(self, "buf", None)
        if buf is not None:
            buf.release()
            self.buf = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a decoded view still points into it; the OS unmaps it when collected
            self._mmap = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _check_framework(framework):
    if framework not in FRAMEWORKS:
        raise BslError(f"framework must be one of {FRAMEWORKS}, not {framework!r}")


def _load(src: _Source, framework: str, device) -> dict:
    _check_framework(framework)
    if framework in ("pt", "torch") and device not in ("cpu", None) and str(device).startswith("cuda"):
        from ..gpu import load_to_cuda  # leaf module: imported only when asked for

        return load_to_cuda(src, device)
    return {name: _to_framework(src.tensor(name), framework, device) for name in src.entries}


def load_file(path, *, framework: str = "np", device: str = "cpu") -> dict:
    """Decode every tensor of a ``.bsl`` file: name -> numpy array (``framework="pt"``: torch tensor)."""
    src = _Source(path=os.fspath(path))
    try:
        return _load(src, framework, device)
    finally:
        src.close()


def load(data, *, framework: str = "np", device: str = "cpu") -> dict:
    """Decode every tensor of ``.bsl`` bytes."""
    return _load(_Source(data=data), framework, device)


class _Slice:
    """``get_slice(name)[a:b, ...]``: decodes only the groups/chunks that hold the selected rows."""

    def __init__(self, handle, name):
        self._h, self._e = handle, handle._src.entry(name)

    def get_shape(self):
        return list(self._e.shape)

    def get_dtype(self):
        return self._e.dtype

    def __getitem__(self, key):
        e = self._e
        if not isinstance(key, tuple):
            key = (key,)
        if not e.shape:
            return self._h._out(self._h._src.tensor(e.name)[key])
        first, rest = key[0], key[1:]
        if isinstance(first, (bool, np.bool_)):  # a[True] is a new axis in numpy, not row 1
            raise BslError("get_slice takes an int or a slice on the first dimension, not a bool")
        if isinstance(first, (int, np.integer)):
            i = int(first) + (e.shape[0] if first < 0 else 0)
            if not 0 <= i < e.shape[0]:
                raise IndexError(f"index {first} is out of range for dimension 0 of size {e.shape[0]}")
            rows = range(i, i + 1)
        elif isinstance(first, slice):
            rows = range(*first.indices(e.shape[0]))
        else:
            raise BslError("get_slice supports an int or a slice on the first dimension")
        lo, hi = (min(rows), max(rows) + 1) if len(rows) else (0, 0)
        row = int(np.prod(e.shape[1:], dtype=np.int64))
        src = self._h._src
        flat = _codec.decode_flat(e, src.payload(e), f"{src.where}: tensor {e.name!r}", lo * row, hi * row)
        block = flat.reshape((hi - lo,) + tuple(e.shape[1:]))
        if rows.step != 1 and len(rows) > 1:
            block = block[::rows.step] if rows.step > 0 else block[::-1][::-rows.step]
        block = block[0] if isinstance(first, (int, np.integer)) else block
        lead = () if isinstance(first, (int, np.integer)) else (slice(None),)
        return self._h._out(block[lead + rest] if rest else block)


class safe_open:
    """Lazy access to a ``.bsl`` file, like ``safetensors.safe_open``::

        with bslcodec.safe_open("model.bsl", framework="np") as f:
            for name in f.keys():
                w = f.get_tensor(name)
            rows = f.get_slice("emb")[100:200]
    """

    def __init__(self, path, framework: str = "np", device: str = "cpu"):
        _check_framework(framework)
        self._framework, self._device = framework, device
        self._src = _Source(path=os.fspath(path))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._src.close()

    def keys(self) -> list:
        return sorted(self._src.entries)

    def metadata(self) -> dict:
        return dict(self._src.index.metadata)

    def entry(self, name: str) -> Entry:
        """The index entry (dtype, shape, codec, params, sizes) of a tensor."""
        return self._src.entry(name)

    def entries(self) -> list:
        return list(self._src.index.entries)

    def _out(self, arr):
        return _to_framework(arr if arr.flags.c_contiguous else arr.copy(order="C"), self._framework, self._device)

    def get_tensor(self, name: str):
        if self._framework in ("pt", "torch") and str(self._device).startswith("cuda"):
            from ..gpu import load_to_cuda

            return load_to_cuda(self._src, self._device, names=[name])[name]
        return self._out(self._src.tensor(name))

    def get_slice(self, name: str) -> _Slice:
        return _Slice(self, name)


def encode(array, *, bits=None, rel_error=None, max_error=None, exact: bool = False, expert=None,
           **deprecated) -> bytes:
    """One tensor -> bytes of a one-tensor ``.bsl`` file (its name is ``"tensor"``); the options are
    :func:`save_file`'s (``exact=True``: stored bit-exact)."""
    if deprecated.get("lossless") is not None:  # the old bool: True -> this tensor
        deprecated["lossless"] = ("tensor",) if deprecated["lossless"] else False
    knobs = _knobs.resolve(bits, rel_error, max_error, ("tensor",) if exact else None, expert, deprecated,
                           where="encode")
    entries, payloads, metadata = _encode_tensors({"tensor": array}, None, knobs, None, False)
    import io

    buf = io.BytesIO()
    _write(buf, entries, payloads, metadata)
    return buf.getvalue()


def decode(data) -> np.ndarray:
    """Bytes from :func:`encode` -> the array (in its original dtype and shape)."""
    src = _Source(data=data)
    if len(src.entries) != 1:
        raise FormatError(f"decode() expects a one-tensor file, this one has {len(src.entries)}")
    return src.tensor(next(iter(src.entries)))
