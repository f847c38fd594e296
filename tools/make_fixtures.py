"""Write the golden v1 fixtures: small real .bsl files plus the inputs and the decoded values they hold.

Run from the repository root: ``python tools/make_fixtures.py``. Every later version must still decode
these files to exactly the stored values (tests/test_fixtures.py). Re-run only for a deliberate format or
encoder change, and say so in the commit.

``python tools/make_fixtures.py dq`` writes only the ``ans-dq`` (format 1.1) files in ``fixtures/v1/dq/``
(tests/test_dq.py), from the same inputs.
"""

import pathlib
import sys

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


# The .bsl 1.0 files: plain rounding, the default when they were made (dq became the default later)
FILES = {
    "default": {"quantizer": "uniform"},
    "max_error": {"max_error": 1e-3},
    "rel_step": {"rel_step": 0.25, "quantizer": "uniform"},
    "bits5": {"bits": 5.0, "quantizer": "uniform"},
}


# Dependent quantization (codec ans-dq, .bsl 1.1): the same inputs, in fixtures/v1/dq/
DQ_FILES = {
    "dq_rel_step": {"quantizer": "dq", "rel_step": 0.25},
    "dq_max_error": {"quantizer": "dq", "max_error": 1e-3},
}


def _write(out: pathlib.Path, files: dict, src: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, kw in files.items():
        path = out / f"{name}.bsl"
        bslcodec.save_file(src, path, metadata={"fixture": name}, **kw)
        dec = bslcodec.load_file(path)
        np.savez(out / f"{name}.expected.npz",
                 **{k: (v.view(np.uint16) if v.dtype == ml_dtypes.bfloat16 else v) for k, v in dec.items()})
        print(f"{path.name}: {path.stat().st_size} bytes")


def write_dq() -> None:
    """The ans-dq fixtures only (the v1.0 files and inputs.npz are left as they are)."""
    _write(OUT / "dq", DQ_FILES, inputs())


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    src = inputs()
    np.savez(OUT / "inputs.npz", **{k: (v.view(np.uint16) if v.dtype == ml_dtypes.bfloat16 else v)
                                    for k, v in src.items()})
    _write(OUT, FILES, src)


if __name__ == "__main__":
    if sys.argv[1:] == ["dq"]:
        write_dq()
    else:
        main()
        write_dq()
