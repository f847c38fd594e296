"""Tensor-level parallelism for encoding: many tensors at once on a thread pool, each with one Numba thread,
instead of one tensor at a time with every Numba thread (nested parallel regions, and OpenMP threads that
spin against each other on a busy machine).

Numba kernels release the GIL (``nogil=True``), so the pool's threads run side by side. Tensors larger than a
thread's share of the work run first, one at a time, with all threads (their kernels split them by groups);
the rest go to the pool, largest first. The bytes of input in flight are capped (``MEMORY_BUDGET``, or the
largest tensor) so that a checkpoint streams through in bounded memory; where that cap lets fewer tensors run
at once than there are threads, each gets several Numba threads (``split``; only under the OpenMP or TBB
threading layers, which run parallel regions of several Python threads side by side).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MEMORY_BUDGET = 128 << 20  # bytes of input tensors being encoded at once (bf16 costs ~7x its bytes meanwhile)
# Items of at most this many bytes run one after another on the calling thread, not on the pool: coding a
# 4,096-element tensor is ~15 short kernel calls between Python steps, and two threads doing that hand the
# GIL over at every call (2-core box, 300 64x64 f32 tensors, default save: 8 context switches and ~100 us of
# system time a tensor; 459-562 us a tensor on 2 threads against 371-410 on one). From 8,192 elements (f32
# or bf16) two threads were ahead (503 vs 540-553 us; 16,384: 750-790 vs 945-960). (The allocation modes'
# small dq tensors are coded before ``run``, together: ``codec.encode_small``, one compiled call a thread.)
TINY_BYTES = 16 << 10
_threads = None  # set by the CLI's --workers (set_threads); None: from the cores and the load


def set_threads(n: int | None) -> None:
    """Use ``n`` threads (None: choose from the cores this process may use and the machine's load)."""
    global _threads
    _threads = n


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads(own: bool = False) -> int:
    """Threads to encode with: as set, else the cores this process may use less those busy with other
    work (1-minute load average), at least 1: on a loaded machine extra threads only contend.

    ``own=True``: less only the load of *other* processes, the average less what this process kept busy
    since its last such call (``_own_busy``): a process that saves file after file holds a load of ~1 by
    itself, which alone made the 2-core box look busy (one thread). For work that holds no GIL and leaves no
    thread spinning (``codec.encode_small``'s compiled ranges), where a free core is all that matters."""
    if _threads is not None:
        return _threads
    n = cpus()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover
        load = 0.0
    if own:
        load = max(0.0, load - _own_busy())
    return max(1, min(n, int(n - load + 0.5)))


_last_busy = None  # (time.monotonic(), time.process_time()) at the last _own_busy call
OWN_WINDOW = 60.0  # seconds: a sample older than this (the load average's own horizon) tells nothing


def _own_busy() -> float:
    """The cores this process kept busy (its CPU time over the wall time) since the last call, if that was
    within ``OWN_WINDOW`` seconds, else 0 (a process idle until now adds nothing to the load average)."""
    global _last_busy
    now = (time.monotonic(), time.process_time())
    prev, _last_busy = _last_busy, now
    if prev is None or not 0 < now[0] - prev[0] <= OWN_WINDOW:
        return 0.0
    return min(max((now[1] - prev[1]) / (now[0] - prev[0]), 0.0), float(cpus()))


MMAP_THRESHOLD = 4 << 20  # glibc: allocations from this size get pages of their own (see unpooled_large)


def unpooled_large() -> bool:
    """Give every allocation of ``MMAP_THRESHOLD`` bytes or more pages of its own, returned to the system
    when freed (glibc ``mallopt(M_MMAP_THRESHOLD)``; elsewhere, or where ``MALLOC_MMAP_THRESHOLD_`` is set,
    nothing is changed). glibc's own threshold rises to the largest block freed (up to 32 MiB), after
    which arrays of a tensor's size come from per-thread arenas that keep them once freed: encoding the
    1.1B bf16 folder of ``tools/bench/bench_encode.py`` with 16 threads, the arenas held ~700 MiB of free
    memory by the last shard and the peak RSS was 1355 MiB, against 709 MiB with this (issue 18's bound is
    1390 MiB). The cost is fresh pages for each large array (~0.5 s of system time a 440 MB shard on a
    2-core box). Process-wide: the CLI's ``encode`` calls it; library callers may."""
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):  # glibc only
            return False
        return bool(libc.mallopt(-3, MMAP_THRESHOLD))  # M_MMAP_THRESHOLD
    except OSError:
        return False


def _numba_threads(n: int) -> None:
    try:
        import numba

        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))  # per calling thread
    except Exception:  # noqa: BLE001 - no numba threading: nothing to set
        pass


def _nested_ok() -> bool:
    """Whether parallel regions from several Python threads run side by side in this process: numba's
    threading layer is already chosen (a kernel ran) and is OpenMP or TBB (workqueue serialises them:
    ``bslcodec.parallel.launch``), and this is the process that chose it (a forked child runs serial twins)."""
    try:
        import numba

        from .. import parallel

        return parallel._LAUNCH_PID == os.getpid() and numba.threading_layer() in ("omp", "tbb")
    except Exception:  # noqa: BLE001 - no layer chosen yet, or no numba threading: one thread a tensor
        return False


def split(n: int, n_items: int, limit: int, largest: int) -> tuple:
    """(pool threads, Numba threads each) for ``n`` threads over ``n_items`` tensors of which at most
    ``limit`` input bytes may be in flight, the largest ``largest`` bytes: as many tensors at once as the
    budget lets the largest run side by side, and the threads those leave idle spread over them (16 threads,
    a 128 MiB budget and 23 MB MLP matrices: 5 tensors of 3 threads, not 5 threads busy and 11 idle)."""
    workers = max(1, min(n, n_items))
    fit = max(1, limit // max(1, largest))
    if fit >= workers or not _nested_ok():
        return workers, 1
    return fit, max(1, n // fit)


class _Budget:
    """Bytes in flight: ``take(n)`` waits until ``n`` fits (one task always fits), first come first served
    (a large task waiting for the others to drain is not passed by smaller ones, which could starve it)."""

    def __init__(self, limit: int):
        self.limit, self.used, self.cv = limit, 0, threading.Condition()
        self.next_ticket = self.serving = 0

    def take(self, n: int):
        with self.cv:
            ticket = self.next_ticket
            self.next_ticket += 1
            while ticket != self.serving or (self.used and self.used + n > self.limit):
                self.cv.wait()
            self.serving += 1
            self.used += n
            self.cv.notify_all()

    def give(self, n: int):
        with self.cv:
            self.used -= n
            self.cv.notify_all()


def beside(fn):
    """Start ``fn()`` on a thread of its own; returns ``join()``, which waits for it and raises what it raised
    (once; later calls return at once)."""
    box = {}

    def target():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to join()
            box["exc"] = exc

    th = threading.Thread(target=target, name="bslcodec-beside", daemon=True)
    th.start()

    def join():
        th.join()
        exc = box.pop("exc", None)
        if exc is not None:
            raise exc

    return join


class Stopped(Exception):
    """Raised in a task that was not started because :func:`shared`'s ``stop()`` was called."""


class _Shared:
    def __init__(self, limit: int):
        self.budget, self.stopped = _Budget(limit), threading.Event()

    def stop(self):
        self.stopped.set()


_shared = None  # the _Shared of a shared() block in effect, else None


@contextlib.contextmanager
def shared(limit: int | None = None):
    """Within this block every :func:`run` in the process (several may run at once from different threads:
    ``encode_checkpoint`` codes two shards at a time) draws on one in-flight budget of ``limit`` bytes
    (default ``MEMORY_BUDGET``), the tensors run alone included, so that the memory bound of one ``run``
    holds for all of them together. Yields an object whose ``stop()`` makes every task not yet started raise
    :class:`Stopped` (an interrupted caller stops the other threads' work at the next tensor)."""
    global _shared
    if _shared is not None:  # nested: the outer block's budget already applies
        yield _shared
        return
    _shared = _Shared(limit or MEMORY_BUDGET)
    try:
        yield _shared
    finally:
        _shared = None


def run(fn, items: list, weights: list, n_threads: int | None = None, budget: int | None = None) -> list:
    """``[fn(item) for item in items]`` (results in order), the work spread over threads as the module
    docstring says; ``weights``: each item's input bytes. The first exception is raised (pending items are
    not started)."""
    n = threads() if n_threads is None else max(1, n_threads)
    sh = _shared if budget is None else None

    def alone(i):  # on the calling thread; with other run()s at once, within the shared budget too
        if sh is None:
            return fn(items[i])
        if sh.stopped.is_set():
            raise Stopped
        sh.budget.take(weights[i])
        try:
            return fn(items[i])
        finally:
            sh.budget.give(weights[i])

    if n <= 1 or len(items) <= 1:
        return [alone(i) for i in range(len(items))]
    total = sum(weights) or 1
    order = sorted(range(len(items)), key=lambda i: (-weights[i], i))
    big = [i for i in order if weights[i] * n > total]
    small = [i for i in order if weights[i] * n <= total]
    out = [None] * len(items)
    for i in big:  # a thread's share or more: alone, its kernels parallel over groups
        out[i] = alone(i)
    if not small:
        return out
    limit = max(budget or MEMORY_BUDGET, max(weights[i] for i in small))
    cap = _Budget(limit) if sh is None else sh.budget
    failed = threading.Event()

    def task(i):
        if failed.is_set():
            return None
        if sh is not None and sh.stopped.is_set():
            failed.set()
            raise Stopped
        cap.take(weights[i])
        try:
            return fn(items[i])
        except BaseException:
            failed.set()
            raise
        finally:
            cap.give(weights[i])

    # tiny items on the calling thread, the others on the pool meanwhile (see TINY_BYTES)
    tiny = [i for i in small if weights[i] <= TINY_BYTES]
    pooled = [i for i in small if weights[i] > TINY_BYTES]
    if not pooled:
        for i in tiny:
            out[i] = task(i)
        return out
    n_pool = n - 1 if tiny and n > 2 else n  # (2 threads: the caller's tiny items mostly wait on the GIL)
    workers, per = split(n_pool, len(pooled), limit, max(weights[i] for i in pooled))
    with ThreadPoolExecutor(workers, initializer=_numba_threads, initargs=(per,)) as ex:
        futures = [(i, ex.submit(task, i)) for i in pooled]
        for i in tiny:
            out[i] = task(i)
        for i, f in futures:
            out[i] = f.result()
    return out
