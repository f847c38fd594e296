"""bslcodec.gpu: the GPU ``eg`` decoder against golomb_ref + the CPU dequantization formula.

Three layers:
* the bench tool's fast encoder against golomb_ref (CPU, always runs);
* the CUDA kernel source compiled as plain C++ (``-DBSL_HOST_EMU``) and run thread by thread on the
  CPU (runs wherever g++ is found): the decoding logic, checked without a GPU;
* the real thing on a GPU (skipped without CUDA): bit-exact output for many shapes, orders,
  symbols near 2^25, three dtypes, and FormatError for corrupted payloads.
"""

import ctypes
import importlib.util
import pathlib
import shutil
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from bslcodec.codecs import golomb_ref
from bslcodec.container.errors import BslError, FormatError

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
BITS = {"F32": np.uint32, "F16": np.uint16, "BF16": np.uint16}


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # numba (parallel, cache) looks the module up by name
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------ reference and cases
def reference(payload, n, s, step, center, dtype):
    """Decoded element bits per the spec (CPU), or the FormatError the payload deserves."""
    u = golomb_ref.decode_payload(bytes(payload), n, s)
    q = center + np.where(u % 2 == 0, u // 2, -(u + 1) // 2)
    if np.any(np.abs(q) >= 1 << 24):
        raise FormatError("|q| >= 2^24")
    with np.errstate(over="ignore"):  # products past the dtype's range are inf, as IEEE says
        y = q.astype(np.float32) * np.float32(step)  # one binary32 rounding
        return y.astype(OUT_DTYPES[dtype]).view(BITS[dtype])  # RNE (ml_dtypes / numpy casts)


def _symbols(rng, n, kind):
    if kind == "geom":
        return (rng.geometric(0.08, n) - 1).astype(np.int64)
    if kind == "big":  # near the largest symbols a code word can hold (< 2^25)
        return (1 << 25) - 1 - rng.integers(0, 1000, n)
    mix = (rng.geometric(0.3, n) - 1).astype(np.int64)
    idx = rng.random(n) < 0.05
    mix[idx] = rng.integers(0, 1 << 25, idx.sum())
    return mix


def cases():
    """(u, S, ks, step, center, dtype): ragged sizes, tiny sizes, per-group orders 0..24, big symbols."""
    rng = np.random.default_rng(12345)
    out = []
    dts = ["BF16", "F16", "F32"]
    specs = [(1, 16), (31, 16), (33, 16), (32 * 16, 16), (32 * 16 * 3 + 5, 16), (1000, 32),
             (5000, 64), (32 * 128 * 2 - 1, 128), (20000, 512), (40000, 1024), (3, 1024)]
    for i, (n, s) in enumerate(specs):
        g = -(-n // (32 * s))
        for kind in ("geom", "mix", "big"):
            u = _symbols(rng, n, kind)
            if kind == "big":
                ks = rng.integers(0, 25, g)
                center = 0  # |q| up to 2^24 - 1: valid only with center near 0
                u = np.minimum(u, (1 << 25) - 2)  # d = -(2^24 - 1) at most in magnitude
            else:
                ks = rng.integers(0, 25, g) if i % 2 else np.full(g, int(rng.integers(0, 6)))
                center = int(rng.integers(-1000, 1000))
            step = float(np.float32(rng.choice([1e-3, 0.02, 1.7, 3e-7])))
            out.append((u, s, ks.astype(np.uint8), step, center, dts[(i + len(out)) % 3]))
    # edge steps: subnormal binary32 step, and products that overflow bf16/f16/f32
    u = np.arange(0, 2000, dtype=np.int64)
    for step, dt in [(float(np.float32(1e-40)), "F32"), (float(np.float32(1e-40)), "BF16"),
                     (float(np.float32(3.3e38)), "BF16"), (float(np.float32(3.3e38)), "F32"),
                     (float(np.float32(70.0)), "F16"), (float(np.float32(1e-7)), "F16")]:
        out.append((u, 16, np.full(-(-u.size // 512), 3, np.uint8), step, 0, dt))
    return out


def corruptions(payload, n, s, rng):
    """Payloads that a decoder must reject, plus random bit flips (reject or agree with the reference)."""
    p = np.frombuffer(payload, np.uint8).copy()
    g = -(-n // (32 * s))
    lens = p[:64 * g].view("<u2")
    bad = []
    if n > 32 and lens[0] > 0:  # move one bit from lane 0 to lane 1: same words, wrong lane ends
        q = p.copy()
        lq = q[:64 * g].view("<u2")
        lq[0] -= 1
        lq[1] += 1
        bad.append(q)
    q = p.copy()
    q[64 * g] = 25 + rng.integers(0, 200)  # order > 24
    bad.append(q)
    head = 65 * g + (-65 * g % 8)
    q = p.copy()
    q[head:] = 0  # all-zero stream: zero runs too long
    if q.tobytes() != payload:
        bad.append(q)
    bad.append(np.concatenate([p, np.zeros(8, np.uint8)]))  # one word too many
    flips = []
    for _ in range(6):
        q = p.copy()
        for pos in rng.integers(0, q.size * 8, rng.integers(1, 4)):
            q[pos // 8] ^= np.uint8(1 << (pos % 8))
        flips.append(q)
    return bad, flips


# ------------------------------------------------------------------ layer 1: the bench encoder
def test_bench_encoder_matches_reference():
    bench = _load("bench_gpu", ROOT / "tools" / "bench" / "bench_gpu.py")
    for u, s, ks, *_ in cases()[:18]:
        fast, _ = bench.encode_fast(u, s, ks)
        assert fast.tobytes() == golomb_ref.encode_payload(u, s, ks)
    u = (np.random.default_rng(3).geometric(0.1, 9999) - 1)
    fast, ks = bench.encode_fast(u, 32)
    assert fast.tobytes() == golomb_ref.encode_payload(u, 32, ks)


# ------------------------------------------------------------------ layer 2: kernel source on the CPU
@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler: the CPU emulation of the CUDA kernel needs g++")
    src = _load("bsl_kernel_src", ROOT / "bslcodec" / "gpu" / "_kernel_src.py").SOURCE
    d = tmp_path_factory.mktemp("emu")
    (d / "k.cpp").write_text(src)
    lib = d / ("k.dll" if sys.platform == "win32" else "k.so")
    r = subprocess.run([cxx, "-std=c++14", "-O1", "-ffp-contract=off", "-DBSL_HOST_EMU", "-shared",
                        "-fPIC", str(d / "k.cpp"), "-o", str(lib)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"C++ compiler could not build the emulation: {r.stderr[-500:]}")
    return ctypes.CDLL(str(lib))


def emu_decode(lib, payload, n, s, step, center, dtype, variant=0):
    """The kernels' per-thread functions, run over every thread; mirrors bslcodec.gpu._eg.decode_eg."""
    p = np.frombuffer(bytes(payload), np.uint8).copy()
    g = -(-n // (32 * s))
    head = 65 * g + (-65 * g % 8)
    if p.size < head + 8 or (p.size - head) % 8:
        raise FormatError("layout")
    n_words = (p.size - head) // 8 - 1
    offs = np.zeros(g + 1, np.int64)
    c = ctypes.c_void_p
    lib.emu_group_words(c(p.ctypes.data), ctypes.c_int64(g), c(offs.ctypes.data))
    offs = np.cumsum(offs)
    out = np.full(n, 0xFFFF, BITS[dtype])
    err = np.zeros(1, np.int32)
    mode = {"F32": 0, "F16": 1, "BF16": 2}[dtype]
    lib.emu_decode(ctypes.c_int(mode), ctypes.c_int(variant), c(p.ctypes.data), ctypes.c_int64(n), ctypes.c_int(s.bit_length() - 1),
                   ctypes.c_int64(g), c(offs.ctypes.data), ctypes.c_int64(head), ctypes.c_int64(n_words),
                   ctypes.c_float(step), ctypes.c_int(center), c(out.ctypes.data), c(err.ctypes.data))
    if err[0]:
        raise FormatError(f"error flags {err[0]}")
    return out


def _agree(decode, payload, n, s, step, center, dtype):
    try:
        want = reference(payload, n, s, step, center, dtype)
    except FormatError:
        with pytest.raises(FormatError):
            decode(payload, n, s, step, center, dtype)
        return
    np.testing.assert_array_equal(decode(payload, n, s, step, center, dtype), want)


def test_emulated_kernel_bit_exact(emu):
    for i, (u, s, ks, step, center, dt) in enumerate(cases()):
        payload = golomb_ref.encode_payload(u, s, ks)
        want = reference(payload, u.size, s, step, center, dt)
        # variant 0 is what decode_eg runs; 1 (prefetch) and 2 (all reads clamped) are bench variants
        for variant in (0, 1, 2) if i % 3 == 0 else (0,):
            got = emu_decode(emu, payload, u.size, s, step, center, dt, variant)
            np.testing.assert_array_equal(got, want)


def test_emulated_kernel_rejects_corruption(emu):
    rng = np.random.default_rng(7)
    dec = lambda *a: emu_decode(emu, *a)  # noqa: E731
    for u, s, ks, step, center, dt in cases()[::3]:
        payload = golomb_ref.encode_payload(u, s, ks)
        bad, flips = corruptions(payload, u.size, s, rng)
        for q in bad:
            with pytest.raises(FormatError):
                emu_decode(emu, q.tobytes(), u.size, s, step, center, dt)
        for q in flips:
            _agree(dec, q.tobytes(), u.size, s, step, center, dt)
    # |q| >= 2^24 after the center shift
    payload = golomb_ref.encode_payload(np.array([2, 0]), 16, [0])
    with pytest.raises(FormatError):
        emu_decode(emu, payload, 2, 16, 1.0, (1 << 24) - 1, "F32")


# ------------------------------------------------------------------ layer 3: on the GPU
def _gpu():
    try:
        import torch
    except ImportError:
        pytest.skip("torch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    import bslcodec.gpu as gpu
    return torch, gpu


def _gpu_decode(payload, n, s, step, center, dtype, **kw):
    torch, gpu = _gpu()
    tdt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    out = gpu.decode_eg(payload, n, s, step, center, tdt, **kw)
    assert out.dtype == tdt and out.shape == (n,) and out.is_cuda
    view = out.view(torch.int32 if dtype == "F32" else torch.int16)
    return view.cpu().numpy().view(BITS[dtype])


def test_import_without_gpu_is_a_clear_error():
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        pytest.skip("this machine has a GPU")
    sys.modules.pop("bslcodec.gpu", None)
    with pytest.raises(ImportError, match="needs an NVIDIA GPU") as ei:
        import bslcodec.gpu  # noqa: F401
    assert isinstance(ei.value, BslError)


def test_gpu_bit_exact():
    _gpu()
    for u, s, ks, step, center, dt in cases():
        payload = golomb_ref.encode_payload(u, s, ks)
        np.testing.assert_array_equal(_gpu_decode(payload, u.size, s, step, center, dt),
                                      reference(payload, u.size, s, step, center, dt))


def test_gpu_input_kinds_and_out():
    torch, gpu = _gpu()
    u, s, ks, step, center, _ = cases()[12]
    payload = golomb_ref.encode_payload(u, s, ks)
    want = reference(payload, u.size, s, step, center, "BF16")
    dev = torch.frombuffer(bytearray(8) + bytearray(payload), dtype=torch.uint8).cuda()[8:]  # offset view
    for src in (payload, np.frombuffer(payload, np.uint8), dev, dev.clone()):
        got = gpu.decode_eg(src, u.size, s, step, center, "BF16")
        np.testing.assert_array_equal(got.view(torch.int16).cpu().numpy().view(np.uint16), want)
    out = torch.empty(u.size, dtype=torch.bfloat16, device="cuda")
    assert gpu.decode_eg(payload, u.size, s, step, center, torch.bfloat16, out=out).data_ptr() == out.data_ptr()
    np.testing.assert_array_equal(out.view(torch.int16).cpu().numpy().view(np.uint16), want)
    assert gpu.decode_eg(golomb_ref.encode_payload(np.zeros(0), 16, []), 0, 16, 1.0, 0, "F32").numel() == 0
    for bad_step in (0.1, -1.0, float("inf")):  # 0.1 is not a binary32 value
        with pytest.raises(FormatError):
            gpu.decode_eg(payload, u.size, s, bad_step, center, "BF16")
    with pytest.raises(FormatError):
        gpu.decode_eg(payload, u.size, 48, step, center, "BF16")


def test_gpu_rejects_corruption():
    _gpu()
    rng = np.random.default_rng(8)
    for u, s, ks, step, center, dt in cases()[::2]:
        payload = golomb_ref.encode_payload(u, s, ks)
        bad, flips = corruptions(payload, u.size, s, rng)
        for q in bad:
            with pytest.raises(FormatError):
                _gpu_decode(q.tobytes(), u.size, s, step, center, dt)
        for q in flips:
            _agree(_gpu_decode, q.tobytes(), u.size, s, step, center, dt)
        with pytest.raises(FormatError):
            _gpu_decode(payload[:-3], u.size, s, step, center, dt)
    payload = golomb_ref.encode_payload(np.array([2, 0]), 16, [0])
    with pytest.raises(FormatError):
        _gpu_decode(payload, 2, 16, 1.0, (1 << 24) - 1, "F32")
