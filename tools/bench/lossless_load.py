"""A real model's lossless file, loaded on the CPU, against zstd -3 of the same bytes (issue 19: "a real
300-tensor conv net's lossless file decodes 3x slower than zstd -3 on one core").

For each suite model (``tools/suite/models.py``: EfficientNet-Lite0, all-MiniLM-L6-v2, the character LM where
cached) in bf16 (round to nearest even) and f32: ``save_file(weights, exact=True)``, then in one process,
alternated, ``load_file(path)`` (every tensor decoded and its checksum verified) against one zstd -3 frame of
the tensors' raw bytes decompressed (what a zstd-compressed safetensors file costs to open, less the parsing).
Medians of ``--rounds``; bits/weight of both. Threads: numba's (``--threads``, default 1). Public entry points
only, and the checkout on ``PYTHONPATH`` comes first: ``PYTHONPATH=<another checkout>`` gives that code's numbers
(the JSON names the ``bslcodec`` it ran).

    python tools/bench/lossless_load.py --out results/lossless_load.json
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(ROOT, "tools", "suite"), os.path.join(ROOT, "tools")]
sys.path.append(ROOT)  # after PYTHONPATH: another checkout there is the one measured


def _weights(name):
    import models

    if name == "effnet":
        return models.effnet(n_views=1, n_calib=0).weights
    if name == "minilm":
        return models.minilm().weights
    if name == "charlm":
        return models.charlm().weights
    raise SystemExit(f"unknown model {name!r}")


def bench(name, dtype, rounds, tmp):
    import ml_dtypes
    import numpy as np
    import zstandard

    import bslcodec

    w = _weights(name)
    ws = {k: np.ascontiguousarray(v if dtype == "f32" else v.astype(ml_dtypes.bfloat16)) for k, v in w.items()}
    path = os.path.join(tmp, f"{name}_{dtype}.bsl")
    bslcodec.save_file(ws, path, exact=True)
    got = bslcodec.load_file(path)
    assert all(got[k].tobytes() == v.tobytes() for k, v in ws.items()), "not bit-exact"
    raw = b"".join(v.tobytes() for v in ws.values())
    frame = zstandard.ZstdCompressor(level=3).compress(raw)
    dctx = zstandard.ZstdDecompressor()
    tb, tz = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        bslcodec.load_file(path)
        tb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dctx.decompress(frame)
        tz.append(time.perf_counter() - t0)
    n = sum(v.size for v in ws.values())
    codecs = {}
    with bslcodec.safe_open(path) as f:
        for e in f.entries():
            codecs[e.codec] = codecs.get(e.codec, 0) + 1
    mb, mz = statistics.median(tb), statistics.median(tz)
    return {"model": name, "dtype": dtype, "tensors": len(ws), "weights": n, "codecs": codecs,
            "bsl_bpw": os.path.getsize(path) * 8 / n, "zstd3_bpw": len(frame) * 8 / n,
            "load_ms": mb * 1e3, "zstd3_ms": mz * 1e3, "ratio": mb / mz,
            "load_ms_min": min(tb) * 1e3, "zstd3_ms_min": min(tz) * 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="effnet,minilm,charlm")
    ap.add_argument("--dtypes", default="bf16,f32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=None, help="JSON results file")
    a = ap.parse_args()
    import numba

    numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    import subprocess

    import models

    import bslcodec

    pkg = os.path.dirname(os.path.abspath(bslcodec.__file__))
    commit = subprocess.run(["git", "-C", pkg, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    res = {"commit": commit, "bslcodec": pkg, "threads": a.threads, "rounds": a.rounds, "machine": platform.node(),
           "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            for dt in a.dtypes.split(","):
                try:
                    r = bench(name, dt, a.rounds, tmp)
                except models.Unavailable as exc:  # a model whose package is missing
                    print(f"{name}: skipped ({type(exc).__name__}: {exc})", flush=True)
                    break
                res["rows"].append(r)
                print(f"| {name} {dt} | {r['tensors']} | {r['bsl_bpw']:.2f} / {r['zstd3_bpw']:.2f} | "
                      f"{r['load_ms']:.2f} | {r['zstd3_ms']:.2f} | {r['ratio']:.2f}x |", flush=True)
    res["load_avg_end"] = os.getloadavg()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
