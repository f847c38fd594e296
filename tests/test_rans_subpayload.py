"""``rans.subpayload``: groups [g0, g1) of an ``ans`` / ``ans-dq`` payload cut out as a valid payload of
their own (what ``bslcodec.torch.tp`` hands the GPU decoder). Decoding it gives exactly that slice of the
full decode, for every boundary case; a corrupt header or group table raises FormatError, never a crash or
a read outside the payload."""

import numpy as np
import pytest

from bslcodec.codecs import rans
from bslcodec.container.errors import FormatError
from bslcodec.container.format import Entry
from bslcodec.pipeline import codec

S = 16
UNIT = 32 * S  # elements per group


def _symbols(n, rng, wide=False):
    q = np.round(rng.laplace(0, 2e5 if wide else 6, n)).clip(-(2 ** 22), 2 ** 22).astype(np.int64)
    return np.where(q >= 0, 2 * q, -2 * q - 1).astype(np.uint32)


def _payload(n, seed, wide=False):
    u = _symbols(n, np.random.default_rng(seed), wide)
    model, _ = rans.build_model(u)
    return rans.encode(u, S, model)


def _entry(codec_name, dtype, n, center=3, step=0.0625):
    return Entry("x", dtype, (n,), codec_name, {"step": step, "center": center, "lane_symbols": S})


def _word_counts(payload, n):
    return rans.parse(payload, n, S)[4]


# partial last group, exact multiple, a single partial group, one element, wide tokens (phase 3)
SIZES = [(5 * UNIT + 77, False), (3 * UNIT, False), (UNIT - 1, False), (1, False), (4 * UNIT + 33, True)]


@pytest.mark.parametrize("n, wide", SIZES)
@pytest.mark.parametrize("codec_name", ["ans", "ans-dq"])
@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16"])
def test_subpayload_decodes_to_the_slice(n, wide, codec_name, dtype):
    payload = _payload(n, n, wide)
    e = _entry(codec_name, dtype, n)
    full = codec.decode_flat(e, payload, "full")
    G = rans.n_groups(n, S)
    parsed = rans.parse(payload, n, S)
    for g0 in range(G + 1):
        for g1 in range(g0, G + 1):
            sub, m = rans.subpayload(payload, n, S, g0, g1)
            assert m == min(n, g1 * UNIT) - g0 * UNIT
            assert sub.size <= len(payload)
            got = codec.decode_flat(_entry(codec_name, dtype, m), sub, "sub")
            np.testing.assert_array_equal(got.view(np.uint8), full[g0 * UNIT:g0 * UNIT + m].view(np.uint8))
            sub2, m2 = rans.subpayload(payload, n, S, g0, g1, parsed=parsed)
            assert m2 == m and np.array_equal(sub2, sub)
    whole, m = rans.subpayload(payload, n, S, 0, G)
    assert m == n and whole.tobytes() == bytes(payload)  # all groups: the payload itself


def test_odd_word_counts_are_covered():
    """The padding word after a group with an odd W[g] travels with its group."""
    n = 5 * UNIT + 77
    W = _word_counts(_payload(n, n), n)
    assert (W % 2 == 1).any() and (W % 2 == 0).any()


def test_group_range_is_checked():
    n = 3 * UNIT
    p = _payload(n, 1)
    for g0, g1 in ((-1, 1), (2, 1), (0, 4), (3, 4)):
        with pytest.raises(ValueError):
            rans.subpayload(p, n, S, g0, g1)


def test_corrupt_tables_raise():
    n = 5 * UNIT + 77
    p = bytes(_payload(n, 7))
    b = int(np.frombuffer(p, "<u4", 1, 8)[0])
    h = (12 + b + 3) // 4 * 4
    G = rans.n_groups(n, S)
    bad = {"truncated": p[:-2], "extended": p + b"\0\0\0\0", "model": b"\1" + p[1:],
           "reserved": p[:7] + b"\1" + p[8:], "table length": p[:8] + np.uint32(b + 4).tobytes() + p[12:],
           "huge count": p[:h] + np.uint32(0xFFFFFFFF).tobytes() + p[h + 4:],
           "too many elements": None}
    for q in bad.values():
        with pytest.raises(FormatError):
            if q is None:
                rans.subpayload(p, n + 64 * UNIT, S, 0, 1)
            else:
                rans.subpayload(q, n, S, 0, G)
    other = rans.parse(_payload(3 * UNIT, 8), 3 * UNIT, S)  # another payload's tables
    with pytest.raises(FormatError):
        rans.subpayload(p, n, S, 0, 1, parsed=other)


def test_shifted_word_counts_are_rejected_when_decoded():
    """Two words moved from group 3's count to group 1's: the sizes still add up (so the cut succeeds), but
    every sub-payload holding group 1 fails the decoder's end check (it ends 2 words before its count)."""
    n = 5 * UNIT + 77
    p = bytearray(_payload(n, 9))
    b = int(np.frombuffer(bytes(p), "<u4", 1, 8)[0])
    h = (12 + b + 3) // 4 * 4
    W = np.frombuffer(bytes(p), "<u4", 6, h).copy()
    W[1] += 2
    W[3] -= 2
    p[h:h + 24] = W.astype("<u4").tobytes()
    for dq_ in ("ans", "ans-dq"):
        for g0, g1 in ((1, 2), (0, 2), (1, 3), (0, 6)):
            sub, m = rans.subpayload(bytes(p), n, S, g0, g1)
            with pytest.raises(FormatError):
                codec.decode_flat(_entry(dq_, "F32", m), sub, "sub")


def test_fuzzed_tables_never_crash():
    """Random bytes of the header and group table flipped: a cut raises FormatError or gives a payload that
    decodes or raises FormatError, with the same result as decoding those groups of the damaged payload."""
    n = 4 * UNIT + 100
    good = bytes(_payload(n, 11))
    b = int(np.frombuffer(good, "<u4", 1, 8)[0])
    area = (12 + b + 3) // 4 * 4 + 4 * rans.n_groups(n, S)
    rng = np.random.default_rng(12)
    cut = 0
    for _ in range(200):
        p = bytearray(good)
        for _ in range(int(rng.integers(1, 3))):
            p[int(rng.integers(0, area))] ^= 1 << int(rng.integers(0, 8))
        g0 = int(rng.integers(0, 5))
        g1 = int(rng.integers(g0, 6))
        try:
            sub, m = rans.subpayload(bytes(p), n, S, g0, min(g1, 5))
        except FormatError:
            continue
        cut += 1
        e = _entry("ans", "F32", n)
        try:
            want = codec.decode_flat(e, bytes(p), "full", g0 * UNIT, g0 * UNIT + m)
        except FormatError:
            want = None
        try:
            got = codec.decode_flat(_entry("ans", "F32", m), sub, "sub")
        except FormatError:
            got = None
        assert (got is None) == (want is None)
        if want is not None:
            assert np.array_equal(got, want)
    assert cut > 0
