"""Encode one checkpoint on several machines: ``torchrun ... -m bslcodec.cli encode in out`` (or
:func:`encode_checkpoint_distributed` in every rank of a ``torch.distributed`` job, gloo is enough).

Each rank encodes the input files ``i`` with ``i % world_size == rank`` (shards are the unit: a file's tensors
share its ``bits=`` step) into one staging folder beside the output, which every rank must see (a shared file
system, or one host). Rank 0 then writes the index from the files on disk, copies the other files and renames
the folder into place. The output is byte-identical to :func:`bslcodec.files.checkpoint.encode_checkpoint`'s:
each file's encoding depends only on that file and the settings. Nothing is pickled between ranks: they
exchange one failure flag (``all_reduce``) and read each other's results from the files.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

__all__ = ["encode_checkpoint_distributed"]


def _agree(dist, failed: bool) -> bool:
    """True when any rank failed (every rank learns it; also the barrier between the phases)."""
    import torch

    flag = torch.tensor([1 if failed else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def encode_checkpoint_distributed(inp, out, *, overwrite=False, progress=False, **kw):
    """``encode_checkpoint(inp, out, **kw)`` spread over the ranks of the current ``torch.distributed`` group
    (initialised here from torchrun's environment with gloo if it is not yet). Every rank returns the
    :class:`~bslcodec.files.checkpoint.Result` of the files it encoded (rank 0: with the outputs)."""
    import torch.distributed as dist

    from ..container.errors import BslError
    from .checkpoint import (
        Progress,
        Result,
        _check_distinct,
        check_folder_bits,
        encode_file,
        resolve_kw,
        finish_folder,
    )
    from .api import safe_open
    from .readers import CheckpointError, open_checkpoint, shard_name

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    t0 = time.perf_counter()
    knobs, sensitivity = resolve_kw(kw, "encode_checkpoint_distributed")
    src = open_checkpoint(inp, "weights")
    out = Path(out)
    _check_distinct(src, out)
    if not src.folder:
        raise CheckpointError(f"{inp}: a distributed encode takes a model folder (its files are the unit of work)")
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: already exists (pass --overwrite to replace it)")
    stage = out.absolute().parent / f".{out.name}.bsl-dist"
    n = len(src.files)
    names = [shard_name(i, n, ".bsl") if src.sharded else "model.bsl" for i in range(n)]
    mine = [i for i in range(n) if i % world == rank]
    res = Result([str(src.files[i]) for i in mine], [], skipped=list(src.skipped))
    failed, error = False, None
    try:
        if rank == 0:
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir()
    except OSError as exc:
        failed, error = True, CheckpointError(f"{stage}: cannot write here: {exc.strerror}")
    if _agree(dist, failed):
        raise error or CheckpointError(f"{stage}: rank 0 could not create the staging folder")
    total = sum(_total_bytes_of(src, i) for i in mine) if progress else 0
    bar = Progress(total, f"encode (rank {rank}/{world})", progress)
    part = [] if knobs.bits is not None and src.sharded and n > 1 else None  # see encode_checkpoint
    try:
        for i in mine:
            with src.open(i) as tf:
                size, n_w, rel = encode_file(tf, stage / names[i], knobs=knobs, sensitivity=sensitivity, bar=bar,
                                             part=part)
                res.out_bytes += size
                res.n_weights += n_w
                res.n_tensors += len(tf.keys())
                res.in_bytes += sum(tf.nbytes(k) for k in tf.keys())
                res.rel_steps.append(rel)
    except (BslError, OSError) as exc:
        failed, error = True, exc
    finally:
        bar.close()
    if _agree(dist, failed):
        if rank == 0:
            shutil.rmtree(stage, ignore_errors=True)
        raise error or CheckpointError(f"{inp}: another rank failed; nothing was written")
    short = _agree(dist, bool(part))  # a shard off the bits= target on some rank: rank 0 checks the whole
    if rank == 0:
        try:
            weight_map, out_bytes, n_weights = {}, 0, 0
            for i, name in enumerate(names):
                out_bytes += (stage / name).stat().st_size
                with safe_open(stage / name) as f:
                    for e in f.entries():
                        if e.name in weight_map:
                            raise CheckpointError(f"{src.path}: tensor {e.name!r} is in two shards")
                        weight_map[e.name] = name
                        n_weights += e.numel
            if short:
                check_folder_bits(src.path, knobs.bits, part or ["(on another rank)"], out_bytes, n_weights)
            finish_folder(src, stage, out, names, weight_map, out_bytes, overwrite)
            # rank 0 reports the whole output
            res.inputs, res.outputs = [str(f) for f in src.files], [str(out / s) for s in names]
            res.in_bytes, res.out_bytes, res.n_weights, res.n_tensors = (src.weight_bytes, out_bytes, n_weights,
                                                                         len(weight_map))
        except BaseException as exc:  # noqa: BLE001 - every rank must hear of it
            failed, error = True, exc
            shutil.rmtree(stage, ignore_errors=True)
    if _agree(dist, failed):
        raise error or CheckpointError(f"{out}: rank 0 could not finish the output")
    res.seconds = time.perf_counter() - t0
    return res


def _total_bytes_of(src, i) -> int:
    with src.open(i) as tf:
        return sum(tf.nbytes(k) for k in tf.keys())
