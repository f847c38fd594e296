"""``pipeline.ans_model.build_model``: the same model and bits as ``rans.build_model`` on small symbol sets."""

import numpy as np
import pytest

from bslcodec.codecs import rans
from bslcodec.codecs import rans_model as rm
from bslcodec.pipeline import ans_model


@pytest.fixture(params=[True, False], ids=["ranges", "search"], autouse=True)
def _paths(request, monkeypatch):
    """Every test with the search over token ranges (``_search_ranges``, the default) and with ``_search``
    (every split's counts in full), each against ``rans.build_model``."""
    monkeypatch.setattr(ans_model, "RANGES", request.param)


def test_token_ranges():
    """What ``_search_ranges`` relies on: split i's token t is the fine bins ``_TSTART[_TOFF[i] + t]`` up
    to the next start, each of them with raw bit count ``_TNB[_TOFF[i] + t]``."""
    for i in range(rm._TOK.shape[0]):
        st = ans_model._TSTART[ans_model._TOFF[i]:ans_model._TOFF[i + 1]]
        nb = ans_model._TNB[ans_model._TOFF[i]:ans_model._TOFF[i + 1] - 1]
        lens = np.diff(st)
        assert st[0] == 0 and st[-1] == rm.FINE_K and (lens >= 0).all()
        assert np.array_equal(np.repeat(np.arange(lens.size), lens), rm._TOK[i])
        assert np.array_equal(np.repeat(nb, lens), rm._NB[i])


def _same(u=None, hist=None):
    want = rans.build_model(u, hist)
    got = ans_model.build_model(u, hist)
    a, b = want[0], got[0]
    assert (got[1], b.prob_bits, b.s, b.m, b.kq, b.table_bits) == (want[1], a.prob_bits, a.s, a.m, a.kq, a.table_bits)
    assert type(got[1]) is float and type(b.prob_bits) is int and type(b.kq) is int and type(b.table_bits) is int
    assert b.freqs.dtype == a.freqs.dtype and np.array_equal(b.freqs, a.freqs)


def test_small_models_are_rans_build_models():
    """Symbols of many shapes: empty, one symbol, constant, geometric and two-sided, heavy tails, huge values
    (raw bits, coarse splits), many distinct tokens (precision), ties between counts, 1 to 2^15 - 1 of
    them; and histograms given directly (what the dq search passes)."""
    rng = np.random.default_rng(3)
    cases = [np.zeros(0, np.uint32), np.zeros(1, np.uint32), np.full(4096, 7, np.uint32),
             np.arange(4096, dtype=np.uint32), np.arange(8000, dtype=np.uint32) * 1000,
             np.repeat(np.arange(64, dtype=np.uint32), 64), np.array([0, (1 << 23) - 1], np.uint32)]
    for n in (1, 2, 3, 17, 64, 300, 1000, 4096, 5000, 16384, (1 << 15) - 1):
        for kind in range(6):
            z = [rng.normal(0, 3, n), rng.laplace(0, 0.7, n), rng.standard_t(1.2, n) * 5,
                 rng.normal(0, 300, n), rng.normal(0, 1e5, n), rng.geometric(0.3, n) - 1.0][kind]
            z = np.clip(np.rint(z), -(1 << 21), 1 << 21).astype(np.int64)
            cases.append(np.where(z >= 0, 2 * z, -2 * z - 1).astype(np.uint32))
    for u in cases:
        _same(u)
        _same(u[::3])  # not contiguous
        _same(u.astype(np.uint16)) if u.size and u.max() < 1 << 16 else None
    from bslcodec.codecs.rans_model import FINE_K

    for n_bins in (1, 2, 5, 100, 600, 2000, FINE_K):
        h = np.zeros(FINE_K, np.int64)
        h[rng.choice(FINE_K, n_bins, replace=False)] = rng.integers(1, 40, n_bins)
        if h.sum() < ans_model.SMALL:
            _same(hist=h)
    _same(hist=np.zeros(FINE_K, np.int64))


def test_large_falls_back():
    u = np.random.default_rng(1).integers(0, 50, ans_model.SMALL + 5).astype(np.uint32)
    _same(u)


def test_dq_search_with_it_is_unchanged():
    """The dq search's passes modelled by ``ans_model.build_model`` (what the encoder passes) pick the same
    symbols, error and lanes as with ``rans.build_model``, for small tensors of every float dtype."""
    import ml_dtypes  # noqa: F401  (numpy's "bfloat16")

    from bslcodec.codecs import dq_search
    from bslcodec.quantize import quant

    rng = np.random.default_rng(9)
    for n in (1, 5, 300, 4096, 20000):
        for dt, npt in (("F32", np.float32), ("F64", np.float64), ("F16", np.float16), ("BF16", "bfloat16")):
            for scale, step in ((0.02, 0.003), (1.0, 1e-3), (1e-3, 1.0)):
                x = rng.standard_t(3, n).astype(npt) * np.asarray(scale, npt)
                x = quant.bf16_bits(x) if dt == "BF16" else x.astype(np.float32) if dt == "F16" else x  # as kx
                a = dq_search.quantize(x, step, 0, dt, 1024)
                b = dq_search.quantize(x, step, 0, dt, 1024, build_model=ans_model.build_model)
                assert (a.n_bad, a.max_error) == (b.n_bad, b.max_error) and np.array_equal(a.u, b.u), (n, dt, step)


@pytest.mark.parametrize("simd", [True, False], ids=["vector", "scalar"])
def test_small_encode_is_rans_encode(simd, monkeypatch):
    """``ans_encode.encode`` (one compiled call below 2^15 symbols) writes ``rans.encode``'s bytes: symbol
    sets of every shape (raw bits above 16, every precision, one symbol, constant), uint16 and uint32, not
    contiguous, with the vector group encoder and the scalar one."""
    from bslcodec.codecs import rans_vec
    from bslcodec.pipeline import ans_encode

    monkeypatch.setattr(rans_vec, "SIMD", rans_vec.SIMD and simd)
    rng = np.random.default_rng(11)
    cases = [np.zeros(1, np.uint32), np.full(4096, 7, np.uint32), np.arange(4096, dtype=np.uint32),
             np.arange(8000, dtype=np.uint32) * 1000, np.array([0, (1 << 23) - 1], np.uint32)]
    for n in (1, 2, 31, 32, 33, 300, 1000, 4096, 5000, 16384, (1 << 15) - 1):
        for kind in range(6):
            z = [rng.normal(0, 3, n), rng.laplace(0, 0.7, n), rng.standard_t(1.2, n) * 5,
                 rng.normal(0, 300, n), rng.normal(0, 1e5, n), rng.geometric(0.3, n) - 1.0][kind]
            z = np.clip(np.rint(z), -(1 << 21), 1 << 21).astype(np.int64)
            cases.append(np.where(z >= 0, 2 * z, -2 * z - 1).astype(np.uint32))
    from bslcodec.codecs import rans_enc

    n_models, kinds = set(), set()
    for u in cases:
        for v in (u, u[::2], u.astype(np.uint16) if u.max() < 1 << 16 else u):
            if not v.size:
                continue
            for P in (None, 10, 12, 13):  # (10: below the vector encoder's P_MIN)
                model = rans.build_model(v)[0] if P is None else rans.build_model(v, prob_bits_choices=(P,))[0]
                n_models.add((model.prob_bits, model.s, model.m))
                kinds.add((rans_enc._token_bits(model.freqs.size - 1, model.s, model.m) > 16,
                           model.prob_bits >= rans_enc.P_MIN))
                assert ans_encode.encode(v, 1024, model) == rans.encode(v, 1024, model), (v.size, P)
    assert len(n_models) > 10 and kinds == {(False, True), (False, False), (True, True), (True, False)}


def test_small_dq_search_is_dq_search():
    """``dq_small.quantize`` (the serial kernels called directly, the token bits from a table) gives
    ``dq_search.quantize``'s symbols, error and bad lanes with ``ans_model``'s models: every float dtype,
    1 to 20,000 elements, steps from fine to coarse, with and without a strict bound (some lanes bad), and
    the token bits of many models are ``dq_search.token_bits``'."""
    import ml_dtypes  # noqa: F401  (numpy's "bfloat16")

    from bslcodec.codecs import dq_search
    from bslcodec.pipeline import dq_small
    from bslcodec.quantize import quant

    rng = np.random.default_rng(12)
    n_bad = 0
    for n in (1, 5, 300, 4096, 20000, 32768):
        for dt, npt in (("F32", np.float32), ("F64", np.float64), ("F16", np.float16), ("BF16", "bfloat16")):
            for scale, step in ((0.02, 0.003), (1.0, 1e-3), (1e-3, 1.0), (0.02, 1e-5)):
                x = rng.standard_t(3, n).astype(npt) * np.asarray(scale, npt)
                x = quant.bf16_bits(x) if dt == "BF16" else x.astype(np.float32) if dt == "F16" else x  # as kx
                for bound, strict in ((None, False), (0.5 * step, True), (1.5 * step, True)):
                    a = dq_search.quantize(x, step, 3, dt, 1024, bound=bound, strict=strict,
                                           build_model=ans_model.build_model)
                    b = dq_small.quantize(x, step, 3, dt, 1024, bound=bound, strict=strict)
                    assert (a.n_bad, a.max_error) == (b.n_bad, b.max_error), (n, dt, step, bound)
                    if not a.n_bad:  # (a bad lane's symbols are left unwritten)
                        assert np.array_equal(a.u, b.u), (n, dt, step, bound)
                    n_bad += a.n_bad > 0
                    model = ans_model.build_model(a.u if not a.n_bad else None, hist=None if not a.n_bad else
                                                  rm.fine_hist(np.arange(n, dtype=np.uint32)))[0]
                    want = dq_search.token_bits(model)
                    got = dq_small.token_bits(model.freqs, model.prob_bits, ans_model._LOG_Q, dq_search._NO_TOKEN_BITS)
                    assert np.array_equal(want, got)
    assert n_bad > 0
