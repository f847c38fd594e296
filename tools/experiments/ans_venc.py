#!/usr/bin/env python
"""The ans encoder's group kernel, scalar (``rans_enc._encode_groups``) against the vector step
(``_encode_groups_vec``, issue 18), in one process: thread CPU time of the kernel alone (the ``rans.encode``
around it is the same), best of ``--reps``, on the symbols, split and table of the largest ``rans.encode``
call of a ``bslcodec.encode`` of a Laplace bf16 tensor. Run with NUMBA_NUM_THREADS=1 (the serial twins).
Asserts that both write the same bytes.

    NUMBA_NUM_THREADS=1 PYTHONPATH=. python tools/experiments/ans_venc.py [--n 8388608] [--bits 4]
"""

import argparse
import os
import time

import ml_dtypes
import numpy as np


def capture(n, bits, seed=0):
    """(u, lane_symbols, model) of the largest ``rans.encode`` call of encoding ``n`` bf16 weights."""
    import bslcodec
    from bslcodec.codecs import rans

    got = []
    real = rans.encode

    def grab(u, lane_symbols, model):
        got.append((np.array(u), lane_symbols, model))
        return real(u, lane_symbols, model)

    rans.encode = grab
    try:
        bslcodec.encode(np.random.default_rng(seed).laplace(0, 0.02, n).astype(ml_dtypes.bfloat16), bits=bits)
    finally:
        rans.encode = real
    return max(got, key=lambda a: a[0].size)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1 << 23)
    ap.add_argument("--bits", type=float, default=4)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args(argv)
    import warnings

    warnings.simplefilter("ignore")
    from bslcodec.codecs import rans, rans_enc, rans_vec

    u, S, model = capture(a.n, a.bits)
    print(f"{u.size} symbols ({u.dtype}), P={model.prob_bits} s={model.s} m={model.m} tokens={model.freqs.size} "
          f"max={int(u.max())}; SIMD={rans_vec.SIMD} EXPAND={rans_vec.EXPAND}")
    cpu = {}
    for name in ("_encode_groups", "_encode_groups_vec"):
        def timed(*args, _k=rans_enc._SERIAL[name], _n=name):
            c = time.thread_time()
            _k(*args)
            cpu[_n] = cpu.get(_n, 0.0) + time.thread_time() - c
        rans_enc._SERIAL[name] = timed
    simd = rans_vec.SIMD
    best, out = {}, {}
    for r in range(a.reps + 1):  # the first round compiles / warms up
        for on, name in ((False, "_encode_groups"), (True, "_encode_groups_vec")):
            rans_vec.SIMD = on and simd
            cpu.clear()
            out[on] = rans.encode(u, S, model)
            if r and name in cpu:
                best[name] = min(best.get(name, 1e9), cpu[name])
    rans_vec.SIMD = simd
    assert out[True] == out[False], "the vector kernel's bytes differ"
    load = os.getloadavg()
    for name, t in best.items():
        print(f"{name}: {t * 1e3:.1f} ms  {u.size / t / 1e6:.0f} M symbols/s")
    if len(best) == 2:
        print(f"vector / scalar: {best['_encode_groups'] / best['_encode_groups_vec']:.2f}x")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; bytes identical ({len(out[True])})")


if __name__ == "__main__":
    main()
