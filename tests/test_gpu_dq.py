"""The GPU decoder on ``ans-dq`` files (dependent quantization, spec 4.6): bit-exact with the CPU decoder
for every GPU output dtype, partial groups and steps, several tensors in one launch, a corrupt payload
(skipped without a GPU)."""

import ml_dtypes
import numpy as np
import pytest

import bslcodec

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)


def _tensors(rng):
    w = rng.laplace(0, 0.02, (2100, 333)).astype(np.float32)  # 699,300 elements: 22 groups, the last partial
    return {"f32": w, "bf16": w.astype(ml_dtypes.bfloat16), "f16": (w * 10).astype(np.float16),
            "small": rng.normal(3.0, 0.1, (7, 11)).astype(np.float32),  # 77 elements, center far from 0
            "wide": (rng.standard_t(2, (300, 300)) * 0.01).astype(np.float32)}  # heavy tails


@pytest.mark.parametrize("kw", [{"rel_step": 1 / 16}, {"rel_step": 0.5}, {"max_error": 1e-3}])
def test_cuda_load_dq_matches_cpu(tmp_path, kw):
    path = tmp_path / "m.bsl"
    bslcodec.save_file(_tensors(np.random.default_rng(1)), path, quantizer="dq", **kw)
    with bslcodec.safe_open(path) as f:
        assert "ans-dq" in {f.entry(k).codec for k in f.keys()}  # (a tensor may be smaller stored exactly)
    cpu = bslcodec.load_file(path, framework="pt")
    gpu = bslcodec.load_file(path, framework="pt", device="cuda")
    for k in cpu:
        assert gpu[k].is_cuda and gpu[k].dtype == cpu[k].dtype and gpu[k].shape == cpu[k].shape, k
        assert torch.equal(gpu[k].cpu().view(-1).view(torch.uint8), cpu[k].view(-1).view(torch.uint8)), k


def test_cuda_load_dq_corrupt(tmp_path):
    path = tmp_path / "m.bsl"
    bslcodec.save_file({"w": np.random.default_rng(2).normal(0, 1, (700, 700)).astype(np.float32)}, path,
                       quantizer="dq")
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(bslcodec.BslError):
        bslcodec.load_file(path, framework="pt", device="cuda")


def test_decode_ans_dq_flag_changes_only_levels():
    """The same payload decoded with dq=False gives q = center + k; with dq=True the levels of spec 4.6."""
    from bslcodec.codecs import rans
    from bslcodec.gpu import decode_ans
    from bslcodec.quantize import dq

    rng = np.random.default_rng(3)
    n = 3 * 32 * 1024 + 77
    k = np.round(rng.laplace(0, 5, n)).astype(np.int64)
    u = np.where(k >= 0, 2 * k, -2 * k - 1).astype(np.uint32)
    model, _ = rans.build_model(u)
    payload = rans.encode(u, 1024, model)
    center, step = 5, 0.25
    got = decode_ans(payload, n, 1024, step, center, torch.float32, dq=True).cpu().numpy()
    want = ((center + dq.levels_ref(k, n, 1024)).astype(np.float32) * np.float32(step))
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    plain = decode_ans(payload, n, 1024, step, center, torch.float32).cpu().numpy()
    assert np.array_equal(plain, (center + k).astype(np.float32) * np.float32(step))
