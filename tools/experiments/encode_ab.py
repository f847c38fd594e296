#!/usr/bin/env python
"""Two source trees' ``bslcodec encode`` of one generated folder, alternated (A B A B ...), with zstd -3 on
the same bytes measured in this process before each pair: what a speed change is checked with on a shared,
noisy box (results/encode.md). Each encode is a fresh process (``tools/bench/bench_encode.measure_encode``);
each tree may have its own Numba cache dir (``ROOT[=CACHE_DIR]``). Prints one JSON line per run.

    python tools/experiments/encode_ab.py /work/main=/tmp/nc_main . --layers 2 --vocab 4000 --threads 2 \\
        --args --bits 4 --pairs 3
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bench_encode as be  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--folder", help="an existing generated folder (else one is generated)")
    ap.add_argument("--args", nargs=argparse.REMAINDER, default=["--bits", "4"])
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="encode_ab.")
    try:
        src = a.folder or os.path.join(work, "in")
        if not a.folder:
            be.generate(src, a.layers, a.vocab)
        nbytes = be.folder_bytes(src, ".safetensors")
        trees = []
        for spec in (a.a, a.b):
            root, _, cache = spec.partition("=")
            trees.append((os.path.abspath(root), cache))
        env0 = dict(os.environ)

        def use(root, cache):
            be.ROOT = root
            os.chdir(root)  # the children run ``python -c``: the working directory comes first on their path
            os.environ.clear()
            os.environ.update(env0)
            if cache:
                os.environ["NUMBA_CACHE_DIR"] = cache

        startup = {}
        for root, cache in trees:  # (also warms each tree's cached kernels)
            use(root, cache)
            startup[root] = be.startup_seconds(3)
            print(json.dumps({"tree": root, "startup_s": startup[root]}), flush=True)
        for i in range(a.pairs):
            z = be.zstd_rates(src)["zstd-3 1 thread"]["MBps"]
            for root, cache in (trees if i % 2 == 0 else trees[::-1]):
                use(root, cache)
                dst = os.path.join(work, "out")
                load0 = os.getloadavg()[0]
                r = be.measure_encode(src, dst, a.args, a.threads)
                r.update(tree=root, pair=i, load_before=load0, load_after=os.getloadavg()[0], zstd3_MBps=z,
                         MBps=nbytes / r["s"] / 1e6, x_zstd3=nbytes / r["s"] / 1e6 / z,
                         x_zstd3_after_startup=nbytes / max(r["s"] - startup[root], 1e-9) / 1e6 / z)
                print(json.dumps(r), flush=True)
                shutil.rmtree(dst, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
