"""load_file / safe_open with device="cuda": same values as the CPU decode (skipped without a GPU)."""

import ml_dtypes
import numpy as np
import pytest

import bslcodec

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)


def _tensors():
    rng = np.random.default_rng(0)
    w = rng.laplace(0, 0.02, (3000, 333)).astype(np.float32)
    return {"f32": w, "bf16": w.astype(ml_dtypes.bfloat16), "f16": (w * 10).astype(np.float16),
            "f64": w[:100].astype(np.float64), "bias": rng.normal(size=333).astype(np.float32),
            "ids": np.arange(1000), "empty": np.zeros((0, 7), np.float32)}


@pytest.mark.parametrize("kw", [{}, {"rel_step": 0.3}, {"max_error": 1e-3}])
def test_cuda_load_matches_cpu(tmp_path, kw):
    path = tmp_path / "m.bsl"
    bslcodec.save_file(_tensors(), path, **kw)
    cpu = bslcodec.load_file(path, framework="pt")
    gpu = bslcodec.load_file(path, framework="pt", device="cuda")
    assert sorted(cpu) == sorted(gpu)
    for k in cpu:
        assert gpu[k].is_cuda and gpu[k].dtype == cpu[k].dtype and gpu[k].shape == cpu[k].shape, k
        assert torch.equal(gpu[k].cpu().view(-1).view(torch.uint8), cpu[k].view(-1).view(torch.uint8)), k
    with bslcodec.safe_open(path, framework="pt", device="cuda") as f:
        t = f.get_tensor("bf16")
        assert t.is_cuda and torch.equal(t.cpu().view(torch.int16), cpu["bf16"].view(torch.int16))


def test_cuda_load_detects_corruption(tmp_path):
    path = tmp_path / "m.bsl"
    bslcodec.save_file(_tensors(), path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(bslcodec.BslError):
        bslcodec.load_file(path, framework="pt", device="cuda")


def test_cuda_load_lossless_all_dtypes_one_launch(tmp_path):
    """lossless=True: every float tensor is fexp; the GPU decodes them all (one launch per item size)."""
    rng = np.random.default_rng(4)
    w = rng.normal(0, 0.02, (257, 129))
    tensors = {"f32": w.astype(np.float32), "f64": w[:3].astype(np.float64), "f16": w.astype(np.float16),
               "bf16": w.astype(ml_dtypes.bfloat16), "bf16b": (w[:7] * 100).astype(ml_dtypes.bfloat16),
               "special": np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.0] * 50, np.float32)}
    path = tmp_path / "l.bsl"
    bslcodec.save_file(tensors, path, lossless=True)
    gpu = bslcodec.load_file(path, framework="pt", device="cuda")
    assert sorted(gpu) == sorted(tensors)
    with bslcodec.safe_open(path) as f:
        assert {f.entry(k).codec for k in ("f32", "f16", "bf16", "bf16b")} == {"fexp"}  # others: zstd is smaller
    for k, v in tensors.items():
        got = gpu[k].cpu().view(-1).view(torch.uint8).numpy()
        assert np.array_equal(got, np.ascontiguousarray(v).reshape(-1).view(np.uint8)), k


def test_decode_fexp_many_flags_the_bad_payload():
    from bslcodec.codecs import fexp
    from bslcodec.container.errors import BslError
    from bslcodec.gpu import decode_fexp_many

    rng = np.random.default_rng(6)
    bits = [rng.normal(0, 0.02, n).astype(ml_dtypes.bfloat16) for n in (5000, 70000, 1)]
    jobs = []
    for i, b in enumerate(bits):
        params, payload = fexp.encode(b, None)
        jobs.append({"name": f"t{i}", "payload": np.frombuffer(payload, np.uint8).copy(), "n_elems": b.size,
                     "lane_symbols": params["lane_symbols"], "dtype": torch.bfloat16})
    for o, b in zip(decode_fexp_many(jobs), bits):
        assert np.array_equal(o.cpu().view(torch.int16).numpy().view(np.uint16), b.view(np.uint16))
    bad = dict(jobs[1], payload=jobs[1]["payload"][:-8])
    with pytest.raises(BslError, match="t1"):
        decode_fexp_many([jobs[0], bad])


def _mixed():
    """Every codec the loader meets: ans-dq (default), ans, eg, fexp, zstd/raw, lossy F64, empty."""
    rng = np.random.default_rng(7)
    t = {f"w{i}": rng.laplace(0, 0.02, (300 + 37 * i, 211)).astype(ml_dtypes.bfloat16) for i in range(9)}
    t["f32"] = rng.normal(0, 1, (700, 129)).astype(np.float32)
    t["f16"] = (rng.normal(0, 1, (333, 77)) * 3).astype(np.float16)
    t["f64"] = rng.normal(0, 1, (50, 40))
    t["ids"] = np.arange(5000, dtype=np.int64)
    t["mask"] = rng.random(999) < 0.3
    t["empty"] = np.zeros((0, 3), np.float32)
    t["norm"] = np.ones(211, ml_dtypes.bfloat16)
    return t


@pytest.mark.parametrize("kw", [{}, {"codec": "eg", "rel_step": 0.1}, {"codec": "ans", "rel_step": 0.1},
                                {"lossless": True}])
def test_pipelined_chunks_match_cpu(tmp_path, monkeypatch, kw):
    """Tiny staging chunks: many chunks, slots reused, every codec in one load; bits equal the CPU decoder's,
    from a path (parallel reads) and from bytes, and through safe_open one tensor at a time."""
    from bslcodec.gpu import load as gl

    monkeypatch.setattr(gl, "CHUNK_BYTES", 20000)
    monkeypatch.setattr(gl, "_MIN_CHUNK", 20000)
    monkeypatch.setattr(gl, "_READ_PIECE", 4096)
    path = tmp_path / "m.bsl"
    bslcodec.save_file(_mixed(), path, **kw)
    cpu = bslcodec.load_file(path, framework="pt")
    with bslcodec.safe_open(path) as f:
        codecs = {f.entry(k).codec for k in f.keys()}
    assert len(codecs) >= 2, codecs
    for gpu in (bslcodec.load_file(path, framework="pt", device="cuda"),
                bslcodec.load(path.read_bytes(), framework="pt", device="cuda")):
        assert list(gpu) == list(cpu)
        for k in cpu:
            assert gpu[k].is_cuda and gpu[k].dtype == cpu[k].dtype and gpu[k].shape == cpu[k].shape, k
            assert torch.equal(gpu[k].cpu().reshape(-1).view(torch.uint8), cpu[k].reshape(-1).view(torch.uint8)), k
    with bslcodec.safe_open(path, framework="pt", device="cuda") as f:
        for k in ("w3", "f32", "ids"):
            assert torch.equal(f.get_tensor(k).cpu().reshape(-1).view(torch.uint8), cpu[k].reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("kw", [{}, {"codec": "eg", "rel_step": 0.1}, {"lossless": True}])
def test_pipelined_corruption_is_a_checksum_error(tmp_path, monkeypatch, kw):
    from bslcodec.container.errors import ChecksumError
    from bslcodec.gpu import load as gl

    monkeypatch.setattr(gl, "CHUNK_BYTES", 20000)
    monkeypatch.setattr(gl, "_MIN_CHUNK", 20000)
    path = tmp_path / "m.bsl"
    bslcodec.save_file(_mixed(), path, **kw)
    with bslcodec.safe_open(path) as f:
        e = f.entry("w5")
        start = f._src.index.data_start + e.offset
    for where in (start + 3, start + e.length // 2, start + e.length - 9):
        data = bytearray(path.read_bytes())
        data[where] ^= 0x5A
        bad = tmp_path / "bad.bsl"
        bad.write_bytes(bytes(data))
        with pytest.raises(ChecksumError, match="w5"):
            bslcodec.load_file(bad, framework="pt", device="cuda")
    # the loader is still usable afterwards
    assert len(bslcodec.load_file(path, framework="pt", device="cuda")) == len(_mixed())
