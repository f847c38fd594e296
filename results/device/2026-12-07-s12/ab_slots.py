"""Cold and warm file -> CUDA with the GPU loader's staging (SLOTS, _READ_PIECE) varied, safetensors beside; page
cache dropped before every cold load; variants alternated (rotated each round). 8 x 4096^2 bf16 GG weights."""
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
bslcodec.save_file(t, files["bits=4"], bits=4); bslcodec.save_file(t, files["lossless"], exact=True)
V = {"2 slots 4M": (2, 4 << 20), "3 slots 4M": (3, 4 << 20), "3 slots 1M": (3, 1 << 20), "2 slots 1M": (2, 1 << 20)}
def setv(v):
    gl.SLOTS, gl._READ_PIECE = V[v]
def once(kind, path, cold=True):
    how = evict([path]) if cold else ""
    torch.cuda.synchronize(); t0 = time.perf_counter()
    out = st.load_file(path, device="cuda") if kind == "st" else bslcodec.load_file(path, framework="pt", device="cuda")
    torch.cuda.synchronize(); dt = time.perf_counter() - t0
    del out
    return dt * 1e3, how
for p in files.values():
    bslcodec.load_file(p, framework="pt", device="cuda")
st.load_file("/tmp/cold/w.safetensors", device="cuda")
names = list(V)
for cold in (True, False):
    res = {}
    for r in range(4):
        order = names[r % 4:] + names[:r % 4]
        for name, p in files.items():
            for v in order:
                setv(v)
                res.setdefault((name, v), []).append(once("bsl", p, cold)[0])
        ms, how = once("st", "/tmp/cold/w.safetensors", cold)
        res.setdefault(("safetensors", ""), []).append(ms)
    print(f"{'cold (' + how + ')' if cold else 'page cache'}: loads to CUDA, ms, median (all runs):")
    for k, v in res.items():
        print(f"  {k[0]:12s} {k[1]:11s} {statistics.median(v):7.1f}  ({' '.join(f'{x:.1f}' for x in v)})")
print("sizes MB:", {k: round(os.path.getsize(p) / 1e6, 1) for k, p in {**files, "st": "/tmp/cold/w.safetensors"}.items()})
