"""Hypothesis strategies shared by the tests (one place, like numcodecs' tests/common.py)."""

import ml_dtypes
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

FLOAT_DTYPES = [np.dtype("float32"), np.dtype("float64"), np.dtype("float16"), np.dtype(ml_dtypes.bfloat16)]
INT_DTYPES = [np.dtype(t) for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")]

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40)


@st.composite
def float_arrays(draw, dtypes=FLOAT_DTYPES):
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(shapes)
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-3, 0.02, 1.0, 300.0]))
    kind = draw(st.sampled_from(["normal", "laplace", "const", "offset", "outlier"]))
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if kind == "normal":
        x = rng.normal(0, scale, n)
    elif kind == "laplace":
        x = rng.laplace(0, scale, n)
    elif kind == "const":
        x = np.full(n, scale)
    elif kind == "offset":  # far from zero mean, like LayerNorm weights
        x = 1.0 + rng.normal(0, scale * 1e-2, n)
    else:
        x = rng.normal(0, scale, n)
        if n:
            x[rng.integers(0, n)] = 175 * scale
    return x.astype(dtype).reshape(shape)


@st.composite
def int_arrays(draw):
    dtype = draw(st.sampled_from(INT_DTYPES + [np.dtype(bool)]))
    return draw(hnp.arrays(dtype, draw(shapes)))
