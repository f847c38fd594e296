"""(python ck_ab.py FILE.bsl) A/B of container.format.checksum (streaming, GIL released) against the one-shot xxh3_64_hexdigest: (1) 8 x 16 MB
hashed on argv[2] threads (2); (2) CPU load_file of FILE (every numba thread), the loaders'
checksum name swapped; alternated rounds, one process."""
import statistics, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np, xxhash
sys.path.insert(0, ".")
import bslcodec
from bslcodec.container import format as fmt
from bslcodec.files import loader, source
from bslcodec.pipeline import batch
new = fmt.checksum
old = xxhash.xxh3_64_hexdigest
bufs = [np.random.default_rng(i).integers(0, 256, 16 << 20, dtype=np.uint8) for i in range(8)]
ex = ThreadPoolExecutor(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
def hashes(fn):
    t0 = time.perf_counter(); list(ex.map(fn, bufs)); return (time.perf_counter() - t0) * 1e3
def use(fn):
    for m in (loader, source, batch):
        m.checksum = fn
P = sys.argv[1]
bslcodec.load_file(P)
r = {k: [] for k in ("hash old", "hash new", "load old", "load new")}
for rnd in range(8):
    for name, fn in (("old", old), ("new", new)) if rnd % 2 else (("new", new), ("old", old)):
        r["hash " + name].append(hashes(fn))
        use(fn)
        t0 = time.perf_counter(); d = bslcodec.load_file(P); r["load " + name].append((time.perf_counter() - t0) * 1e3); del d
use(new)
for k, v in r.items():
    print(f"{k}: median {statistics.median(v):.2f} ms, min {min(v):.2f}")
