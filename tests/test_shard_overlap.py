"""Two shards of a folder encoded at once (``checkpoint._shards``, ``pool.shared``): the same bytes as one shard
after another, one in-flight budget over every ``pool.run`` of the process (tensors run alone included), the
real error of a failing shard, nothing left behind, and ``stop()`` starting no further tensor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bslcodec.container.errors import BslError
from bslcodec.files import checkpoint, pool

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _folder(path, shards=4, seed=0):
    rng = np.random.default_rng(seed)
    path.mkdir()
    wm = {}
    for s in range(shards):
        t = {f"layers.{s}.w{i}": (rng.laplace(0, 0.02, (96 + 32 * i, 128))).astype(np.float32) for i in range(3)}
        t[f"layers.{s}.norm"] = (1 + 0.05 * rng.standard_normal(128)).astype(np.float32)
        f = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        safetensors_numpy.save_file(t, str(path / f), metadata={"format": "pt"})
        wm.update({k: f for k in t})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (path / "config.json").write_text("{}")


@pytest.fixture
def threads():
    pool.set_threads(2)  # overlap needs two threads at least
    yield
    pool.set_threads(None)


@pytest.mark.parametrize("kw", [dict(bits=6), dict(), dict(expert={"rel_step": 1 / 16}), dict(exact=["*"])])
def test_overlapped_shards_write_the_same_bytes(tmp_path, threads, monkeypatch, kw):
    _folder(tmp_path / "in")
    monkeypatch.setattr(checkpoint, "OVERLAP", 1)
    one = checkpoint.encode_checkpoint(tmp_path / "in", tmp_path / "one", progress=False, **kw)
    monkeypatch.setattr(checkpoint, "OVERLAP", 2)
    where, encode_file = set(), checkpoint.encode_file

    def spy(*a, **k):
        where.add(threading.current_thread().name.split("_")[0])
        return encode_file(*a, **k)

    monkeypatch.setattr(checkpoint, "encode_file", spy)
    two = checkpoint.encode_checkpoint(tmp_path / "in", tmp_path / "two", progress=False, **kw)
    assert where == {"bslcodec-shard"}  # the shards did go through the overlapping path
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(names) == 6
    for n in names:
        assert (tmp_path / "one" / n).read_bytes() == (tmp_path / "two" / n).read_bytes(), n
    assert (one.out_bytes, one.n_weights, one.n_tensors, one.rel_steps) == \
           (two.out_bytes, two.n_weights, two.n_tensors, two.rel_steps)


def test_runs_share_one_budget_with_the_tensors_run_alone():
    """Two run()s at once in a shared block: never more than the budget in flight, except a task larger than
    the budget, which runs with nothing else; every result in order."""
    live, peak, over, lock = [0], [0], [], threading.Lock()

    def fn(w):
        with lock:
            live[0] += w
            peak[0] = max(peak[0], live[0])
            if live[0] > 40 and live[0] != w:
                over.append(live[0])
        threading.Event().wait(0.005)
        with lock:
            live[0] -= w
        return -w

    a = [60] + list(range(1, 20))  # 60: more than a thread's share (run alone) and more than the budget
    b = list(range(5, 25))
    out = {}
    with pool.shared(40):
        ts = [threading.Thread(target=lambda k=k, x=x: out.__setitem__(k, pool.run(fn, x, x, n_threads=3)))
              for k, x in (("a", a), ("b", b))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert out == {"a": [-w for w in a], "b": [-w for w in b]}
    assert not over and peak[0] >= 60


def test_stop_starts_no_further_task():
    started = []
    with pool.shared() as sh:
        def fn(i):
            started.append(i)
            if i == 2:
                sh.stop()
            return i

        with pytest.raises(pool.Stopped):
            pool.run(fn, list(range(50)), [1] * 50, n_threads=1)
    assert started == [0, 1, 2]
    assert pool._shared is None


def test_a_failing_later_shard_raises_its_own_error_and_leaves_nothing(tmp_path, threads):
    _folder(tmp_path / "in")
    bad = tmp_path / "in" / "model-00003-of-00004.safetensors"
    t = safetensors_numpy.load_file(str(bad))
    t["layers.2.w1"][3, 3] = np.nan  # a lossy tensor with NaN: refused, naming the tensor
    safetensors_numpy.save_file(t, str(bad), metadata={"format": "pt"})
    with pytest.raises(BslError, match="layers.2.w1"):
        checkpoint.encode_checkpoint(tmp_path / "in", tmp_path / "out", bits=6, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output, no staged temporary
    assert pool._shared is None


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_interrupt_while_two_shards_run_leaves_nothing(tmp_path):
    """SIGINT to ``bslcodec encode --workers 2`` of a sharded folder while two shards are being encoded: the
    run stops (the other shard starts no further tensor), exit 130, and no output or staged folder is left."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(1)
    wm = {}
    for s in range(4):
        f = f"model-{s + 1:05d}-of-00004.safetensors"
        t = {f"l{s}.w{i}": rng.laplace(0, 0.02, (1024, 1024)).astype(np.float32) for i in range(8)}
        safetensors_numpy.save_file(t, str(src / f))
        wm.update({k: f for k in t})
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    here = Path(checkpoint.__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(here) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "bslcodec.cli", "encode", str(src), str(tmp_path / "out"),
                             "--workers", "2", "-q"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.monotonic()
    while not list(tmp_path.glob(".out.*.bsl-tmp")):
        if proc.poll() is not None or time.monotonic() - t0 > 120:
            proc.kill()
            pytest.fail(f"no staged output while running: {proc.communicate()}")
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    t1 = time.monotonic()
    _, err = proc.communicate(timeout=300)
    print(f"stopped {time.monotonic() - t1:.2f} s after the signal, {t1 - t0:.2f} s into the run")
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_cli_bits_writes_what_the_api_writes(tmp_path):
    """``bslcodec encode --bits 4`` records the target as ``save_file(bits=4)`` does (4, not 4.0): same bytes."""
    from click.testing import CliRunner

    from bslcodec.cli import main

    _folder(tmp_path / "in", shards=2)
    checkpoint.encode_checkpoint(tmp_path / "in", tmp_path / "api", bits=4, progress=False)
    r = CliRunner().invoke(main, ["encode", str(tmp_path / "in"), str(tmp_path / "cli"), "--bits", "4", "-q"])
    assert r.exit_code == 0, r.output
    for p in (tmp_path / "api").iterdir():
        assert p.read_bytes() == (tmp_path / "cli" / p.name).read_bytes(), p.name
