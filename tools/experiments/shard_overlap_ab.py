"""A/B of encode_checkpoint(bits=4) with one shard at a time (checkpoint.OVERLAP = 1) and two (2), alternated in
one process, kernels warm: python tools/experiments/shard_overlap_ab.py FOLDER THREADS REPS (results/encode.md)."""
import os, sys, time, warnings
warnings.simplefilter("ignore")
from bslcodec.files import checkpoint as ck, pool
folder, nthr, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pool.set_threads(nthr)
ck.encode_checkpoint(folder, "/tmp/ab_o", bits=4, overwrite=True, progress=False)
res = {1: [], 2: []}
for r in range(reps):
    for ov in (1, 2):
        ck.OVERLAP = ov
        t = time.perf_counter(); ck.encode_checkpoint(folder, f"/tmp/ab_o{ov}", bits=4, overwrite=True, progress=False)
        res[ov].append(time.perf_counter() - t)
        print(ov, f"{res[ov][-1]:.2f}", f"load {os.getloadavg()[0]:.1f}", flush=True)
print({k: sorted(round(x, 2) for x in v) for k, v in res.items()})
