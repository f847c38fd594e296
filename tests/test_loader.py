"""bslcodec.files.loader: the whole-file CPU decode on several threads gives what one tensor at a time gives,
and a corrupted payload is still a ChecksumError naming the tensor."""

import ml_dtypes
import numpy as np
import pytest

import bslcodec
from bslcodec.files import api, loader, pool
from bslcodec.pipeline.arrays import _to_framework


@pytest.fixture
def parallel(monkeypatch):
    """Every file takes the threaded path: no size floor, two threads whatever the machine's load."""
    monkeypatch.setattr(loader, "PARALLEL_BYTES", 0)
    pool.set_threads(2)
    yield
    pool.set_threads(None)


def _tensors():
    rng = np.random.default_rng(1)
    w = rng.laplace(0, 0.02, (600, 300))
    return {"big": w.astype(np.float32), "big_bf16": w.astype(ml_dtypes.bfloat16),
            "mid": w[:100].astype(np.float16), "bias": rng.normal(size=300).astype(np.float32),
            "ids": np.arange(500), "flag": np.array(True), "empty": np.zeros((0, 3), np.float32),
            **{f"norm.{i}": rng.normal(1, 0.1, 64).astype(np.float32) for i in range(6)}}


def _one_by_one(src_path, framework="np"):
    src = api._Source(path=str(src_path))
    try:
        return {n: _to_framework(src.tensor(n), framework, "cpu") for n in src.entries}
    finally:
        src.close()


def _bits(a):
    a = np.asarray(a)
    return a.dtype, a.shape, a.tobytes()


@pytest.mark.parametrize("kw", [{}, {"lossless": True}, {"codec": "eg", "rel_step": 0.1}])
def test_threaded_load_equals_one_by_one(tmp_path, parallel, kw):
    path = tmp_path / "m.bsl"
    bslcodec.save_file(_tensors(), path, **kw)
    want = _one_by_one(path)
    got = bslcodec.load_file(path)
    assert list(got) == list(want)  # the file's order
    for k in want:
        assert _bits(got[k]) == _bits(want[k]), k
    with open(path, "rb") as f:
        got = bslcodec.load(f.read())
    assert all(_bits(got[k]) == _bits(want[k]) for k in want)


def test_threaded_load_torch(tmp_path, parallel):
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.bsl"
    bslcodec.save_file(_tensors(), path)
    want = _one_by_one(path, "pt")
    got = bslcodec.load_file(path, framework="pt")
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k].view(-1).view(torch.uint8),
                                                             want[k].view(-1).view(torch.uint8)), k


@pytest.mark.parametrize("victim", ["big", "norm.3"])
def test_threaded_load_names_the_corrupted_tensor(tmp_path, parallel, victim):
    path = tmp_path / "m.bsl"
    bslcodec.save_file(_tensors(), path)
    with bslcodec.safe_open(path) as f:
        e, start = f.entry(victim), f._src.index.data_start
    data = bytearray(path.read_bytes())
    data[start + e.offset + e.length // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(bslcodec.ChecksumError, match=repr(victim)):
        bslcodec.load_file(path)
