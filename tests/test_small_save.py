"""The small-tensor save paths (issue 19's per-tensor cost) give, byte for byte, what the general paths give:
``pipeline.fexp_small.encode`` against ``fexp.encode`` on odd and hostile float tensors (every float dtype,
1 element up to the size limit, NaN/inf, constants, random bit patterns, denormals)."""

import ml_dtypes
import numpy as np
import pytest

from bslcodec.codecs import fexp
from bslcodec.pipeline import codec, fexp_small

UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _cases():
    rng = np.random.default_rng(7)
    sizes = (1, 2, 3, 31, 33, 64, 1023, 1024, 1025, 4096, fexp_small.SMALL_BELOW - 1)
    for dt in (ml_dtypes.bfloat16, np.float16, np.float32, np.float64):
        isz = np.dtype(dt).itemsize
        for n in sizes:
            yield rng.normal(0, 1, n).astype(dt)
            yield (rng.normal(0, 1e-3, n) * (rng.random(n) < 0.05)).astype(dt)  # mostly zeros: few symbols
            yield np.full(n, -2.5, dt)  # one symbol
            yield rng.integers(0, np.iinfo(UINT[isz]).max, n, dtype=UINT[isz], endpoint=True).view(dt)  # any bits
            with np.errstate(over="ignore"):
                x = rng.normal(0, 1e30, n)
                x[::5], x[1::7], x[2::11] = np.nan, np.inf, -np.inf
                yield x.astype(dt)
            yield (rng.random(n) * np.finfo(dt).tiny).astype(dt)  # denormals and zeros
        yield rng.laplace(0, 1, (17, 3, 5)).astype(dt)  # not 1-D
        yield np.asfortranarray(rng.normal(0, 1, (40, 30)).astype(dt))  # not C order


@pytest.mark.parametrize("arr", list(_cases()), ids=lambda a: f"{a.dtype}-{a.size}")
def test_fexp_small_is_fexp_encode(arr):
    want_params, want = fexp.encode(np.ascontiguousarray(arr))
    params, got = fexp_small.encode(np.ascontiguousarray(arr))
    assert params == want_params
    assert got.dtype == np.uint8 and got.tobytes() == want.tobytes()
    back = fexp.decode(got, arr.size, arr.dtype.itemsize, params["lane_symbols"])
    assert back.tobytes() == np.ascontiguousarray(arr).reshape(-1).tobytes()


def test_encode_lossless_small_path_is_the_general_one(monkeypatch):
    rng = np.random.default_rng(8)
    arrs = [rng.normal(0, 1, 4096).astype(ml_dtypes.bfloat16), np.zeros(3000, np.float32),
            np.arange(2000, dtype=np.float64), rng.normal(0, 1, (64, 64)).astype(np.float16),
            np.float32([np.nan, 1, np.inf]), np.zeros(0, np.float32), np.float64([7.0])]
    got = [codec.encode_lossless(a) for a in arrs]
    monkeypatch.setattr(fexp_small, "SMALL_BELOW", 0)  # every tensor through fexp.encode
    want = [codec.encode_lossless(a) for a in arrs]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert "fexp" in [g[0] for g in got]
    assert got == want
