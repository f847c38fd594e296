"""Tensor-parallel sliced loading: each rank of a ``torch.distributed`` job reads and decodes only its part.

::

    import torch.distributed as dist
    from bslcodec.torch.tp import shard_state_dict
    dist.init_process_group("nccl")                       # or gloo; or no group at all (rank/world_size given)
    plan = {"*.q_proj.weight": 0, "*.k_proj.weight": 0, "*.v_proj.weight": 0,   # column-parallel (output rows)
            "*.gate_proj.weight": 0, "*.up_proj.weight": 0,
            "*.o_proj.weight": 1, "*.down_proj.weight": 1,                      # row-parallel (input columns)
            "*embed_tokens.weight": 0, "lm_head.weight": 0}
    stats = {}
    sd = shard_state_dict("model-bsl", plan, device=f"cuda:{local_rank}", stats=stats)
    model.load_state_dict(sd, strict=False)               # the rank's shards; unmatched names are replicated

The rank's part of tensor ``x`` with plan dimension ``d`` is ``torch.tensor_split(x, world_size, d)[rank]``
(sizes differ by at most one when the dimension does not divide). Names match the plan's ``fnmatch`` patterns
in order (first match wins; ``None`` means replicate). Unmatched tensors are replicated.

What is read (``stats``; payload bytes, the 64-byte-aligned tensor data after the header; every rank also
reads the JSON header):

* **dim 0** (and any dim whose leading dimensions are all 1): the rank's elements are one contiguous flat
  range. Only the groups of 16,384 elements (``eg``; ``ans`` groups; ``zstd`` chunks) that overlap it are read
  and decoded, plus the group tables (65 bytes per group for ``eg``, ~0.6 % of the payload). A rank reads
  about ``1/world_size`` of the payload plus at most one boundary group at each end.
* **dim >= 1** of a row-major tensor: the rank's columns are ``A = prod(shape[:d])`` separate segments, one in
  every row. A group (16,384 consecutive elements) almost always spans several rows, so *every* group holds
  some of the rank's columns: the groups cannot be split by column. Two strategies:

  - ``column="exchange"`` (default when a process group is initialised and ``world_size > 1``): rank *r*
    reads and decodes the rows ``tensor_split(rows, world_size)[r]`` (1/world_size of the payload, as for
    dim 0), cuts them into the column blocks of every rank, and the ranks swap blocks with ``world_size``
    ``scatter`` calls (an all-to-all that gloo can also run). Reads 1/world_size; sends and receives about
    ``(world_size - 1) / world_size`` of the rank's own shard.
  - ``column="local"`` (no process group, or asked for): the rank decodes the groups that hold its columns.
    For ordinary shapes that is every group: the rank reads and decodes the **whole tensor**, in row blocks of
    about 4M elements (so memory stays at the shard plus one block), and keeps its columns. Only when rows are
    long (a gap of >= 16,384 elements between the rank's segments) are whole groups skipped, row by row.

* **replicated** tensors: ``replicate="gather"`` (default for tensors of >= 1M elements when a process group
  is initialised) reads 1/world_size of the rows on each rank and ``all_gather``s them; ``"local"`` reads all.

Checksums: a tensor's XXH3 checksum covers its whole payload, so checking it would read the whole payload on
every rank. ``verify=False`` (default) skips it and relies on the decoders' structural checks (lane lengths and
code words for ``eg``, word counts and lane end states for ``ans``, frame sizes for ``zstd``), which catch
truncation and most corruption but not all; ``verify=True`` checks it (and then every rank reads every byte of
the tensors it touches).

Devices: for a CUDA device, the parts of ``eg``, ``ans`` and ``ans-dq`` tensors (F32, F16, BF16) are cut out
of the payload as a smaller valid payload of the same codec holding only the groups read (groups are
self-contained: spec 4.3, 4.4, 4.6; ``eg_subpayload``, ``rans.subpayload``: the group tables' rows and those
groups' words, plus the ``ans`` model table) and decoded on the GPU with ``bslcodec.gpu.decode_eg`` /
``decode_ans``; only those bytes go to the device. Everything else (``fexp``, ``zstd``, ``raw``, F64) is decoded
on the CPU (Numba) and copied. The exchange runs on the CPU for gloo and on the device for NCCL.
"""

from __future__ import annotations

import fnmatch
import os

import numpy as np
import torch

from ..codecs import params as _params
from ..container.errors import BslError, FormatError
from ..container.limits import LANES

__all__ = ["shard_state_dict", "shard_of", "eg_subpayload", "plan_dim", "LLAMA_PLAN"]

#: A Megatron-style plan for LLaMA-like models (q/k/v/gate/up split by output rows, o/down by input columns).
LLAMA_PLAN = {"*.q_proj.weight": 0, "*.k_proj.weight": 0, "*.v_proj.weight": 0, "*.gate_proj.weight": 0,
              "*.up_proj.weight": 0, "*.o_proj.weight": 1, "*.down_proj.weight": 1,
              "*embed_tokens.weight": 0, "lm_head.weight": 0}

_BLOCK_ELEMS = 1 << 22  # row blocks of the local column strategy
_GATHER_MIN = 1 << 20  # replicate="auto": all_gather tensors at least this big


def plan_dim(plan, name: str):
    """The dimension ``plan`` gives ``name`` (first matching pattern), or None (replicated)."""
    items = plan.items() if isinstance(plan, dict) else plan
    for pattern, dim in items:
        if fnmatch.fnmatchcase(name, pattern):
            return dim
    return None


def shard_of(size: int, world_size: int, rank: int) -> tuple:
    """[lo, hi) of ``rank`` when ``size`` is split like ``torch.tensor_split(.., world_size)``."""
    q, r = divmod(size, world_size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


def eg_subpayload(payload, n_elems: int, lane_symbols: int, g0: int, g1: int, offs=None) -> tuple:
    """(payload, n) of a valid ``eg`` payload holding only groups [g0, g1) of ``payload``.

    Groups are whole 64-bit words with their own lane lengths and order (spec 4.3), so the lane-table rows,
    orders and words of a run of groups, re-packed, form a payload of ``min(n, g1*32S) - g0*32S`` elements.
    """
    from .compressed import eg_word_offsets

    buf = np.frombuffer(payload, np.uint8)
    g_count = -(-n_elems // (LANES * lane_symbols))
    if offs is None:
        offs, head_padded, _ = eg_word_offsets(payload, n_elems, lane_symbols)
    else:
        head_padded = 65 * g_count + (-65 * g_count % 8)
    gs = g1 - g0
    hp = 65 * gs + (-65 * gs % 8)
    w0, w1 = head_padded + 8 * int(offs[g0]), head_padded + 8 * int(offs[g1])
    out = np.zeros(hp + (w1 - w0) + 8, np.uint8)
    out[:64 * gs] = buf[64 * g0:64 * g1]
    out[64 * gs:65 * gs] = buf[64 * g_count + g0:64 * g_count + g1]
    out[hp:hp + (w1 - w0)] = buf[w0:w1]
    return out, min(n_elems, g1 * LANES * lane_symbols) - g0 * LANES * lane_symbols


class _Reader:
    """Reads flat element ranges of one tensor, decoding only the units that hold them, counting bytes."""

    def __init__(self, src, entry, device, verify, stats):
        self.src, self.e, self.device, self.stats = src, entry, torch.device(device), stats
        self.where = f"{src.where}: tensor {entry.name!r}"
        self.payload = src.payload(entry, verify=verify)
        self.unit = _params.unit(entry, self.where) if entry.codec not in ("raw",) else 1 << 14
        self.n = entry.numel
        self._tables = None
        self._touched = np.zeros(-(-self.n // self.unit) if self.n else 0, bool)
        stats["payload_bytes"] += entry.length
        if verify:
            stats["bytes_read"] += entry.length
            self._touched[:] = True
            self._table_counted = True
        else:
            self._table_counted = False
        self._parsed = None  # rans_header.parse() of an ans payload, once per tensor
        self._gpu = (self.device.type == "cuda" and entry.codec in ("eg",) + _params.ANS_CODECS
                     and entry.dtype in ("F32", "F16", "BF16"))

    def _table_bytes(self) -> int:
        """Bytes of the per-unit tables that any range read needs (counted once per tensor)."""
        e, p = self.e, np.frombuffer(self.payload, np.uint8)
        if e.codec == "eg":
            g = self._touched.size
            return 65 * g + (-65 * g % 8)
        if e.codec == "zstd":
            return 4 + 4 * self._touched.size
        if e.codec in _params.ANS_CODECS:
            try:
                b = int(p[8:12].view("<u4")[0])
                h = 12 + b + (-(12 + b) % 4)
                return h + 4 * self._touched.size
            except Exception:  # noqa: BLE001 - unknown layout: count it all
                return e.length
        return 0

    def _unit_bytes(self, u0: int, u1: int) -> int:
        """Payload bytes of units [u0, u1) (their words / frames), beyond the tables."""
        e, p = self.e, np.frombuffer(self.payload, np.uint8)
        if e.codec == "raw":
            isz = e.length // max(1, self.n)
            return (min(self.n, u1 * self.unit) - u0 * self.unit) * isz
        if self._tables is None:
            if e.codec == "eg":
                from .compressed import eg_word_offsets

                offs, _, _ = eg_word_offsets(self.payload, self.n, e.params["lane_symbols"])
                self._tables = 8 * offs
            elif e.codec == "zstd":
                m = self._touched.size
                sizes = p[4:4 + 4 * m].view("<u4").astype(np.int64)
                self._tables = np.concatenate([[0], np.cumsum(sizes)])
            elif e.codec in _params.ANS_CODECS:
                try:
                    b = int(p[8:12].view("<u4")[0])
                    h = 12 + b + (-(12 + b) % 4)
                    g = self._touched.size
                    w = p[h:h + 4 * g].view("<u4").astype(np.int64)
                    self._tables = np.concatenate([[0], np.cumsum(2 * (w + w % 2))])
                except Exception:  # noqa: BLE001
                    self._tables = None
            if self._tables is None:
                return e.length
        return int(self._tables[u1] - self._tables[u0])

    def _account(self, u0, u1):
        if self.e.codec not in ("raw", "eg", "zstd", "ans", "ans-dq"):  # layout unknown here: count the whole payload
            if not self._touched.all():
                self.stats["bytes_read"] += self.e.length
                self._touched[:] = True
            return
        if not self._table_counted:
            self.stats["bytes_read"] += self._table_bytes()
            self._table_counted = True
        new = ~self._touched[u0:u1]
        if new.any():  # count each unit once per tensor (boundary groups of neighbouring reads)
            idx = np.flatnonzero(new) + u0
            runs = np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1)
            for r in runs:
                nb = self._unit_bytes(int(r[0]), int(r[-1]) + 1)
                if self.e.codec != "raw" and self._tables is None:  # tables unreadable: count it all, once
                    self.stats["bytes_read"] += self.e.length
                    self._touched[:] = True
                    return
                self.stats["bytes_read"] += nb
            self._touched[u0:u1] = True

    def _gpu_groups(self, u0: int, u1: int) -> torch.Tensor:
        """Groups [u0, u1) decoded on the GPU from a sub-payload of just those groups (tables checked first)."""
        e = self.e
        try:
            if e.codec == "eg":
                from ..gpu import decode_eg

                step, center, s = _params.check_eg(e, self.where)
                sub, n_sub = eg_subpayload(self.payload, self.n, s, u0, u1)
                return decode_eg(sub, n_sub, s, step, center, e.dtype, device=self.device)
            # rans_header: numpy only, so a GPU slice imports no numba
            from ..codecs import rans_header as rans
            from ..gpu import decode_ans

            step, center, s = _params.check_ans(e, self.where)
            if self._parsed is None:
                self._parsed = rans.parse(self.payload, self.n, s)
            sub, n_sub = rans.subpayload(self.payload, self.n, s, u0, u1, parsed=self._parsed)
            return decode_ans(sub, n_sub, s, step, center, e.dtype, device=self.device, dq=e.codec == "ans-dq")
        except FormatError as exc:
            raise type(exc)(f"{self.where}: {exc}") from None

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Flat elements [start, stop) as a tensor on the device."""
        from ..pipeline.arrays import _to_framework

        if stop <= start:
            from ..container.dtypes import numpy_dtype

            return _to_framework(np.empty(0, numpy_dtype(self.e.dtype)), "pt", "cpu").to(self.device)
        u0, u1 = start // self.unit, -(-stop // self.unit)
        self._account(u0, u1)
        self.stats["elements_decoded"] += min(self.n, u1 * self.unit) - u0 * self.unit
        if self._gpu:
            flat = self._gpu_groups(u0, u1)
            return flat[start - u0 * self.unit: stop - u0 * self.unit]
        # the CPU decoders (numba): only for a slice that is not decoded on the GPU
        from ..pipeline.codec import decode_flat

        arr = decode_flat(self.e, self.payload, self.where, start, stop)
        return _to_framework(arr, "pt", "cpu").to(self.device)


def _dist_info(group):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    return dist.get_rank(group), dist.get_world_size(group)


def _global(group, r):
    import torch.distributed as dist

    return r if group is None else dist.get_global_rank(group, r)


def _comm_device(group, device):
    import torch.distributed as dist

    return torch.device(device) if dist.get_backend(group) == "nccl" else torch.device("cpu")


def _rows_block(reader, rows, row_elems, lo, hi):
    return reader.read(lo * row_elems, hi * row_elems).view(hi - lo, *rows)


def shard_state_dict(path, plan, rank: int | None = None, world_size: int | None = None, *, device="cpu",
                     group=None, column: str = "auto", replicate: str = "auto", names=None, verify: bool = False,
                     dtype=None, stats: dict | None = None) -> dict:
    """The rank's state dict: ``name -> torch.tensor_split(tensor, world_size, dim)[rank]`` on ``device``.

    ``path``: a ``.bsl`` file or an encoded folder (shards); ``plan``: ``{pattern: dim}`` (or a list of pairs;
    ``dim`` None = replicate); ``rank`` / ``world_size``: default from the initialised process group (``group``),
    else 0 / 1. ``column``: ``"auto"``, ``"exchange"`` or ``"local"``; ``replicate``: ``"auto"``, ``"gather"`` or
    ``"local"`` (see the module docstring). ``names``: only these tensors. ``dtype``: cast floating tensors.
    ``stats`` (a dict) receives this rank's counters: ``payload_bytes`` (whole payloads of the tensors it
    loaded), ``bytes_read`` (payload bytes its decoders touched), ``elements_decoded``, ``bytes_sent``,
    ``bytes_received``, ``header_bytes``, per-strategy tensor counts.
    """
    from ..files.readers import bsl_files
    from ..files.source import _Source

    info = _dist_info(group)
    if rank is None or world_size is None:
        rank, world_size = info if info is not None else (0, 1)
    if not 0 <= rank < world_size:
        raise BslError(f"rank {rank} is not in 0..{world_size - 1}")
    collective = info is not None and world_size > 1 and info == (rank, world_size)
    if column not in ("auto", "exchange", "local") or replicate not in ("auto", "gather", "local"):
        raise BslError("column must be auto/exchange/local and replicate auto/gather/local")
    if column == "exchange" and not collective:
        raise BslError("column='exchange' needs an initialised process group of world_size > 1 with this rank")
    if replicate == "gather" and not collective:
        raise BslError("replicate='gather' needs an initialised process group of world_size > 1 with this rank")
    col_mode = "exchange" if column == "exchange" or (column == "auto" and collective) else "local"
    dev = torch.device(device)
    st = stats if stats is not None else {}
    for k in ("payload_bytes", "bytes_read", "elements_decoded", "bytes_sent", "bytes_received",
              "header_bytes", "rows", "columns_exchange", "columns_local", "replicated_gather",
              "replicated_local"):
        st.setdefault(k, 0)
    out = {}
    files = bsl_files(path)
    for f in files:
        src = _Source(path=os.fspath(f))
        try:
            st["header_bytes"] += src.index.data_start
            for name in sorted(src.entries):
                if names is not None and name not in names:
                    continue
                e = src.entry(name)
                t = _load_one(src, e, plan_dim(plan, name), rank, world_size, dev, group, col_mode, replicate,
                              collective, verify, st)
                if dtype is not None and t.is_floating_point():
                    t = t.to(dtype)
                out[name] = t
        finally:
            src.close()
    return out


def _load_one(src, e, dim, rank, ws, dev, group, col_mode, replicate, collective, verify, st):
    shape = tuple(e.shape)
    reader = _Reader(src, e, dev, verify, st)
    n = e.numel
    if dim is None or not shape:
        gather = collective and shape and (replicate == "gather" or (replicate == "auto" and n >= _GATHER_MIN))
        if not gather:
            st["replicated_local"] += 1
            return reader.read(0, n).view(shape)
        st["replicated_gather"] += 1
        return _gather_rows(reader, shape, rank, ws, dev, group, st)
    d = dim + len(shape) if dim < 0 else dim
    if not 0 <= d < len(shape):
        raise BslError(f"plan gives dimension {dim} to {e.name!r} of shape {shape}")
    a = int(np.prod(shape[:d], dtype=np.int64))
    size, b = shape[d], int(np.prod(shape[d + 1:], dtype=np.int64))
    lo, hi = shard_of(size, ws, rank)
    out_shape = shape[:d] + (hi - lo,) + shape[d + 1:]
    if a == 1:  # one contiguous range
        st["rows"] += 1
        return reader.read(lo * b, hi * b).view(out_shape)
    if col_mode == "exchange":
        st["columns_exchange"] += 1
        return _exchange_columns(reader, shape, d, a, size, b, rank, ws, dev, group, st).view(out_shape)
    st["columns_local"] += 1
    res = torch.empty((a, hi - lo, b), dtype=_torch_dtype(e.dtype), device=dev)
    if hi > lo:
        seg, row = (hi - lo) * b, size * b
        if row - seg >= 2 * reader.unit:  # whole groups between the rank's segments: read row by row
            for i in range(a):
                res[i] = reader.read(i * row + lo * b, i * row + hi * b).view(hi - lo, b)
        else:  # every group holds some of the rank's columns: decode row blocks, keep the columns
            step = max(1, _BLOCK_ELEMS // max(1, row))
            for r0 in range(0, a, step):
                r1 = min(a, r0 + step)
                res[r0:r1] = reader.read(r0 * row, r1 * row).view(r1 - r0, size, b)[:, lo:hi, :]
    return res.view(out_shape)


def _torch_dtype(name):
    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool, "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64}[name]


def _gather_rows(reader, shape, rank, ws, dev, group, st):
    """Replicated tensor: each rank decodes its rows of dim 0, then all_gather."""
    import torch.distributed as dist

    rows = shape[0]
    row = int(np.prod(shape[1:], dtype=np.int64))
    lo, hi = shard_of(rows, ws, rank)
    cdev = _comm_device(group, dev)
    mine = reader.read(lo * row, hi * row).to(cdev)
    width = -(-rows // ws) * row
    buf = torch.zeros(width, dtype=mine.dtype, device=cdev)
    buf[:mine.numel()] = mine
    parts = [torch.empty_like(buf) for _ in range(ws)]
    dist.all_gather(parts, buf, group=group)
    st["bytes_sent"] += buf.numel() * buf.element_size() * (ws - 1)
    st["bytes_received"] += buf.numel() * buf.element_size() * (ws - 1)
    full = torch.cat([p[:(shard_of(rows, ws, r)[1] - shard_of(rows, ws, r)[0]) * row] for r, p in enumerate(parts)])
    return full.to(dev).view(shape)


def _exchange_columns(reader, shape, d, a, size, b, rank, ws, dev, group, st):
    """dim >= 1: decode rows [a_lo, a_hi) of the (A, size, B) view, swap column blocks with ``ws`` scatters."""
    import torch.distributed as dist

    a_lo, a_hi = shard_of(a, ws, rank)
    a_max, c_max = -(-a // ws), -(-size // ws)
    cdev = _comm_device(group, dev)
    block = reader.read(a_lo * size * b, a_hi * size * b).view(a_hi - a_lo, size, b).to(cdev)
    dt = block.dtype
    pieces = []
    for q in range(ws):
        c0, c1 = shard_of(size, ws, q)
        p = torch.zeros((a_max, c_max, b), dtype=dt, device=cdev)
        p[:a_hi - a_lo, :c1 - c0] = block[:, c0:c1]
        pieces.append(p)
    lo, hi = shard_of(size, ws, rank)
    recv = []
    for s in range(ws):
        r = torch.empty((a_max, c_max, b), dtype=dt, device=cdev)
        dist.scatter(r, scatter_list=pieces if s == rank else None, src=_global(group, s), group=group)
        s_lo, s_hi = shard_of(a, ws, s)
        recv.append(r[:s_hi - s_lo, :hi - lo])
    nbytes = a_max * c_max * b * block.element_size()
    st["bytes_sent"] += nbytes * (ws - 1)
    st["bytes_received"] += nbytes * (ws - 1)
    return torch.cat(recv, 0).to(dev).contiguous()
