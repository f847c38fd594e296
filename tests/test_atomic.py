"""Writes are atomic and durable; interrupted writes leave nothing behind; encoding is deterministic.

Interruptions: an exception from the writer (a fake disk-full), a real full disk (a 256 KiB tmpfs, when
this process may mount one), a file-size limit (RLIMIT_FSIZE), Ctrl-C, and SIGKILL mid-write (whose temp
file the next write to the same path removes).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bslcodec
from bslcodec.files import api

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(5)
TENSORS = {"w": RNG.normal(0, 0.02, (256, 256)).astype(np.float32), "ids": np.arange(1000),
           "b": RNG.normal(0, 1, 64).astype(np.float32)}


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


@pytest.fixture()
def old_file(tmp_path):
    path = tmp_path / "model.bsl"
    bslcodec.save_file({"old": np.arange(10)}, path)
    return path, path.read_bytes()


def test_writer_exception_leaves_old_file_and_no_temp(old_file):
    path, before = old_file

    def failing(fh):
        fh.write(b"x" * 100_000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        api.atomic_write(path, failing)
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []


def test_keyboard_interrupt_leaves_no_temp(tmp_path):
    path = tmp_path / "new.bsl"

    def interrupted(fh):
        fh.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.atomic_write(path, interrupted)
    assert not path.exists() and leftovers(tmp_path) == []


def test_write_is_fsynced_then_renamed_then_folder_fsynced(tmp_path, monkeypatch):
    bslcodec.save_file(TENSORS, tmp_path / "warm.bsl")  # kernels compiled first: numba's cache writes use os.replace
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")
                                                               if os.path.exists("/proc/self/fd") else None)),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", None)), real_replace(a, b))[1])
    bslcodec.save_file(TENSORS, tmp_path / "m.bsl")
    names = [c[0] for c in calls]
    assert names == ["fsync", "replace", "fsync"]
    if calls[0][1] is not None:
        assert calls[0][1] is False and calls[2][1] is True  # the file, then its folder


def test_file_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        bslcodec.save_file(TENSORS, tmp_path / "m.bsl")
    finally:
        os.umask(old)
    assert (tmp_path / "m.bsl").stat().st_mode & 0o777 == 0o640


def test_file_size_limit_in_a_child_process(tmp_path, old_file):
    """RLIMIT_FSIZE makes write() fail with EFBIG part-way, like a full disk."""
    path, before = old_file
    code = textwrap.dedent(f"""
        import resource, signal, numpy as np, bslcodec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        x = np.random.default_rng(0).integers(0, 2**62, 50000)
        try:
            bslcodec.save_file({{"x": x}}, {str(path)!r})
        except OSError as exc:
            print("OSError", exc.errno)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == f"OSError {errno.EFBIG}", r.stderr[-2000:]
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []


@pytest.fixture()
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_real_full_disk(tiny_tmpfs):
    path = tiny_tmpfs / "model.bsl"
    bslcodec.save_file({"small": np.arange(100)}, path)
    before = path.read_bytes()
    big = {"x": np.random.default_rng(1).integers(0, 2**62, 100_000)}  # 800 KB, incompressible-ish
    with pytest.raises(OSError) as ei:
        bslcodec.save_file(big, path)
    assert ei.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert leftovers(tiny_tmpfs) == []
    bslcodec.save_file({"small": np.arange(100)}, tiny_tmpfs / "again.bsl")  # the space came back


_KILL_CHILD = textwrap.dedent("""
    import sys, time
    from bslcodec.files import api
    def slow(fh):
        fh.write(b"\\x89BSL partial " * 1000)
        fh.flush()
        print("writing", flush=True)
        time.sleep(60)
    api.atomic_write(sys.argv[1], slow)
""")


def _killed_writer(path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "writing"
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()  # reaps it and closes its pipe (an unclosed pipe's ResourceWarning fails a later test)


def test_sigkill_mid_write_then_next_run_cleans_up(old_file):
    path, before = old_file
    _killed_writer(path)
    assert path.read_bytes() == before  # the old file is untouched
    stale = leftovers(path.parent)
    assert len(stale) == 1 and stale[0].startswith(".model.bsl.") and stale[0].endswith(".bsl-tmp")
    bslcodec.save_file(TENSORS, path)  # the next run
    assert leftovers(path.parent) == []
    assert same(bslcodec.load_file(path), bslcodec.load(bslcodec.save(TENSORS)))


def test_sigkill_of_a_first_write_leaves_no_file(tmp_path):
    path = tmp_path / "fresh.bsl"
    _killed_writer(path)
    assert not path.exists()
    assert len(leftovers(tmp_path)) == 1
    assert api.remove_stale_temps(path) and leftovers(tmp_path) == []


def test_live_writers_temp_is_not_removed(tmp_path):
    path = tmp_path / "m.bsl"
    started, release = threading.Event(), threading.Event()

    def slow(fh):
        fh.write(b"slow")
        started.set()
        release.wait(30)

    t = threading.Thread(target=api.atomic_write, args=(path, slow))
    t.start()
    try:
        assert started.wait(30)
        assert api.remove_stale_temps(path) == []  # locked by a live writer (same process even)
        bslcodec.save_file(TENSORS, path)  # another writer to the same path
        assert len(leftovers(tmp_path)) == 1
    finally:
        release.set()
        t.join()
    assert leftovers(tmp_path) == [] and path.read_bytes() == b"slow"  # last rename wins, whole


def test_concurrent_writers_produce_one_whole_file(tmp_path):
    path = tmp_path / "m.bsl"
    versions = [{"v": np.full(5000, i, np.int32)} for i in range(6)]
    threads = [threading.Thread(target=bslcodec.save_file, args=(v, path)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = bslcodec.load_file(path)
    assert any(same(got, v) for v in versions)
    assert leftovers(tmp_path) == []


def test_readers_never_see_a_partial_file(tmp_path):
    """A reader that opens the path while writers replace it sees the old or the new file, whole."""
    path = tmp_path / "m.bsl"
    a = {"x": np.arange(200_000, dtype=np.int64)}
    b = {"x": np.arange(200_000, dtype=np.int64)[::-1].copy()}
    bslcodec.save_file(a, path)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            bslcodec.save_file(b if i % 2 else a, path)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 3
        reads = 0
        while time.monotonic() < deadline:
            got = bslcodec.load_file(path)
            assert same(got, a) or same(got, b)
            reads += 1
    finally:
        stop.set()
        t.join()
    assert reads > 0


def test_encoding_is_deterministic_across_processes_and_thread_counts(tmp_path):
    """Same input, same bytes: in this process (all cores), and in a fresh process with 1 numba thread."""
    np.savez(tmp_path / "in.npz", **TENSORS)
    here = bslcodec.save(TENSORS)
    assert bslcodec.save(TENSORS) == here
    code = textwrap.dedent(f"""
        import sys, numpy as np, bslcodec
        t = dict(np.load({str(tmp_path / 'in.npz')!r}))
        sys.stdout.buffer.write(bslcodec.save(t))
    """)
    for threads in ("1",):  # this process runs with the default (all cores)
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout == here, f"NUMBA_NUM_THREADS={threads} gave other bytes"
    for kw in ({"max_error": 1e-3}, {"bits": 4}):
        assert bslcodec.save(TENSORS, **kw) == bslcodec.save(TENSORS, **kw)
