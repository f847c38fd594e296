"""Small ans-dq tensors coded together (``pipeline.dq_batch``, ``codec.encode_small``) give, byte for byte,
what each tensor's own ``LossyTensor.encode`` gives: the same codec, params and payload, or None (stored
exactly) where it gives None; on one thread and on two; and a default save with the batch is the save
without it."""

import ml_dtypes
import numpy as np
import pytest

import bslcodec
from bslcodec.pipeline import ans_encode, codec, dq_batch, dq_small
from bslcodec.pipeline.codec import LossyTensor

DTYPES = {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16, "F64": np.float64}


def _jobs():
    """(LossyTensor, step) of every dtype and edge size, ordinary, constant and with one huge outlier; at
    steps from coarse to fine (fine enough for some F16/bf16 lanes to have no admissible level)."""
    rng = np.random.default_rng(19)
    jobs = []
    for name, dt in DTYPES.items():
        for n in (1, 2, 31, 33, 1024, 4095, 4096, 4097, 32767, dq_batch.BELOW):
            for kind in ("normal", "constant", "outlier", "laplace"):
                x = rng.normal(0, 0.02, n)
                if kind == "constant":
                    x[:] = 0.75
                elif kind == "outlier":
                    x[rng.integers(n)] = 3e4 if name == "F16" else 1e6
                elif kind == "laplace":
                    x = rng.laplace(0.5, 1e-3, n)
                lt = LossyTensor(f"{name}-{n}-{kind}", x.astype(dt), name)
                lt.quantizer = "dq"
                for rel in (2.0 ** -2, 2.0 ** -6, 2.0 ** -14):
                    jobs.append((lt, lt.step_at(rel)))
    return jobs


def _check(jobs, got):
    coded = 0
    for j, (lt, step) in enumerate(jobs):
        if j not in got:  # left to the one-tensor path
            assert not (0 < lt.n < dq_batch.BELOW and step > 0), lt.name
            continue
        want = lt.encode(step)
        assert (got[j] is None) == (want is None), (lt.name, step)
        if want is not None:
            coded += 1
            assert got[j][0] == want[0] == "ans-dq"
            assert got[j][1] == want[1], (lt.name, step)
            assert got[j][2] == want[2], (lt.name, step)
    return coded


@pytest.mark.parametrize("threads", [1, 2])
def test_encode_small_is_each_tensors_encode(threads):
    jobs = _jobs()
    got = codec.encode_small(jobs, threads)
    coded = _check(jobs, got)
    assert coded > len(jobs) // 3 and sum(v is None for v in got.values()) > 0  # both outcomes exercised


def test_encode_small_is_the_reference_path(monkeypatch):
    """Against ``dq_search.quantize`` + ``rans.encode`` (the small paths' references) too."""
    jobs = _jobs()[::5]
    got = codec.encode_small(jobs, 1)
    monkeypatch.setattr(dq_small, "FAST", False)
    monkeypatch.setattr(ans_encode, "FAST", False)
    assert _check(jobs, got) > 0


def test_encode_small_off_leaves_every_tensor(monkeypatch):
    monkeypatch.setattr(dq_batch, "FAST", False)
    assert codec.encode_small(_jobs()[:20], 1) == {}


@pytest.mark.parametrize("threads", [1, 2])
def test_default_save_with_the_batch_is_the_save_without(threads, monkeypatch):
    from bslcodec.files import pool

    rng = np.random.default_rng(3)
    t = {}
    for i, n in enumerate((31, 33, 4095, 4096, 4097, 20000, 40000, 64 * 64, 1)):
        dt = list(DTYPES.values())[i % 4]
        t[f"w.{i}"] = rng.normal(0, 0.02, (n, 1) if i % 2 else (1, n)).astype(dt)
    t["w.const"] = np.full((64, 64), 0.5, np.float32)
    t["w.outlier"] = rng.normal(0, 0.02, (64, 64)).astype(np.float32)
    t["w.outlier"][3, 7] = 1e5
    monkeypatch.setattr(pool, "_threads", threads)

    def save():
        return bslcodec.save(t)

    with_batch = save()
    monkeypatch.setattr(dq_batch, "FAST", False)
    assert save() == with_batch


@pytest.mark.parametrize("name", list(DTYPES))
def test_rows_group_is_quantize_serial(name):
    """``dq_rows.group`` (the batch's trellis) against ``dq_search._quantize_serial``: the same symbols,
    largest error and lanes without a path, at every size of a partial and a full last row, with lanes that
    have no admissible level (a huge outlier at a fine step, strict bounds) and indices beyond the rate table."""
    from bslcodec.codecs import dq_search
    from bslcodec.pipeline import ans_model, dq_rows

    rng = np.random.default_rng(5)
    sc = dq_rows.scratch(dq_batch.LANE_SYMBOLS)
    seen_bad = seen_wide = 0
    for n in (2, 5, 31, 32, 33, 64, 1000, 4095, 4096, 4097, 32767):
        for kind, rel in (("normal", 2.0 ** -3), ("normal", 2.0 ** -9), ("outlier", 2.0 ** -12),
                          ("wide", 2.0 ** -4), ("strict", 2.0 ** -6)):
            x = rng.normal(0, 0.02, n)
            if kind == "outlier":
                x[rng.integers(n)] = 6e4 if name == "F16" else 1e7
            elif kind == "wide":  # indices beyond the rate table (|k| >= 2048)
                x = rng.standard_t(1.5, n) * 0.02
            x = x.astype(DTYPES[name])
            lt = LossyTensor("x", x, name)
            kx = lt.kx
            step = lt.step_at(rel)
            center = int(np.rint(lt.mean / step))
            hist = dq_search._q0_hist_serial(kx, float(step), np.int64(center))[0]
            model, _ = ans_model.build_model(None, hist=hist)
            tok = dq_search.token_bits(model)
            rate = dq_search._rate_table(0.1, tok, model.s, model.m, dq_search._RATE_TABLE)
            mode = dq_search.MODE_OF_DTYPE[name]
            rel_, ab = (0.0, 0.0) if kind == "strict" else dq_search.ROUNDING[name]
            bound = (0.6 if kind == "strict" else 1.5) * step
            args = (np.int64(center), mode, np.float32(step), float(step), 0.1, bound, rel_, ab, name == "F16", rate,
                    tok, model.s, model.m)
            u_ref = np.zeros(n, np.uint32)
            st = dq_search._quantize_serial(kx, dq_batch.LANE_SYMBOLS, *args[:10], *args[10:], u_ref)
            u = np.zeros(n, np.uint32)
            me, bad = dq_rows.group(kx, *args, u, *sc)
            assert (me, bad) == (st[0, 0], st[0, 1]), (n, kind)
            assert np.array_equal(u, u_ref), (n, kind)
            seen_bad += bad > 0
            seen_wide += bool(u.max() >= dq_search._RATE_TABLE)  # zigzag of |k| >= 2048
    assert seen_bad and seen_wide  # both rare paths exercised


def test_f16_payloads_longer_than_the_tensor_are_stored_exactly():
    """An F16 tensor's values are widened to float32 for the trellis, but its payload is measured against its
    own 2 bytes an element: at fine steps (payloads between 2 and 4 bytes an element) the batch, as
    ``LossyTensor.encode``, gives None (stored exactly)."""
    rng = np.random.default_rng(3)
    jobs = []
    for n in (64, 1024, 4096):
        for rel in (2.0 ** -12, 2.0 ** -14, 2.0 ** -16):
            lt = LossyTensor("h", rng.uniform(-1, 1, n).astype(np.float16), "F16")
            lt.quantizer = "dq"
            jobs.append((lt, lt.step_at(rel)))
    got = codec.encode_small(jobs, 1)
    longer = 0
    for j, (lt, step) in enumerate(jobs):
        assert got[j] == lt.encode(step)
        _, _, payload = codec.entropy_code(lt.code(step, lane_lengths=False))
        longer += got[j] is None and 2 * lt.n <= len(payload) < 4 * lt.n
    assert longer >= 3
