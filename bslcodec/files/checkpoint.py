"""Checkpoints on disk for the CLI and the loaders: ``.safetensors``, torch ``.pt``/``.bin``, ``.npz``,
``.bsl``, and Hugging Face model folders (one weights file, or shards listed in an ``*.index.json``).

Reading is :mod:`.readers` (never unpickles), writing :mod:`.writers` (every output staged, so a failed or
interrupted run leaves nothing behind); this module drives whole files and folders through the codec.

Folder layout written by :func:`encode_checkpoint`::

    model.bsl                                   # input had model.safetensors (or pytorch_model.bin)
    model-00001-of-00003.bsl ...                # input was sharded: one .bsl per input shard
    model.bsl.index.json                        # {"metadata": {...}, "weight_map": {name: shard}}
    config.json, tokenizer.json, 1_Pooling/...  # every other file, copied unchanged
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..container.errors import BslError, EncodeError
from . import api
from . import pool as _pool
from .readers import (
    BSL_INDEX,
    BSL_SINGLE,
    META_PREFIX,
    ST_INDEX,
    ST_SINGLE,
    BslFile,
    Checkpoint,
    CheckpointError,
    TensorFile,
    bsl_files,
    copyable,
    open_checkpoint,
    open_file,
    shard_name,
)
from .source import load_torch
from .writers import WRITERS, output_format, staged_output, write_bsl

# ---------------------------------------------------------------- progress

class Progress:
    """A tqdm bar in bytes of input (updated as each tensor finishes): MB/s and the time left, or nothing
    when disabled."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar, self.lock = None, threading.Lock()  # two shards may be encoded at once
        if enabled:
            from tqdm.auto import tqdm

            # disable=None: no bar when stderr is not a terminal (logs, pipes, CI)
            self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1000,
                            file=sys.stderr, disable=None, leave=False, dynamic_ncols=True, smoothing=0.05,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")

    def start(self, name: str):
        if self.bar is not None:
            with self.lock:
                self.bar.set_postfix_str(name if len(name) <= 40 else "…" + name[-39:], refresh=False)

    def update(self, n: int):
        if self.bar is not None:
            with self.lock:
                self.bar.update(n)

    def note(self, text: str):
        if self.bar is not None and not self.bar.disable:
            with self.lock:
                self.bar.set_description_str(text)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- encoding

@dataclass
class Result:
    """What an encode or decode did: sizes, counts and time, for the summary line."""

    inputs: list
    outputs: list
    in_bytes: int = 0
    out_bytes: int = 0
    n_tensors: int = 0
    n_weights: int = 0
    seconds: float = 0.0
    rel_steps: list = field(default_factory=list)  # bits=: the rel_step chosen for each file
    skipped: list = field(default_factory=list)
    encoded: bool = True  # False for a decode

    @property
    def bsl_bytes(self) -> int:
        return self.out_bytes if self.encoded else self.in_bytes

    @property
    def bits_per_weight(self) -> float:
        """Bits of ``.bsl`` per element (all tensors, headers included)."""
        return 8 * self.bsl_bytes / self.n_weights if self.n_weights else 0.0

    @property
    def ratio(self) -> float:
        return self.in_bytes / self.out_bytes if self.out_bytes else float("inf")


def check_settings(**kw):
    """The :class:`~bslcodec.pipeline.knobs.Knobs` of an encode's options (new or old spelling, no
    warning); raises EncodeError for conflicting or bad options before any work is done."""
    from ..pipeline import knobs

    new = {k: kw.pop(k) for k in ("bits", "rel_error", "max_error", "exact", "expert") if k in kw}
    return knobs.resolve(**new, deprecated=kw, where="encode_checkpoint", warn=False)


def resolve_kw(kw: dict, where: str, stacklevel: int = 4):
    """(Knobs, sensitivity) of a front end's ``**kw`` (the new keywords plus deprecated ones: one
    DeprecationWarning at the caller's caller)."""
    from ..pipeline import knobs

    kw = dict(kw)
    sensitivity = kw.pop("sensitivity", None)
    new = {k: kw.pop(k) for k in ("bits", "rel_error", "max_error", "exact", "expert") if k in kw}
    return knobs.resolve(**new, deprecated=kw, where=where, stacklevel=stacklevel), sensitivity


def encode_file(tf: TensorFile, dest, *, knobs, sensitivity=None, bar=None, extra_metadata=None,
                part=None) -> tuple:
    """Encode every tensor of ``tf`` to the ``.bsl`` file ``dest`` with the options ``knobs``
    (:func:`bslcodec.pipeline.knobs.resolve`). ``part``: a list when ``tf`` is one shard of a folder whose
    ``bits=`` target the caller checks as a whole (``encoder._encode_tensors``; see :func:`check_folder_bits`).

    Returns (file size, number of elements, the rel_step chosen for ``bits=`` or None). The file's
    metadata keeps the source file's metadata, plus ``bslcodec.source_format`` and the core's
    ``bslcodec.settings`` (JSON of the options) for ``verify``.
    """
    bar = bar or Progress(0, "", False)
    metadata = {k: v for k, v in tf.metadata.items() if isinstance(k, str) and isinstance(v, str)}
    metadata.update(extra_metadata or {})
    metadata[META_PREFIX + "source_format"] = tf.fmt
    arrays = _LazyTensors(tf)  # each tensor read when its turn comes, and let go once coded
    bits = knobs.bits

    def progress(phase, name, nbytes):
        if phase == "search":
            bar.note(f"allocate steps for {bits:g} bits/weight" if bits is not None else "allocate steps")
            return
        if phase == "encode":  # input bytes done: the bar's rate is MB/s of input
            bar.start(name)
            bar.update(nbytes)

    try:
        entries, payloads, metadata = api._encode_tensors(arrays, metadata, knobs, sensitivity, progress, part,
                                                             label=tf.path if part is not None else None)
    except BslError as exc:
        raise type(exc)(f"{tf.path}: {exc}") from None
    chosen = json.loads(metadata[api.SETTINGS_KEY]).get("rel_step") if bits is not None else None
    n_weights = sum(math.prod(e.shape) for e in entries)
    return write_bsl(dest, entries, payloads, metadata), n_weights, chosen


class _LazyTensors(Mapping):
    """The tensors of a file as a read-on-access mapping (``encode_tensors`` streams through it)."""

    def __init__(self, tf: TensorFile):
        self.tf = tf

    def __iter__(self):
        return iter(self.tf.keys())

    def __len__(self):
        return len(self.tf.keys())

    def __getitem__(self, name):
        return self.tf.get(name)

    def nbytes(self, name) -> int:
        return self.tf.nbytes(name)


def _copy_extras(src: Checkpoint, tmp: Path) -> None:
    """Copy the folder's other files: regular files, or links to regular files inside it (or into its
    Hugging Face cache blobs); checked again here, and the copy reads only what ``fstat`` says is a
    regular file, so a file swapped for a FIFO or a link out after the scan is refused too."""
    for rel in src.extra:
        real = copyable(src.path, rel)
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        with open(fd, "rb") as fin:
            if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
                raise CheckpointError(f"{src.path / rel}: not a regular file; bslcodec copies only regular files")
            with open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        shutil.copystat(real, target)


def _total_bytes(src: Checkpoint) -> int:
    total = 0
    for i in range(len(src.files)):
        with src.open(i) as tf:
            total += sum(tf.nbytes(n) for n in tf.keys())
    return total


def encode_checkpoint(inp, out, *, bits=None, rel_error=None, max_error=None, sensitivity=None, exact=None,
                      expert=None, overwrite=False, progress=True, **deprecated) -> Result:
    """Encode a checkpoint file or model folder to a ``.bsl`` file or folder (see the module docstring);
    the options are :func:`bslcodec.save_file`'s.

    With ``bits=`` the target holds for each output file (so for the whole folder too); each shard gets
    its own steps. A shard with nothing to allocate (one that holds only a final norm vector, stored at a
    fixed fine step) is written at its fixed steps (``Result.bits_per_weight`` says what the folder came
    to); one whose tensors cannot reach the target comes as close as it can, and then the whole folder must
    meet the target within 2 %.
    """
    t0 = time.perf_counter()
    knobs, sensitivity = resolve_kw(dict(bits=bits, rel_error=rel_error, max_error=max_error, exact=exact,
                                         expert=expert, sensitivity=sensitivity, **deprecated), "encode_checkpoint")
    src = open_checkpoint(inp, "weights")
    out = Path(out)
    _check_distinct(src, out)
    res = Result([str(f) for f in src.files], [], in_bytes=src.weight_bytes, skipped=list(src.skipped))
    kw = dict(knobs=knobs, sensitivity=sensitivity)
    # torch files are read whole: their size stands in for the tensor bytes rather than reading them twice
    total = src.weight_bytes if src.fmt == "pt" else _total_bytes(src)
    bar = Progress(total, "encode", progress)
    try:
        with staged_output(out, src.folder, overwrite) as tmp:
            n = len(src.files)
            weight_map, names = {}, []
            part = [] if knobs.bits is not None and src.sharded and n > 1 else None

            def one(i):
                if not src.folder:
                    dest, shard = tmp, out.name
                else:
                    shard = shard_name(i, n, ".bsl") if src.sharded else BSL_SINGLE
                    dest = tmp / shard
                with src.open(i) as tf:
                    return (shard, list(tf.keys())) + encode_file(tf, dest, bar=bar, part=part, **kw)

            with _shards(one, n, src.fmt) as done:
                for shard, keys, size, n_w, rel in done:
                    for name in keys:
                        if name in weight_map:
                            raise CheckpointError(f"{src.path}: tensor {name!r} is in two shards")
                        weight_map[name] = shard
                    names.append(shard)
                    res.out_bytes += size
                    res.n_weights += n_w
                    res.n_tensors += len(keys)
                    res.rel_steps.append(rel)
            check_folder_bits(src.path, knobs.bits, part, res.out_bytes, res.n_weights)
            if src.folder:
                _finish_staged(src, tmp, names, weight_map, res.out_bytes)
                res.outputs = [str(out / s) for s in names]
            else:
                res.outputs = [str(out)]
    finally:
        bar.close()
    res.seconds = time.perf_counter() - t0
    return res


OVERLAP = 2  # shards encoded at once (1: one after another)


@contextlib.contextmanager
def _shards(one, n: int, fmt: str):
    """Yields an iterator of ``one(i)`` for each shard ``i``, in order. Two shards are encoded at a time where
    that pays and keeps the memory bound: each shard's serial stages (its step search, the header, the write)
    and the tail of its last tensors leave threads idle that the next shard's tensors then use. Both draw on
    one in-flight budget (:func:`bslcodec.files.pool.shared`), so no more input is being coded at once than
    with one shard; only formats read tensor by tensor qualify (a torch shard is read whole). Each shard's
    bytes are what the one-at-a-time encode writes: a shard's encode depends only on its tensors. On leaving
    the block (an error, an interrupt, or done) no other tensor is started and the running ones are waited
    for, so nothing writes into the staged output after it."""
    if OVERLAP < 2 or n < 2 or fmt not in ("safetensors", "bsl") or _pool.threads() < 2:
        yield (one(i) for i in range(n))
        return
    from concurrent.futures import ThreadPoolExecutor

    with _pool.shared() as sh, ThreadPoolExecutor(OVERLAP, thread_name_prefix="bslcodec-shard") as ex:
        def run(i):
            try:
                return one(i)
            except BaseException:
                sh.stop()  # the other shards start no new tensor: the error is reported without waiting for them
                raise

        def results():
            for f in futures:
                try:
                    yield f.result()
                except _pool.Stopped:  # stopped by a later shard's error: raise that one
                    for g in futures:
                        exc = g.exception() if g.done() and not g.cancelled() else None
                        if exc is not None and not isinstance(exc, _pool.Stopped):
                            raise exc from None
                    raise

        futures = [ex.submit(run, i) for i in range(n)]
        try:
            yield results()
        finally:
            sh.stop()
            for f in futures:
                f.cancel()


def check_folder_bits(path, bits, notes, out_bytes: int, n_weights: int) -> None:
    """Raise EncodeError if shards (or parts of a file) whose tensors could not reach the ``bits=`` target
    were written (``notes``: what they said) and the folder (file) as a whole misses it by more than 2 %.
    Shards with nothing to allocate (a lone norm vector) add no note: they never make an error."""
    if not notes or not n_weights:
        return
    got = 8 * out_bytes / n_weights
    if abs(got - bits) > 0.02 * bits:
        raise EncodeError(f"{path}: bits={bits} is out of reach: it comes to {got:.3f} bits/weight as a whole "
                          f"({len(notes)} of its shards or parts could not meet it; one: {notes[0]})")


def _finish_staged(src: Checkpoint, tmp: Path, names: list, weight_map: dict, out_bytes: int) -> None:
    """The index (sharded input) and the copied extra files of an encoded folder being staged in ``tmp``."""
    if src.sharded:
        meta = {"total_size": _total_decoded(tmp, names), "bsl_total_size": out_bytes}
        with open(tmp / BSL_INDEX, "w", encoding="utf-8") as fh:
            json.dump({"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}, fh, indent=2)
            fh.write("\n")
    _copy_extras(src, tmp)


def finish_folder(src: Checkpoint, stage: Path, out: Path, names: list, weight_map: dict, out_bytes: int,
                  overwrite: bool = False) -> None:
    """Move encoded files ``names`` from ``stage`` into the output folder ``out`` (staged, then renamed into
    place as ``encode_checkpoint`` does), with the index and the extra files; ``stage`` is removed."""
    with staged_output(out, True, overwrite) as tmp:
        for s in names:
            os.replace(stage / s, tmp / s)
        _finish_staged(src, tmp, names, weight_map, out_bytes)
    shutil.rmtree(stage, ignore_errors=True)


def _check_distinct(src: Checkpoint, out: Path) -> None:
    o, i = out.resolve(), src.path.resolve()
    if o == i:
        raise CheckpointError(f"{out}: the output must differ from the input")
    if src.folder and i in o.parents:
        raise CheckpointError(f"{out}: the output must not be inside the input folder {src.path}")


def _total_decoded(folder: Path, shards: list) -> int:
    total = 0
    for s in shards:
        with BslFile(folder / s) as f:
            total += sum(f.nbytes(n) for n in f.keys())
    return total


# ---------------------------------------------------------------- decoding

def decode_checkpoint(inp, out, *, overwrite=False, progress=True) -> Result:
    """Decode a ``.bsl`` file (to ``.safetensors``/``.pt``/``.npz`` by ``out``'s suffix) or an encoded
    folder (to a folder of ``model.safetensors`` or safetensors shards with their index, plus the
    copied files)."""
    t0 = time.perf_counter()
    src = open_checkpoint(inp, "bsl")
    out = Path(out)
    _check_distinct(src, out)
    fmt = "safetensors" if src.folder else output_format(out)
    write = WRITERS[fmt][0]
    res = Result([str(f) for f in src.files], [], in_bytes=src.weight_bytes, encoded=False)
    bar = Progress(_total_bytes(src), "decode", progress)
    try:
        with staged_output(out, src.folder, overwrite) as tmp:
            n = len(src.files)
            weight_map, total = {}, 0
            for i in range(n):
                if not src.folder:
                    dest, shard = tmp, out.name
                else:
                    shard = shard_name(i, n, ".safetensors") if src.sharded else ST_SINGLE
                    dest = tmp / shard
                with BslFile(src.files[i]) as f:
                    tensors = {}
                    for name in f.keys():
                        bar.start(name)
                        tensors[name] = f.get(name)
                        bar.update(tensors[name].nbytes)
                        weight_map[name] = shard
                    try:
                        write(dest, tensors, f.metadata)
                    except CheckpointError as exc:
                        raise CheckpointError(f"{f.path}: {exc}") from None
                    nb = sum(t.nbytes for t in tensors.values())
                    total += nb
                    res.n_tensors += len(tensors)
                    res.n_weights += sum(t.size for t in tensors.values())
                    del tensors
                res.outputs.append(str(out / shard) if src.folder else str(out))
                res.out_bytes += os.path.getsize(dest)
            if src.folder:
                if src.sharded:
                    with open(tmp / ST_INDEX, "w", encoding="utf-8") as fh:
                        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                                  fh, indent=2)
                        fh.write("\n")
                _copy_extras(src, tmp)
    finally:
        bar.close()
    res.seconds = time.perf_counter() - t0
    return res


def load_tensors(path, framework: str = "np", device: str = "cpu") -> dict:
    """Every tensor of a ``.bsl`` file or encoded folder (all shards), decoded."""
    out = {}
    for f in bsl_files(path):
        out.update(api.load_file(f, framework=framework, device=device))
    return out


class TensorLookup:
    """Tensors by name across every file of a checkpoint (a file or a folder, any format)."""

    def __init__(self, path):
        self.checkpoint = open_checkpoint(path, "any")
        self.files, self.where = [], {}
        try:
            for i in range(len(self.checkpoint.files)):
                tf = self.checkpoint.open(i)
                self.files.append(tf)
                for name in tf.keys():
                    self.where.setdefault(name, tf)
        except BaseException:
            self.close()
            raise

    def keys(self) -> list:
        return sorted(self.where)

    def get(self, name: str) -> np.ndarray:
        return self.where[name].get(name)

    def close(self):
        for tf in self.files:
            tf.close()
        self.files = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Result",
    "TensorFile",
    "TensorLookup",
    "bsl_files",
    "decode_checkpoint",
    "encode_checkpoint",
    "load_tensors",
    "load_torch",
    "open_checkpoint",
    "open_file",
    "staged_output",
]
