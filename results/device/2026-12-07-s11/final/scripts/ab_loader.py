"""A/B in one process: loader._decode_each before abb67c2 (checksum of the next big tensor on a helper thread
beside each parallel decode) against now (all checksums first, side by side), load_file to numpy, alternated."""
import os, sys, time, statistics, tempfile
sys.path.insert(0, "tools/bench")
from concurrent.futures import ThreadPoolExecutor
import numpy as np
import bslcodec
from bslcodec.files import loader
from bslcodec.container.errors import ChecksumError
from bslcodec.pipeline import codec as _codec


def old_decode_each(src, names, convert):
    weights = [loader._out_bytes(src.entry(n)) for n in names]
    n_threads = loader._pool.threads()
    if n_threads <= 1 or len(names) <= 1 or sum(weights) < loader.PARALLEL_BYTES:
        return {n: convert(src.tensor(n)) for n in names}
    total = sum(weights)
    big = [n for n, w in zip(names, weights) if w * n_threads > total]
    out = dict.fromkeys(names)
    if big:
        ex = ThreadPoolExecutor(1, thread_name_prefix="bslcodec-checksum")
        try:
            sums = [ex.submit(loader._sum, src, n) for n in big]
            for n, f in zip(big, sums):
                if not f.result():
                    raise ChecksumError("mismatch")
                e = src.entry(n)
                out[n] = convert(_codec.decode(e, src.payload(e, verify=False), "x"))
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
    small = [(n, w) for n, w in zip(names, weights) if w * n_threads <= total]
    if small:
        done = loader._pool.run(lambda n: convert(src.tensor(n)), [n for n, _ in small], [w for _, w in small],
                                n_threads=n_threads, budget=total)
        out.update(zip((n for n, _ in small), done))
    return out


new_decode_each = loader._decode_each
path = sys.argv[1]
n = sum(int(np.prod(v.shape)) for v in bslcodec.load_file(path).values())
res = {"old": [], "new": []}
for r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 6):
    for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
        loader._decode_each = old_decode_each if side == "old" else new_decode_each
        bslcodec.load_file(path)
        ts = []
        for _ in range(5):
            t0 = time.perf_counter(); bslcodec.load_file(path); ts.append(time.perf_counter() - t0)
        res[side].append(min(ts))
for side, v in res.items():
    print(f"{side}: load_file best-of-5 per round ms: " + " ".join(f"{x * 1e3:.1f}" for x in v)
          + f"; median {statistics.median(v) * 1e3:.1f} ms = {2 * n / statistics.median(v) / 1e9:.2f} GB/s of bf16")
print("load average", os.getloadavg())
