"""Many readers of one file at once (threads, forked and spawned processes, memory-mapped) get correct data.

numba can kill the whole process here: its "workqueue" threading layer aborts when two threads enter a
parallel kernel, and under GNU OpenMP a fork()ed child that launches a parallel kernel is terminated
("fork() called from a process already using GNU OpenMP"). Both are regression-tested in child processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import bslcodec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import fuzz_reader as fr  # noqa: E402

from bslcodec.codecs import golomb, lossless  # noqa: E402

RNG = np.random.default_rng(11)
TENSORS = {
    "emb": RNG.normal(0, 0.02, (512, 384)).astype(np.float32),
    "w16": RNG.normal(0, 0.05, (256, 256)).astype(np.float16),
    "ids": np.arange(50_000, dtype=np.int64),
    "norm": RNG.normal(1, 0.01, 384).astype(np.float32),
}


def _eg_model(path: Path) -> dict:
    """A file built by hand, so that it holds ``eg`` payloads whatever codec the encoder prefers; the
    expected values come from numpy (x = float32(q) * step), not from the decoder under test."""
    s, step, center = 512, 2.0**-10, 3
    u = (RNG.geometric(0.05, 512 * 384) - 1).astype(np.uint32)  # 12 groups of 32 x 512
    ks, lens = golomb.choose_orders(u, s, 0, 8)
    eg = golomb.encode(u, s, ks, lens)
    q = center + ((u.astype(np.int64) >> 1) ^ -(u.astype(np.int64) & 1))
    ref = {"emb": (q.astype(np.float32) * np.float32(step)).reshape(512, 384), "ids": TENSORS["ids"],
           "norm": TENSORS["norm"]}
    zp, zparams = lossless.encode_zstd(TENSORS["ids"])[1], lossless.encode_zstd(TENSORS["ids"])[0]
    entries = [
        {"name": "emb", "dtype": "F32", "shape": [512, 384], "codec": "eg",
         "params": {"step": step, "center": center, "lane_symbols": s, "k": 0, "gg_nu": 2.0, "gg_scale": 1.0,
                    "max_abs_error": step / 2}},
        {"name": "ids", "dtype": "I64", "shape": [50_000], "codec": "zstd", "params": zparams},
        {"name": "norm", "dtype": "F32", "shape": [384], "codec": "raw", "params": {}}]
    for e in entries:
        e.update(offset=0, length=0, checksum="")
    path.write_bytes(fr.build({"metadata": {}, "tensors": entries},
                              [eg, zp, TENSORS["norm"].tobytes()]))
    return ref


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("conc") / "m.bsl"
    ref = _eg_model(path)
    got = bslcodec.load_file(path)
    assert all(_same(got[k], ref[k]) for k in ref)
    return path, ref


@pytest.fixture(scope="module")
def encoded_model(tmp_path_factory):
    """Whatever the encoder writes today (its lossy codec may change): threads read it."""
    path = tmp_path_factory.mktemp("conc") / "enc.bsl"
    bslcodec.save_file(TENSORS, path)
    return path, bslcodec.load_file(path)


def _same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _read_all(path, ref, rounds, errors, shared=None):
    try:
        for i in range(rounds):
            if shared is not None:
                f = shared
            elif i % 3 == 2:
                got = bslcodec.load_file(path)
                assert all(_same(got[k], ref[k]) for k in ref)
                continue
            else:
                f = bslcodec.safe_open(path)
            for k in ref:
                assert _same(f.get_tensor(k), ref[k]), k
            rows = f.get_slice("emb")[100 + i:300 + i]  # a slice decodes only some groups
            assert _same(rows, ref["emb"][100 + i:300 + i])
            if shared is None:
                f.close()
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(repr(exc))


@pytest.mark.parametrize("which", ["model", "encoded_model"])
def test_threads_with_their_own_handles(which, request):
    path, ref = request.getfixturevalue(which)
    errors = []
    threads = [threading.Thread(target=_read_all, args=(path, ref, 6, errors)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_threads_sharing_one_handle(model):
    path, ref = model
    errors = []
    with bslcodec.safe_open(path) as f:
        threads = [threading.Thread(target=_read_all, args=(path, ref, 4, errors, f)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def _child_reads(path: str) -> str:
    ref = {k: v for k, v in np.load(path + ".npz").items()}
    got = bslcodec.load_file(path)
    with bslcodec.safe_open(path) as f:
        rows = f.get_slice("emb")[7:77]
    ok = all(_same(got[k], ref[k]) for k in ref) and _same(rows, ref["emb"][7:77])
    return f"{os.getpid()}:{ok}"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_after_the_parent_decoded(model, method):
    """The parent decodes first (starting numba's threads), then a pool of children reads the same file."""
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} here")
    path, ref = model
    np.savez(str(path) + ".npz", **ref)
    code = textwrap.dedent(f"""
        import sys, multiprocessing as mp
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import bslcodec, test_concurrency as t
        bslcodec.load_file({str(path)!r})           # parallel kernels run in the parent first
        with mp.get_context({method!r}).Pool(2) as pool:
            res = pool.map(t._child_reads, [{str(path)!r}] * 4)
        print(" ".join(res))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Terminating" not in r.stderr, r.stderr[-3000:]
    res = r.stdout.split()
    assert len(res) == 4 and all(x.endswith(":True") for x in res), r.stdout


def test_threads_under_the_workqueue_threading_layer(model):
    """numba's fallback layer (no TBB/OpenMP installed) is not thread-safe; decoding must serialise."""
    path, ref = model
    np.savez(str(path) + ".npz", **ref)
    code = textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import numba, bslcodec, test_concurrency as t
        res = []
        ths = [threading.Thread(target=lambda: res.append(t._child_reads({str(path)!r}))) for _ in range(6)]
        [x.start() for x in ths]; [x.join() for x in ths]
        print(numba.threading_layer(), " ".join(res))
    """)
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.split()
    assert out[0] == "workqueue" and len(out) == 7 and all(x.endswith(":True") for x in out[1:]), r.stdout
