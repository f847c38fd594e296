"""Whole-file GPU loading: ``load_file(..., framework="pt", device="cuda")`` and ``safe_open`` use this.

``eg``, ``ans`` and ``ans-dq`` payloads (F32/F16/BF16) and ``fexp`` payloads (lossless floats) go to the GPU
compressed and are decoded there; everything else (zstd chunks, raw, lossy F64, empty tensors) is decoded on
the CPU and copied over. The GPU payloads are loaded as a pipeline of *chunks* (runs of adjacent payloads of
at most ``CHUNK_BYTES``, or one larger payload)::

    host (this thread + reader threads)   copy stream          torch's current stream
    read chunk i into pinned slot i%2  -> H2D into device   -> wait for it; host-built tables (one small
    (parallel preadv) while this thread   slot i%2             copy); one launch per codec for chunk i
    parses and checks its tables (from
    the memory map); queue checksums on
    reader threads; launch; start the
    read of chunk i+1

``HOST_SLOTS`` (3) pinned host slots and ``SLOTS`` (2) device slots are reused: chunk ``i`` is read into host
slot ``i % HOST_SLOTS``, refilled only after chunk ``i - HOST_SLOTS`` has been copied out of it and its checksums
have read it, and copied into device slot ``i % SLOTS``, refilled only after chunk ``i - SLOTS``'s kernels are done
with it (an event per slot on each side). So reads run ``HOST_SLOTS - 1`` chunks ahead of the decode while GPU
memory stays the outputs plus two staging chunks plus the tables. (On an H100, warm, 8 x 4096^2 bf16 at
``bits=4``: reading two chunks ahead with three slots on both sides took 9.50 against 11.99 ms for two and two,
medians of 8 alternated rounds, results/load.md, fourteenth session; three host slots with two device slots are
not measured yet.) Nothing
waits per tensor: the host waits only for a slot (after two chunks) and once at the end, for the error
flags of every launch and the checksums (xxhash on reader threads, off the critical path). A checksum
mismatch is reported before a decoder error, so a corrupted file reads as :class:`ChecksumError` as before;
the kernels never read or write outside their payload and output whatever the bytes say.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import torch

# golomb_header and params, not golomb and pipeline.codec: no numba in a process that only decodes on a GPU
from ..codecs import golomb_header as golomb
from ..codecs import params
from ..container.errors import ChecksumError, FormatError, LimitError
from ..container.format import checksum
from ..container.limits import LANES
from . import _ans, _fexp
from ._eg import _MULTI_KERNELS, decode_eg, multi_module

_GPU_DTYPES = ("F32", "F16", "BF16")
_TORCH = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
CHUNK_BYTES = 32 << 20  # staging slot size (payload bytes); a larger payload gets a chunk of its own
_MIN_CHUNK = 4 << 20  # smaller files are split into at least ~4 chunks so that reads, copies and decodes overlap
_GAP_BYTES = 1 << 20  # a chunk ends before a gap this long (bytes of CPU-decoded tensors between GPU payloads)
_READ_PIECE = 4 << 20  # bytes one reader thread reads with one call
SLOTS = 2  # device staging slots: a chunk is copied in once the kernels of the chunk SLOTS before it are done
HOST_SLOTS = 3  # pinned staging slots: reads run up to HOST_SLOTS - 1 chunks ahead of the decode
_EG_BLOCK, _EG_MAX_GRID = 256, 1 << 20
_FEXP_BLOCK = 256
_pool = None
_pool_lock = threading.Lock()
_copy_streams = {}  # device index -> torch.cuda.Stream for host-to-device copies


def _after_fork():
    """A forked child has none of the parent's threads or streams: start over (no lock is held: a fresh one)."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()
    _copy_streams.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _threads() -> ThreadPoolExecutor:
    """Reader / checksum threads (shared by every load of the process)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2)),
                                       thread_name_prefix="bslcodec-load")
        return _pool


def _copy_stream(dev: torch.device) -> torch.cuda.Stream:
    s = _copy_streams.get(dev.index)
    if s is None:
        s = _copy_streams[dev.index] = torch.cuda.Stream(device=dev)
    return s


class _Item:
    """One tensor decoded on the GPU: its entry, kind ("ans", "eg", "fexp") and checked params."""

    __slots__ = ("S", "center", "dtype", "e", "key", "kind", "out", "start", "step", "where")

    def __init__(self, key, e, where, kind, start, params):
        self.key, self.e, self.where, self.kind, self.start = key, e, where, kind, start
        self.step, self.center, self.S = params
        self.dtype, self.out = _TORCH[e.dtype], None


class _Meta:
    """Small per-chunk tables (slot tables, group starts, descriptors) packed into one buffer: one pinned
    host tensor and one device tensor, copied with one call. ``add`` returns the 16-byte aligned offset."""

    def __init__(self):
        self.parts, self.size = [], 0

    def add(self, arr: np.ndarray) -> int:
        off = self.size
        self.parts.append((off, arr))
        self.size = off + arr.nbytes + (-arr.nbytes % 16)
        return off


def _plan(src, names):
    """(GPU items sorted by file position, CPU names) for the tensors asked for."""
    items, cpu = [], []
    base = src.index.data_start
    for name in names:
        e = src.entry(name)
        where = f"{src.where}: tensor {name!r}"
        if e.numel == 0:
            cpu.append(name)
        elif e.codec in params.ANS_CODECS and e.dtype in _GPU_DTYPES:
            items.append(_Item(name, e, where, "ans", base + e.offset, params.check_ans(e, where)))
        elif e.codec == "eg" and e.dtype in _GPU_DTYPES:
            items.append(_Item(name, e, where, "eg", base + e.offset, params.check_eg(e, where)))
        elif e.codec == "fexp":
            items.append(_Item(name, e, where, "fexp", base + e.offset, (None, None, params.check_fexp(e, where))))
        else:
            cpu.append(name)
    items.sort(key=lambda it: it.start)
    return items, cpu


def _chunks(items):
    """[(lo, hi, items)]: runs of payloads that lie close together, each spanning at most the chunk size."""
    total = sum(it.e.length for it in items)
    cap = max(_MIN_CHUNK, min(CHUNK_BYTES, -(-total // 4)))
    out, cur, lo, hi = [], [], 0, 0
    for it in items:
        end = it.start + it.e.length
        if cur and (end - lo > cap or it.start - hi > _GAP_BYTES):
            out.append((lo, hi, cur))
            cur = []
        if not cur:
            lo, hi = it.start, end
        cur.append(it)
        hi = max(hi, end)
    if cur:
        out.append((lo, hi, cur))
    return out


def _read(src, host: np.ndarray, lo: int, hi: int, pool) -> list:
    """Start reading file bytes [lo, hi) into ``host`` (pinned) on the reader threads: parallel preadv from
    the file, or copies from the buffer. Returns the futures to wait for."""
    n = hi - lo
    fd = src._fh.fileno() if getattr(src, "_fh", None) is not None and hasattr(os, "preadv") else None

    def piece(a):
        b = min(n, a + _READ_PIECE)
        if fd is None:
            host[a:b] = np.frombuffer(src.buf, np.uint8, b - a, lo + a)
            return
        view, got = memoryview(host[a:b]), 0
        while got < b - a:
            k = os.preadv(fd, [view[got:]], lo + a + got)
            if k <= 0:
                raise FormatError(f"{src.where}: the file ended at byte {lo + a + got} while it was read "
                                  "(changed since it was opened?)")
            got += k

    return [pool.submit(piece, a) for a in range(0, n, _READ_PIECE)]


def _verify(view: np.ndarray, it: _Item) -> bool:
    return checksum(view) == it.e.checksum


def _named(exc, it):
    return type(exc)(f"{it.where}: {exc}")


class _Loader:
    def __init__(self, src, dev):
        self.src, self.dev = src, dev
        self.stream = torch.cuda.current_stream(dev)
        self.copy = _copy_stream(dev)
        self.pool = _threads()
        self.keep = []  # host and device temporaries that queued work still reads (freed after the last wait)
        self.checks = []  # (future -> bool, item)
        self.errs = []  # (kind, items): what each element of the error tensor flags

    # ------------------------------------------------------------ per chunk: host tables and launches
    def _prepare(self, items, data, lo, meta):
        """Check each payload's tables on the host; returns the launch plans (tables added to ``meta``).
        ``data``: the file's bytes from ``lo`` on (the memory map, read while the reader threads fill the
        pinned slot from the same pages)."""
        ans, eg, fexp = [], {}, {}
        for it in items:
            e, rel = it.e, it.start - lo
            view = data[rel:rel + e.length]
            try:
                if it.kind == "ans":
                    _ans._check_step(it.step, it.center)
                    prep = _ans.Prepared(view, e.numel, it.S)
                    ans.append((it, rel, prep, meta.add(prep.gpu_table), meta.add(prep.wstart)))
                elif it.kind == "eg":
                    # the CPU decoder's checks (they bound n by the payload size) before the output is allocated
                    _, _, offs, words = golomb.parse_tables(view, e.numel, it.S)
                    g = offs.size - 1
                    eg.setdefault(it.dtype, []).append((it, rel, g, golomb.table_bytes(g), words.size - 1,
                                                        meta.add(offs)))
                else:
                    itemsize = _fexp._ITEMSIZE[it.dtype]
                    p = _fexp.prepare(view, e.numel, itemsize, it.S)
                    offs = _fexp._host_offsets(view, p)
                    lut = p["lut"].view(np.int16)
                    fexp.setdefault(itemsize, []).append((it, rel, p, meta.add(lut), meta.add(offs)))
            except (FormatError, LimitError) as exc:
                if not _verify(view, it):  # corrupted bytes: say so, as the CPU reader does
                    raise ChecksumError(f"{it.where}: payload checksum mismatch (corrupted file)") from None
                raise _named(exc, it) from None
            it.out = torch.empty(e.numel, dtype=it.dtype, device=self.dev)
        return ans, eg, fexp

    def _launch(self, plans, dbase, meta):
        """Descriptor tables for ``plans`` (into ``meta``), then the launches on the current stream."""
        ans, eg, fexp = plans
        if ans:
            a_rows = np.zeros((len(ans), _ans.DESC_FIELDS), np.int64)
            a_blocks = np.zeros(len(ans) + 1, np.int64)
            np.cumsum([-(-p.groups // _ans.WARPS_PER_BLOCK) for _, _, p, _, _ in ans], out=a_blocks[1:])
            a_desc, a_blk = meta.add(a_rows), meta.add(a_blocks)
            a_err = len(self.errs)
            self.errs += [("ans", [it]) for it, *_ in ans]
        eg_launches = []
        for dtype, jobs in sorted(eg.items(), key=lambda kv: str(kv[0])):
            rows = np.zeros((len(jobs), 12), np.int64)
            eg_launches.append((dtype, jobs, rows, meta.add(rows), len(self.errs)))
            self.errs.append(("eg", [j[0] for j in jobs]))
        fexp_launches = []
        for itemsize, jobs in sorted(fexp.items()):
            rows = np.zeros((len(jobs), 16), np.int64)
            blocks = np.zeros(len(jobs) + 1, np.int64)
            np.cumsum([-(-p["groups"] // (_FEXP_BLOCK // LANES)) for _, _, p, _, _ in jobs], out=blocks[1:])
            fexp_launches.append((itemsize, jobs, rows, blocks, meta.add(rows), meta.add(blocks), len(self.errs)))
            self.errs += [("fexp", [j[0]]) for j in jobs]
        devmeta = torch.empty(max(meta.size, 16), dtype=torch.uint8, device=self.dev)
        mbase = devmeta.data_ptr()
        # fill the descriptors now that every address is known
        if ans:
            for r, (it, rel, p, t_off, w_off) in enumerate(ans):
                pay = dbase + rel
                a_rows[r, :13] = (pay + p.words_off, pay + p.wcount_off, mbase + w_off, mbase + t_off, p.P,
                                  it.e.numel, it.S.bit_length() - 1, p.groups, it.center,
                                  int(np.float32(it.step).view(np.int32)), it.out.data_ptr(),
                                  _ans._MODE[it.dtype], int(it.e.codec == "ans-dq"))
        for dtype, jobs, rows, _, _ in eg_launches:
            first = 0
            for r, (it, rel, g, head_padded, n_words, o_off) in enumerate(jobs):
                rows[r] = (dbase + rel, it.e.numel, it.S.bit_length() - 1, g, mbase + o_off, head_padded, n_words,
                           int(np.float32(it.step).view(np.uint32)), it.center, it.out.data_ptr(), first, 0)
                first += LANES * g
        for itemsize, jobs, rows, _, _, _, _ in fexp_launches:
            for r, (it, rel, p, l_off, o_off) in enumerate(jobs):
                pay = dbase + rel
                rows[r, :11] = (mbase + l_off, pay + p["lanes_off"], pay + p["words_off"], p["n_words"],
                                pay + p["rest_off"], p["rest_bits"], it.e.numel, it.S.bit_length() - 1, p["groups"],
                                mbase + o_off, it.out.data_ptr())
        host = torch.empty(devmeta.numel(), dtype=torch.uint8, pin_memory=True)
        h = host.numpy()
        for off, arr in meta.parts:
            h[off:off + arr.nbytes] = arr.reshape(-1).view(np.uint8)
        devmeta.copy_(host, non_blocking=True)  # on the current stream, ahead of the launches that read it
        self.keep += [host, devmeta]

        errp, st = self.err.data_ptr(), self.stream
        if ans:
            p_max = max(p.P for _, _, p, _, _ in ans)
            shmem = 8 * (1 << p_max)
            fn = _ans._module(self.dev.index).get_function("ans_decode")
            _ans._allow_shmem(fn, shmem)
            fn((int(a_blocks[-1]),), (32 * _ans.WARPS_PER_BLOCK,),
               (np.uint64(mbase + a_desc), np.uint64(mbase + a_blk), np.int32(len(ans)),
                np.uint64(errp + 4 * a_err), np.int32(1)), shared_mem=shmem, stream=st)
        for dtype, jobs, rows, r_off, e_slot in eg_launches:
            total = int(sum(LANES * j[2] for j in jobs))
            fn = multi_module(self.dev.index).get_function(_MULTI_KERNELS[dtype])
            grid = max(1, min(-(-total // _EG_BLOCK), _EG_MAX_GRID))
            fn((grid,), (_EG_BLOCK,), (np.uint64(mbase + r_off), np.int32(len(jobs)), np.int64(total),
                                       np.uint64(errp + 4 * e_slot)), stream=st)
        for itemsize, jobs, rows, blocks, r_off, b_off, e_slot in fexp_launches:
            fn = _fexp._module(self.dev.index).get_function(f"fexp_decode_many_{itemsize}")
            fn((int(blocks[-1]),), (_FEXP_BLOCK,), (np.uint64(mbase + r_off), np.uint64(mbase + b_off),
                                                    np.int32(len(jobs)), np.uint64(errp + 4 * e_slot)), stream=st)

    # ------------------------------------------------------------ the pipeline
    def run(self, names):
        items, cpu = _plan(self.src, names)
        chunks = _chunks(items)
        # one error flag per ans / fexp tensor and per eg launch: at most one per item plus one per dtype and chunk
        self.err = torch.zeros(max(1, len(items) + 3 * len(chunks)), dtype=torch.int32, device=self.dev)
        cap = max((hi - lo for lo, hi, _ in chunks), default=0)
        hslots, dslots = min(max(1, HOST_SLOTS), len(chunks)), min(max(1, SLOTS), len(chunks))
        hbuf = [torch.empty(cap, dtype=torch.uint8, pin_memory=True) for _ in range(hslots)]
        dbuf = [torch.empty(cap, dtype=torch.uint8, device=self.dev) for _ in range(dslots)]
        copied, pending = [None] * hslots, [[] for _ in range(hslots)]  # per host slot: its last copy, checksums
        decoded = [None] * dslots  # per device slot: the kernels of its last chunk
        reading = {}  # chunk index -> its read futures

        def start_read(cj):
            h = cj % hslots
            if copied[h] is not None:
                copied[h].synchronize()  # chunk cj - hslots has left pinned slot h
                wait(pending[h])  # and its checksums have read it
            reading[cj] = _read(self.src, hbuf[h].numpy(), *chunks[cj][:2], self.pool)

        ahead = max(1, hslots - 1)  # reads run this many chunks ahead of the decode (1 with one slot: one chunk)
        try:
            for cj in range(min(ahead, len(chunks))):
                start_read(cj)
            for ci, (lo, hi, group) in enumerate(chunks):
                h, d = ci % hslots, ci % dslots
                host = hbuf[h].numpy()
                # the host tables of chunk ci from the memory map while the reader threads fill slot h
                meta = _Meta()
                plans = self._prepare(group, np.frombuffer(self.src.buf[lo:hi], np.uint8), lo, meta)
                for f in reading.pop(ci):
                    f.result()
                with torch.cuda.stream(self.copy):
                    if decoded[d] is not None:
                        self.copy.wait_event(decoded[d])  # chunk ci - dslots's kernels are done with device slot d
                    dbuf[d][:hi - lo].copy_(hbuf[h][:hi - lo], non_blocking=True)
                    copied[h] = torch.cuda.Event()
                    copied[h].record(self.copy)
                futs = []
                for it in group:
                    rel = it.start - lo
                    f = self.pool.submit(_verify, host[rel:rel + it.e.length], it)
                    futs.append(f)
                    self.checks.append((f, it))
                pending[h] = futs
                self.stream.wait_event(copied[h])
                self._launch(plans, dbuf[d].data_ptr(), meta)
                decoded[d] = torch.cuda.Event()
                decoded[d].record(self.stream)
                if ci + ahead < len(chunks):  # its tables are prepared while it is read
                    start_read(ci + ahead)
            out = {name: None for name in names}
            self._cpu_tensors(cpu, out)
            self._finish()
        except BaseException:
            for f in [f for fs in reading.values() for f in fs]:  # no reader may still write into a pinned slot
                f.cancel() or f.exception()
            self.copy.synchronize()
            self.stream.synchronize()
            raise
        for it in items:
            out[it.key] = it.out.view(it.e.shape)
        self.keep += hbuf + dbuf  # freed below, after the last wait; device slots: reused by later allocations
        return out

    def _cpu_tensors(self, names, out):
        """Tensors the GPU does not decode: on the CPU (checksum verified there), then one async copy each."""
        if not names:
            return
        from ..pipeline.arrays import _to_framework

        host = [_to_framework(self.src.tensor(n), "pt", "cpu") for n in names]
        staged = [t.pin_memory() if t.numel() else t for t in host]
        for n, t in zip(names, staged):
            d = torch.empty(t.shape, dtype=t.dtype, device=self.dev)
            if t.numel():
                d.copy_(t, non_blocking=True)
            out[n] = d
        self.keep += staged

    def _finish(self):
        """The one wait: checksums first (a corrupted file is a ChecksumError), then every launch's flags."""
        for f, it in self.checks:
            if not f.result():
                raise ChecksumError(f"{it.where}: payload checksum mismatch (corrupted file)")
        codes = self.err.cpu().numpy()
        for i in np.flatnonzero(codes[:len(self.errs)]):
            kind, its = self.errs[int(i)]
            code = int(codes[i])
            if kind == "ans":
                what = "; ".join(text for bit, text in _ans._ERRORS if code & bit)
                raise FormatError(f"{its[0].where}: ans payload is corrupt: {what}")
            if kind == "fexp":
                what = "; ".join(text for bit, text in _fexp._ERRORS if code & bit)
                raise FormatError(f"{its[0].where}: fexp payload is corrupt: {what}")
            for it in its:  # one flag for the launch: decode its tensors one by one to name the bad one
                try:
                    decode_eg(self.src.payload(it.e, verify=False), it.e.numel, it.S, it.step, it.center,
                              it.dtype, device=self.dev)
                except FormatError as exc:
                    raise _named(exc, it) from None
            raise FormatError(f"{its[0].where} (or another eg tensor of the same launch): eg payload is corrupt")


def load_to_cuda(src, device="cuda", names=None) -> dict:
    """name -> CUDA tensor for the tensors of an open ``.bsl`` source (in the file's order, or ``names``'s).

    Checksums are verified on reader threads while the payloads are copied; a mismatch raises
    :class:`ChecksumError` before anything is returned, a corrupt payload :class:`FormatError` naming it.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"device must be a CUDA device, got {dev}")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    names = list(src.entries) if names is None else list(names)
    with torch.cuda.device(dev):
        return _Loader(src, dev).run(names)


def warm_up(device="cuda") -> None:
    """Load every decoding kernel on ``device`` now (compiled once, then read from the cubin cache), so that a
    later load does not pay for it; servers call it on a thread while other start-up work runs."""
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    _ans._module(index)
    _fexp._module(index)
    multi_module(index)
