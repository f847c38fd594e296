"""The GPU loader's host side (bslcodec/gpu/load.py: chunks, reads into the staging slots, host tables, copies,
checksums, error order) run on the CPU: torch.cuda.is_available() stubbed for the import, torch's CUDA calls replaced by CPU
stand-ins (copies run at once, events are no-ops) and each launch by the CPU decoder reading the payload
bytes from the "device" staging slot at the addresses the launch would use. So the bytes a kernel would
see, and every tensor's output, are checked without a GPU; the CUDA kernels themselves are checked by
tests/test_gpu_ans_emu.py (emulated) and tests/test_gpu_load.py (on a GPU)."""

import contextlib
import ctypes
import importlib
import sys
import types

import ml_dtypes
import numpy as np
import pytest

import bslcodec
from bslcodec.files import api
from bslcodec.pipeline import codec
from bslcodec.pipeline.arrays import _to_framework

torch = pytest.importorskip("torch")


@pytest.fixture
def gpu_load(monkeypatch):
    """bslcodec.gpu.load imported with torch.cuda.is_available() stubbed, its torch calls on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    saved = {m: sys.modules[m] for m in list(sys.modules) if m.startswith("bslcodec.gpu")}
    for m in saved:
        del sys.modules[m]
    try:
        mod = importlib.import_module("bslcodec.gpu.load")
    finally:
        for m in [m for m in sys.modules if m.startswith("bslcodec.gpu")]:
            del sys.modules[m]
        sys.modules.update(saved)

    class Event:
        def record(self, stream=None):
            pass

        def synchronize(self):
            pass

    def strip(fn):
        def call(*a, device=None, pin_memory=False, **kw):
            return fn(*a, **kw)
        return call

    fake = types.SimpleNamespace(**{k: getattr(torch, k) for k in ("uint8", "int32", "float32", "float16",
                                                                  "bfloat16", "float64", "Tensor")})
    fake.empty, fake.zeros = strip(torch.empty), strip(torch.zeros)
    fake.cuda = types.SimpleNamespace(Event=Event, stream=lambda s: contextlib.nullcontext())
    monkeypatch.setattr(mod, "torch", fake)
    monkeypatch.setattr(mod, "CHUNK_BYTES", 48 << 10)  # many chunks, several read pieces each
    monkeypatch.setattr(mod, "_MIN_CHUNK", 16 << 10)
    monkeypatch.setattr(mod, "_READ_PIECE", 8 << 10)
    return mod


class _Stream:
    def wait_event(self, ev):
        pass

    def synchronize(self):
        pass


def _loader(mod, src, launches):
    """A _Loader on the CPU: each launch decodes its tensors from the staging slot's bytes."""
    ld = mod._Loader.__new__(mod._Loader)
    ld.src, ld.dev = src, torch.device("cpu")
    ld.stream, ld.copy, ld.cs = _Stream(), _Stream(), None
    ld.pool, ld.keep, ld.checks, ld.errs = mod._threads(), [], [], []

    def launch(plans, dbase, meta):
        ans, eg, fexp = plans
        jobs = [(j[0], j[1]) for j in ans] + [(j[0], j[1]) for js in eg.values() for j in js] + \
            [(j[0], j[1]) for js in fexp.values() for j in js]
        launches.append([it.key for it, _ in jobs])
        for it, rel in jobs:
            # the payload as the kernel would read it: from the device slot at dbase + rel
            raw = bytes((ctypes.c_uint8 * it.e.length).from_address(dbase + rel))
            try:
                arr = codec.decode(it.e, raw, it.where)
            except bslcodec.BslError:  # a kernel flags it; the loader reports checksums first
                continue
            it.out.copy_(_to_framework(arr, "pt", "cpu").reshape(-1))

    def cpu_tensors(names, out):
        out.update({n: _to_framework(src.tensor(n), "pt", "cpu") for n in names})

    ld._launch, ld._cpu_tensors = launch, cpu_tensors
    return ld


def _tensors():
    rng = np.random.default_rng(3)
    w = rng.laplace(0, 0.02, (400, 96))
    t = {f"l{i}.w": (w * (1 + i)).astype(np.float32) for i in range(4)}
    t.update({"bf": w.astype(ml_dtypes.bfloat16), "h": w[:50].astype(np.float16), "f64": w[:30].astype(np.float64),
              "ids": np.arange(300), "empty": np.zeros((0, 4), np.float32)})
    t.update({f"n{i}": rng.normal(1, 0.1, 96).astype(np.float32) for i in range(5)})
    return t


@pytest.mark.parametrize("slots", [(2, 3), (2, 2), (3, 3), (1, 3), (2, 1)])  # (device, host)
@pytest.mark.parametrize("kw", [{}, {"codec": "eg", "rel_step": 0.05}, {"lossless": True}])
def test_host_pipeline_feeds_each_launch_its_bytes(gpu_load, tmp_path, kw, slots, monkeypatch):
    monkeypatch.setattr(gpu_load, "SLOTS", slots[0])
    monkeypatch.setattr(gpu_load, "HOST_SLOTS", slots[1])
    path = tmp_path / "m.bsl"
    bslcodec.save_file(_tensors(), path, **kw)
    src = api._Source(path=str(path))
    try:
        launches = []
        got = _loader(gpu_load, src, launches).run(list(src.entries))
        want = {n: _to_framework(src.tensor(n), "pt", "cpu") for n in src.entries}
    finally:
        src.close()
    assert len(launches) >= 3  # several chunks went through the two slots
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert torch.equal(got[k].reshape(-1).view(torch.uint8), want[k].reshape(-1).view(torch.uint8)), k


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_host_pipeline_one_chunk(gpu_load, tmp_path, slots, monkeypatch):
    """A file whose GPU payloads make one chunk (one staging slot): read, copied, decoded once."""
    monkeypatch.setattr(gpu_load, "SLOTS", slots)
    monkeypatch.setattr(gpu_load, "HOST_SLOTS", slots)
    path = tmp_path / "one.bsl"
    bslcodec.save_file({"w": _tensors()["l0.w"]}, path)
    src = api._Source(path=str(path))
    try:
        launches = []
        got = _loader(gpu_load, src, launches).run(["w"])
        want = _to_framework(src.tensor("w"), "pt", "cpu")
    finally:
        src.close()
    assert launches == [["w"]]
    assert torch.equal(got["w"].reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8))


def test_host_pipeline_reports_a_checksum_error(gpu_load, tmp_path):
    path = tmp_path / "m.bsl"
    bslcodec.save_file(_tensors(), path, codec="eg", rel_step=0.05)
    with bslcodec.safe_open(path) as f:
        e, start = f.entry("l2.w"), f._src.index.data_start
    data = bytearray(path.read_bytes())
    data[start + e.offset + e.length - 20] ^= 0x08  # in the code words: the tables still parse
    path.write_bytes(bytes(data))
    src = api._Source(path=str(path))
    try:
        with pytest.raises(bslcodec.ChecksumError, match="l2.w"):
            _loader(gpu_load, src, []).run(list(src.entries))
        data[start + e.offset + 1] ^= 0x7F  # and in the lane table: the host check fails first, then says checksum
    finally:
        src.close()
    path.write_bytes(bytes(data))
    src = api._Source(path=str(path))
    try:
        with pytest.raises(bslcodec.ChecksumError, match="l2.w"):
            _loader(gpu_load, src, []).run(list(src.entries))
    finally:
        src.close()
