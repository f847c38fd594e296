"""One CPU thread decoding a whole tensor with the vector steps against the scalar kernels, in one process,
alternated (issue 19): ``eg`` (``golomb_vec``) and ``fexp`` (``fexp_vec.decode_groups``) tensors of N(0, 0.02)
weights, bf16 and f32, at several settings. ``load`` of the one-tensor file each round (parse, checksum and
decode; the output is compared bit for bit between the two paths). Medians of ``--rounds``; M weights/s.

    python tools/experiments/cpu_decode_ab.py [--n 4194304] [--rounds 7] [--out results.json]
"""

import argparse
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.append(os.path.join(os.path.dirname(__file__), "..", ".."))  # PYTHONPATH first: another checkout

CASES = [("eg", "bits=4", {"bits": 4, "expert": {"codec": "eg"}}),
         ("eg", "default", {"expert": {"codec": "eg"}}),
         ("eg", "bits=2", {"bits": 2, "expert": {"codec": "eg"}}),
         ("fexp", "lossless", {"exact": True})]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4 << 20)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import ml_dtypes
    import numba

    import bslcodec
    from bslcodec.codecs import fexp_dec, golomb

    numba.set_num_threads(1)
    switch = {"eg": golomb, "fexp": fexp_dec}
    rng = np.random.default_rng(0)
    rows = []
    for dt in (ml_dtypes.bfloat16, np.float32):
        x = (rng.standard_normal((a.n // 1024, 1024)) * 0.02).astype(dt)
        for codec, label, kw in CASES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # bits=2 warns about the quality: not the point here
                data = bslcodec.save({"w": x}, **kw)
            ts = {True: [], False: []}
            outs = {}
            for _ in range(a.rounds):
                for vec in (True, False):
                    switch[codec].VECTOR = vec
                    t0 = time.perf_counter()
                    outs[vec] = bslcodec.load(data)["w"]
                    ts[vec].append(time.perf_counter() - t0)
            switch[codec].VECTOR = True
            assert outs[True].tobytes() == outs[False].tobytes(), (codec, label)
            row = {"codec": codec, "setting": label, "dtype": np.dtype(dt).name, "n": x.size,
                   "bits_per_weight": len(data) * 8 / x.size,
                   "vector_mws": x.size / statistics.median(ts[True]) / 1e6,
                   "scalar_mws": x.size / statistics.median(ts[False]) / 1e6}
            rows.append(row)
            print(f"| {codec} {label} | {row['dtype']} | {row['bits_per_weight']:.2f} | {row['scalar_mws']:.0f} | "
                  f"{row['vector_mws']:.0f} | {row['vector_mws'] / row['scalar_mws']:.2f}x |", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"rows": rows, "load_avg": os.getloadavg(), "rounds": a.rounds}, f, indent=1)


if __name__ == "__main__":
    main()
