"""``ans`` codec (spec 4.4): known answers, Numba vs reference bit-exactness, corrupted payloads, and
round trips through the public API with the same bounds as ``eg``."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bslcodec
from bslcodec.codecs import golomb, rans, rans_ref
from bslcodec.container.errors import FormatError
from bslcodec.pipeline import codec
from bslcodec.quantize.quant import ROUNDING
from tests.strategies import float_arrays


def _zigzag_inverse(u):
    u = np.asarray(u).astype(np.int64)
    return (u >> 1) ^ -(u & 1)


def _zigzag(d):
    d = np.asarray(d, np.int64)
    return ((d << 1) ^ (d >> 63)).astype(np.uint32)


def _decode_q(payload, n, s, center=0):
    out = np.empty(n, np.int64)
    rans.decode_into(payload, n, s, center, 1.0, out, "Q")
    return out


# ---------------------------------------------------------------- known answers

def test_tokens_known_answers():
    # (u, s, m) -> (token, raw bits, raw value); spec 4.4 "Tokens"
    cases = {(3, 2, 1): (3, 0, 0), (5, 2, 1): (4, 1, 1), (17, 2, 1): (8, 3, 1), (100, 2, 1): (13, 5, 4),
             (1, 0, 0): (1, 0, 0), (2, 0, 0): (2, 1, 0), (3, 0, 0): (2, 1, 1),
             ((1 << 25) - 1, 12, 4): (rans_ref.k_max(12, 4) - 1, 20, (1 << 20) - 1)}
    for (u, s, m), want in cases.items():
        assert rans_ref.token_of(u, s, m) == want
        tok, nb, r = want
        assert rans_ref.token_bits(tok, s, m) == nb
        assert rans_ref.symbol_of(tok, r, s, m) == u


def test_known_answer_payload_by_hand():
    # One symbol u=1, P=1 (M=2), s=1, m=0, f=[1, 1], kq=0. Encoder: x = 2^16 -> (x//1 << 1) + 0 + c[1]
    # = 0x20001 (no emission: x < f*2^31). Table bits: EG_0(1) EG_0(1) = 010 010 -> byte 0x12.
    want = bytes.fromhex("00 01 01 00 02 00 00 00 01 00 00 00 12 00 00 00"  # header, table, pad
                         "02 00 00 00"  # W[0] = 2 words
                         "01 00 02 00")  # lane 0 state 0x00020001
    got = rans_ref.encode_payload([1], 16, 1, 1, 0, [1, 1], 0)
    assert got == want
    model = rans.Model(1, 1, 0, np.array([1, 1]), 0, 6)
    assert rans.encode(np.array([1], np.uint32), 16, model) == want
    assert rans_ref.decode_payload(want, 1, 16).tolist() == [1]
    assert _decode_q(want, 1, 16).tolist() == [-1]


def test_known_answer_single_symbol_lanes_stay_at_2_16():
    # all symbols 0 with f=[M]: every lane keeps its state 2^16, so each lane is the words 0x0000 0x0001
    p = rans_ref.encode_payload(np.zeros(40, np.uint32), 16, 3, 0, 0, [8], 0)
    head = len(rans_ref.header_bytes(3, 0, 0, [8], 0))
    w0 = int.from_bytes(p[head:head + 4], "little")
    assert w0 == 64
    words = np.frombuffer(p, "<u2", offset=head + 8).reshape(-1, 2)
    assert (words[:32] == [0, 1]).all() and (words[32:] == [0, 1]).all()  # group 0: 32 lanes, group 1: 8


# ---------------------------------------------------------------- Numba vs reference

def _symbols(kind, n, rng):
    if kind == "geometric":
        return (rng.geometric(rng.uniform(0.01, 0.9), n) - 1).astype(np.uint32)
    if kind == "single":
        return np.full(n, int(rng.integers(0, (1 << 25) - 1)), np.uint32)
    if kind == "uniform25":  # every symbol is an escape (bucket token) with up to 24 raw bits
        # below 2^25 - 1: that symbol is q = -2^24, which the spec makes a reader reject (|q| < 2^24)
        return rng.integers(0, (1 << 25) - 1, n).astype(np.uint32)
    if kind == "all_escape":
        return rng.integers(5000, 9000, n).astype(np.uint32)
    if kind == "laplace":
        return _zigzag(np.rint(rng.laplace(0, rng.uniform(0.3, 3000), n)).clip(-(1 << 24) + 1, (1 << 24) - 1))
    if kind == "outliers":  # MiniLM-like: a bulk plus a few symbols at 175 std and at the 2^25 limit
        u = _zigzag(np.rint(rng.normal(0, 128, n)))
        for v in (1 << 25) - 2, 2 * 22364, 2 * 175 * 128 + 1:
            u[rng.integers(0, n)] = v
        return u
    if kind == "two":
        return rng.choice(np.array([0, 1 << 20], np.uint32), n)
    raise AssertionError(kind)


KINDS = ["geometric", "single", "uniform25", "all_escape", "laplace", "outliers", "two"]


def _random_model(u, rng):
    """A valid model other than build_model's: random split, precision, extra unused tokens, kq."""
    for _ in range(50):
        s = int(rng.integers(0, rans_ref.MAX_SPLIT + 1))
        m = int(rng.integers(0, min(s, rans_ref.MAX_MSB) + 1))
        P = int(rng.integers(1, rans_ref.MAX_PROB_BITS + 1))
        toks = np.array([rans_ref.token_of(int(v), s, m)[0] for v in np.unique(u)])
        K = min(rans_ref.k_max(s, m), int(toks.max()) + 1 + int(rng.integers(0, 5)))
        counts = np.zeros(K, np.int64)
        for v in u:
            counts[rans_ref.token_of(int(v), s, m)[0]] += 1
        extra = rng.random(K) < 0.1  # unused tokens may have a frequency too
        counts[extra & (counts == 0)] = 1
        if int((counts > 0).sum()) > 1 << P:
            continue
        q = rans.quantize_freqs(counts, P)
        return P, s, m, q, int(rng.integers(0, 16))
    return None


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2500), s=st.sampled_from([16, 32, 64]), kind=st.sampled_from(KINDS),
       seed=st.integers(0, 2**31), own_model=st.booleans())
def test_numba_matches_reference(n, s, kind, seed, own_model):
    rng = np.random.default_rng(seed)
    u = _symbols(kind, n, rng)
    if own_model:
        spec = _random_model(u, rng)
        if spec is None:
            return
        P, sp, m, q, kq = spec
        model = rans.Model(P, sp, m, q, kq, len(rans_ref.table_bits(list(q), kq)))
    else:
        model, _ = rans.build_model(u)
        P, sp, m, q, kq = model.prob_bits, model.s, model.m, model.freqs, model.kq
    payload = rans.encode(u, s, model)
    assert payload == rans_ref.encode_payload(u, s, P, sp, m, q, kq)
    assert np.array_equal(rans_ref.decode_payload(payload, n, s), u)
    assert np.array_equal(_decode_q(payload, n, s), _zigzag_inverse(u))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 200_000), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31),
       s=st.sampled_from([16, 256, 1024, 4096]))
def test_numba_round_trip_large(n, kind, seed, s):
    u = _symbols(kind, n, np.random.default_rng(seed))
    model, bits = rans.build_model(u)
    payload = rans.encode(u, s, model)
    assert np.array_equal(_decode_q(payload, n, s), _zigzag_inverse(u))
    est = rans.estimate_bits(bits, n, s)  # for rate control: each lane's flush is 16 + 0..16 bits
    lanes = 32 * (rans.n_groups(n, s) - 1) + min(32, n - (rans.n_groups(n, s) - 1) * 32 * s)
    assert abs(8 * len(payload) - est) <= 0.01 * est + 16 * lanes + 256


def test_table_cost_matches_written_table():
    rng = np.random.default_rng(5)
    for _ in range(20):
        K = int(rng.integers(1, 300))
        q = rng.integers(0, 40, K) * (rng.random(K) < 0.7)
        if q.sum() == 0:
            q[0] = 1
        bits, kq = rans.table_cost(q)
        assert bits == len(rans_ref.table_bits(list(q), kq))
        assert bits == min(len(rans_ref.table_bits(list(q), k)) for k in range(16))


def test_direct_tables_match_the_slot_table():
    """``tables`` and ``gpu_table`` (built from the frequencies in one pass) equal what the packed 2^P-slot
    ``slot_table`` gives through ``decode_tables`` and the GPU repacking, for random valid tables of every
    split, token counts up to and past 256 (tos as uint8 / uint16) and tokens with more than 16 raw bits."""
    rng = np.random.default_rng(11)
    for _ in range(60):
        s = int(rng.integers(0, rans.MAX_SPLIT + 1))
        m = int(rng.integers(0, min(s, rans.MAX_MSB) + 1))
        P = int(rng.integers(1, rans.MAX_PROB_BITS + 1))
        K = int(rng.integers(1, min(rans_ref.k_max(s, m), 1 << P, 700) + 1))
        counts = rng.geometric(rng.uniform(0.01, 0.5), K) * (rng.random(K) < rng.uniform(0.3, 1))
        counts[int(rng.integers(0, K))] += 1
        freqs = rans.quantize_freqs(counts, P)
        table = rans.slot_table(P, s, m, freqs)
        want = rans.decode_tables(table)
        got = rans.tables(P, s, m, freqs)
        assert got[0].dtype == want[0].dtype and np.array_equal(got[0], want[0])
        assert np.array_equal(got[1], want[1]) and got[2:] == want[2:]
        t = table.view(np.uint64)
        lo = t & np.uint64((1 << 29) - 1)
        hi = ((t >> np.uint64(29)) & np.uint64(31)) | ((t >> np.uint64(34)) << np.uint64(5))
        assert np.array_equal(rans.gpu_table(P, s, m, freqs), (lo | (hi << np.uint64(32))).view(np.int64))


def test_compiled_model_search_matches_reference():
    """The compiled split search (``_candidates``, ``table_cost``) gives the reference's numbers exactly:
    the same estimates (the entropy summed in numpy's order), ranking, token counts, raw bits and table
    cost, so the encoder picks the same model and writes the same bytes."""
    rng = np.random.default_rng(12)
    for _ in range(80):
        n = int(rng.choice([1, 7, 300, 4096, 70000]))
        u = np.minimum(np.abs(np.round(rng.laplace(0, rng.choice([0.3, 3.0, 100.0, 1e5, 1e8]), n))), (1 << 25) - 1)
        h = rans.fine_hist(u.astype(np.int64))
        got, want = rans._candidates(h), rans._candidates_ref(h)
        assert [(c[0], c[1], c[2], c[4]) for c in got] == [(c[0], c[1], c[2], c[4]) for c in want]
        assert all(np.array_equal(a[3], b[3]) for a, b in zip(got, want))
        for c in got[:3]:
            for P in (11, 13):
                if np.count_nonzero(c[3]) <= 1 << P:
                    q = rans.quantize_freqs(c[3], P)
                    assert rans.table_cost(q) == rans._table_cost_ref(q)
    for _ in range(200):
        q = rng.integers(0, 1 << int(rng.integers(1, 14)), int(rng.integers(1, 400))) * (rng.random() < 0.5)
        q[int(rng.integers(0, q.size))] += 1
        assert rans.table_cost(q) == rans._table_cost_ref(q)


def test_quantized_frequencies_are_valid_and_near_optimal():
    rng = np.random.default_rng(6)
    for P in (1, 4, 11, 14):
        for _ in range(10):
            K = int(rng.integers(1, min(1 << P, 500) + 1))
            counts = rng.geometric(rng.uniform(0.001, 0.5), K) * (rng.random(K) < 0.8)
            if counts.sum() == 0:
                counts[0] = 1
            q = rans.quantize_freqs(counts, P)
            assert q.sum() == 1 << P and np.all((q > 0) == (counts > 0))
            live = counts > 0
            cost = (counts[live] * (P - np.log2(q[live]))).sum()
            h = (counts[live] * -np.log2(counts[live] / counts.sum())).sum()
            assert cost <= h + counts.sum() * 0.02 + 2 * live.sum() * P


def test_partial_group_range_decode():
    rng = np.random.default_rng(2)
    n, s = 5000, 16
    u = _symbols("laplace", n, rng)
    payload = rans.encode(u, s, rans.build_model(u)[0])
    out = np.empty(min(n, 5 * 512) - 2 * 512, np.int64)
    rans.decode_into(payload, n, s, 0, 1.0, out, "Q", 2, 5)
    assert np.array_equal(out, _zigzag_inverse(u)[2 * 512:5 * 512])


def test_dequantized_modes_match_eg():
    """Same symbols, same step/center: ans and eg decode to the same floats in every mode."""
    rng = np.random.default_rng(3)
    n = 3000
    u = _symbols("laplace", n, rng)
    ks, lens = golomb.choose_orders(u, 16, 0, 24)
    eg = golomb.encode(u, 16, ks, lens)
    an = rans.encode(u, 64, rans.build_model(u)[0])
    for mode, dt in (("F32", np.float32), ("BF16", np.uint16), ("F64", np.float64)):
        a, b = np.empty(n, dt), np.empty(n, dt)
        golomb.decode_into(eg, n, 16, 7, 0.013, a, mode)
        rans.decode_into(an, n, 64, 7, 0.013, b, mode)
        assert a.tobytes() == b.tobytes()


def test_q_out_of_range_is_rejected():
    u = np.array([(1 << 25) - 2, 0, 3], np.uint32)  # d = 2^24 - 1: fine with center 0, not with 1
    payload = rans.encode(u, 16, rans.build_model(u)[0])
    assert _decode_q(payload, 3, 16)[0] == (1 << 24) - 1
    with pytest.raises(FormatError, match="2\\^24"):
        _decode_q(payload, 3, 16, center=1)
    with pytest.raises(FormatError, match="2\\^24"):
        rans_ref.decode_payload(payload, 3, 16, center=1)


# ---------------------------------------------------------------- corrupted payloads

def _both_reject(payload, n, s):
    with pytest.raises(FormatError):
        rans_ref.decode_payload(bytes(payload), n, s)
    with pytest.raises(FormatError):
        _decode_q(bytes(payload), n, s)


def _sample_payload(n=3000, s=16, seed=4, kind="laplace"):
    u = _symbols(kind, n, np.random.default_rng(seed))
    model, _ = rans.build_model(u)
    return bytearray(rans.encode(u, s, model)), model, u


def test_header_corruptions_raise_format_error():
    p, model, _ = _sample_payload()
    n, s = 3000, 16
    for off, val in ((0, 1), (1, 0), (1, 15), (2, 13), (3, min(model.s, 4) + 1), (7, 1), (6, 16)):
        q = bytearray(p)
        q[off] = val
        _both_reject(q, n, s)
    q = bytearray(p)
    q[4:6] = (0).to_bytes(2, "little")  # K = 0
    _both_reject(q, n, s)
    q = bytearray(p)
    q[8:12] = (len(p)).to_bytes(4, "little")  # table runs past the payload
    _both_reject(q, n, s)
    q = bytearray(p)
    q[8:12] = (int.from_bytes(p[8:12], "little") + 4).to_bytes(4, "little")  # B too big for its bits
    _both_reject(q, n, s)


def test_table_value_errors_raise_format_error():
    def payload_with(freqs, kq=0, P=4, s=2, m=1, K=None, raw_bits=None):
        bits = raw_bits if raw_bits is not None else rans_ref.table_bits(freqs, kq)
        tb = rans_ref._bytes_of_bits(bits)
        head = bytes([0, P, s, m]) + (K or len(freqs)).to_bytes(2, "little") + bytes([kq, 0])
        head += len(tb).to_bytes(4, "little") + tb
        head += bytes(-len(head) % 4)
        return head + (2).to_bytes(4, "little") + bytes([0, 0, 1, 0])  # one group, one lane in state 2^16

    ok = payload_with([16])
    assert rans_ref.decode_payload(ok, 1, 16).tolist() == [0]
    assert _decode_q(ok, 1, 16).tolist() == [0]
    _both_reject(payload_with([8, 4]), 1, 16)  # sums to 12, not 16
    _both_reject(payload_with([17]), 1, 16)  # over M
    _both_reject(payload_with([16], K=3), 1, 16)  # the bit string ends before K entries
    _both_reject(payload_with([16, 0, 0], raw_bits=rans_ref.table_bits([16, 0, 0, 0, 0], 0)), 1, 16)  # run > K
    _both_reject(payload_with([16], raw_bits=[0] * 17 + [1] + [0] * 17), 1, 16)  # 17 leading zeros


def test_stream_corruptions_raise_format_error():
    p, model, u = _sample_payload()
    n, s = 3000, 16
    head = model.header_size
    G = rans.n_groups(n, s)
    W = np.frombuffer(bytes(p), "<u4", G, head).copy()
    _both_reject(p[:-2], n, s)  # truncated
    _both_reject(p + b"\0\0\0\0", n, s)  # too long
    q = bytearray(p)
    q[head:head + 4] = int(W[0] - 2).to_bytes(4, "little")  # group 0 one word shorter, group 1 shifted
    q[head + 4:head + 8] = int(W[1] + 2).to_bytes(4, "little")
    _both_reject(q, n, s)
    q = bytearray(p)
    w0 = int(W[0] + W[0] % 2)
    q[head:head + 4] = (2).to_bytes(4, "little")  # too few words for 32 lane states (same total length)
    q[head + 4:head + 8] = int(W[1] + w0 - 2).to_bytes(4, "little")
    _both_reject(q, n, s)
    q = bytearray(p)
    start = head + 4 * G
    q[start + 2:start + 4] = b"\0\0"  # lane 0's initial state below 2^16
    _both_reject(q, n, s)
    rng = np.random.default_rng(9)
    rejected = 0
    for _ in range(60):  # a flipped bit: both decoders reject it, or (raw bits are stored verbatim, only
        q = bytes(_flip(p, rng, start))  # the checksum can catch that) both decode the same other values
        try:
            ref = rans_ref.decode_payload(q, n, s)
        except FormatError:
            rejected += 1
            with pytest.raises(FormatError):
                _decode_q(q, n, s)
        else:
            assert np.array_equal(_decode_q(q, n, s), _zigzag_inverse(ref))
    assert rejected >= 20


def _flip(p, rng, start):
    q = bytearray(p)
    q[int(rng.integers(start, len(p)))] ^= 1 << int(rng.integers(0, 8))
    return q


def test_hostile_group_count_is_rejected_before_allocating():
    p, _, _ = _sample_payload(n=100)
    with pytest.raises(FormatError):
        rans.parse(bytes(p), 1 << 40, 4096)  # 2^40 elements would need 268M groups of >= 8 bytes


# ---------------------------------------------------------------- through the public API

def _save_with(name, tensors, **kw):
    old = codec.DEFAULT_CODEC
    codec.DEFAULT_CODEC = name
    try:
        return bslcodec.save(tensors, **kw)
    finally:
        codec.DEFAULT_CODEC = old


@pytest.fixture
def force_codec(monkeypatch):
    def force(name):
        monkeypatch.setattr(codec, "DEFAULT_CODEC", name)
    yield force


def _f64(a):
    return np.asarray(a).astype(np.float64)


def _entry(blob, name):
    return bslcodec.files.api._Source(data=blob).entry(name)


@settings(max_examples=60, deadline=None)
@given(arr=float_arrays(), kw=st.sampled_from([{"max_error": 1e-3}, {"max_error": 0.05}, {"rel_step": 1 / 16},
                                               {"rel_step": 1 / 256}, {"rel_step": 2.0}]))
def test_ans_save_load_same_values_and_bounds_as_eg(arr, kw):
    blob_a, blob_e = _save_with("ans", {"w": arr}, **kw), _save_with("eg", {"w": arr}, **kw)
    ea, ee = _entry(blob_a, "w"), _entry(blob_e, "w")
    exact = ("raw", "zstd", "fexp")  # lossless fallbacks
    assert ea.codec in ("ans",) + exact and ee.codec in ("eg",) + exact
    back_a, back_e = bslcodec.load(blob_a)["w"], bslcodec.load(blob_e)["w"]
    for ent, back in ((ea, back_a), (ee, back_e)):
        assert back.dtype == arr.dtype and back.shape == arr.shape
        if ent.codec in exact:  # the lossy payload would not be smaller than the exact one
            assert back.tobytes() == arr.tobytes()
            continue
        err = np.abs(_f64(back) - _f64(arr))
        if "max_error" in kw:
            assert np.all(err <= kw["max_error"])
        else:
            rel, ab = ROUNDING[ent.dtype]
            assert np.all(err <= ent.params["step"] / 2 + rel * (2 * np.abs(_f64(arr)) + err) + ab)
        assert err.max(initial=0) <= ent.params["max_abs_error"] + 1e-300
    if (ea.codec, ee.codec) == ("ans", "eg"):
        assert back_a.tobytes() == back_e.tobytes()  # same symbols, same dequantization
        assert {k: v for k, v in ee.params.items() if k not in ("k", "lane_symbols")} == \
            {k: v for k, v in ea.params.items() if k != "lane_symbols"}


def test_auto_picks_the_smaller_payload(force_codec):
    rng = np.random.default_rng(0)
    t = {"lap": rng.laplace(0, 0.02, (400, 300)).astype(np.float32),
         "small": rng.normal(0, 1, (70, 30)).astype(np.float32)}
    sizes = {}
    for name in ("eg", "ans", "auto"):
        force_codec(name)
        blob = bslcodec.save(t, rel_step=1 / 32, quantizer="uniform")  # the entropy stages of plain rounding
        sizes[name] = {e.name: (e.codec, e.length) for e in bslcodec.files.api._Source(data=blob).entries.values()}
    for k in t:
        want = min(sizes["eg"][k], sizes["ans"][k], key=lambda c: c[1])
        assert sizes["auto"][k] == want
    assert sizes["auto"]["lap"][0] == "ans"  # 120k Laplace weights: ans wins by ~0.35 bits/weight


def test_ans_slices_decode_only_their_groups(tmp_path, force_codec):
    force_codec("ans")
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.02, (700, 130)).astype(ml_dtypes.bfloat16)
    path = tmp_path / "m.bsl"
    bslcodec.save_file({"w": w}, path, rel_step=1 / 64)
    full = bslcodec.load_file(path)["w"]
    with bslcodec.safe_open(path) as f:
        assert f.entry("w").codec == "ans"
        for sl in (slice(0, 1), slice(250, 520), slice(699, 700), slice(3, 600, 7)):
            assert f.get_slice("w")[sl].tobytes() == full[sl].tobytes()


def test_ans_error_messages_name_the_tensor(force_codec):
    force_codec("ans")
    w = np.random.default_rng(2).normal(0, 1, (200, 200)).astype(np.float32)
    blob = bytearray(bslcodec.save({"w": w}))
    src = bslcodec.files.api._Source(data=bytes(blob))
    e = src.entry("w")
    start = src.index.data_start + e.offset
    payload = bytearray(bytes(blob[start:start + e.length]))
    payload[0] = 9  # unknown model
    with pytest.raises(FormatError, match="tensor 'w'.*model"):
        codec.decode(e, bytes(payload), "tensor 'w'")
    bad = codec.Entry(e.name, e.dtype, e.shape, "ans", dict(e.params, lane_symbols=8192), e.offset, e.length)
    with pytest.raises(FormatError, match="lane_symbols"):
        codec.decode(bad, bytes(blob[start:start + e.length]), "tensor 'w'")


@pytest.mark.parametrize("name", ["default", "max_error", "rel_step", "bits5"])
def test_files_written_before_ans_still_decode(name):
    """The v1 golden files from before ``ans`` became the default (all lossy tensors ``eg``)."""
    import pathlib

    fix = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "v1" / "eg_before_ans"
    with bslcodec.safe_open(fix / f"{name}.bsl") as f:
        assert {e.codec for e in f.entries()} >= {"eg"} and "ans" not in {e.codec for e in f.entries()}
        dtypes = {e.name: e.dtype for e in f.entries()}
    got = bslcodec.load_file(fix / f"{name}.bsl")
    with np.load(fix / f"{name}.expected.npz", allow_pickle=False) as z:
        for k in z.files:
            v = z[k].view(ml_dtypes.bfloat16) if dtypes[k] == "BF16" else z[k]
            assert got[k].dtype == v.dtype and got[k].tobytes() == v.tobytes(), k


def test_quantize_freqs_compiled_matches_reference():
    """``quantize_freqs`` (integer part compiled, leftover slots ranked among the unforced tokens only) gives
    ``_quantize_freqs_ref``'s frequencies: random, tied and sparse counts at several precisions, and the
    same refusal when the live tokens do not fit."""
    from bslcodec.codecs import rans_model

    rng = np.random.default_rng(21)
    for t in range(1500):
        k = int(rng.integers(1, 600))
        c = rng.geometric(rng.uniform(0.001, 0.9), k) ** int(rng.integers(1, 4))
        c[rng.random(k) < rng.uniform(0, 0.8)] = 0
        if t % 3 == 0:
            c = rng.integers(0, 3, k) * int(rng.integers(1, 50))  # many ties
        if c.sum() == 0:
            c[0] = 1
        P = int(rng.choice([4, 8, 11, 12, 13, 14]))
        try:
            want = rans_model._quantize_freqs_ref(c, P)
        except ValueError:
            with pytest.raises(ValueError):
                rans_model.quantize_freqs(c, P)
            continue
        assert np.array_equal(rans_model.quantize_freqs(c, P), want)
