"""bslcodec.pipeline.batch: a file's small tensors decoded in batches (one compiled call per codec family and
output type) give, bit for bit, what one-by-one decodes give; a damaged tensor inside a batch raises what a
one-by-one load raises, naming it."""

import random
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import fuzz_reader as fr

import bslcodec
from bslcodec.files import api
from bslcodec.pipeline import batch


def _mixed():
    rng = np.random.default_rng(3)
    t = {}
    for i, dt in enumerate([np.float32, np.float16, ml_dtypes.bfloat16, np.float64] * 2):
        t[f"m.{i}"] = rng.normal(0, 0.02, (32 + 8 * i, 48)).astype(dt)  # small matrices: ans-dq (default)
        t[f"b.{i}"] = rng.normal(0, 1, 64 + i).astype(dt)  # fine-step 1-D: eg
        t[f"x.{i}"] = rng.laplace(0, 0.1, 3000 + 7 * i).astype(dt)
    t["w.0"] = rng.normal(0, 0.02, (150, 160)).astype(np.float32)  # enough elements for the ans token table
    t["w.1"] = rng.normal(0, 0.02, (150, 160)).astype(ml_dtypes.bfloat16)
    t["big"] = rng.normal(0, 0.02, (300, 200)).astype(np.float32)  # over BATCH_BELOW: decoded on its own
    t["ids"] = np.arange(100)
    t["empty"] = np.zeros((0, 4), np.float32)
    return t


SETTINGS = [{}, {"expert": {"codec": "ans", "rel_step": 0.05}}, {"expert": {"codec": "eg", "rel_step": 0.05}},
            {"exact": True}, {"bits": 8}, {"max_error": 1e-3}]


def _one_by_one(data: bytes) -> dict:
    src = api._Source(data=data)
    try:
        return {n: src.tensor(n) for n in src.entries}
    finally:
        src.close()


def _bits(a):
    return a.dtype, a.shape, a.tobytes()


def _outcome(fn, data):
    try:
        return {k: _bits(v) for k, v in fn(data).items()}
    except bslcodec.BslError as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("kw", SETTINGS)
def test_batch_equals_one_by_one(tmp_path, kw):
    data = bslcodec.save(_mixed(), **kw)
    path = tmp_path / "m.bsl"
    path.write_bytes(data)
    want = _one_by_one(data)
    src = api._Source(data=data)
    batched = batch.decode_small(src, list(src.entries))
    src.close()
    assert batched  # the small tensors did take the batch path
    assert "big" not in batched
    for got in (bslcodec.load_file(path), bslcodec.load(data), batched):
        for k in got:
            assert _bits(np.asarray(got[k])) == _bits(want[k]), k


def _codecs(data):
    doc, _, _ = fr.split(data)
    return {t["name"]: t["codec"] for t in doc["tensors"]}


@pytest.mark.parametrize("kw", [{}, {"exact": True}, {"expert": {"codec": "ans", "rel_step": 0.05}}])
def test_damaged_payload_in_a_batch_fails_as_one_by_one(kw):
    """Bytes of one small tensor's payload changed (checksums recomputed, as an attacker would): the load
    raises the one-by-one decode's error (same class, same words, the tensor's name), or decodes the same."""
    data = bslcodec.save(_mixed(), **kw)
    doc, payloads, minor = fr.split(data)
    names = [t["name"] for t in doc["tensors"]]
    rnd = random.Random(7)
    victims = [i for i, n in enumerate(names) if n[0] in "mbx"]
    failed = 0
    for trial in range(60):
        i = rnd.choice(victims)
        p = bytearray(payloads[i])
        for _ in range(rnd.choice([1, 1, 2, 5])):
            j = rnd.randrange(len(p)) if trial % 3 else rnd.randrange(min(len(p), 64))  # often the header
            p[j] = rnd.randrange(256) if trial % 2 else p[j] ^ (1 << rnd.randrange(8))
        bad = fr.build(doc, payloads[:i] + [bytes(p)] + payloads[i + 1:], minor=minor)
        want = _outcome(_one_by_one, bad)
        got = _outcome(bslcodec.load, bad)
        assert got == want, names[i]
        if isinstance(want, tuple):
            failed += 1
            assert repr(names[i]) in want[1]
    assert failed > 10  # the trials did reach the error paths


def test_checksum_error_in_a_batch_names_the_tensor(tmp_path):
    data = bytearray(bslcodec.save(_mixed()))
    src = api._Source(data=bytes(data))
    e, start = src.entries["m.5"], src.index.data_start
    src.close()
    data[start + e.offset + e.length // 2] ^= 0x10
    with pytest.raises(bslcodec.ChecksumError, match=repr("m.5")):
        bslcodec.load(bytes(data))


def test_short_payloads_are_left_to_one_by_one():
    """A payload too short for its entry's element count never sizes the batch's output: the tensor is left
    out of the batch, and the load raises the one-by-one error."""
    data = bslcodec.save(_mixed(), exact=["x.*"])
    doc, payloads, minor = fr.split(data)
    cut = {i: payloads[i][:40] for i, t in enumerate(doc["tensors"]) if t["name"] in ("m.2", "b.3", "x.1")}
    assert {doc["tensors"][i]["codec"] for i in cut} == {"ans-dq", "eg", "fexp"}
    bad = fr.build(doc, [cut.get(i, p) for i, p in enumerate(payloads)], minor=minor)
    src = api._Source(data=bad)
    got = batch.decode_small(src, list(src.entries))
    src.close()
    assert got and not {"m.2", "b.3", "x.1"} & set(got)
    assert _outcome(bslcodec.load, bad) == _outcome(_one_by_one, bad)


def _old_quantized_check(e, where, s_min, s_max):
    """``codec._check_quantized_params`` before its fast path for float steps (the reference)."""
    from bslcodec.container.dtypes import FLOAT_NAMES
    from bslcodec.container.errors import FormatError
    from bslcodec.container.limits import MAX_SYMBOL_MAGNITUDE
    from bslcodec.pipeline.codec import finite_float

    p, name = e.params, e.codec
    if e.dtype not in FLOAT_NAMES:
        raise FormatError(f"{where}: codec {name} is only for float dtypes, not {e.dtype}")
    step, center, s = p.get("step"), p.get("center"), p.get("lane_symbols")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not (finite_float(step) > 0):
        raise FormatError(f"{where}: {name} step must be a positive finite number, found {step!r}")
    if e.dtype != "F64" and (float(step) > float(np.finfo(np.float32).max) or float(np.float32(step)) != float(step)):
        raise FormatError(f"{where}: {name} step {step!r} is not a binary32 value")
    if type(center) is not int or abs(center) >= MAX_SYMBOL_MAGNITUDE:
        raise FormatError(f"{where}: {name} center must be an integer below 2^24 in magnitude, found {center!r}")
    if type(s) is not int or not s_min <= s <= s_max or s & (s - 1):
        raise FormatError(f"{where}: {name} lane_symbols must be a power of two in [{s_min}, {s_max}], "
                          f"found {s!r}")
    return float(step), center, s


def test_params_check_fast_path_matches_the_reference():
    """The quantized codecs' params check (its float-step fast path: no numpy scalars) accepts, returns and
    refuses (same class and words) exactly what the numpy version did."""
    from bslcodec.container.format import Entry
    from bslcodec.pipeline import codec

    f32max = float(np.finfo(np.float32).max)
    rng = np.random.default_rng(0)
    steps = [1e-3, 0.1, 1.0, 3.0, 1, 0, -1, True, False, None, "1", [1.0], 0.0, -0.0, -1e-3, float("nan"),
             float("inf"), -float("inf"), f32max, np.nextafter(f32max, np.inf), 2.0**128, 2**128, 2**1024,
             2**1100, 1e-45, 1.401298464324817e-45, 5e-324, 1e-40, float(np.float32(1e-40)), 2.0**-149,
             2.0**-150, 3 * 2.0**-150, 2**24 + 1, 2**53 + 1, float(2**24 + 1)]
    steps += [float(np.float32(v)) for v in rng.lognormal(-5, 6, 200)] + list(rng.lognormal(-5, 6, 200))
    for dtype in ("F32", "F16", "BF16", "F64", "I32"):
        for step in steps:
            for center, s in ((3, 1024), (2**24, 1024), (1.0, 64), (0, 3)):
                e = Entry("t", dtype, (4,), "ans", {"step": step, "center": center, "lane_symbols": s})
                assert repr(_result(codec._check_quantized_params, e)) == repr(_result(_old_quantized_check, e))


def _result(check, e):
    try:
        return check(e, "w", 16, 4096)
    except bslcodec.BslError as exc:
        return type(exc).__name__, str(exc)
