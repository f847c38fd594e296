"""bslcodec.gpu.decode_ans: the GPU ``ans`` decoder against the CPU decoder (skipped without a GPU).

Bit-exact output for many element counts (partial groups and steps, fewer than 32 elements), symbol
ranges (phase-3 raw bits above 16, symbols near 2^25), centres far from zero, three output dtypes, both
kernel variants, several tensors in one launch; FormatError for corrupted payloads.
"""

import ml_dtypes
import numpy as np
import pytest

from bslcodec.codecs import rans
from bslcodec.container.errors import BslError, FormatError

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from bslcodec.gpu import decode_ans, decode_ans_many  # noqa: E402

S = 1024
MODES = {"F32": (np.float32, np.uint32, torch.float32), "F16": (np.float16, np.uint16, torch.float16),
         "BF16": (ml_dtypes.bfloat16, np.uint16, torch.bfloat16)}


def _symbols(n, kind, rng):
    if kind == "gg":
        q = np.round(rng.laplace(0, 9, n))
    elif kind == "wide":  # tokens with > 16 raw bits: phase 3
        q = np.round(rng.laplace(0, 2e5, n)).clip(-(2 ** 23), 2 ** 23)
    elif kind == "outliers":  # mostly small, a few symbols near 2^25 (|q| near 2^24)
        q = np.round(rng.normal(0, 2, n))
        k = max(1, n // 500)
        q[rng.integers(0, n, k)] = rng.choice([2 ** 24 - 1, -(2 ** 24 - 1), 2 ** 20], k)
    else:  # constant: a one-token table
        q = np.zeros(n)
    q = q.astype(np.int64)
    return np.where(q >= 0, 2 * q, -2 * q - 1).astype(np.uint32)


def _cpu(payload, n, center, step, mode):
    """The CPU decoder's values, as the bits of ``mode``."""
    if mode == "F16":
        out = np.empty(n, np.float32)
        rans.decode_into(payload, n, S, center, step, out, "F32")
        with np.errstate(over="ignore"):  # |values| beyond F16's range become inf, on the GPU too
            return out.astype(np.float16).view(np.uint16)
    if mode == "BF16":
        out = np.empty(n, np.uint16)
        rans.decode_into(payload, n, S, center, step, out, "BF16")
        return out
    out = np.empty(n, np.float32)
    rans.decode_into(payload, n, S, center, step, out, "F32")
    return out.view(np.uint32)


def _payload(u):
    model, _ = rans.build_model(u)
    return rans.encode(u, S, model)


def _bits(t):
    return t.cpu().view(torch.int16 if t.element_size() == 2 else torch.int32).numpy().view(
        np.uint16 if t.element_size() == 2 else np.uint32)


@pytest.mark.parametrize("n", [1, 31, 32, 33, 1000, 32 * S, 32 * S + 5, 3 * 32 * S + 777])
@pytest.mark.parametrize("kind", ["gg", "wide", "outliers", "zero"])
def test_decode_ans_bit_exact(n, kind):
    rng = np.random.default_rng(n)
    u = _symbols(n, kind, rng)
    payload = _payload(u)
    center = 0 if kind in ("wide", "outliers") else 1000
    step = float(np.float32(0.00390625 if kind != "gg" else 0.0123))
    for mode in MODES:
        ref = _cpu(payload, n, center, step, mode)
        for variant in ("default", "v1", "ring"):
            job = {"payload": payload, "n_elems": n, "lane_symbols": S, "step": step, "center": center, "dtype": mode}
            got = decode_ans_many([job], variant=variant)[0]
            assert got.dtype == MODES[mode][2] and got.numel() == n
            assert np.array_equal(_bits(got), ref), (mode, variant)


def test_decode_ans_many_tensors_one_launch():
    rng = np.random.default_rng(5)
    jobs, refs = [], []
    for i, (n, kind, mode) in enumerate([(70000, "gg", "BF16"), (5, "gg", "F32"), (0, "gg", "F16"),
                                         (40000, "wide", "F32"), (32 * S, "zero", "F16"), (100000, "gg", "F16")]):
        u = _symbols(n, kind, rng)
        payload = _payload(u)
        step = float(np.float32(0.01 * (i + 1)))
        jobs.append({"name": f"t{i}", "payload": payload, "n_elems": n, "lane_symbols": S, "step": step,
                     "center": -3 * i, "dtype": mode})
        refs.append(_cpu(payload, n, -3 * i, step, mode))
    outs = decode_ans_many(jobs)
    for o, r in zip(outs, refs):
        assert np.array_equal(_bits(o), r)
    # payloads already on the GPU, outputs given
    dev_jobs = [dict(j, payload=torch.frombuffer(bytearray(j["payload"]), dtype=torch.uint8).cuda(),
                     out=torch.empty(j["n_elems"], dtype=MODES[j["dtype"]][2], device="cuda")) for j in jobs]
    for o, r in zip(decode_ans_many(dev_jobs), refs):
        assert np.array_equal(_bits(o), r)


def test_decode_ans_rejects_corruption():
    step = float(np.float32(0.01))
    rng = np.random.default_rng(9)
    n = 3 * 32 * S
    u = _symbols(n, "gg", rng)
    payload = bytearray(_payload(u))
    P, s, m, table, W, wstart, words = rans.parse(bytes(payload), n, S)
    H = len(payload) - 2 * words.size
    # a flipped word in the middle of group 1: CPU and GPU must both reject (or both accept the same values)
    bad = bytearray(payload)
    pos = H + 2 * (int(wstart[1]) + 200)
    bad[pos] ^= 0x5A
    try:
        ref = _cpu(bytes(bad), n, 0, step, "F32")
    except FormatError:
        ref = None
    if ref is None:
        with pytest.raises(FormatError, match="corrupt"):
            decode_ans(bytes(bad), n, S, step, 0, torch.float32)
    else:
        assert np.array_equal(_bits(decode_ans(bytes(bad), n, S, step, 0, torch.float32)), ref)
    # wrong length, wrong element count, wrong header: host-side checks, before any launch
    with pytest.raises(BslError):
        decode_ans(bytes(payload[:-2]), n, S, step, 0, torch.float32)
    with pytest.raises(BslError):
        decode_ans(bytes(payload), n + 32 * S, S, step, 0, torch.float32)
    hdr = bytearray(payload)
    hdr[0] = 7
    with pytest.raises(FormatError):
        decode_ans(bytes(hdr), n, S, step, 0, torch.float32)
    # truncated final state: a lane word zeroed in the last group
    z = bytearray(payload)
    p0 = H + 2 * int(wstart[2])
    z[p0:p0 + 4] = b"\0\0\0\0"
    with pytest.raises(FormatError):
        decode_ans(bytes(z), n, S, step, 0, torch.float32)
    with pytest.raises(FormatError):
        decode_ans(bytes(payload), n, S, float("nan"), 0, torch.float32)


def test_load_file_uses_gpu_ans(tmp_path):
    import bslcodec

    rng = np.random.default_rng(2)
    w = rng.laplace(0, 0.02, (700, 333)).astype(np.float32)
    tensors = {"a": w, "b": w[:300].astype(ml_dtypes.bfloat16), "c": (w[:50] * 3).astype(np.float16),
               "bias": rng.normal(size=333).astype(np.float32)}
    path = tmp_path / "m.bsl"
    bslcodec.save_file(tensors, path, codec="ans", rel_step=0.05)
    cpu = bslcodec.load_file(path, framework="pt")
    gpu = bslcodec.load_file(path, framework="pt", device="cuda")
    assert list(cpu) == list(gpu)
    for k in cpu:
        assert gpu[k].is_cuda and gpu[k].dtype == cpu[k].dtype and gpu[k].shape == cpu[k].shape
        assert torch.equal(gpu[k].cpu().view(-1).view(torch.uint8), cpu[k].view(-1).view(torch.uint8)), k
