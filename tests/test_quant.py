"""The quantizer's vectorized fast pass gives exactly what the exact per-element loop gives."""

import numpy as np
import pytest

from bslcodec.quantize import quant


def _args(x, step, center, dtype, bound, strict):
    bound = step / 2 if bound is None else bound
    rel, ab = (0.0, 0.0) if strict else quant.ROUNDING[dtype]
    return float(step), np.float32(step), np.int64(center), quant.MODE_OF_DTYPE[dtype], bound, rel, ab


def _reference(x, step, center, dtype, bound=None, strict=False):
    """The exact per-element loop over the whole tensor, block by block (the quantizer before the fast
    pass): symbols and per-block stats."""
    step64, step32, c, mode, bnd, rel, ab = _args(x, step, center, dtype, bound, strict)
    u = np.empty(x.size, np.uint32)
    nblocks = -(-x.size // quant._BLOCK)
    stats = np.zeros((nblocks, 4), np.float64)
    for b in range(nblocks):
        quant._quantize_block(x, b * quant._BLOCK, min(x.size, (b + 1) * quant._BLOCK), 1.0 / step64, step64,
                              step32, c, mode, bnd, rel, ab, u, stats, b)
    return u, stats


@pytest.mark.parametrize("dtype", ["F32", "F64", "BF16", "F16"])
@pytest.mark.parametrize("case", ["plain", "nan", "inf", "overflow", "strict", "tiny_step"])
def test_fast_pass_matches_exact_loop(dtype, case):
    rng = np.random.default_rng(sum(map(ord, dtype + case)))
    n = 3 * quant._BLOCK + 1234  # several blocks, a partial last one
    x = rng.standard_normal(n) * 0.02
    x = x.astype(np.float64 if dtype == "F64" else np.float32)
    if dtype == "F16":
        x = x.astype(np.float16).astype(np.float32)
    step, bound, strict = 0.02 / 64, None, False
    if case == "nan":
        x[rng.integers(0, n, 3)] = np.nan
    elif case == "inf":
        x[quant._BLOCK + 7] = np.inf
    elif case == "overflow":
        x[5] = 1e6
    elif case == "strict":
        step, bound, strict = 2e-3, 1e-3, True  # max_error: rounding to binary32/bf16 may break the bound
    elif case == "tiny_step":
        step = 1e-9  # every level out of range
    step = quant.step_for_dtype(step, dtype, round_down=strict)
    center = int(rng.integers(-3, 4))
    u_ref, st_ref = _reference(x, step, center, dtype, bound, strict)
    u = np.empty(n, np.uint32)
    st = quant._quantize(x, *_args(x, step, center, dtype, bound, strict), u)
    assert np.array_equal(u, u_ref)
    assert np.array_equal(st, st_ref)
    st = quant._quantize_serial(x, *_args(x, step, center, dtype, bound, strict), u)
    assert np.array_equal(u, u_ref) and np.array_equal(st, st_ref)


def test_bf16_widening_is_astype_for_every_bit_pattern():
    """as_float32 widens bf16 by its bits (in parallel): every one of the 65536 patterns (NaNs, infinities,
    subnormals, -0) gives numpy's astype(float32) bit for bit, on the parallel path (2^17 elements) and the
    serial one (a short tensor), and a strided view."""
    import ml_dtypes

    pats = np.arange(1 << 16, dtype=np.uint16)
    for bits in (np.tile(pats, 2), pats[:1000], np.tile(pats, 2)[::3]):
        b = bits.view(ml_dtypes.bfloat16)
        got = quant.as_float32(b)
        assert got.dtype == np.float32 and got.shape == b.shape
        assert np.array_equal(got.view(np.uint32), b.astype(np.float32).view(np.uint32))
    h = pats.view(np.float16)  # F16 keeps numpy's cast
    assert np.array_equal(quant.as_float32(h).view(np.uint32), h.astype(np.float32).view(np.uint32))
