"""The memory-bounding paths of the encoder (issue 18) give the same bytes as the plain ones: safetensors
read into fresh arrays (not copies out of a memory map), a ``bits=`` search that lets lazily read tensors
go and reads them again, and the ans encoder's groups coded a bounded chunk at a time."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import bslcodec
from bslcodec.codecs import rans, rans_enc
from bslcodec.files.checkpoint import encode_checkpoint
from bslcodec.files.readers import SafetensorsFile

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def test_safetensors_read_matches_safetensors(tmp_path):
    from safetensors import safe_open

    p = str(tmp_path / "a.safetensors")
    t = {"f32": np.arange(12, dtype=np.float32).reshape(3, 4), "bf16": np.arange(5).astype(ml_dtypes.bfloat16),
         "f16": np.array(3.0, np.float16), "empty": np.zeros((0, 4), np.int8), "bool": np.array([True, False]),
         "u64": np.arange(7, dtype=np.uint64)}
    safetensors_numpy.save_file(t, p)
    f, ref = SafetensorsFile(p), safe_open(p, framework="numpy")
    for name in t:
        a, b = f.get(name), ref.get_tensor(name)
        assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes()), name


def test_bits_search_of_a_lazy_file_matches_in_memory(tmp_path):
    """A ``bits=`` search over a file read on access (tensors let go and read again) writes the bytes the
    same tensors give from memory."""
    rng = np.random.default_rng(1)
    sd = {f"w{i}": (rng.laplace(0, 0.02, (96, 128 + 32 * i))).astype(ml_dtypes.bfloat16) for i in range(3)}
    sd["norm"] = (1 + 0.05 * rng.standard_normal(128)).astype(np.float32)
    sd["ids"] = np.arange(10, dtype=np.int64)
    safetensors_numpy.save_file(sd, str(tmp_path / "in.safetensors"))
    encode_checkpoint(tmp_path / "in.safetensors", tmp_path / "lazy.bsl", bits=3, progress=False)
    bslcodec.save_file(sd, tmp_path / "mem.bsl", bits=3,
                       metadata={"bslcodec.source_format": "safetensors"})
    a = bslcodec.load_file(tmp_path / "lazy.bsl")
    b = bslcodec.load_file(tmp_path / "mem.bsl")
    for name in sd:
        assert a[name].tobytes() == b[name].tobytes(), name
    with bslcodec.safe_open(tmp_path / "lazy.bsl") as fa, bslcodec.safe_open(tmp_path / "mem.bsl") as fb:
        for name in sd:
            ea, eb = fa.entry(name), fb.entry(name)
            assert (ea.codec, ea.params, ea.checksum) == (eb.codec, eb.params, eb.checksum), name


def test_ans_chunks_give_the_same_payload(monkeypatch):
    rng = np.random.default_rng(2)
    u = np.abs(rng.laplace(0, 40, 5 * 32 * 1024 + 77)).astype(np.uint32)
    model, _ = rans.build_model(u)
    whole = rans_enc.encode(u, 1024, model)
    monkeypatch.setattr(rans_enc, "_SCRATCH_WORDS", 3 * 32 * 1024)  # a group or two a chunk
    assert rans_enc.encode(u, 1024, model) == whole


def test_unpooled_large_is_a_harmless_no_op_or_set(monkeypatch):
    from bslcodec.files import pool

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")  # the user's own setting wins
    assert pool.unpooled_large() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert pool.unpooled_large() in (True, False)  # glibc: set; elsewhere: nothing to do
    a = np.ones(pool.MMAP_THRESHOLD, np.uint8)  # allocations still work either way
    assert int(a.sum()) == pool.MMAP_THRESHOLD
