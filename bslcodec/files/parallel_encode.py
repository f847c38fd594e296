"""Encode a large checkpoint with a pool of processes: ``encode_checkpoint_parallel(inp, out, workers=16)``.

The codec's Numba kernels already run groups in parallel, but a whole-checkpoint encode also spends time in
per-tensor steps that use one core (reading, the generalized-Gaussian fit, choosing the step, writing). This
module splits the work into *tasks* and runs them in ``workers`` processes (``spawn``: no fork of a process
that has started Numba's threads), each with ``cpu_count // workers`` Numba threads:

* a sharded input (``model-0000i-of-0000n.safetensors`` + index): shards are tasks;
* a single file (or fewer shards than workers): a file's tensors are split into parts of about equal bytes
  (largest first), each part is encoded by one worker into a temporary ``.bsl`` part beside the output, and
  the parts are then merged into one ``.bsl`` file: payloads copied as they are, re-placed, with the header
  rebuilt (checksums unchanged).

The output has the same layout as :func:`bslcodec.files.checkpoint.encode_checkpoint` (``bslcodec encode``): a file
for a file, a folder (``model.bsl`` or ``.bsl`` shards + ``model.bsl.index.json``, other files copied) for a
folder. With ``max_error=`` or ``expert={"rel_step": c}`` the bytes are identical to the serial encode: each
tensor's encoding depends only on the tensor and the settings. With ``bits=``, ``rel_error=`` and the default
(the equal-slope allocation) each *part* is allocated on its own; with ``bits=`` each *part* meets the target
(so each file does too, within 2 %), with its own step, as shards already do in the serial encode (a part or
shard with nothing to allocate, e.g. only small 1-D tensors, keeps its fixed steps; one whose tensors cannot
reach the target comes as close as they allow, and the file or folder must then meet it within 2 %); the file's
``bslcodec.settings`` then lists the parts' steps as ``rel_step_parts``. ``sensitivity=`` likewise equalises
slopes within each part only.

Each worker reads only its own tensors (safetensors / npz / .bsl read lazily; torch files are opened with
``torch.load(mmap=True)`` where the file is a zip checkpoint).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

__all__ = ["encode_checkpoint_parallel", "plan_tasks"]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def plan_tasks(sizes: dict, parts: int) -> list:
    """Split tensors (name -> bytes) into at most ``parts`` lists of about equal bytes (largest first, LPT).

    Each list is sorted by name; lists are returned largest first.
    """
    parts = max(1, min(parts, len(sizes)))
    bins = [[0, []] for _ in range(parts)]
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        b = min(bins, key=lambda x: x[0])
        b[0] += sizes[name]
        b[1].append(name)
    bins.sort(key=lambda x: -x[0])
    return [sorted(names) for total, names in bins if names]


def _open(path, fmt):
    from .readers import TorchFile, open_file

    if fmt != "pt":
        return open_file(path, fmt)

    class _MmapTorchFile(TorchFile):
        """TorchFile with ``torch.load(mmap=True)``: a worker pages in only the tensors it encodes."""

        def __init__(self, p):
            import torch

            orig = torch.load

            def load(*a, **k):
                try:
                    return orig(*a, mmap=True, **k)
                except Exception:  # noqa: BLE001 - legacy (non-zip) files cannot be mapped
                    return orig(*a, **k)

            torch.load = load
            try:
                super().__init__(p)
            finally:
                torch.load = orig

    return _MmapTorchFile(path)


def _encode_task(task: dict) -> dict:
    """Worker: encode the tensors ``task["names"]`` of ``task["src"]`` into the ``.bsl`` file ``task["dest"]``."""
    t0 = time.perf_counter()
    threads = task["threads"]
    try:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # noqa: BLE001 - numba without threads: nothing to set
        pass
    from . import pool

    pool.set_threads(threads)  # this process's share of the cores: tensors side by side within it
    from ..container.errors import BslError
    from . import api
    from .checkpoint import resolve_kw
    from .readers import META_PREFIX
    from .writers import write_bsl

    # the options in the new spelling (knobs.Knobs.new_kwargs) and sensitivity
    knobs, sensitivity = resolve_kw(task["kw"], "encode_checkpoint_parallel")
    # one of several shards or parts with bits=: a target out of its reach is checked on the whole output
    part = [] if task["part_of_many"] and knobs.bits is not None else None
    tf = _open(Path(task["src"]), task["fmt"])
    try:
        names = task["names"] if task["names"] is not None else tf.keys()
        metadata = {k: v for k, v in tf.metadata.items() if isinstance(k, str) and isinstance(v, str)}
        metadata[META_PREFIX + "source_format"] = tf.fmt
        arrays = {n: tf.get(n) for n in names}
        try:
            entries, payloads, metadata = api._encode_tensors(arrays, metadata, knobs, sensitivity, False, part,
                                                             label=tf.path if part is not None else None)
        except BslError as exc:
            raise type(exc)(f"{tf.path}: {exc}") from None
        n_weights = sum(int(a.size) for a in arrays.values())
        in_bytes = sum(int(a.nbytes) for a in arrays.values())
        del arrays
        size = write_bsl(task["dest"], entries, payloads, metadata)
    finally:
        tf.close()
    settings = json.loads(metadata.get(api.SETTINGS_KEY, "{}"))
    return {"dest": task["dest"], "size": size, "n_weights": n_weights, "in_bytes": in_bytes,
            "n_tensors": len(entries), "rel_step": settings.get("rel_step") if knobs.bits is not None else None,
            "notes": part or [],
            "seconds": time.perf_counter() - t0, "pid": os.getpid(), "file": task["file"], "part": task["part"]}


def _merge(parts: list, dest) -> int:
    """One ``.bsl`` file from part files (disjoint names): payloads copied, entries re-placed by name."""
    from ..container.format import Entry
    from . import api
    from .writers import write_bsl

    sources = [api._Source(path=str(p)) for p in parts]
    try:
        located = {}
        for src in sources:
            for name, e in src.entries.items():
                located[name] = (src, e)
        entries, payloads = [], []
        for name in sorted(located):
            src, e = located[name]
            ne = Entry(e.name, e.dtype, tuple(e.shape), e.codec, e.params)
            ne.checksum = e.checksum
            entries.append(ne)
            payloads.append(src.payload(e, verify=False))
        metadata = dict(sources[0].index.metadata)
        key = api.SETTINGS_KEY
        steps = [json.loads(s.index.metadata.get(key, "{}")).get("rel_step") for s in sources]
        if key in metadata and len(set(map(json.dumps, steps))) > 1:
            settings = json.loads(metadata[key])
            settings.pop("rel_step", None)
            settings["rel_step_parts"] = steps
            metadata[key] = json.dumps(settings, sort_keys=True)
        size = write_bsl(dest, entries, payloads, metadata)
        del payloads
    finally:
        for src in sources:
            src.close()
    return size


def encode_checkpoint_parallel(inp, out, *, workers: int | None = None, bits=None, rel_error=None, max_error=None,
                               sensitivity=None, exact=None, expert=None, overwrite: bool = False, split: bool = True,
                               progress: bool = False, **deprecated):
    """Encode a checkpoint file or model folder like ``bslcodec encode``, with ``workers`` processes; the
    options are :func:`bslcodec.save_file`'s (e.g. ``expert={"codec": "eg"}``, the GPU's layer-by-layer
    format).

    ``workers``: processes (default: the CPUs this process may use); each gets ``cpus // workers`` Numba
    threads. ``split``: let a file be split into parts when there are fewer files than workers. Returns a
    :class:`bslcodec.files.checkpoint.Result` (``rel_steps``: one per part with ``bits=``).
    """
    import multiprocessing as mp
    import shutil
    import sys

    from .checkpoint import Result, _check_distinct, _copy_extras, _total_decoded, check_folder_bits, resolve_kw
    from .readers import BSL_INDEX, BSL_SINGLE, open_checkpoint, shard_name
    from .writers import staged_output

    t0 = time.perf_counter()
    knobs, sensitivity = resolve_kw(dict(bits=bits, rel_error=rel_error, max_error=max_error, exact=exact,
                                         expert=expert, sensitivity=sensitivity, **deprecated),
                                    "encode_checkpoint_parallel")
    src = open_checkpoint(inp, "weights")
    out = Path(out)
    _check_distinct(src, out)
    cpus = _cpus()
    workers = max(1, int(workers or cpus))
    kw = dict(knobs.new_kwargs(), sensitivity=sensitivity)
    n = len(src.files)
    sizes = []
    for i in range(n):
        with src.open(i) as tf:
            sizes.append({name: tf.nbytes(name) for name in tf.keys()})
    total = sum(sum(s.values()) for s in sizes) or 1
    res = Result([str(f) for f in src.files], [], in_bytes=src.weight_bytes, skipped=list(src.skipped))
    with staged_output(out, src.folder, overwrite) as tmp:
        work = Path(tmp) if src.folder else Path(str(tmp) + ".parts")
        if not src.folder:
            work.mkdir()
        dests, tasks = [], []
        for i in range(n):
            if not src.folder:
                dest = Path(tmp)
            else:
                dest = Path(tmp) / (shard_name(i, n, ".bsl") if src.sharded else BSL_SINGLE)
            dests.append(dest)
            want = max(1, round(workers * sum(sizes[i].values()) / total)) if split and n < workers else 1
            groups = plan_tasks(sizes[i], want) if want > 1 else [None]
            for j, names in enumerate(groups):
                part = dest if len(groups) == 1 else work / f".{dest.name}.part{j:04d}.bsl-tmp"
                tasks.append({"src": str(src.files[i]), "fmt": src.fmt, "names": names, "dest": str(part),
                              "kw": kw, "threads": max(1, cpus // workers), "file": i,
                              "part": j, "bytes": sum(sizes[i][k] for k in (names or sizes[i])),
                              "part_of_many": len(groups) > 1 or (src.sharded and n > 1)})
        tasks.sort(key=lambda t: -t["bytes"])
        done = []
        try:
            if workers == 1:
                done = [_encode_task(t) for t in tasks]
            else:
                with ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                                         mp_context=mp.get_context("spawn")) as pool:
                    for r in pool.map(_encode_task, tasks):
                        done.append(r)
                        if progress:
                            print(f"encoded file {r['file']} part {r['part']}: {r['n_tensors']} tensors in "
                                  f"{r['seconds']:.1f} s (pid {r['pid']})", file=sys.stderr)
            by_file = {}
            for r in done:
                by_file.setdefault(r["file"], []).append(r)
            weight_map, notes = {}, []
            for i, dest in enumerate(dests):
                rs = sorted(by_file[i], key=lambda r: r["part"])
                if len(rs) > 1:
                    size = _merge([r["dest"] for r in rs], dest)
                    for r in rs:
                        os.unlink(r["dest"])
                else:
                    size = rs[0]["size"]
                res.out_bytes += size
                res.n_weights += sum(r["n_weights"] for r in rs)
                res.n_tensors += sum(r["n_tensors"] for r in rs)
                res.rel_steps += [r["rel_step"] for r in rs]
                if src.sharded and n > 1:  # bits=: the folder meets the target as a whole
                    notes += [m for r in rs for m in r["notes"]]
                else:  # the file does (its parts, if split, may not)
                    check_folder_bits(src.files[i], knobs.bits, [m for r in rs for m in r["notes"]], size,
                                      sum(r["n_weights"] for r in rs))
                for name in sizes[i]:
                    if name in weight_map:
                        from .readers import CheckpointError

                        raise CheckpointError(f"{src.path}: tensor {name!r} is in two shards")
                    weight_map[name] = dest.name
        finally:
            if not src.folder:
                shutil.rmtree(work, ignore_errors=True)
            else:
                for p in Path(tmp).glob(".*.part*.bsl-tmp"):
                    p.unlink()
        check_folder_bits(src.path, knobs.bits, notes, res.out_bytes, res.n_weights)
        if src.folder:
            names = [d.name for d in dests]
            if src.sharded:
                meta = {"total_size": _total_decoded(Path(tmp), names), "bsl_total_size": res.out_bytes}
                with open(Path(tmp) / BSL_INDEX, "w", encoding="utf-8") as fh:
                    json.dump({"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}, fh, indent=2)
                    fh.write("\n")
            _copy_extras(src, Path(tmp))
            res.outputs = [str(out / s) for s in names]
        else:
            res.outputs = [str(out)]
    res.seconds = time.perf_counter() - t0
    res.workers = workers
    res.tasks = len(tasks)
    return res
