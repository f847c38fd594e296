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
            yield (rng.random(n) * ml_dtypes.finfo(dt).tiny).astype(dt)  # denormals and zeros
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


def _build_model_before(hist, prob_bits_choices=(11, 12, 13), n_splits=3):
    """``rans.build_model`` as it was before ``_ranked`` (every candidate's tuple, live tokens counted in
    numpy): the reference its faster form must match."""
    from bslcodec.codecs import rans_model as R

    hist = R._hist_of(None, hist)
    cands = R._candidates(hist)
    few = [c for c in cands[n_splits:] if np.count_nonzero(c[3]) <= 128][:2]
    top = max(prob_bits_choices)
    best = None
    for est, s, m, counts, raw in cands[:n_splits] + few:
        if int((counts > 0).sum()) > 1 << top:
            continue
        total, model = R._exact(counts, raw, s, m, top)
        if best is None or (total, s, m) < (best[0], best[2].s, best[2].m):
            best = (total, (counts, raw), model)
    total, (counts, raw), model = best
    for P in sorted(prob_bits_choices):
        if P != top and int((counts > 0).sum()) <= 1 << P:
            t, mdl = R._exact(counts, raw, model.s, model.m, P)
            if t < total:
                total, model = t, mdl
    return model, total


def _symbol_sets():
    rng = np.random.default_rng(21)
    for _ in range(60):
        n = int(rng.choice([1, 2, 33, 300, 4096, 70000]))
        scale = rng.choice([0.05, 0.4, 3.0, 100.0, 1e5, 1e7])
        yield np.minimum(np.abs(np.round(rng.laplace(0, scale, n))), (1 << 25) - 1).astype(np.int64)
    yield np.zeros(5000, np.int64)  # one symbol
    yield np.full(100, (1 << 25) - 1, np.int64)  # the largest symbol only
    yield np.arange(4096, dtype=np.int64)  # every symbol below 2^12 once
    yield np.zeros(0, np.int64)  # no symbols


def test_build_model_is_the_reference_search():
    from bslcodec.codecs import rans, rans_table

    for u in _symbol_sets():
        h = rans.fine_hist(u)
        got, want = rans.build_model(u), _build_model_before(h)
        assert got[1] == want[1]
        assert (got[0].prob_bits, got[0].s, got[0].m, got[0].kq, got[0].table_bits) == \
            (want[0].prob_bits, want[0].s, want[0].m, want[0].kq, want[0].table_bits)
        assert np.array_equal(got[0].freqs, want[0].freqs)
        assert rans.estimate_size(u) == rans.estimate_size(hist=h)
        assert rans_table.header_bytes(got[0]) == rans_table._header_bytes_ref(got[0])


def test_header_bytes_is_the_reference():
    from bslcodec.codecs import rans_model, rans_table

    rng = np.random.default_rng(22)
    for _ in range(300):
        P = int(rng.integers(1, 15))
        K = int(rng.integers(1, 700))
        c = rng.integers(0, 1 << int(rng.integers(1, 20)), K) * (rng.random(K) < rng.random())
        c[int(rng.integers(0, K))] += 1
        if np.count_nonzero(c) > 1 << P:
            continue
        q = rans_model.quantize_freqs(c, P)
        tbits, kq = rans_model.table_cost(q)
        m = rans_model.Model(P, 12, 4, q, kq, tbits)
        assert rans_table.header_bytes(m) == rans_table._header_bytes_ref(m)


def test_token_lut_cache_is_the_fresh_table():
    from bslcodec.codecs import rans_enc

    for s, m in ((0, 0), (3, 1), (8, 4), (12, 4), (12, 0)):
        got = rans_enc._token_lut(s, m)
        assert got is rans_enc._token_lut(s, m)
        assert np.array_equal(got, rans_enc._token_lut.__wrapped__(s, m))


def test_zstd_with_a_reused_compressor_is_a_fresh_one():
    import threading

    import zstandard

    from bslcodec.codecs import lossless

    rng = np.random.default_rng(23)
    arrs = [rng.normal(0, 1, n).astype(dt) for n, dt in ((1 << 20, np.float32), (5, np.float16), (4096, np.float64),
                                                         (3, np.uint8), (70000, ml_dtypes.bfloat16))]
    arrs += [np.zeros(9000, np.int32), np.arange(1000, dtype=np.int64)]

    def fresh(a, level=lossless.LEVEL):
        itemsize = a.dtype.itemsize
        raw = np.ascontiguousarray(lossless._shuffle(a.reshape(-1).view(np.uint8), itemsize)).tobytes()
        frame = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)
        return np.array([1, len(frame)], "<u4").tobytes() + frame

    for level in (lossless.LEVEL, 1, 19, lossless.LEVEL):
        for a in arrs + arrs[::-1]:
            assert lossless.encode_zstd(a, level)[1] == fresh(a, level)
    out = []
    t = threading.Thread(target=lambda: out.append(lossless.encode_zstd(arrs[2])[1]))
    t.start()
    t.join()
    assert out == [fresh(arrs[2])]


@pytest.mark.parametrize("compiled", [True, False], ids=["moments-kernel", "moments-numpy"])
def test_gg_fit_many_is_fit_one_by_one(compiled, monkeypatch):
    """``fit_many`` (its moments by ``_moments_kernel``, or by numpy one by one) gives ``ggd.fit``'s floats,
    on odd sizes (up to past ``PAIRWISE_WIDE_MAX``), hostile values (NaN, inf, 1e300, denormal, constant),
    float32, float64, bf16 bits, a non-contiguous view."""
    from bslcodec.pipeline import ggfit
    from bslcodec.quantize import ggd, quant

    monkeypatch.setattr(ggfit, "COMPILED", compiled)
    rng = np.random.default_rng(24)
    xs = []
    for n in (1, 2, 3, 7, 8, 9, 64, 129, 300, 4096, 7121, 7122, 30000, 60000):
        xs += [rng.normal(0, 0.02, n), rng.laplace(0, 1, n), rng.standard_t(1.2, n) * 1e-20,
               rng.uniform(-1, 1, n), np.full(n, 7.0), np.r_[np.zeros(n - 1), 1e-300],
               rng.standard_cauchy(n) * 1e300, (rng.random(n) < 0.01) * 1.0, rng.normal(5, 1e-9, n)]
    xs = [x.astype(np.float32) if i % 3 == 0 else x for i, x in enumerate(xs)]
    xs += [quant.bf16_bits(rng.normal(0, 0.1, 4096).astype(ml_dtypes.bfloat16))]  # bf16 as its bits
    xs += [np.r_[np.zeros(1 << 18), 1.0]]  # heavier-tailed than any shape: NU_MIN
    xs += [np.r_[rng.normal(0, 1, 99), np.nan], np.r_[rng.normal(0, 1, 99), np.inf], -np.zeros(5),
           np.r_[-np.zeros(7), 1e-320], rng.normal(0, 1, (64, 64))[:, ::2], rng.normal(0, 1, 50).astype(np.float16)]
    with np.errstate(all="ignore"):
        want = [ggd.fit(x) for x in xs]
        got = ggfit.fit_many(xs)
    assert got == want
    assert {w[0] for w in want} >= {ggd.NU_MIN, ggd.NU_MAX, 2.0} and len({w[0] for w in want}) > 10


def test_default_save_with_fits_made_together(monkeypatch):
    import bslcodec
    from bslcodec.pipeline import codec as codec_mod

    rng = np.random.default_rng(25)
    t = {f"w{i}": rng.laplace(0, 0.01 * (i + 1), (40, 30 + i)).astype([np.float32, ml_dtypes.bfloat16,
                                                                         np.float16][i % 3]) for i in range(9)}
    t["big"] = rng.normal(0, 0.02, (200, 200)).astype(np.float32)
    got = bslcodec.save(t)
    monkeypatch.setattr(codec_mod, "SMALL_FIT", 0)  # every fit one by one, when its params are written
    assert bslcodec.save(t) == got


def test_small_moments_are_numpys(monkeypatch):
    """``quant.moments`` of a tensor below ``SERIAL_BELOW`` elements with Python floats
    (``quant.SMALL_MOMENTS``: ``_small_moments``) gives the numpy path's (mean, std, bad count) floats: f32,
    f64, f16 values (as f32, as LossyTensor gives them) and bf16 bits, sizes 1-32767, signed zeros only, NaN/Inf, values near the float64 limit (its
    rescaling), constant."""
    from bslcodec.quantize import quant

    rng = np.random.default_rng(31)
    xs = []
    for n in (1, 2, 3, 7, 8, 9, 64, 4096, 32767):
        for a in (rng.normal(0, 0.02, n), rng.standard_t(1.2, n) * 1e-20, np.full(n, -0.0), np.full(n, 3.25),
                  rng.normal(1e300, 1e299, n), rng.normal(0, 1e160, n), rng.normal(-1e-3, 1e-3, n)):
            xs += [a.astype(np.float64), a.astype(np.float32), a.astype(np.float16).astype(np.float32),
                   quant.bf16_bits(a.astype(np.float32).astype(ml_dtypes.bfloat16))]
        b = rng.normal(0, 1, n)
        b[int(rng.integers(0, n))] = [np.nan, np.inf, -np.inf][n % 3]
        xs += [b, b.astype(np.float32)]
    got = []
    for small in (False, True):
        monkeypatch.setattr(quant, "SMALL_MOMENTS", small)
        with np.errstate(all="ignore"):
            got.append([quant.moments(x) for x in xs])
    for a, b in zip(*got):
        assert np.array_equal(np.array(a, np.float64), np.array(b, np.float64), equal_nan=True)
        assert np.array_equal(np.signbit(np.array(a[:2], np.float64)), np.signbit(np.array(b[:2], np.float64)))
        assert [type(v) for v in a] == [type(v) for v in b]
