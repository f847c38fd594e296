"""Dtype names of the format (spec 3.3) and their numpy equivalents.

numpy has no bfloat16; ``ml_dtypes`` (the package JAX uses) supplies one, so ``BF16`` tensors come
back from ``load_file(framework="np")`` as real bfloat16 arrays.
"""

import ml_dtypes
import numpy as np

from .errors import EncodeError, FormatError

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

NUMPY_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": BFLOAT16,
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_NAMES = ("F64", "F32", "F16", "BF16")
_BY_NUMPY = {v: k for k, v in NUMPY_DTYPES.items()}


def itemsize(name: str) -> int:
    return NUMPY_DTYPES[name].itemsize


def numpy_dtype(name: str) -> np.dtype:
    try:
        return NUMPY_DTYPES[name]
    except (KeyError, TypeError):
        raise FormatError(f"unknown dtype {name!r}; known: {', '.join(NUMPY_DTYPES)}") from None


def dtype_name(dtype) -> str:
    """The format's name for a numpy dtype (byte order normalised), or EncodeError."""
    dt = np.dtype(dtype)
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    try:
        return _BY_NUMPY[dt]
    except KeyError:
        raise EncodeError(f"dtype {dt} is not supported; supported: {', '.join(NUMPY_DTYPES)}") from None
