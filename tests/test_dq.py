"""Dependent quantization (``quantizer="dq"``, codec ``ans-dq``, spec 4.6, :mod:`bslcodec.quantize.dq`).

* The decoder against an independent reference: the payload's symbols decoded as plain ``ans`` indices
  (``rans.decode_into(..., "Q", dq=False)``), turned into levels by ``dq.levels_ref`` and dequantized as the
  spec says; ``dq.levels`` (compiled) against ``dq.levels_ref``; the spec's known answers.
* Bounds: ``rel_step`` within 1.5 steps plus the output dtype's rounding, ``max_error`` exactly, and
  ``max_abs_error`` the measured maximum.
* Rate-distortion: smaller than plain rounding at the same ``rel_step`` (fine steps) with about its mean
  squared error, and smaller at equal mean squared error.
* Versions: minor 1 only with an ``ans-dq`` tensor; what a 1.0 reader says about it.
* Errors, corrupt payloads, edge cases, partial reads, and the golden files in ``fixtures/v1/dq``
  (``python tools/make_fixtures.py dq``).
"""

import json
import pathlib
import struct

import ml_dtypes
import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bslcodec
from bslcodec.codecs import rans
from bslcodec.container import format as bslformat
from bslcodec.container.dtypes import dtype_name
from bslcodec.container.errors import BslError, ChecksumError, EncodeError, FormatError
from bslcodec.container.format import Entry
from bslcodec.pipeline import codec
from bslcodec.quantize import dq, quant

NP = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
FIX = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "v1"
GROUP = 32 * codec.ANS_LANE_SYMBOLS  # elements per ans / ans-dq group as the writer makes them


# ---------------------------------------------------------------- helpers (independent of the reader)

def _parse(blob: bytes) -> tuple:
    """(minor, header document, data start) read straight from the bytes (spec 2, 3)."""
    magic, major, minor, flags, hlen, hsum = struct.unpack("<8sHHIQQ", blob[:32])
    assert magic == b"\x89BSL\r\n\x1a\n" and major == 1 and flags == 0
    return minor, json.loads(blob[32:32 + hlen]), 32 + hlen


def _only(blob: bytes) -> tuple:
    """(entry as an Entry, payload bytes) of a one-tensor file."""
    _, doc, start = _parse(blob)
    (ej,) = doc["tensors"]
    e = Entry(ej["name"], ej["dtype"], tuple(ej["shape"]), ej["codec"], ej["params"], ej["offset"],
              ej["length"], ej["checksum"])
    return e, blob[start + e.offset:start + e.offset + e.length]


def _dequant(q: np.ndarray, step: float, dtype: str) -> np.ndarray:
    """Spec 4.3 / 4.6: binary64 ``q * step`` for F64, else binary32 ``q * step`` rounded (RNE) to the dtype."""
    if dtype == "F64":
        return q.astype(np.float64) * np.float64(step)
    y = q.astype(np.float32) * np.float32(step)
    with np.errstate(over="ignore"):
        return y if dtype == "F32" else y.astype(NP[dtype])


def _reference(e: Entry, payload) -> np.ndarray:
    """Expected values of an ans-dq tensor: the payload's indices k (decoded as a plain ans payload), the
    levels of ``dq.levels_ref``, then the dequantization of spec 4.6."""
    p = e.params
    n = int(np.prod(e.shape, dtype=np.int64))
    q = np.empty(n, np.int64)
    rans.decode_into(payload, n, p["lane_symbols"], p["center"], p["step"], q, "Q", dq=False)
    k = q - p["center"]  # the indices
    levels = p["center"] + dq.levels_ref(k, n, p["lane_symbols"])
    assert np.all(np.abs(levels) < 2**24)
    return _dequant(levels, p["step"], e.dtype).reshape(e.shape)


def _codec_dq(x: np.ndarray, **kw) -> tuple:
    """(Entry, payload) of ``x`` as ans-dq at the codec level: what the writer makes before it checks
    that the payload is smaller than the raw bytes (so tiny tensors get an ans-dq payload too); None where
    the tensor cannot be quantized (a step of 0: constant)."""
    dt = dtype_name(x.dtype)
    s = codec.Settings(quantizer="dq", **kw)
    lt = codec.LossyTensor("t", x, dt)
    lt.quantizer = "dq"
    coded = lt.code(lt.step_for(s), s.max_error, lane_lengths=False)
    if coded is None:
        return None
    name, params, payload = codec.entropy_code(coded)
    return Entry("t", dt, x.shape, name, params), payload


def _err(a, b) -> np.ndarray:
    return np.abs(np.asarray(a).astype(np.float64).reshape(-1) - np.asarray(b).astype(np.float64).reshape(-1))


def _rel_bound(x, err, step, dtype) -> np.ndarray:
    """1.5 steps plus half an ulp of the output dtype (as tests/test_rdoq.py and ``bslcodec verify``)."""
    rel, ab = quant.ROUNDING[dtype]
    xs = np.abs(np.asarray(x).astype(np.float64).reshape(-1))
    return dq.BOUND_FACTOR * step + rel * (2 * xs + err) + ab


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _laplace(n_or_shape, scale=1.0, seed=0, loc=0.0):
    return np.random.default_rng(seed).laplace(loc, scale, n_or_shape)


# ---------------------------------------------------------------- 1. decoder vs reference

@pytest.mark.parametrize("dtype", list(NP))
@pytest.mark.parametrize("n", [1, 2, 31, 100, 3 * GROUP + 77])
@pytest.mark.parametrize("kw", [{"rel_step": 0.3}, {"max_error": 0.05}], ids=["rel_step", "max_error"])
def test_decoder_matches_reference(dtype, n, kw):
    """n = 1, 2 and 31 (less than one step of 32 lanes), 100 (a partial step), 3 groups + 77 (a partial
    last group); values around 0.3 so that center != 0."""
    x = _laplace((1, n), 1.0, seed=n, loc=0.3).astype(NP[dtype])
    coded = _codec_dq(x, **kw)
    if coded is None:  # one element: std 0, so rel_step gives a step of 0; stored exactly
        assert n == 1 and "rel_step" in kw
        blob = bslcodec.encode(x, quantizer="dq", **kw)
        assert _only(blob)[0].codec != "ans-dq" and _same(bslcodec.decode(blob), x)
        return
    e, payload = coded
    assert e.codec == "ans-dq" and e.params["lane_symbols"] == codec.ANS_LANE_SYMBOLS
    want = _reference(e, payload)
    assert _same(codec.decode(e, payload, "t"), want)
    # through a whole file: where the writer keeps the tensor lossy, the same payload and values
    blob = bslcodec.encode(x, quantizer="dq", **kw)
    fe, fpayload = _only(blob)
    got = bslcodec.decode(blob)
    if fe.codec == "ans-dq" or n > GROUP:
        assert fe.codec == "ans-dq" and fpayload == payload and fe.params == e.params
        assert _same(got, want)
    else:  # small: the payload does not beat the raw bytes, stored exactly
        assert fe.codec in ("raw", "zstd", "fexp") and _same(got, x)


def test_decoder_matches_reference_wide_symbols():
    """Outliers 5e3 and -4e3 std away at a fine step (max_error 1e-3): indices above 2^21, tokens with more
    than 16 raw bits (the decoder's general step, ``has_hi``), next to the usual ones. The payload is
    decoded as every dtype (the decoder does not depend on how the indices were chosen)."""
    x = np.random.default_rng(7).normal(0, 1, (3, 20000)).astype(np.float32)
    x[1, 5], x[2, 17] = 5e3, -4e3
    e, payload = _codec_dq(x, max_error=1e-3)
    assert rans.tables(*rans.parse(payload, x.size, e.params["lane_symbols"])[:4])[2]  # has_hi
    for dtype in NP:
        ed = Entry("t", dtype, e.shape, "ans-dq", e.params)
        want = _reference(ed, payload)
        assert _same(codec.decode(ed, payload, "t"), want), dtype
        assert _same(codec.decode_flat(ed, payload, "t", GROUP + 5, 40000), want.reshape(-1)[GROUP + 5:40000])
    blob = bslcodec.encode(x, quantizer="dq", max_error=1e-3)
    assert _only(blob)[1] == payload
    y = bslcodec.decode(blob)
    assert _same(y, _reference(e, payload)) and np.all(_err(y, x) <= 1e-3)


@st.composite
def _indices(draw):
    s = draw(st.sampled_from([16, 32, 64]))
    n = draw(st.integers(0, 3 * 32 * s + 45))  # several groups of 32*S, partial last steps
    big = draw(st.booleans())
    elems = st.integers(-(2**23), 2**23) if big else st.integers(-4, 4)
    k = draw(hnp.arrays(np.int64, n, elements=elems))
    return k, s


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(args=_indices())
def test_levels_matches_reference(args):
    k, s = args
    got = dq.levels(k, s)
    want = dq.levels_ref(k, k.size, s)
    assert got.dtype == np.int64 and np.array_equal(got, want)
    # the level has the sign of the index, |k| <= |L| <= 2|k|, and Q0 levels are even
    assert np.all(np.sign(want) == np.sign(k))
    assert np.all((np.abs(k) <= np.abs(want)) & (np.abs(want) <= 2 * np.abs(k)))


def test_levels_random_large():
    """The compiled levels on a big array (writer's S = 1024, 3 groups and a part)."""
    k = np.random.default_rng(3).integers(-9, 10, 3 * GROUP + 555)
    assert np.array_equal(dq.levels(k, 1024), dq.levels_ref(k, k.size, 1024))


def test_next_state_table():
    """NEXT[σ][parity] is NNR's 8-state machine (NNCodec's Trellis8States); the packed form (spec:
    0xD0BF42999BD0) agrees with it; odd states use Q1."""
    assert dq.NEXT_STATE == ((0, 2), (7, 5), (1, 3), (6, 4), (2, 0), (5, 7), (3, 1), (4, 6))
    assert dq.NEXT_PACKED == 0xD0BF42999BD0
    for s in range(8):
        for p in range(2):
            assert (0xD0BF42999BD0 >> (3 * (2 * s + p))) & 7 == dq.NEXT_STATE[s][p]
        assert dq.level.py_func(3, s) == (6 if s % 2 == 0 else 5)


def _one_lane(ks, n=None, lane_elems=None):
    lane_elems = lane_elems if lane_elems is not None else [32 * t for t in range(len(ks))]
    n = n if n is not None else lane_elems[-1] + 1
    k = np.zeros(n, np.int64)
    k[lane_elems] = ks
    return k


@pytest.mark.parametrize("ks, levels", [
    ([1, 1, -2, 0, 3, -1], [2, 2, -3, 0, 5, -2]),
    ([-1, -1, -1, -1, 2, 0, 0, -3], [-2, -2, -1, -2, 4, 0, 0, -6]),
    ([0, 1, 0, -1, 1, 2, -2], [0, 2, 0, -1, 1, 3, -4]),
])
def test_spec_known_answers_one_lane(ks, levels):
    """Spec 4.6, known answers: one lane (lane 0 of group 0, elements 0, 32, 64, ...), other lanes 0."""
    k = _one_lane(ks)
    for got in (dq.levels_ref(k, k.size, 16), dq.levels(k, 16)):
        assert list(got[::32]) == levels
        assert not np.any(np.delete(got, np.arange(0, k.size, 32)))


def test_spec_known_answer_lane_and_group_restart():
    """N = 513, S = 16: k = 1 at 0, 1, 32 and 512, k = -3 at 33."""
    k = np.zeros(513, np.int64)
    k[[0, 1, 32, 512]] = 1
    k[33] = -3
    want = np.zeros(513, np.int64)
    want[[0, 32, 1, 33, 512]] = [2, 2, 2, -6, 2]
    assert np.array_equal(dq.levels_ref(k, 513, 16), want)
    assert np.array_equal(dq.levels(k, 16), want)


def _payload_of_indices(k: np.ndarray, s: int) -> bytes:
    u = ((k << 1) ^ (k >> 63)).astype(np.uint32)
    model, _ = rans.build_model(u)
    return rans.encode(u, s, model)


def test_spec_known_answer_through_the_decoder():
    """center = 3, step = 0.25, F32: x̂ = [1.25, 1.25, 0.0, 0.75, 2.0, 0.25] on lane 0 (spec 4.6), from an
    ans payload of those indices; the same payload read as plain ``ans`` gives center + k."""
    n = 1100  # groups of 512 elements: 3, the last partial
    k = _one_lane([1, 1, -2, 0, 3, -1], n=n)
    payload = _payload_of_indices(k, 16)
    params = {"step": 0.25, "center": 3, "lane_symbols": 16}
    got = codec.decode(Entry("t", "F32", (n,), "ans-dq", params), payload, "t")
    assert list(got[:192:32]) == [1.25, 1.25, 0.0, 0.75, 2.0, 0.25]
    assert np.all(np.delete(got, np.arange(0, 192, 32)) == 0.75)  # k = 0 in state 0: the center
    plain = codec.decode(Entry("t", "F32", (n,), "ans", params), payload, "t")
    assert np.array_equal(plain, (3 + k).astype(np.float32) * np.float32(0.25))
    # every dtype, and a range decode inside the second group
    for dtype in NP:
        e = Entry("t", dtype, (n,), "ans-dq", params)
        want = _dequant(3 + dq.levels_ref(k, n, 16), 0.25, dtype)
        assert _same(codec.decode(e, payload, "t"), want)
        assert _same(codec.decode_flat(e, payload, "t", 520, 600), want[520:600])


# ---------------------------------------------------------------- 2. bounds

@st.composite
def _lossy_arrays(draw):
    dtype = draw(st.sampled_from(list(NP)))
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 700))
    scale = draw(st.sampled_from([1e-3, 0.02, 1.0, 300.0]))
    kind = draw(st.sampled_from(["normal", "laplace", "offset", "outlier", "const"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = rows * cols
    if kind == "laplace":
        x = rng.laplace(0, scale, n)
    elif kind == "offset":  # far from zero mean (center != 0), like LayerNorm weights
        x = 1.0 + rng.normal(0, scale * 1e-2, n)
    elif kind == "const":
        x = np.full(n, scale)
    else:
        x = rng.normal(0, scale, n)
        if kind == "outlier":
            x[rng.integers(0, n)] = min(1e4 * scale, 6e4)  # F16 holds up to 65504
    return x.astype(NP[dtype]).reshape(rows, cols), dtype, scale


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arg=_lossy_arrays(), rel=st.sampled_from([2.0, 0.5, 0.1, 1 / 64]))
def test_rel_step_bound_and_max_abs_error(arg, rel):
    x, dtype, _ = arg
    blob = bslcodec.encode(x, quantizer="dq", rel_step=rel)
    y = bslcodec.decode(blob)
    assert y.dtype == x.dtype and y.shape == x.shape
    e, payload = _only(blob)
    minor = _parse(blob)[0]
    if e.codec != "ans-dq":  # constant, too small or too fine: stored exactly (a 1.0 file)
        assert _same(y, x) and minor == 0
        return
    assert minor == 1
    step = e.params["step"]
    flat = x.reshape(-1) if dtype in ("F32", "F64") else x.reshape(-1).astype(np.float32)
    std = quant.moments(flat)[1]  # the writer's unit (one-pass: ~1e-9, not 0, for some constants)
    assert step == quant.step_for_dtype(rel * std * dq.STEP_FACTOR, dtype)
    assert step == pytest.approx(rel * float(np.asarray(x, np.float64).std()) * dq.STEP_FACTOR, rel=1e-4,
                                 abs=1e-6 * float(np.abs(np.asarray(x, np.float64)).max()))
    err = _err(y, x)
    assert np.all(err <= _rel_bound(x, err, step, dtype))
    assert e.params["max_abs_error"] == err.max()
    assert _same(y, _reference(e, payload))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arg=_lossy_arrays(), rel_e=st.sampled_from([1e-4, 1e-2, 0.3, 2.0]))
def test_max_error_bound_is_exact(arg, rel_e):
    x, dtype, scale = arg
    bound = rel_e * scale
    blob = bslcodec.encode(x, quantizer="dq", max_error=bound)
    y = bslcodec.decode(blob)
    err = _err(y, x)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert np.all(err <= bound)  # exactly, every dtype (F16 included), no rounding slack
    e, payload = _only(blob)
    if e.codec == "ans-dq":
        assert e.params["step"] <= bound / dq.BOUND_FACTOR
        assert e.params["max_abs_error"] == err.max()
        assert _same(y, _reference(e, payload))
    else:
        assert _same(y, x)


@pytest.mark.parametrize("dtype", list(NP))
def test_bounds_on_a_larger_tensor(dtype):
    """Every dtype at a fine and a coarse step: the bound, and that the trellis does use the room beyond
    half a step (else it would be plain rounding)."""
    x = _laplace((40, 2500), 0.02, seed=11).astype(NP[dtype])
    for rel in (1 / 16, 1.0):
        blob = bslcodec.encode(x, quantizer="dq", rel_step=rel)
        e, _ = _only(blob)
        assert e.codec == "ans-dq"
        err = _err(bslcodec.decode(blob), x)
        assert np.all(err <= _rel_bound(x, err, e.params["step"], dtype))
        assert err.max() == e.params["max_abs_error"]
        assert np.mean(err > 0.5 * e.params["step"] * 1.01) > 0.01


def test_f16_max_error_below_half_ulp_stays_lossy():
    x = _laplace((100, 300), 1.0, seed=0).astype(np.float16)
    assert _only(bslcodec.encode(x, max_error=1e-3))[0].codec == "ans"  # plain rounding manages it
    blob = bslcodec.encode(x, quantizer="dq", max_error=1e-3)
    assert np.all(_err(bslcodec.decode(blob), x) <= 1e-3)
    assert _only(blob)[0].codec == "ans-dq"


# ---------------------------------------------------------------- 3. rate-distortion

def _rd(x, **kw) -> tuple:
    blob = bslcodec.encode(x, **kw)
    y = bslcodec.decode(blob)
    return 8 * len(blob) / x.size, float(np.mean((y.astype(np.float64) - x.astype(np.float64)) ** 2))


@pytest.fixture(scope="module")
def rd_tensors():
    rng = np.random.default_rng(2026)
    return {"laplace": rng.laplace(0, 0.02, (300, 1000)).astype(np.float32),
            "normal": rng.normal(0, 0.02, (300, 1000)).astype(np.float32)}


@pytest.mark.parametrize("dist", ["laplace", "normal"])
def test_smaller_at_the_same_rel_step_with_about_the_same_mse(rd_tensors, dist):
    """At a fine rel_step (0.1: ~5.3 bits/weight) the STEP_FACTOR keeps the mean squared error of plain
    rounding, and the file is smaller."""
    x = rd_tensors[dist]
    b_u, m_u = _rd(x, rel_step=0.1, quantizer="uniform")
    b_d, m_d = _rd(x, rel_step=0.1, quantizer="dq")
    assert 0.85 * m_u <= m_d <= 1.15 * m_u
    assert b_d < b_u - 0.08


@pytest.mark.parametrize("dist", ["laplace", "normal"])
@pytest.mark.parametrize("rel", [0.1, 0.5])
def test_smaller_at_equal_mse(rd_tensors, dist, rel):
    """Against plain rounding at the step that gives dq's mean squared error (MSE ~ step²)."""
    x = rd_tensors[dist]
    b_d, m_d = _rd(x, rel_step=rel, quantizer="dq")
    m_u0 = _rd(x, rel_step=rel, quantizer="uniform")[1]
    b_u, m_u = _rd(x, rel_step=rel * float(np.sqrt(m_d / m_u0)), quantizer="uniform")
    assert m_d <= 1.15 * m_u and m_u <= 1.15 * m_d
    assert b_d < b_u - 0.08


# ---------------------------------------------------------------- 4. format versions

def _two(rng):
    return {"w": rng.laplace(0, 0.02, (64, 300)).astype(np.float32), "b": rng.normal(0, 0.1, 300).astype(np.float32)}


def test_minor_version_and_codec():
    t = _two(np.random.default_rng(0))
    dq_blob = bslcodec.save(t, quantizer="dq", rel_step=0.25)
    minor, doc, _ = _parse(dq_blob)
    assert minor == 1 and struct.unpack_from("<H", dq_blob, 10)[0] == 1
    codecs = {e["name"]: e["codec"] for e in doc["tensors"]}
    assert codecs["w"] == "ans-dq" and codecs["b"] != "ans-dq"  # the 1-D bias stays lossless
    assert json.loads(doc["metadata"]["bslcodec.settings"]) == {"quantizer": "dq", "rel_step": 0.25}
    for kw in ({"quantizer": "uniform"}, {"codec": "ans"}, {"codec": "eg"}, {"max_error": 1e-3}):
        blob = bslcodec.save(t, **({"rel_step": 0.25} | kw if "max_error" not in kw else kw))
        assert _parse(blob)[0] == 0 and "ans-dq" not in {e["codec"] for e in _parse(blob)[1]["tensors"]}
    # the default ("auto") is dq for rel_step / bits / no setting
    assert bslcodec.save(t, rel_step=0.25, quantizer="dq") == bslcodec.save(t, rel_step=0.25)
    assert _parse(bslcodec.save(t))[0] == 1
    # quantizer="dq" but nothing lossy: no ans-dq tensor, so a 1.0 file
    assert _parse(bslcodec.save({"b": t["b"]}, quantizer="dq"))[0] == 0


def _with_minor(blob: bytes, minor: int) -> bytes:
    return blob[:10] + struct.pack("<H", minor) + blob[12:]


def test_reader_takes_codecs_from_the_header_not_the_minor():
    """The minor is not covered by a checksum and a reader does not reject a file for it (spec 2, 7):
    patched to 0 (a writer's mistake) or to a future 7, the file reads the same."""
    t = _two(np.random.default_rng(1))
    blob = bslcodec.save(t, quantizer="dq", rel_step=0.25)
    want = bslcodec.load(blob)
    for minor in (0, 7):
        got = bslcodec.load(_with_minor(blob, minor))
        assert all(_same(got[k], want[k]) for k in want)


def test_a_1_0_reader_asks_for_an_upgrade(monkeypatch, tmp_path):
    """A reader that knows only 1.0 (no ans-dq): FormatError that names the codec and says to upgrade;
    files without ans-dq still read; a dq file wrongly marked 1.0 is an unknown codec, without 'upgrade'."""
    t = _two(np.random.default_rng(2))
    dq_blob = bslcodec.save(t, quantizer="dq", rel_step=0.25)
    plain = bslcodec.save(t, rel_step=0.25, quantizer="uniform")
    want = bslcodec.load(plain)
    monkeypatch.setattr(bslformat, "CODECS", tuple(c for c in bslformat.CODECS if c != "ans-dq"))
    monkeypatch.setattr(bslformat, "MINOR", 0)
    with pytest.raises(FormatError, match="upgrade") as exc:
        bslcodec.load(dq_blob)
    assert "ans-dq" in str(exc.value) and "1.1" in str(exc.value)
    path = tmp_path / "m.bsl"
    path.write_bytes(dq_blob)
    with pytest.raises(FormatError, match="upgrade"):
        bslcodec.load_file(path)
    with pytest.raises(FormatError, match="upgrade"):
        bslcodec.safe_open(path)
    got = bslcodec.load(plain)
    assert all(_same(got[k], want[k]) for k in want)
    with pytest.raises(FormatError, match="unknown codec 'ans-dq'") as exc:
        bslcodec.load(_with_minor(dq_blob, 0))
    assert "upgrade" not in str(exc.value)


# ---------------------------------------------------------------- 5. errors

def test_bad_options_raise_encode_error(tmp_path):
    x = _laplace((32, 64), seed=1).astype(np.float32)
    for q in ("bogus", "DQ", ""):
        with pytest.raises(EncodeError, match="quantizer"):
            bslcodec.encode(x, quantizer=q)
        with pytest.raises(EncodeError, match="quantizer"):
            bslcodec.save_file({"x": x}, tmp_path / "a.bsl", quantizer=q)
    assert not (tmp_path / "a.bsl").exists()
    for rdoq in (True, 0.12, 5.0):
        with pytest.raises(EncodeError, match="rdoq"):
            bslcodec.encode(x, quantizer="dq", rdoq=rdoq)
        with pytest.raises(EncodeError, match="rdoq"):
            bslcodec.save({"x": x}, quantizer="dq", rdoq=rdoq, max_error=1e-3)
    with pytest.raises(EncodeError, match="eg"):
        bslcodec.encode(x, quantizer="dq", codec="eg")
    from bslcodec.files.checkpoint import check_settings

    with pytest.raises(EncodeError, match="quantizer"):
        check_settings(rel_step=0.1, quantizer="bogus")
    with pytest.raises(EncodeError, match="rdoq"):
        check_settings(rel_step=0.1, rdoq=0.12, quantizer="dq")
    # rdoq off and codec ans/auto are fine: still ans-dq
    for kw in ({"rdoq": False}, {"rdoq": 0}, {"codec": "ans"}, {"codec": "auto"}):
        assert _only(bslcodec.encode(x, quantizer="dq", **kw))[0].codec == "ans-dq"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_raises(bad):
    x = _laplace((16, 64), seed=2).astype(np.float32)
    x[3, 5] = bad
    with pytest.raises(EncodeError, match="tensor 'w'.*NaN/Inf"):
        bslcodec.save({"w": x}, quantizer="dq")
    with pytest.raises(EncodeError, match="NaN/Inf"):
        bslcodec.save({"w": x}, quantizer="dq", max_error=0.1)
    # stored exactly when asked, and a small 1-D tensor is exact anyway
    back = bslcodec.load(bslcodec.save({"w": x, "v": x[3]}, quantizer="dq", lossless=["w"]))
    assert _same(back["w"], x) and _same(back["v"], x[3])


def _dq_blob_and_payload():
    x = _laplace((100, 700), 1.0, seed=3).astype(np.float32)
    blob = bslcodec.encode(x, quantizer="dq", rel_step=0.2)
    e, payload = _only(blob)
    assert e.codec == "ans-dq"
    return x, blob, e, payload


def test_corrupt_payload_is_a_bsl_error():
    """Flipped bits in the words (checksums recomputed, as an attacker would) and truncations: a BslError
    or a decode of the right shape and dtype, never another exception or a crash."""
    x, blob, e, payload = _dq_blob_and_payload()
    H = rans.parse_header(np.frombuffer(payload, np.uint8))[4]
    ok = codec.decode(e, payload, "t")
    rng = np.random.default_rng(4)
    raised = 0
    trials = 120
    for _ in range(trials):
        p = bytearray(payload)
        for _ in range(int(rng.integers(1, 4))):
            p[int(rng.integers(H, len(p)))] ^= 1 << int(rng.integers(0, 8))
        try:
            y = codec.decode(e, bytes(p), "t")
        except BslError:
            raised += 1
        else:
            assert y.dtype == ok.dtype and y.shape == ok.shape
    assert raised >= 0.9 * trials  # the rANS end-state checks catch nearly every corruption
    for cut in (0, 1, H, H + 4, len(payload) // 2, len(payload) - 1):
        with pytest.raises(FormatError, match="ans payload"):
            codec.decode(e, payload[:cut], "t")
    with pytest.raises(FormatError):
        codec.decode(e, payload + b"\0\0", "t")


def _rewrite_payload(blob: bytes, new_payload: bytes) -> bytes:
    """A one-tensor file with its payload replaced by one of the same length, checksums recomputed."""
    minor, doc, start = _parse(blob)
    e = doc["tensors"][0]
    assert len(new_payload) == e["length"]
    header = blob[32:start].replace(e["checksum"].encode(), xxhash.xxh3_64_hexdigest(new_payload).encode())
    pre = blob[:24] + struct.pack("<Q", xxhash.xxh3_64_intdigest(header))
    return pre + header + blob[start:start + e["offset"]] + new_payload + blob[start + e["offset"] + e["length"]:]


def test_corrupt_file_is_a_bsl_error(tmp_path):
    x, blob, e, payload = _dq_blob_and_payload()
    mid = len(payload) // 2
    bad = payload[:mid] + bytes([payload[mid] ^ 0x10]) + payload[mid + 1:]
    _, _, start = _parse(blob)
    flipped = bytearray(blob)
    flipped[start + e.offset + mid] ^= 0x10
    with pytest.raises(ChecksumError, match="tensor 'tensor'"):
        bslcodec.decode(bytes(flipped))
    hostile = _rewrite_payload(blob, bad)
    with pytest.raises(FormatError, match="tensor 'tensor'.*ans payload"):
        bslcodec.decode(hostile)
    path = tmp_path / "h.bsl"
    path.write_bytes(hostile)
    with bslcodec.safe_open(path) as f:
        with pytest.raises(FormatError):
            f.get_tensor("tensor")
        with pytest.raises(FormatError):
            f.get_slice("tensor")[40:60]
    with pytest.raises(FormatError, match="truncated"):
        bslcodec.decode(blob[:-7])


def test_levels_out_of_range_are_rejected():
    """Spec 4.6: |center + L| >= 2^24 is rejected, L being up to twice the index: with a center that
    keeps every center + k in range, the payload reads as ``ans`` but not as ``ans-dq``."""
    x, blob, e, payload = _dq_blob_and_payload()
    q = np.empty(x.size, np.int64)
    rans.decode_into(payload, x.size, 1024, e.params["center"], e.params["step"], q, "Q")
    kmax = int(np.abs(q - e.params["center"]).max())
    for center in (2**24 - 1 - kmax, -(2**24 - 1 - kmax)):
        params = dict(e.params, center=center)
        codec.decode(Entry("t", "F32", e.shape, "ans", params), payload, "t")  # center + k in range
        with pytest.raises(FormatError, match="2\\^24"):
            codec.decode(Entry("t", "F32", e.shape, "ans-dq", params), payload, "t")
    with pytest.raises(FormatError, match="center"):
        codec.decode(Entry("t", "F32", e.shape, "ans-dq", dict(e.params, center=2**24)), payload, "t")
    with pytest.raises(FormatError, match="lane_symbols"):
        codec.decode(Entry("t", "F32", e.shape, "ans-dq", dict(e.params, lane_symbols=8192)), payload, "t")
    with pytest.raises(FormatError, match="float dtypes"):
        codec.decode(Entry("t", "I32", e.shape, "ans-dq", e.params), payload, "t")


# ---------------------------------------------------------------- 6. edge cases

def test_all_zero_tensor():
    z = np.zeros((64, 64), np.float32)
    blob = bslcodec.encode(z, quantizer="dq")  # std 0: step 0, stored exactly
    assert _only(blob)[0].codec != "ans-dq" and _same(bslcodec.decode(blob), z)
    blob = bslcodec.encode(z, quantizer="dq", max_error=1e-3)
    y = bslcodec.decode(blob)
    assert _same(y, z) and not np.signbit(y).any()
    e, payload = _only(blob)
    if e.codec == "ans-dq":
        assert e.params["max_abs_error"] == 0 and e.params["center"] == 0


@pytest.mark.parametrize("dtype", ["F32", "F64", "BF16"])
def test_constant_far_from_zero(dtype):
    c = np.full((64, 64), 1234.5).astype(NP[dtype])
    assert _same(bslcodec.decode(bslcodec.encode(c, quantizer="dq")), c)  # std 0: exact
    blob = bslcodec.encode(c, quantizer="dq", max_error=0.01)
    assert np.all(_err(bslcodec.decode(blob), c) <= 0.01)


@pytest.mark.parametrize("dtype", list(NP))
def test_center_offset(dtype):
    """Values near 10 with a small spread: center ~ 10 / step (large), levels on both sides of it."""
    x = (10 + np.random.default_rng(5).normal(0, 0.01, (60, 500))).astype(NP[dtype])
    blob = bslcodec.encode(x, quantizer="dq", rel_step=0.25)
    e, payload = _only(blob)
    if e.codec != "ans-dq":  # F16/BF16 near 10: the spread is a few ulps, lossless may win
        assert _same(bslcodec.decode(blob), x)
        return
    assert abs(e.params["center"]) > 1000
    y = bslcodec.decode(blob)
    assert _same(y, _reference(e, payload))
    err = _err(y, x)
    assert np.all(err <= _rel_bound(x, err, e.params["step"], dtype))


def test_huge_outliers():
    """Two values 1e4 times the bulk's std (which they inflate 100x), with rel_step and max_error."""
    x = np.random.default_rng(6).normal(0, 1, (50, 400)).astype(np.float32)
    x[7, 3], x[40, 200] = 1e4, -1e4
    for kw in ({"rel_step": 0.25}, {"rel_step": 1 / 64}, {"max_error": 0.05}):
        blob = bslcodec.encode(x, quantizer="dq", **kw)
        e, payload = _only(blob)
        assert e.codec == "ans-dq", kw
        y = bslcodec.decode(blob)
        err = _err(y, x)
        bound = kw.get("max_error") or _rel_bound(x, err, e.params["step"], "F32")
        assert np.all(err <= bound), kw
        assert _same(y, _reference(e, payload))
    # so far out that a level would need |q| >= 2^24: stored exactly rather than broken
    x[7, 3] = 1e6
    blob = bslcodec.encode(x, quantizer="dq", max_error=0.05)
    assert _only(blob)[0].codec != "ans-dq" and _same(bslcodec.decode(blob), x)


def test_center_out_of_range_is_stored_exactly():
    """1e6 + N(0, 1e-3) at rel_step 1/64: center would be ~1e11, beyond 2^24: lossless, exact."""
    x = 1e6 + np.random.default_rng(13).normal(0, 1e-3, (40, 100))
    blob = bslcodec.encode(x, quantizer="dq", rel_step=1 / 64)
    assert _only(blob)[0].codec != "ans-dq" and _same(bslcodec.decode(blob), x)
    assert _parse(blob)[0] == 0


def test_small_1d_stays_lossless_larger_is_dq():
    rng = np.random.default_rng(8)
    small = rng.normal(0, 1, codec.SMALL_1D).astype(np.float32)
    big = rng.normal(0, 1, codec.SMALL_1D + 1).astype(np.float32)
    mat = rng.normal(0, 1, (2, 100)).astype(np.float32)
    blob = bslcodec.save({"small": small, "big": big, "mat": mat}, quantizer="dq", rel_step=0.25)
    minor, doc, _ = _parse(blob)
    codecs = {e["name"]: e["codec"] for e in doc["tensors"]}
    assert codecs == {"small": codecs["small"], "big": "ans-dq", "mat": "ans-dq"} and codecs["small"] != "ans-dq"
    assert minor == 1
    back = bslcodec.load(blob)
    assert _same(back["small"], small)
    for k, x in (("big", big), ("mat", mat)):
        assert back[k].shape == x.shape and back[k].dtype == x.dtype
        assert not _same(back[k], x)


def test_partial_reads_equal_the_full_decode(tmp_path):
    rng = np.random.default_rng(9)
    t = {"f32": rng.laplace(0, 0.02, (300, 333)).astype(np.float32),  # 99,900 elements: 4 groups
         "bf16": rng.normal(0, 1, (97, 1100)).astype(ml_dtypes.bfloat16),
         "f16": rng.normal(0, 1, (70, 500)).astype(np.float16)}
    path = tmp_path / "m.bsl"
    bslcodec.save_file(t, path, quantizer="dq", rel_step=0.2)
    full = bslcodec.load_file(path)
    with bslcodec.safe_open(path) as f:
        for name in t:
            assert f.entry(name).codec == "ans-dq"
            assert _same(f.get_tensor(name), full[name])
            sl = f.get_slice(name)
            rows = full[name].shape[0]
            for key in (slice(0, 1), slice(97, 199), slice(rows - 50, rows), slice(5, rows - 3, 7),
                        slice(None), slice(98, 99), -1, 0, slice(30, 30)):
                assert _same(sl[key], full[name][key]), (name, key)
            assert _same(sl[10:20, 3:9], full[name][10:20, 3:9])


def test_deterministic_across_threads():
    import numba

    t = {"a": _laplace((700, 300), 0.02, seed=10).astype(np.float32)}
    ref = bslcodec.save(t, rel_step=0.3, quantizer="dq")
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert bslcodec.save(t, rel_step=0.3, quantizer="dq") == ref
    finally:
        numba.set_num_threads(old)
    assert bslcodec.save(t, rel_step=0.3, quantizer="dq") == ref


def test_encode_checkpoint_with_dq(tmp_path):
    from bslcodec.files.checkpoint import encode_checkpoint

    rng = np.random.default_rng(12)
    t = {"w": rng.laplace(0, 0.02, (128, 256)).astype(np.float32), "b": rng.normal(0, 1, 256).astype(np.float32)}
    np.savez(tmp_path / "m.npz", **t)
    encode_checkpoint(tmp_path / "m.npz", tmp_path / "m.bsl", rel_step=0.25, quantizer="dq", progress=False)
    blob = (tmp_path / "m.bsl").read_bytes()
    minor, doc, _ = _parse(blob)
    assert minor == 1 and {e["name"]: e["codec"] for e in doc["tensors"]}["w"] == "ans-dq"
    back = bslcodec.load(blob)
    assert _same(back["w"], bslcodec.load(bslcodec.save(t, rel_step=0.25, quantizer="dq"))["w"])
    with pytest.raises(EncodeError, match="quantizer"):
        encode_checkpoint(tmp_path / "m.npz", tmp_path / "x.bsl", quantizer="bogus", progress=False)
    assert not (tmp_path / "x.bsl").exists()


# ---------------------------------------------------------------- bits=

def _bits_tensor():
    return {"w": _laplace((256, 512), 0.02, seed=0).astype(np.float32)}


def test_bits_records_quantizer_and_allocation():
    t = _bits_tensor()
    blob = bslcodec.save(t, bits=4.0, quantizer="dq")
    minor, doc, _ = _parse(blob)
    used = json.loads(doc["metadata"]["bslcodec.settings"])
    assert minor == 1 and doc["tensors"][0]["codec"] == "ans-dq"
    assert used["quantizer"] == "dq" and used["bits"] == 4.0 and used["allocation"] == "equal-slope"
    assert "rel_step" not in used  # each tensor has its own step (in its params); verify checks 1.5 steps
    step = doc["tensors"][0]["params"]["step"]
    assert np.abs(bslcodec.load(blob)["w"] - t["w"]).max() <= 1.5 * step * (1 + 1e-6)


def test_bits_target_within_2_percent():
    t = _bits_tensor()
    n = t["w"].size
    for bits in (1.0, 1.2, 2.5, 4.0, 6.0):
        size = 8 * len(bslcodec.save(t, bits=bits, quantizer="dq"))
        assert abs(size - bits * n) <= 0.02 * bits * n, bits


# ---------------------------------------------------------------- 7. golden files (format 1.1)

DQ_FIXTURES = {"dq_rel_step": {"rel_step": 0.25}, "dq_max_error": {"max_error": 1e-3}}


def _load_npz(path, dtypes):
    with np.load(path, allow_pickle=False) as z:
        return {k: (z[k].view(ml_dtypes.bfloat16) if dtypes.get(k) == "BF16" else z[k]) for k in z.files}


@pytest.mark.parametrize("name", list(DQ_FIXTURES))
def test_golden_dq_file_decodes_to_expected_values(name):
    path = FIX / "dq" / f"{name}.bsl"
    blob = path.read_bytes()
    minor, doc, start = _parse(blob)
    assert minor == 1
    dtypes = {e["name"]: e["dtype"] for e in doc["tensors"]}
    codecs = {e["name"]: e["codec"] for e in doc["tensors"]}
    assert {"layer.weight", "emb.bf16", "proj.f64", "norm.weight"} <= {k for k, c in codecs.items() if c == "ans-dq"}
    assert doc["metadata"]["fixture"] == name
    expected = _load_npz(FIX / "dq" / f"{name}.expected.npz", dtypes)
    got = bslcodec.load_file(path)
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        assert _same(got[k], v), k
    # the stored values are the spec's, from the payload's indices
    for ej in doc["tensors"]:
        if ej["codec"] == "ans-dq":
            e = Entry(ej["name"], ej["dtype"], tuple(ej["shape"]), ej["codec"], ej["params"])
            payload = blob[start + ej["offset"]:start + ej["offset"] + ej["length"]]
            assert _same(_reference(e, payload), expected[e.name]), e.name


@pytest.mark.parametrize("name", list(DQ_FIXTURES))
def test_golden_dq_file_meets_its_bounds(name):
    path = FIX / "dq" / f"{name}.bsl"
    with bslcodec.safe_open(path) as f:
        dtypes = {e.name: e.dtype for e in f.entries()}
        inputs = _load_npz(FIX / "inputs.npz", dtypes)
        for e in f.entries():
            got = f.get_tensor(e.name)
            if e.codec != "ans-dq":  # stored exactly
                assert _same(got, inputs[e.name].reshape(got.shape)), e.name
                continue
            err = _err(got, inputs[e.name])
            assert err.max() == e.params["max_abs_error"]
            if "max_error" in DQ_FIXTURES[name]:
                assert np.all(err <= DQ_FIXTURES[name]["max_error"])
            else:
                assert np.all(err <= _rel_bound(inputs[e.name], err, e.params["step"], e.dtype))
