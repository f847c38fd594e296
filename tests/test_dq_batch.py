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
