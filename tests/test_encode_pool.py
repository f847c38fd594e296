"""Tensors encoded side by side (bslcodec.files.pool): the bytes do not depend on the number of threads, errors
name their tensor, progress reports each tensor once, and the pool's order/budget rules."""

import threading

import ml_dtypes
import numpy as np
import pytest

import bslcodec
from bslcodec.container.errors import EncodeError
from bslcodec.files import pool


@pytest.fixture
def tensors():
    rng = np.random.default_rng(0)
    t = {f"l{i}.w": rng.laplace(0, 0.02, (64 + 16 * i, 200)).astype(ml_dtypes.bfloat16) for i in range(9)}
    t["emb"] = rng.normal(0, 0.02, (1500, 256)).astype(np.float32)  # more than a thread's share: alone first
    t["norm"] = np.ones(256, np.float32)
    t["ids"] = np.arange(100)
    return t


@pytest.fixture
def threads():
    yield
    pool.set_threads(None)


@pytest.mark.parametrize("kw", [dict(), dict(rel_step=1 / 16), dict(bits=4), dict(max_error=1e-3),
                                dict(lossless=True), dict(quantizer="uniform", codec="eg", rel_step=1 / 16)])
def test_bytes_do_not_depend_on_threads(tensors, threads, kw):
    pool.set_threads(1)
    one = bslcodec.save(tensors, **kw)
    pool.set_threads(3)
    assert bslcodec.save(tensors, **kw) == one


def test_error_names_the_tensor(tensors, threads):
    pool.set_threads(3)
    tensors["l3.w"] = tensors["l3.w"].astype(np.float32)
    tensors["l3.w"][5, 5] = np.nan
    with pytest.raises(EncodeError, match="l3.w"):
        bslcodec.save(tensors)


def test_progress_sees_each_tensor_once(tensors, threads):
    pool.set_threads(3)
    seen = []
    bslcodec.files.api.encode_tensors(tensors, progress=lambda phase, name, nb: seen.append((phase, name)))
    assert sorted(n for p, n in seen if p == "encode") == sorted(tensors)


def test_run_keeps_order_and_budget():
    live, peak, lock = [0], [0], threading.Lock()

    def fn(i):
        with lock:
            live[0] += i
            peak[0] = max(peak[0], live[0])
        threading.Event().wait(0.01)
        with lock:
            live[0] -= i
        return i * i

    items = list(range(1, 30))
    unit = pool.TINY_BYTES + 1  # (items of TINY_BYTES or less run on the calling thread, outside the budget)
    assert pool.run(fn, items, [unit * i for i in items], n_threads=4, budget=40 * unit) == [i * i for i in items]
    assert peak[0] <= 40


def test_tiny_items_run_on_the_calling_thread():
    """Items of at most ``TINY_BYTES`` run on the calling thread (two threads coding tiny tensors hand the GIL
    over at every kernel call and run slower than one); larger ones on the pool meanwhile; results in order;
    the first error raised."""
    me = threading.get_ident()
    where = {}

    def fn(i):
        where[i] = threading.get_ident()
        threading.Event().wait(0.002)
        return -i

    tiny, big = pool.TINY_BYTES, pool.TINY_BYTES + 1
    items = list(range(12))
    weights = [big if i % 3 == 0 else tiny for i in items]
    assert pool.run(fn, items, weights, n_threads=3) == [-i for i in items]
    assert all((where[i] == me) == (weights[i] == tiny) for i in items)
    where.clear()
    assert pool.run(fn, items, [tiny] * 12, n_threads=4) == [-i for i in items]
    assert set(where.values()) == {me}

    def bad(i):
        if i == 5:
            raise EncodeError("five")
        return i

    with pytest.raises(EncodeError, match="five"):
        pool.run(bad, items, weights, n_threads=2)


def test_threads_default_is_at_least_one():
    assert 1 <= pool.threads() <= pool.cpus()


def test_split_spreads_idle_threads_over_the_tensors_the_budget_allows(monkeypatch):
    """16 threads, 128 MiB in flight, 23 MB tensors: 5 tensors at once with 3 Numba threads each (where
    parallel regions of several threads run side by side); one thread a tensor where the budget is no limit
    or the threading layer serialises regions."""
    monkeypatch.setattr(pool, "_nested_ok", lambda: True)
    assert pool.split(16, 40, 128 << 20, 23_000_000) == (5, 3)
    assert pool.split(16, 40, 128 << 20, 4_000_000) == (16, 1)
    assert pool.split(2, 40, 128 << 20, 23_000_000) == (2, 1)
    assert pool.split(16, 3, 128 << 20, 23_000_000) == (3, 1)
    assert pool.split(16, 40, 128 << 20, 200 << 20) == (1, 16)
    monkeypatch.setattr(pool, "_nested_ok", lambda: False)
    assert pool.split(16, 40, 128 << 20, 23_000_000) == (16, 1)


def test_threads_own_leaves_out_this_process_load(monkeypatch):
    """``threads(own=True)`` takes from the load average what this process itself kept busy since its last
    such call (within a minute): 2 cores, load 1.1 of which this process's ~1: 2 threads; with another
    process's load on top: 1; a first call, or one after a long pause: the plain rule."""
    monkeypatch.setattr(pool, "_threads", None)
    monkeypatch.setattr(pool, "cpus", lambda: 2)
    load = [1.1]
    monkeypatch.setattr(pool.os, "getloadavg", lambda: (load[0], 0.0, 0.0))
    clock = {"wall": 100.0, "cpu": 10.0}
    monkeypatch.setattr(pool.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(pool.time, "process_time", lambda: clock["cpu"])
    monkeypatch.setattr(pool, "_last_busy", None)
    assert pool.threads(own=True) == 1  # no earlier sample: the plain rule
    clock["wall"] += 2.0
    clock["cpu"] += 1.9  # busy on one core since
    assert pool.threads(own=True) == 2 and pool.threads() == 1
    clock["wall"] += 2.0
    clock["cpu"] += 1.9
    load[0] = 2.1  # someone else's work on the other core
    assert pool.threads(own=True) == 1
    clock["wall"] += 120.0  # a sample older than the window tells nothing
    clock["cpu"] += 1.0
    load[0] = 1.1
    assert pool.threads(own=True) == 1


@pytest.mark.parametrize("kw", [{}, {"bits": 4}, {"rel_error": 0.01}])
def test_fits_beside_the_allocation_give_the_same_bytes(tensors, threads, monkeypatch, kw):
    """The allocation modes' GG fits on a thread of their own (``encoder.FITS_BESIDE``, 2 threads) give the
    bytes of the fits made first."""
    from bslcodec.files import encoder

    pool.set_threads(2)
    beside = bslcodec.save(tensors, **kw)
    monkeypatch.setattr(encoder, "FITS_BESIDE", False)
    assert bslcodec.save(tensors, **kw) == beside


def test_beside_raises_in_join():
    def boom():
        raise EncodeError("fits")

    join = pool.beside(boom)
    with pytest.raises(EncodeError, match="fits"):
        join()
    join()  # once


def test_an_error_in_the_search_waits_for_the_fits(tensors, threads, monkeypatch):
    """An exception in the allocation's search (here: Allocation.solve raising, as Ctrl-C would) leaves after
    the fits' thread has ended: no compiled code of this save runs on while the caller unwinds or the
    interpreter shuts down."""
    import threading

    from bslcodec.files import encoder

    pool.set_threads(2)
    ended = threading.Event()
    fit_small = encoder._codec.fit_small

    def slow_fits(lossy):
        threading.Event().wait(0.3)
        fit_small(lossy)
        ended.set()

    def broken_solve(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(encoder._codec, "fit_small", slow_fits)
    monkeypatch.setattr(encoder.Allocation, "solve", broken_solve)
    monkeypatch.setattr(encoder._pool, "threads", lambda own=False: 2)
    with pytest.raises(KeyboardInterrupt):
        bslcodec.save(tensors)
    assert ended.is_set()
