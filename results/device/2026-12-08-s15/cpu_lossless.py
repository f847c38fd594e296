"""For the device host (not run yet): a lossless bf16 file loaded on the CPU at 1, 4, 8 and 16 numba threads,
after the fifteenth session's whole-tensor vector fexp decode (c075487, 442cfd7). 8 x 4096^2 N(0, 0.02) bf16
weights (268 MB of output), `save_file(exact=True)`; in one process, thread counts alternated, medians of 7;
zstd -3 of the same bytes decompressed on one thread beside it. GB/s of bf16 output.

    PYTHONPATH=. python results/device/2026-12-08-s15/cpu_lossless.py > $OUT/cpu_lossless.txt
"""
import os
import statistics
import tempfile
import time

import ml_dtypes
import numba
import numpy as np
import zstandard

import bslcodec

rng = np.random.default_rng(0)
w = {f"w{i}": (rng.standard_normal((4096, 4096), np.float32) * 0.02).astype(ml_dtypes.bfloat16) for i in range(8)}
nbytes = sum(v.nbytes for v in w.values())
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "l.bsl")
    bslcodec.save_file(w, path, exact=True)
    print(f"file {os.path.getsize(path) * 8 / (nbytes / 2):.3f} b/w; commit {os.popen('git rev-parse --short HEAD').read().strip()}")
    frame = zstandard.ZstdCompressor(level=3).compress(b"".join(v.tobytes() for v in w.values()))
    dctx = zstandard.ZstdDecompressor()
    threads = [t for t in (1, 4, 8, 16) if t <= numba.config.NUMBA_NUM_THREADS]
    ts = {t: [] for t in threads}
    tz = []
    bslcodec.load_file(path)
    for _ in range(7):
        for t in threads:
            numba.set_num_threads(t)
            t0 = time.perf_counter()
            bslcodec.load_file(path)
            ts[t].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dctx.decompress(frame)
        tz.append(time.perf_counter() - t0)
    for t in threads:
        m = statistics.median(ts[t])
        print(f"load_file, {t:2d} threads: {m * 1e3:7.1f} ms, {nbytes / m / 1e9:5.2f} GB/s of bf16 output")
    mz = statistics.median(tz)
    print(f"zstd -3 decompress, 1 thread: {mz * 1e3:7.1f} ms, {nbytes / mz / 1e9:5.2f} GB/s; load avg {os.getloadavg()}")
