"""Write the golden v1 fixtures: small real .bsl files plus the inputs and the decoded values they hold.

Run from the repository root: ``python tools/make_fixtures.py``. Every later version must still decode
these files to exactly the stored values (tests/test_fixtures.py). Re-run only for a deliberate format or
encoder change, and say so in the commit.
"""

import pathlib

import ml_dtypes
import numpy as np

import bslcodec

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "v1"


def inputs() -> dict:
    rng = np.random.default_rng(20261125)
    w = rng.laplace(0, 0.02, (96, 80)).astype(np.float32)
    return {
        "layer.weight": w,
        "layer.bias": rng.normal(0, 0.1, 80).astype(np.float32),
        "emb.bf16": rng.normal(0, 1, (64, 70)).astype(ml_dtypes.bfloat16),
        "proj.f16": rng.normal(0, 0.5, (50, 33)).astype(np.float16),
        "proj.f64": rng.normal(0, 3, (20, 41)),
        "norm.weight": (1 + rng.normal(0, 0.01, (40, 40))).astype(np.float32),
        "ids": np.arange(-50, 50, dtype=np.int64),
        "mask": rng.random((7, 9)) > 0.5,
        "u8": rng.integers(0, 255, (5, 5), dtype=np.uint8),
        "scalar": np.float32(0.125),
        "empty": np.zeros((0, 3), np.float32),
    }


FILES = {
    "default": {},
    "max_error": {"max_error": 1e-3},
    "rel_step": {"rel_step": 0.25},
    "bits5": {"bits": 5.0},
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    src = inputs()
    np.savez(OUT / "inputs.npz", **{k: (v.view(np.uint16) if v.dtype == ml_dtypes.bfloat16 else v)
                                    for k, v in src.items()})
    for name, kw in FILES.items():
        path = OUT / f"{name}.bsl"
        bslcodec.save_file(src, path, metadata={"fixture": name}, **kw)
        dec = bslcodec.load_file(path)
        np.savez(OUT / f"{name}.expected.npz",
                 **{k: (v.view(np.uint16) if v.dtype == ml_dtypes.bfloat16 else v) for k, v in dec.items()})
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
