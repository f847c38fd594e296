"""The files whose bytes a save-side speed-up must not change (results/load.md, per-tensor cost, round 6).

Writes 24 files (or, where a setting is refused, the error's text) into the folder given, with the bslcodec
on ``PYTHONPATH``: the four 300-tensor files of ``bench_load.py --small``; two 60-tensor mixed files (F32, F16,
BF16, F64; 1 to 20,000 elements; NaN/inf stored exactly, constants, denormals, heavy tails, shifted,
non-negative) at the default, ``bits=8``, ``bits=12``, ``bits=4``, ``rel_error=0.01``, ``rel_step=1/16``,
``max_error=1e-3`` and ``exact=True``; a 40-tensor matrix file (64x64 to 128x128, four dtypes, t tails) at
``bits=4``, ``bits=3``, the default and ``rel_error=0.03``. Run it with two checkouts and compare:

    PYTHONPATH=/path/to/before python tools/experiments/same_bytes.py /tmp/before
    PYTHONPATH=/path/to/after python tools/experiments/same_bytes.py /tmp/after
    for f in /tmp/before/*; do cmp "$f" "/tmp/after/${f##*/}"; done
"""

import os
import sys
import warnings

import ml_dtypes  # noqa: F401  (numpy's "bfloat16")
import numpy as np

import bslcodec

SMALL = {"eg64": (lambda rng: rng.normal(0, 1, 64).astype(np.float32), {}),
         "raw": (lambda rng: rng.normal(0, 1, 64).astype(np.float32), {"exact": True}),
         "fexp": (lambda rng: rng.normal(0, 1, 4096).astype("bfloat16"), {"exact": True}),
         "ansdq": (lambda rng: rng.normal(0, 0.02, (64, 64)).astype(np.float32), {})}
MIXED_SETTINGS = {"default": {}, "bits8": {"bits": 8}, "bits12": {"bits": 12}, "bits4": {"bits": 4},
                  "rel": {"rel_error": 0.01}, "relstep": {"expert": {"rel_step": 1 / 16}},
                  "maxerr": {"max_error": 1e-3}, "exact": {"exact": True}}
MATS_SETTINGS = {"bits4": {"bits": 4}, "bits3": {"bits": 3}, "default": {}, "rel": {"rel_error": 0.03}}


def mixed(seed: int) -> tuple:
    """(tensors, names to store exactly) of the mixed file ``seed``."""
    rng = np.random.default_rng(seed)
    t, ex = {}, []
    dts = [np.float32, np.float16, "bfloat16", np.float64]
    for i in range(60):
        dt = dts[i % 4]
        n = int(rng.choice([1, 2, 3, 7, 64, 300, 1000, 4096, 5000, 20000]))
        shape = (n,) if i % 3 == 0 or n < 64 else (n // 8, 8) if n % 8 == 0 else (n,)
        kind = i % 10
        if kind == 0:
            x = rng.normal(0, 0.02, n)
        elif kind == 1:
            x = rng.standard_t(1.5, n) * 0.05
        elif kind == 2:
            x = np.full(n, 0.125)
        elif kind == 3:
            x = rng.normal(0, 1, n) * 1e-40 if dt in (np.float32, np.float64) else rng.normal(0, 1e-6, n)
        elif kind == 4:
            x = rng.normal(0, 1, n)
            x[::7] = np.nan
            x[1::11] = np.inf
            ex.append(f"m.{i}")
        elif kind == 5:
            x = rng.laplace(0, 3, n)
        elif kind == 6:
            x = rng.normal(5, 0.01, n)
        elif kind == 7:
            x = np.abs(rng.normal(0, 1, n))
        elif kind == 8:
            x = rng.normal(0, 1, n) * 10.0 ** rng.integers(-3, 3, n)
        else:
            x = rng.uniform(-1, 1, n)
        t[f"m.{i}"] = np.asarray(x).astype(dt).reshape(shape)
    return t, ex


def matrices() -> dict:
    rng = np.random.default_rng(7)
    mats = {}
    for i in range(40):
        dt = [np.float32, "bfloat16", np.float16, np.float64][i % 4]
        r, c = [(64, 64), (32, 128), (100, 30), (128, 128), (16, 16)][i % 5]
        x = rng.standard_t([1.5, 3, 30][i % 3], (r, c)) * 0.02 + (0.01 if i % 7 == 0 else 0.0)
        mats[f"w.{i}"] = x.astype(dt)
    return mats


def save(t: dict, path: str, kw: dict) -> None:
    """``save_file``, or the error's class and text in ``path`` with ``.err``."""
    try:
        bslcodec.save_file(t, path + ".bsl", **kw)
    except bslcodec.BslError as e:
        with open(path + ".err", "w") as f:
            f.write(f"{type(e).__name__}: {e}\n")


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    warnings.simplefilter("ignore")  # (QualityWarning at bits=3/4)
    for k, (make, kw) in SMALL.items():
        rng = np.random.default_rng(0)
        save({f"t.{i}": make(rng) for i in range(300)}, os.path.join(out, f"bench_{k}"), kw)
    for seed in (1, 2):
        t, ex = mixed(seed)
        for name, kw in MIXED_SETTINGS.items():
            kw = dict(kw) if "exact" in kw or not ex else {**kw, "exact": ex}
            save(t, os.path.join(out, f"mixed{seed}_{name}"), kw)
    mats = matrices()
    for name, kw in MATS_SETTINGS.items():
        save(mats, os.path.join(out, f"mats_{name}"), kw)
    print("wrote", len(os.listdir(out)))


if __name__ == "__main__":
    main(sys.argv[1])
