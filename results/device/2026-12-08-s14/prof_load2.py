"""prof_load.py's follow-up for the next device call (written after its first run, not run yet): the same file,
the staging slots (default since 2026-12-08: 3 pinned host slots, 2 device slots; the old 2 + 2; 3 + 3) and the
chunking varied (a launch decoded one 16.7M-weight tensor at ~87 GB/s: too few warps?), and the host side of
20 loads under cProfile. One process:

1. the ratio: bslcodec and safetensors loads alternated, 9 rounds, medians;
2. the loader's phases (wall time of each _Loader method and of the waits for reads), medians of 9 loads;
3. variants alternated in rounds: 2 host slots (the old default), 3 device slots, chunks of >= 2 tensors (cap
   32 MiB), one chunk for the file (one launch, no overlap), 2 MiB read pieces, the numpy twins (what a
   load-only process uses), and the one-shot xxh3 checksums that keep the GIL (before dad5c8c);
4. one load under torch.profiler (CUDA kernels / copies), then 20 loads' host side under cProfile.
"""
import os
import statistics
import sys
import time

sys.path.insert(0, "tools/bench")
import ml_dtypes
import numpy as np
import safetensors.torch as st
import torch
import xxhash
from bench_load import gg

import bslcodec
import bslcodec.gpu.load as gl
from bslcodec.codecs import golomb_header, rans_header
from bslcodec.container import format as fmt

rng = np.random.default_rng(0)
t = {f"layers.{i}.weight": gg(rng, 4096 * 4096, 1.0).reshape(4096, 4096).astype(ml_dtypes.bfloat16) for i in range(8)}
os.makedirs("/tmp/prof", exist_ok=True)
SP, BP = "/tmp/prof/w.safetensors", "/tmp/prof/b4.bsl"
st.save_file({k: torch.from_numpy(v.view(np.uint16)).view(torch.bfloat16) for k, v in t.items()}, SP)
bslcodec.save_file(t, BP, bits=4)
print(f"bsl {os.path.getsize(BP) / 1e6:.1f} MB, safetensors {os.path.getsize(SP) / 1e6:.1f} MB; "
      f"cpus {os.cpu_count()}", flush=True)


def load(kind):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = st.load_file(SP, device="cuda") if kind == "st" else bslcodec.load_file(BP, framework="pt", device="cuda")
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    del out
    return dt * 1e3


for _ in range(3):
    load("bsl"), load("st")
res = {"bsl": [], "st": []}
for r in range(9):
    for k in (("bsl", "st") if r % 2 else ("st", "bsl")):
        res[k].append(load(k))
b, s = statistics.median(res["bsl"]), statistics.median(res["st"])
print(f"1. warm loads, median of 9: bsl {b:.2f} ms, safetensors {s:.2f} ms: {s / b:.2f}x "
      f"(bsl {min(res['bsl']):.2f}-{max(res['bsl']):.2f}, st {min(res['st']):.2f}-{max(res['st']):.2f})", flush=True)

# 2. phases
acc = {}


def timed(name, fn):
    def w(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc.setdefault(name, []).append(time.perf_counter() - t0)
    return w


orig = {n: getattr(gl._Loader, n) for n in ("_prepare", "_launch", "_cpu_tensors", "_finish", "run")}
orig_read = gl._read
for n, f in orig.items():
    setattr(gl._Loader, n, timed(n, f))
gl._read = timed("_read (submit)", orig_read)
per_load = []
for r in range(9):
    acc.clear()
    load("bsl")
    per_load.append({k: sum(v) * 1e3 for k, v in acc.items()} | {"calls _prepare": len(acc["_prepare"])})
print("2. loader phases, ms, median of 9 (run = whole load_to_cuda):")
for k in per_load[0]:
    print(f"   {k:18s} {statistics.median(d[k] for d in per_load):8.3f}")
for n, f in orig.items():
    setattr(gl._Loader, n, f)
gl._read = orig_read
from bslcodec.files.source import _Source  # noqa: E402

src = _Source(path=BP)
its, cpu = gl._plan(src, list(src.entries))
print(f"   chunks {[(round((hi - lo) / 1e6, 1), len(g)) for lo, hi, g in gl._chunks(its)]} (MB, tensors); "
      f"cpu tensors {len(cpu)}")
src.close()

# 3. variants
real_ready = (rans_header.ready, golomb_header.ready)


def setv(v):
    gl._READ_PIECE = (2 << 20) if "2M" in v else (4 << 20)
    gl.SLOTS = 3 if "3 device slots" in v else 2
    gl.HOST_SLOTS = 2 if "2 host slots" in v else 3
    gl._MIN_CHUNK = (32 << 20) if "2+ tensors" in v else (4 << 20)
    gl.CHUNK_BYTES = (1 << 40) if "one chunk" in v else (32 << 20)
    if "one chunk" in v:
        gl._MIN_CHUNK = 1 << 40
    gl.checksum = xxhash.xxh3_64_hexdigest if v == "one-shot checksums" else fmt.checksum
    twin = v == "numpy twins"
    rans_header.ready = (lambda k, n: None) if twin else real_ready[0]
    golomb_header.ready = (lambda k, n: None) if twin else real_ready[1]


V = ["default", "2 host slots", "3 device slots", "chunks of 2+ tensors", "one chunk",
     "chunks of 2+ tensors, 2 host slots", "piece 2M", "numpy twins", "one-shot checksums"]
vr = {v: [] for v in V + ["st"]}
for r in range(8):
    for v in V[r:] + V[:r]:
        setv(v)
        vr[v].append(load("bsl"))
    setv("default")
    vr["st"].append(load("st"))
print("3. variants, warm, ms, median of 8 (min-max):")
for v, x in vr.items():
    print(f"   {v:12s} {statistics.median(x):7.2f} ({min(x):.2f}-{max(x):.2f})")
setv("default")

# 4. profiler
from torch.profiler import ProfilerActivity, profile  # noqa: E402

with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    load("bsl")
print("4a. CUDA side, by total time:")
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=40))
import cProfile  # noqa: E402
import pstats  # noqa: E402

cp = cProfile.Profile()
cp.enable()
for _ in range(20):
    load("bsl")
cp.disable()
print("4b. host side of 20 loads, cProfile, by own time:")
pstats.Stats(cp).sort_stats("tottime").print_stats(25)
