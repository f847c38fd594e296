"""The ``ans`` / ``ans-dq`` CUDA kernels (bslcodec/gpu/_ans_src.py) run on the CPU, checked bit-exact against
the CPU decoder and the plain-Python references (issue 20: the default codec's kernel had no check where
there is no GPU; the eg and fexp kernels have theirs in test_gpu.py / test_fexp.py).

The kernel is warp-synchronous (``__ballot_sync`` / ``__popc`` decide which lane reads which word), so the
emulation runs the shipped source text unchanged under g++ with a small shim: every CUDA thread of a
block is a host thread, the warp intrinsics exchange values through a per-warp barrier, ``__syncthreads``
is a block barrier and shared memory is a host array. The host side is the real one too
(``bslcodec.gpu._ans.Prepared``, imported with ``torch.cuda.is_available`` stubbed where torch sees no GPU;
descriptors as ``Launch`` builds them, with host addresses).
"""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from bslcodec.codecs import rans, rans_ref
from bslcodec.container.errors import FormatError
from bslcodec.quantize import dq

ROOT = Path(__file__).resolve().parents[1]

SHIM = r"""
#include <stdint.h>
#include <string.h>
#include <algorithm>
#include <barrier>
#include <mutex>
#include <thread>
#include <vector>
#define BSL_HOST_EMU 1
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
using std::max;
using std::min;
struct uint2 { unsigned int x, y; };
struct EmuDim { long long x; };
static thread_local EmuDim threadIdx, blockIdx;
static EmuDim blockDim, gridDim;
struct EmuWarp { std::barrier<>* bar; unsigned int v[32]; };
static thread_local EmuWarp* emu_warp;
static std::barrier<>* emu_block_bar;
static std::mutex emu_atomic;
static inline void __syncthreads() { emu_block_bar->arrive_and_wait(); }
static inline void __syncwarp() { emu_warp->bar->arrive_and_wait(); }
static inline unsigned emu_exchange_or(unsigned v, bool as_bits) {
    const int lane = (int)(threadIdx.x & 31);
    emu_warp->v[lane] = v;
    emu_warp->bar->arrive_and_wait();
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= as_bits ? (emu_warp->v[i] != 0u ? 1u << i : 0u) : emu_warp->v[i];
    emu_warp->bar->arrive_and_wait();
    return r;
}
static inline unsigned __ballot_sync(unsigned, bool pred) { return emu_exchange_or(pred ? 1u : 0u, true); }
static inline bool __any_sync(unsigned m, bool pred) { return __ballot_sync(m, pred) != 0u; }
static inline int __reduce_or_sync(unsigned, int v) { return (int)emu_exchange_or((unsigned)v, false); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int atomicOr(int* p, int v) { std::lock_guard<std::mutex> g(emu_atomic); int o = *p; *p |= v; return o; }
alignas(16) unsigned long long smem[1 << 15];  /* `extern __shared__` of the kernels: one block at a time */
alignas(16) uint2 smem2[1 << 15];
"""

DRIVER = r"""
extern "C" int emu_launch(int variant, long long grid, int block, const i64* desc, const i64* blk0, int n,
                          int* err, int err_stride) {
    blockDim.x = block;
    gridDim.x = grid;
    const int nw = block / 32;
    for (long long b = 0; b < grid; ++b) {
        std::barrier<> bbar(block);
        emu_block_bar = &bbar;
        std::vector<std::barrier<>*> bars;
        std::vector<EmuWarp> warps(nw);
        for (int w = 0; w < nw; ++w) { bars.push_back(new std::barrier<>(32)); warps[w].bar = bars.back(); }
        std::vector<std::thread> th;
        for (int i = 0; i < block; ++i)
            th.emplace_back([&, i]() {
                threadIdx.x = i;
                blockIdx.x = b;
                emu_warp = &warps[i / 32];
                if (variant == 0) ans_decode(desc, blk0, n, err, err_stride);
                else if (variant == 1) ans_decode_v1(desc, blk0, n, err, err_stride);
                else ans_decode_ring(desc, blk0, n, err, err_stride);
            });
        for (auto& t : th) t.join();
        for (auto* p : bars) delete p;
    }
    return 0;
}
"""

VARIANTS = {"default": 0, "v1": 1, "ring": 2}
MODES = {"F32": (0, np.float32), "F16": (1, np.float16), "BF16": (2, ml_dtypes.bfloat16)}
WPB = 2  # warps per block in the emulation (the GPU uses 16): blocks then hold groups of two tensors' worth


def _kernel_source() -> str:
    """``_ans_src.SOURCE`` without importing ``bslcodec.gpu`` (its ``__init__`` needs a CUDA device): the
    gpu folder's source modules are loaded as a stand-alone package."""
    pkg = types.ModuleType("bsl_gpu_sources")
    pkg.__path__ = [str(ROOT / "bslcodec" / "gpu")]
    sys.modules.setdefault("bsl_gpu_sources", pkg)
    return importlib.import_module("bsl_gpu_sources._ans_src").SOURCE


def _prepared_class():
    """``bslcodec.gpu._ans.Prepared``, the shipped host side: imported with ``torch.cuda.is_available`` stubbed
    where torch sees no GPU (the package refuses to import there), then taken out of ``sys.modules`` again so that
    other tests still see the package as it imports on this machine."""
    mod = sys.modules.get("bslcodec.gpu._ans")
    if mod is not None:
        return mod.Prepared
    torch = pytest.importorskip("torch")
    saved = {m: sys.modules[m] for m in list(sys.modules) if m.startswith("bslcodec.gpu")}
    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        for m in saved:
            del sys.modules[m]
        return importlib.import_module("bslcodec.gpu._ans").Prepared
    finally:
        torch.cuda.is_available = real
        for m in [m for m in sys.modules if m.startswith("bslcodec.gpu")]:
            del sys.modules[m]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler: the CPU emulation of the CUDA kernel needs g++")
    src = _kernel_source()
    d = tmp_path_factory.mktemp("ans_emu")
    (d / "k.cpp").write_text(SHIM + src + DRIVER)
    lib = d / "k.so"
    r = subprocess.run([cxx, "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", str(d / "k.cpp"), "-o", str(lib)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.fail(f"the ans kernel source does not build as host C++: {r.stderr[-3000:]}")
    return ctypes.CDLL(str(lib))


def _aligned(data: bytes) -> np.ndarray:
    """A 16-byte aligned uint8 copy (the GPU path's buffers are at least that aligned)."""
    raw = np.zeros(len(data) + 16, np.uint8)
    off = -raw.ctypes.data % 16
    buf = raw[off:off + len(data)]
    buf[:] = np.frombuffer(data, np.uint8)
    return buf


def emu_decode_many(lib, jobs, variant="default"):
    """Decode jobs (dicts: payload, n, s, step, center, mode, dq) in one emulated launch, as Launch builds it.
    Returns (outputs as element bits, per-job error flags)."""
    keep, rows, blocks, outs, p_max = [], [], [0], [], 1
    for j in jobs:
        prep = _prepared_class()(j["payload"], j["n"], j["s"])
        step32 = np.float32(j["step"])
        mode, dt = MODES[j["mode"]]
        out = np.full(j["n"], 0x5A if dt != np.float32 else 0x5A5A5A5A,
                      np.uint16 if dt != np.float32 else np.uint32)
        outs.append(out)
        buf = _aligned(j["payload"])
        tab = np.ascontiguousarray(prep.gpu_table if variant == "default" else prep.table)
        ws = np.ascontiguousarray(prep.wstart)
        keep += [buf, tab, ws]
        base = buf.ctypes.data
        rows.append(np.array([base + prep.words_off, base + prep.wcount_off, ws.ctypes.data, tab.ctypes.data,
                              prep.P, j["n"], j["s"].bit_length() - 1, prep.groups, j["center"],
                              int(np.float32(step32).view(np.int32)), out.ctypes.data, mode, int(j.get("dq", False)),
                              0, 0, 0], np.int64))
        blocks.append(blocks[-1] + -(-prep.groups // WPB))
        p_max = max(p_max, prep.P)
    assert 8 * (1 << p_max) + WPB * 512 <= 8 * (1 << 15)
    desc = np.ascontiguousarray(np.stack(rows))
    blk0 = np.asarray(blocks, np.int64)
    err = np.zeros(len(jobs), np.int32)
    c = ctypes.c_void_p
    lib.emu_launch(ctypes.c_int(VARIANTS[variant]), ctypes.c_longlong(blocks[-1]), ctypes.c_int(32 * WPB),
                   c(desc.ctypes.data), c(blk0.ctypes.data), ctypes.c_int(len(jobs)), c(err.ctypes.data),
                   ctypes.c_int(1))
    return outs, err


def cpu_bits(payload, n, s, step, center, mode, dq_=False):
    """The CPU decoder's output as element bits (spec 4.3 / 4.6: RNE to F16 / BF16)."""
    out = np.empty(n, np.uint16 if mode == "BF16" else np.float32)
    rans.decode_into(payload, n, s, center, step, out, "BF16" if mode == "BF16" else "F32", dq=dq_)
    if mode == "F16":
        with np.errstate(over="ignore"):
            return out.astype(np.float16).view(np.uint16)
    return out if mode == "BF16" else out.view(np.uint32)


def ref_bits(payload, n, s, step, center, mode, dq_=False):
    """The plain-Python references: rans_ref symbols, dq.levels_ref, binary32 product, RNE."""
    u = rans_ref.decode_payload(payload, n, s).astype(np.int64)
    k = (u >> 1) ^ -(u & 1)
    q = center + (dq.levels_ref(k, n, s) if dq_ else k)
    y = q.astype(np.float32) * np.float32(step)
    if mode == "F32":
        return y.view(np.uint32)
    with np.errstate(over="ignore"):
        return (y.astype(np.float16) if mode == "F16" else y.astype(ml_dtypes.bfloat16)).view(np.uint16)


def _symbols(n, kind, rng):
    if kind == "gg":
        q = np.round(rng.laplace(0, 9, n))
    elif kind == "wide":  # tokens with > 16 raw bits: phase 3
        q = np.round(rng.laplace(0, 2e5, n)).clip(-(2 ** 22), 2 ** 22)
    elif kind == "outliers":
        q = np.round(rng.normal(0, 2, n))
        q[rng.integers(0, n, max(1, n // 300))] = rng.choice([2 ** 22 - 1, -(2 ** 22 - 1), 2 ** 20], max(1, n // 300))
    else:
        q = np.zeros(n)
    q = q.astype(np.int64)
    return np.where(q >= 0, 2 * q, -2 * q - 1).astype(np.uint32)


def _payload(u, s):
    model, _ = rans.build_model(u)
    return rans.encode(u, s, model)


CASES = [(1, 16, "gg"), (31, 16, "gg"), (33, 16, "wide"), (32 * 16 + 5, 16, "gg"), (2000, 16, "outliers"),
         (3000, 64, "wide"), (32 * 64 * 2 + 40, 64, "gg"), (5000, 1024, "outliers"), (700, 16, "zero")]


@pytest.mark.parametrize("n, s, kind", CASES)
@pytest.mark.parametrize("dq_", [False, True], ids=["ans", "ans-dq"])
def test_emulated_kernel_bit_exact(emu, n, s, kind, dq_):
    rng = np.random.default_rng(n + s)
    u = _symbols(n, kind, rng)
    p = _payload(u, s)
    center = int(rng.integers(-1000, 1000)) if kind != "zero" else 0
    for mode, step in (("F32", 0.0123), ("F16", 0.37), ("BF16", 1.5)):
        want = cpu_bits(p, n, s, step, center, mode, dq_)
        if n <= 3000:
            assert np.array_equal(want, ref_bits(p, n, s, step, center, mode, dq_))
        for variant in (("default",) if dq_ else ("default", "v1", "ring")):  # ans-dq: the default kernel only
            (got,), err = emu_decode_many(emu, [dict(payload=p, n=n, s=s, step=step, center=center, mode=mode,
                                                     dq=dq_)], variant)
            assert err[0] == 0, (mode, variant, err)
            assert np.array_equal(got, want), (mode, variant, np.flatnonzero(got != want)[:10])


def test_emulated_launch_of_many_tensors(emu):
    """One launch, tensors of different sizes, modes, codecs and precisions (blk0's binary search)."""
    rng = np.random.default_rng(9)
    jobs, wants = [], []
    for i, (n, s, kind) in enumerate(CASES):
        u = _symbols(n, kind, rng)
        p = _payload(u, s)
        mode = ("F32", "F16", "BF16")[i % 3]
        j = dict(payload=p, n=n, s=s, step=float(np.float32(0.01 * (i + 1))), center=i - 4, mode=mode, dq=i % 2 == 1)
        jobs.append(j)
        wants.append(cpu_bits(p, n, s, j["step"], j["center"], mode, j["dq"]))
    outs, err = emu_decode_many(emu, jobs)
    assert not err.any()
    for o, w in zip(outs, wants):
        assert np.array_equal(o, w)


def test_emulated_kernel_rejects_what_the_cpu_rejects(emu):
    """Words of a group changed (tables intact, so the host checks pass): the kernel flags the tensor
    exactly when the CPU decoder raises, and decodes to the CPU's values when it does not."""
    rng = np.random.default_rng(12)
    flagged = clean = 0
    for trial in range(60):
        n, s = int(rng.integers(40, 3000)), int(rng.choice([16, 64]))
        u = _symbols(n, ("gg", "wide", "outliers")[trial % 3], rng)
        p = bytearray(_payload(u, s))
        b = int(np.frombuffer(bytes(p), "<u4", 1, 8)[0])
        g = -(-n // (32 * s))
        words_at = ((12 + b + 3) // 4) * 4 + 4 * g
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(words_at, len(p)))
            p[i] ^= 1 << int(rng.integers(0, 8))
        dq_ = trial % 2 == 1
        center = int(rng.integers(-5, 5)) if trial % 5 else (1 << 24) - 3  # sometimes |q| >= 2^24 too
        try:
            want = cpu_bits(bytes(p), n, s, 0.5, center, "F32", dq_)
        except FormatError:
            want = None
        (got,), err = emu_decode_many(emu, [dict(payload=bytes(p), n=n, s=s, step=0.5, center=center, mode="F32",
                                                 dq=dq_)])
        if want is None:
            assert err[0] != 0, trial
            flagged += 1
        else:
            assert err[0] == 0 and np.array_equal(got, want), trial
            clean += 1
    assert flagged >= 20  # most damage is caught (the rest decodes to other valid values, spec 4.4)


GUARDED = r"""
import ctypes, mmap, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import test_gpu_ans_emu as t
lib = ctypes.CDLL(sys.argv[1])
hostile = bytes.fromhex(sys.argv[3])
page = mmap.PAGESIZE
m = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
addr = ctypes.addressof((ctypes.c_char * (2 * page)).from_buffer(m))
ctypes.memmove(addr + page - len(hostile), hostile, len(hostile))
libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert libc.mprotect(addr + page, page, 0) == 0  # the byte after the payload is unreadable
t._aligned = lambda data: np.frombuffer((ctypes.c_uint8 * len(data)).from_address(addr + page - len(data)), np.uint8)
for variant in ("default", "v1"):
    (out,), err = t.emu_decode_many(lib, [dict(payload=hostile, n=512, s=16, step=1.0, center=0, mode="F32")], variant)
    print(variant, int(err[0]))
"""


def test_lying_word_count_never_reads_past_the_payload(emu, tmp_path):
    """A last group that declares only its 32 lane states (W = 2A, which the host accepts) but whose states
    keep asking for words: the CPU decoder refuses it (a read at p >= W); the kernel used to read on, up to
    3 words a symbol past the payload (a segfault here, with the payload just before an unreadable page,
    and an illegal address on a GPU for the last payload of a buffer). Now it reads 0 there and flags it."""
    n, s = 512, 16
    good = rans_ref.encode_payload(np.ones(n, np.uint32), s, 14, 1, 0, [1, 16383], 0)
    b = int(np.frombuffer(good, "<u4", 1, 8)[0])
    h = (12 + b + 3) // 4 * 4
    hostile = good[:h] + np.array([64], "<u4").tobytes() + np.tile(np.array([0, 1], "<u2"), 32).tobytes()
    with pytest.raises(FormatError, match="past the group"):
        rans.decode_into(hostile, n, s, 0, 1.0, np.empty(n, np.float32), "F32")
    r = subprocess.run([sys.executable, "-c", GUARDED, emu._name, str(ROOT / "tests"), hostile.hex()],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the emulated kernel crashed ({r.returncode}): {r.stderr[-1500:]}"
    assert r.stdout.split() == ["default", "4", "v1", "4"]  # ANS_ERR_END
