"""CUDA kernels without CuPy: NVRTC compiles a source once into a cubin kept on disk; the driver API (``libcuda``
through ctypes) loads it and launches its kernels on torch's streams.

Why not CuPy: importing it costs a fresh process 0.8-1.0 s (measured on the H100 machine; a new serving replica
pays it before its first answer), and it must match PyTorch's CUDA by hand (``cupy-cuda12x`` or ``-13x``).
Everything needed here is already in a CUDA build of PyTorch: the driver, and NVRTC (PyTorch's CUDA wheels depend
on NVIDIA's ``nvidia-cuda-nvrtc`` wheel). The calls used are those of the CUDA driver and NVRTC C APIs, each
return code checked:

- compile: ``nvrtcCreateProgram``, ``nvrtcCompileProgram`` with ``--gpu-architecture=sm_XY`` (the device's own),
  ``nvrtcGetCUBIN``; the cubin is cached under ``$BSLCODEC_CACHE_DIR/cuda`` (else ``$XDG_CACHE_HOME/bslcodec/cuda``,
  else ``~/.cache/bslcodec/cuda``), keyed by a digest of the source, options, architecture and NVRTC version, and
  stored with a digest of its bytes that is checked on every read (a torn or altered file is compiled again);
- load: ``cuModuleLoadData`` / ``cuModuleGetFunction`` in the device's primary context (the one PyTorch uses);
- launch: ``cuLaunchKernel`` on a torch stream's handle; arguments are numpy scalars, each passed as its own C
  type (``np.uint64`` for pointers, ``np.int64``, ``np.int32``, ``np.uint32``, ``np.float32``).
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import sys
import threading
from pathlib import Path

import numpy as np

from ..container.errors import BslError

_C_OF = {np.dtype(np.uint64): ctypes.c_uint64, np.dtype(np.int64): ctypes.c_int64,
         np.dtype(np.int32): ctypes.c_int32, np.dtype(np.uint32): ctypes.c_uint32,
         np.dtype(np.float32): ctypes.c_float}
_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
_CACHE_FORMAT = b"bslcodec-cubin-1"
_lock = threading.Lock()
_libs = {}
_contexts = {}  # device index -> CUcontext (the primary context)


class CudaError(BslError, RuntimeError):
    """A CUDA driver or NVRTC call failed (the message names the call and the error)."""


def _driver():
    lib = _libs.get("cuda")
    if lib is None:
        lib = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
        vp, pvp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
        lib.cuInit.argtypes = [ctypes.c_uint]
        lib.cuGetErrorString.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        lib.cuDeviceGet.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        lib.cuDevicePrimaryCtxRetain.argtypes = [pvp, ctypes.c_int]
        lib.cuCtxGetCurrent.argtypes = [pvp]
        lib.cuCtxSetCurrent.argtypes = [vp]
        lib.cuModuleLoadData.argtypes = [pvp, ctypes.c_char_p]
        lib.cuModuleGetFunction.argtypes = [pvp, vp, ctypes.c_char_p]
        lib.cuFuncSetAttribute.argtypes = [vp, ctypes.c_int, ctypes.c_int]
        lib.cuLaunchKernel.argtypes = [vp, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                                       ctypes.c_uint, ctypes.c_uint, vp, pvp, pvp]
        _check(lib, lib.cuInit(0), "cuInit")
        _libs["cuda"] = lib
    return lib


def _check(lib, code: int, call: str) -> None:
    if code:
        s = ctypes.c_char_p()
        lib.cuGetErrorString(code, ctypes.byref(s))
        raise CudaError(f"{call} failed: CUDA error {code} ({(s.value or b'unknown').decode()})")


def _nvrtc_candidates():
    """Where libnvrtc may be: by its name (already loaded by PyTorch, or on the loader's path), then NVIDIA's
    pip wheels beside PyTorch (``nvidia/cu13/lib``, ``nvidia/cuda_nvrtc/lib``), then ``CUDA_HOME``."""
    if sys.platform == "win32":  # pragma: no cover - not tested here
        return [f"nvrtc64_{v}0_0.dll" for v in (13, 12, 11)]
    names = ["libnvrtc.so"]
    try:
        import torch

        major = (torch.version.cuda or "").split(".")[0]
        if major:
            names.insert(0, f"libnvrtc.so.{major}")
    except ImportError:  # pragma: no cover
        pass
    found = []
    for base in sys.path:
        found += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libnvrtc.so*")), reverse=True)
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    found += sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")), reverse=True)
    return names + [f for f in found if "builtins" not in os.path.basename(f)]


def _nvrtc():
    lib = _libs.get("nvrtc")
    if lib is None:
        errors = []
        for cand in _nvrtc_candidates():
            try:
                if os.path.sep in cand:  # NVRTC opens its builtins library by name: load it from the same folder
                    for b in sorted(glob.glob(os.path.join(os.path.dirname(cand), "libnvrtc-builtins.so*"))):
                        ctypes.CDLL(b, mode=ctypes.RTLD_GLOBAL)
                lib = ctypes.CDLL(cand)
                break
            except OSError as e:
                errors.append(str(e))
        else:
            raise CudaError("NVRTC (libnvrtc) was not found; it comes with PyTorch's CUDA wheels "
                            f"(nvidia-cuda-nvrtc). Tried: {'; '.join(errors[:3])}")
        vp, pvp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        lib.nvrtcVersion.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        lib.nvrtcCreateProgram.argtypes = [pvp, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, vp, vp]
        lib.nvrtcCompileProgram.argtypes = [vp, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        lib.nvrtcGetProgramLogSize.argtypes = [vp, ctypes.POINTER(ctypes.c_size_t)]
        lib.nvrtcGetProgramLog.argtypes = [vp, ctypes.c_char_p]
        lib.nvrtcGetCUBINSize.argtypes = [vp, ctypes.POINTER(ctypes.c_size_t)]
        lib.nvrtcGetCUBIN.argtypes = [vp, ctypes.c_char_p]
        lib.nvrtcDestroyProgram.argtypes = [pvp]
        _libs["nvrtc"] = lib
    return lib


def _nvrtc_version() -> str:
    """NVRTC's version (part of the cache key: a new NVRTC compiles again); CudaError where there is none."""
    v = _libs.get("nvrtc_version")
    if v is None:
        a, b = ctypes.c_int(), ctypes.c_int()
        _nvrtc().nvrtcVersion(ctypes.byref(a), ctypes.byref(b))
        v = _libs["nvrtc_version"] = f"{a.value}.{b.value}"
    return v


def compile_cubin(source: str, options: tuple, arch: str) -> bytes:
    """The cubin NVRTC makes of ``source`` for ``arch`` (e.g. ``"sm_90"``); CudaError with NVRTC's log."""
    lib = _nvrtc()

    def check(code, call):
        if code:
            raise CudaError(f"{call} failed: NVRTC error {code} ({lib.nvrtcGetErrorString(code).decode()})")

    prog = ctypes.c_void_p()
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"bslcodec.cu", 0, None, None),
          "nvrtcCreateProgram")
    try:
        opts = [o.encode() for o in (*options, f"--gpu-architecture={arch}")]
        code = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        if code:
            n = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
            log = ctypes.create_string_buffer(n.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise CudaError(f"NVRTC could not compile bslcodec's kernels for {arch}: "
                            f"{lib.nvrtcGetErrorString(code).decode()}\n{log.value.decode(errors='replace')}")
        n = ctypes.c_size_t()
        check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(n)), "nvrtcGetCUBINSize")
        out = ctypes.create_string_buffer(n.value)
        check(lib.nvrtcGetCUBIN(prog, out), "nvrtcGetCUBIN")
        return out.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def cache_dir() -> Path:
    root = os.environ.get("BSLCODEC_CACHE_DIR")
    if root:
        return Path(root) / "cuda"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bslcodec" / "cuda"


def _read_cached(path: Path) -> bytes | None:
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    head = len(_CACHE_FORMAT) + 32
    if len(blob) <= head or blob[:len(_CACHE_FORMAT)] != _CACHE_FORMAT:
        return None
    body = blob[head:]
    return body if hashlib.sha256(body).digest() == blob[len(_CACHE_FORMAT):head] else None


def _write_cached(path: Path, cubin: bytes) -> None:
    """Atomic (a temporary file renamed over the name); a cache that cannot be written is no error."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(_CACHE_FORMAT + hashlib.sha256(cubin).digest() + cubin)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def cubin(source: str, options: tuple, arch: str) -> bytes:
    """``compile_cubin``'s result from the disk cache, or compiled now and stored there."""
    key = hashlib.sha256("\0".join((_CACHE_FORMAT.decode(), source, *options, arch, _nvrtc_version()))
                         .encode()).hexdigest()
    path = cache_dir() / f"{key}.cubin"
    got = _read_cached(path)
    if got is None:
        got = compile_cubin(source, options, arch)
        _write_cached(path, got)
    return got


def _context(device_index: int):
    ctx = _contexts.get(device_index)
    if ctx is None:
        lib = _driver()
        dev, ctx = ctypes.c_int(), ctypes.c_void_p()
        _check(lib, lib.cuDeviceGet(ctypes.byref(dev), device_index), "cuDeviceGet")
        _check(lib, lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev.value), "cuDevicePrimaryCtxRetain")
        ctx = _contexts[device_index] = ctx.value
    return ctx


class _Current:
    """The device's primary context made current on this thread for the block, the previous one restored."""

    __slots__ = ("ctx", "prev")

    def __init__(self, device_index: int):
        self.ctx = _context(device_index)

    def __enter__(self):
        lib = _libs["cuda"]
        prev = ctypes.c_void_p()
        _check(lib, lib.cuCtxGetCurrent(ctypes.byref(prev)), "cuCtxGetCurrent")
        self.prev = prev.value
        if self.prev != self.ctx:
            _check(lib, lib.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

    def __exit__(self, *exc):
        if self.prev != self.ctx and self.prev is not None:
            _libs["cuda"].cuCtxSetCurrent(self.prev)


class Kernel:
    """One ``extern "C"`` kernel of a loaded module; call it like CuPy's: ``fn(grid, block, args, shared_mem=0,
    stream=None)`` (``stream``: a torch stream; default torch's current stream on the kernel's device)."""

    __slots__ = ("_shmem", "device_index", "handle", "name")

    def __init__(self, device_index: int, handle: int, name: str):
        self.device_index, self.handle, self.name, self._shmem = device_index, handle, name, 0

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        return self._shmem

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, n: int) -> None:
        with _Current(self.device_index):
            _check(_libs["cuda"], _libs["cuda"].cuFuncSetAttribute(
                self.handle, _CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, int(n)), "cuFuncSetAttribute")
        self._shmem = int(n)

    def __call__(self, grid, block, args, shared_mem: int = 0, stream=None) -> None:
        cargs = []
        for a in args:
            ctype = _C_OF.get(getattr(a, "dtype", None))
            if ctype is None:
                raise TypeError(f"{self.name}: kernel arguments must be numpy scalars of "
                                f"{sorted(str(d) for d in _C_OF)}, got {a!r}")
            cargs.append(ctype(a))
        ptrs = (ctypes.c_void_p * max(1, len(cargs)))(*[ctypes.addressof(c) for c in cargs])
        if stream is None:
            import torch

            stream = torch.cuda.current_stream(self.device_index)
        g = tuple(grid) + (1, 1)
        b = tuple(block) + (1, 1)
        with _Current(self.device_index):
            _check(_libs["cuda"], _libs["cuda"].cuLaunchKernel(
                self.handle, g[0], g[1], g[2], b[0], b[1], b[2], int(shared_mem), stream.cuda_stream,
                ptrs, None), f"cuLaunchKernel({self.name})")


class Module:
    """``source`` compiled (or read from the cache) and loaded on one device; ``get_function(name)``."""

    def __init__(self, source: str, device_index: int, options: tuple = ("--std=c++14",)):
        import torch

        major, minor = torch.cuda.get_device_capability(device_index)
        image = cubin(source, tuple(options), f"sm_{major}{minor}")
        lib = _driver()
        self.device_index, self._functions = device_index, {}
        handle = ctypes.c_void_p()
        with _lock, _Current(device_index):
            _check(lib, lib.cuModuleLoadData(ctypes.byref(handle), image), "cuModuleLoadData")
        self.handle = handle.value  # never unloaded: kernels are reused for the life of the process

    def get_function(self, name: str) -> Kernel:
        fn = self._functions.get(name)
        if fn is None:
            lib = _driver()
            h = ctypes.c_void_p()
            with _Current(self.device_index):
                _check(lib, lib.cuModuleGetFunction(ctypes.byref(h), self.handle, name.encode()),
                       f"cuModuleGetFunction({name})")
            fn = self._functions[name] = Kernel(self.device_index, h.value, name)
        return fn
