"""Cold-cache file -> CUDA: the GPU loader with its read-ahead (READ_AHEAD) against without, safetensors beside;
page cache dropped before every load; sides alternated. 8 x 4096^2 bf16 GG weights as bench_load.py."""
import os, sys, time, statistics
sys.path.insert(0, "tools/bench")
import numpy as np, torch, ml_dtypes
import bslcodec, safetensors.torch as st
from bench_load import gg, evict
import bslcodec.gpu.load as gl
rng = np.random.default_rng(0)
t = {f"layers.{i}.weight": gg(rng, 4096 * 4096, 1.0).reshape(4096, 4096).astype(ml_dtypes.bfloat16) for i in range(8)}
os.makedirs("/tmp/cold", exist_ok=True)
st.save_file({k: torch.from_numpy(v.view(np.uint16)).view(torch.bfloat16) for k, v in t.items()}, "/tmp/cold/w.safetensors")
files = {"bits=4": "/tmp/cold/b4.bsl", "lossless": "/tmp/cold/ll.bsl"}
bslcodec.save_file(t, files["bits=4"], bits=4); bslcodec.save_file(t, files["lossless"], lossless=True)
default = gl.READ_AHEAD
def once(kind, path, ra=None):
    if ra is not None:
        gl.READ_AHEAD = ra
    how = evict([path])
    torch.cuda.synchronize(); t0 = time.perf_counter()
    out = st.load_file(path, device="cuda") if kind == "st" else bslcodec.load_file(path, framework="pt", device="cuda")
    torch.cuda.synchronize(); dt = time.perf_counter() - t0
    del out
    return dt * 1e3, how
for p in files.values():  # warm the kernels
    bslcodec.load_file(p, framework="pt", device="cuda")
st.load_file("/tmp/cold/w.safetensors", device="cuda")
res = {}
for r in range(5):
    for name, p in files.items():
        for ra in ((default, 0) if r % 2 == 0 else (0, default)):
            res.setdefault((name, "read-ahead" if ra else "none"), []).append(once("bsl", p, ra)[0])
    ms, how = once("st", "/tmp/cold/w.safetensors")
    res.setdefault(("safetensors", ""), []).append(ms)
gl.READ_AHEAD = default
print(f"cold loads to CUDA, eviction {how}, ms, median (all runs):")
for k, v in res.items():
    print(f"  {k[0]:12s} {k[1]:10s} {statistics.median(v):7.1f}  ({' '.join(f'{x:.1f}' for x in v)})")
warm = {}
for name, p in files.items():
    for ra in (default, 0, default, 0):
        gl.READ_AHEAD = ra
        bslcodec.load_file(p, framework="pt", device="cuda"); torch.cuda.synchronize()
        ts = []
        for _ in range(5):
            t0 = time.perf_counter(); bslcodec.load_file(p, framework="pt", device="cuda"); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
        warm.setdefault((name, ra), []).append(statistics.median(ts) * 1e3)
gl.READ_AHEAD = default
print("warm (page cache) medians of 5, two rounds each:", {f"{k[0]} {'ra' if k[1] else 'none'}": [round(x, 1) for x in v] for k, v in warm.items()})
