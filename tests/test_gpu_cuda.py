"""bslcodec/gpu/_cuda.py: NVRTC compile, the on-disk cubin cache, driver-API launches.

* on the CPU: the cache (round trip, a torn / altered / foreign file is compiled again, an unwritable folder is
  no error, the key follows source, options and architecture) and the argument checks;
* on a GPU: a kernel that writes back each argument type it is given, launched on torch's current stream and
  on a side stream, from the main thread and from a thread that never touched CUDA; the cubin cache used.
"""

import importlib
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def cu(monkeypatch, tmp_path):
    """bslcodec.gpu._cuda (imported with torch.cuda.is_available() stubbed where there is no GPU), its cache
    in a fresh folder."""
    monkeypatch.setenv("BSLCODEC_CACHE_DIR", str(tmp_path))
    if "bslcodec.gpu._cuda" in sys.modules:
        return sys.modules["bslcodec.gpu._cuda"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for m in [m for m in sys.modules if m.startswith("bslcodec.gpu")]:
        monkeypatch.delitem(sys.modules, m)
    try:
        return importlib.import_module("bslcodec.gpu._cuda")
    finally:
        for m in [m for m in sys.modules if m.startswith("bslcodec.gpu")]:
            monkeypatch.delitem(sys.modules, m, raising=False)


def test_cache_round_trip_and_damage(cu, tmp_path):
    path = cu.cache_dir() / "k.cubin"
    assert cu.cache_dir() == tmp_path / "cuda"
    blob = bytes(range(256)) * 9
    cu._write_cached(path, blob)
    assert cu._read_cached(path) == blob
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 1  # one bit of the cubin
    path.write_bytes(bytes(raw))
    assert cu._read_cached(path) is None
    path.write_bytes(path.read_bytes()[:40])  # torn
    assert cu._read_cached(path) is None
    path.write_bytes(b"\x7fELF" + blob)  # a bare cubin (no header): not ours
    assert cu._read_cached(path) is None
    assert cu._read_cached(tmp_path / "absent.cubin") is None
    assert not list(path.parent.glob("*.tmp"))


def test_unwritable_cache_is_no_error(cu, tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    cu._write_cached(tmp_path / "file" / "sub" / "k.cubin", b"cubin")  # parent is a file: cannot mkdir
    assert not list(tmp_path.glob("**/*.tmp"))


def test_cubin_compiles_once_per_key(cu, monkeypatch):
    calls = []

    def fake_compile(source, options, arch):
        calls.append((source, options, arch))
        return f"{source}|{arch}".encode()

    monkeypatch.setattr(cu, "compile_cubin", fake_compile)
    monkeypatch.setitem(cu._libs, "nvrtc_version", "test")
    a = cu.cubin("src", ("--std=c++14",), "sm_90")
    assert a == b"src|sm_90" and len(calls) == 1
    assert cu.cubin("src", ("--std=c++14",), "sm_90") == a and len(calls) == 1  # from the disk
    cu.cubin("src2", ("--std=c++14",), "sm_90")
    cu.cubin("src", ("--std=c++17",), "sm_90")
    cu.cubin("src", ("--std=c++14",), "sm_80")
    assert len(calls) == 4
    monkeypatch.setitem(cu._libs, "nvrtc_version", "other")  # a new NVRTC compiles again
    cu.cubin("src", ("--std=c++14",), "sm_90")
    assert len(calls) == 5


def test_kernel_arguments_must_be_typed(cu):
    k = cu.Kernel(0, 0, "k")
    for bad in (1, 1.0, np.int8(1), np.float64(1.0), "x"):
        with pytest.raises(TypeError, match="numpy scalars"):
            k((1,), (1,), (np.uint64(0), bad))


def test_nvrtc_candidates_name_the_library(cu):
    cands = cu._nvrtc_candidates()
    assert cands and all("nvrtc" in c for c in cands)
    assert not any("builtins" in c for c in cands)


# ------------------------------------------------------------------ on the GPU
SOURCE = r"""
extern "C" __global__ void echo(unsigned long long out, long long a, int b, unsigned int c, float d, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    long long* o = (long long*)out;
    if (i < n) o[i] = a + i;
    if (i == 0) { o[n] = b; o[n + 1] = c; o[n + 2] = __float_as_int(d); }
}
"""


def _gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    import bslcodec.gpu._cuda as cu
    return cu


def _run(cu, mod, stream=None, n=1000):
    out = torch.full((n + 3,), -1, dtype=torch.int64, device="cuda")
    fn = mod.get_function("echo")
    fn(((n + 255) // 256,), (256,), (np.uint64(out.data_ptr()), np.int64(-(1 << 40)), np.int32(-7),
                                    np.uint32(0xFFFFFFF0), np.float32(1.5), np.int64(n)), stream=stream)
    (stream or torch.cuda.current_stream()).synchronize()
    got = out.cpu().numpy()
    assert np.array_equal(got[:n], -(1 << 40) + np.arange(n))
    assert got[n] == -7 and got[n + 1] == 0xFFFFFFF0
    assert np.int32(got[n + 2]).view(np.float32) == np.float32(1.5)


def test_gpu_compile_cache_and_launch(monkeypatch, tmp_path):
    cu = _gpu()
    monkeypatch.setenv("BSLCODEC_CACHE_DIR", str(tmp_path))
    mod = cu.Module(SOURCE, torch.cuda.current_device())
    files = list((tmp_path / "cuda").glob("*.cubin"))
    assert len(files) == 1
    _run(cu, mod)
    side = torch.cuda.Stream()
    _run(cu, mod, stream=side)
    stamp = files[0].stat().st_mtime_ns
    mod2 = cu.Module(SOURCE, torch.cuda.current_device())  # from the cache: the file is not rewritten
    assert files[0].stat().st_mtime_ns == stamp
    _run(cu, mod2)
    with pytest.raises(cu.CudaError, match="cuModuleGetFunction"):
        mod.get_function("no_such_kernel")
    with pytest.raises(cu.CudaError, match="NVRTC could not compile"):
        cu.Module(SOURCE + "\nthis is not C++;\n", torch.cuda.current_device())


def test_gpu_launch_from_a_fresh_thread(monkeypatch, tmp_path):
    """A thread that never made a CUDA call (no current context) can load and launch."""
    cu = _gpu()
    monkeypatch.setenv("BSLCODEC_CACHE_DIR", str(tmp_path))
    errors = []

    def work():
        try:
            _run(cu, cu.Module(SOURCE, torch.cuda.current_device()))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not errors, errors
