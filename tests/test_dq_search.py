"""The dq trellis (``bslcodec.codecs.dq_search``, all 32 lanes of a group at once) against its plain-Python
reference (``dq_search_ref``, one lane at a time, as the algorithm reads): the same symbols, the same largest
error and the same count of lanes without a path, on varied data, dtypes, bounds and sizes."""

import ml_dtypes
import numpy as np
import pytest

from bslcodec.codecs import dq_search, dq_search_ref
from bslcodec.quantize import ggd, quant

NP = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


def _data(kind, n, rng):
    if kind == "laplace":
        return rng.laplace(0, 0.02, n)
    if kind == "gauss":
        return rng.normal(0.003, 0.05, n)
    if kind == "gg0.7":
        g = rng.gamma(1 / 0.7, 1, n) ** (1 / 0.7)
        return 0.01 * g * rng.choice([-1, 1], n)
    # outliers: a few values far out, whose indices are beyond the rate table
    return np.where(rng.random(n) < 0.01, 3000.0, 1.0) * rng.normal(0, 0.02, n)


def _case(kind, dtype, n, how, seed=0):
    rng = np.random.default_rng(seed)
    a = _data(kind, n, rng).astype(NP[dtype])
    x = a if dtype in ("F32", "F64") else a.astype(np.float32)
    std = float(np.std(x.astype(np.float64))) or 1.0
    if how == "max_error":
        me = std / 40
        step, kw = quant.step_for_dtype(me / 1.5, dtype, round_down=True), dict(bound=me, strict=True)
    else:
        step, kw = quant.step_for_dtype(0.575 * std * (1 / 16 if how == "rel_step" else 2.0), dtype), {}
    center = int(np.rint(float(np.mean(x.astype(np.float64))) / step))
    return x, step, center, kw


def _same(x, step, center, dtype, lane_symbols, kw):
    fast = dq_search.quantize(x, step, center, dtype, lane_symbols, **kw)
    u, max_error, n_bad = dq_search_ref.quantize(x, step, center, dtype, lane_symbols, **kw)
    assert fast.n_bad == n_bad
    if not n_bad:  # (with lanes without a path the caller discards the symbols)
        np.testing.assert_array_equal(fast.u, u)
        assert fast.max_error == max_error


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16", "F64"])
@pytest.mark.parametrize("kind", ["laplace", "gauss", "gg0.7", "outliers"])
@pytest.mark.parametrize("how", ["rel_step", "max_error", "coarse"])
def test_fast_trellis_equals_reference(dtype, kind, how):
    x, step, center, kw = _case(kind, dtype, 1500, how)
    _same(x, step, center, dtype, 16, kw)


@pytest.mark.parametrize("n", [1, 31, 33, 1023, 32 * 64 + 5])
def test_odd_sizes_and_partial_groups(n):
    x, step, center, kw = _case("laplace", "BF16", n, "rel_step", seed=n)
    _same(x, step, center, "BF16", 64, kw)


def test_a_full_ans_group_and_a_second_pass():
    x, step, center, kw = _case("gg0.7", "F32", 32 * 1024 + 77, "rel_step", seed=3)
    _same(x, step, center, "F32", 1024, dict(kw, passes=2))


def test_lanes_without_a_path_are_counted():
    # two values whose levels would pass 2^24 (the step too fine for them): their lanes have no path
    x = np.random.default_rng(5).normal(0, 0.02, 700).astype(np.float32)
    x[[40, 41 + 32 * 3]] = 1e6
    fast = dq_search.quantize(x, 0.001, 0, "F32", 16)
    _, _, n_bad = dq_search_ref.quantize(x, 0.001, 0, "F32", 16)
    assert fast.n_bad == n_bad == 2


def test_index_whose_zigzag_overflows_does_not_crash():
    """x/Δ near 1e19 (dq with a tiny max_error): the candidate indices are near 2^62, whose zigzag symbol
    overflows int64; the search once read its bit table at index ~-2^63 (SIGSEGV, found by
    tools/fuzz_writer.py). Run in a child so a regression fails this test instead of killing the run."""
    import subprocess
    import sys

    code = ("import numpy as np, bslcodec\n"
            "x = np.full((64, 64), 0.0667); x[0, 0] = 0.05; x[1, 1] = 0.07\n"
            "b = bslcodec.save({'w': x}, quantizer='dq', max_error=1e-20)\n"
            "assert np.abs(bslcodec.load(b)['w'] - x).max() <= 1e-20\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_first_pass_histogram_parallel_equal_serial():
    """The Q0 rounding that seeds the first model: its token histogram is that of the reference symbols
    (blocks of 2^18 elements, a partial last block, values out of range clipped) in the parallel and serial
    builds."""
    from bslcodec.codecs import rans_model

    rng = np.random.default_rng(5)
    x = (rng.laplace(size=(1 << 19) + 77) * 0.03).astype(np.float32)
    x[::1001] *= 1e9  # beyond |k| < 2^24: clipped
    a = dq_search._q0_hist(x, 0.004, np.int64(3)).sum(axis=0)
    b = dq_search._q0_hist_serial(x, 0.004, np.int64(3)).sum(axis=0)
    k = np.clip(np.rint((x.astype(np.float64) / 0.004 - 3) * 0.5), -(2**24 - 1), 2**24 - 1).astype(np.int64)
    want = rans_model.fine_hist(((k << 1) ^ (k >> 63)).astype(np.uint32))
    assert np.array_equal(a, want) and np.array_equal(b, want)


@pytest.mark.parametrize("how", ["rel_step", "max_error", "coarse"])
def test_bf16_bits_equal_widened(how):
    """A bf16 tensor given as its uint16 bits (read without a float32 copy) gives the symbols, error and
    lanes of its float32 widening; so do moments and the GG fit."""
    x, step, center, kw = _case("gg0.7", "BF16", 32 * 64 * 3 + 11, how, seed=7)
    bits = quant.bf16_bits(x.astype(ml_dtypes.bfloat16))
    a = dq_search.quantize(x, step, center, "BF16", 64, **kw)
    b = dq_search.quantize(bits, step, center, "BF16", 64, **kw)
    assert (a.n_bad, a.max_error) == (b.n_bad, b.max_error) and np.array_equal(a.u, b.u)
    assert quant.moments(x) == quant.moments(bits)
    assert ggd.fit(x) == ggd.fit(bits)


def _bf16_paths(x, step, center, lane_symbols, kw):
    """The direct search of the widened values and the table path of the bits (``TABLE_MIN`` set to 0 by the
    caller): the same symbols, largest error and lanes without a path."""
    bits = quant.bf16_bits(x.astype(ml_dtypes.bfloat16))
    x = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    a = dq_search.quantize(x, step, center, "BF16", lane_symbols, **kw)
    b = dq_search.quantize(bits, step, center, "BF16", lane_symbols, **kw)
    assert (a.n_bad, a.max_error) == (b.n_bad, b.max_error)
    if not a.n_bad:  # (the symbols of lanes without a path are not written)
        assert np.array_equal(a.u, b.u)
    return b


@pytest.mark.parametrize("kind", ["laplace", "gauss", "gg0.7", "outliers"])
@pytest.mark.parametrize("how", ["rel_step", "max_error", "coarse"])
def test_bf16_value_tables_equal_direct_search(kind, how, monkeypatch):
    """bf16 bits take the table path (each distinct value's candidates costed once, ``_value_tables``): the
    same result as the direct search, at sizes with partial rows, groups and lanes, serial and parallel."""
    monkeypatch.setattr(dq_search, "TABLE_MIN", 0)
    for n, lane_symbols in ((1, 16), (31, 16), (33, 16), (1500, 16), (32 * 64 * 3 + 11, 64), (32 * 1024 + 77, 1024)):
        x, step, center, kw = _case(kind, "BF16", n, how, seed=n)
        r = _bf16_paths(x, step, center, lane_symbols, kw)
        assert r.u.dtype == (np.uint16 if kind != "outliers" or how == "coarse" else r.u.dtype)
    x, step, center, kw = _case(kind, "BF16", 32 * 1024 + 5, how, seed=9)  # a second pass: the model of the first
    _bf16_paths(x, step, center, 1024, dict(kw, passes=2))


def test_bf16_value_tables_extremes(monkeypatch):
    """The table path where indices leave the rate table, where lanes have no path (levels past 2^24), near
    the zigzag overflow (x/Δ ~ 1e19) and with every bf16 value at once (finite ones)."""
    monkeypatch.setattr(dq_search, "TABLE_MIN", 0)
    rng = np.random.default_rng(11)
    x = rng.normal(0, 0.02, 5000).astype(np.float32)
    x[::97] = 3000.0
    _bf16_paths(x, 0.001, 0, 16, {})
    x[[40, 41 + 32 * 3]] = 1e6
    assert _bf16_paths(x, 0.001, 0, 16, {}).n_bad == 2
    y = np.full(4096, 0.0667, np.float32)
    y[::7] = 0.05
    _bf16_paths(y, 1e-20 / 1.5, 0, 16, dict(bound=1e-20, strict=True))
    allv = np.arange(1 << 16, dtype=np.uint32) << np.uint32(16)
    allv = allv.view(np.float32)
    allv = allv[np.isfinite(allv)]
    rng.shuffle(allv)
    assert _bf16_paths(allv[np.abs(allv) < 1e4], 0.01, 0, 64, {}).u.dtype == np.uint32  # symbols past 2^16
    _bf16_paths(allv[np.abs(allv) < 1e30], 0.01, 0, 64, {})
    _bf16_paths(np.sort(allv[np.abs(allv) < 1.0]), 2.0**-130, 0, 64, {})


def test_value_counts_parallel_equal_serial():
    x = quant.bf16_bits(np.random.default_rng(3).laplace(0, 0.02, (1 << 19) + 77).astype(ml_dtypes.bfloat16))
    want = np.bincount(x, minlength=1 << 16)
    assert np.array_equal(dq_search._value_counts(x, 5), want)
    assert np.array_equal(dq_search._value_counts_serial(x, 2), want)
