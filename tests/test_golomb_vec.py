"""The ``eg`` decoder's vector steps (``codecs/golomb_vec.py``, issue 19): bit-identical to the scalar kernel
(``golomb._decode_group``) on F32 and BF16 outputs of every order and lane length, partial groups, group ranges
(slices), symbols up to the longest code word, one and two threads; corrupted payloads give the same values or
the same error, word for word (the long zero runs that the run leaves to the scalar step included)."""

import numba
import numpy as np
import pytest
from ans_simd import needs_simd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bslcodec.codecs import golomb, golomb_vec, rans_vec
from bslcodec.container.errors import FormatError

OUT = {"F32": np.float32, "BF16": np.uint16}


def _payload(rng, n, s, p, big=False):
    u = (rng.geometric(p, size=n) - 1).clip(0, (1 << 25) - 1).astype(np.uint32)
    if big:  # the longest code words (51 bits at order 0) and levels at the 2^24 limit
        u[rng.integers(0, n, 3)] = (1 << 25) - 1
        u[rng.integers(0, n)] = (1 << 24) - 2
    ks, lens = golomb.choose_orders(u, s, 0, 24)
    return golomb.encode(u, s, ks, lens)


def _decode(payload, n, s, center, step, mode, vector, monkeypatch, g0=0, g1=None, threads=None):
    """Output bytes, or the FormatError's text."""
    monkeypatch.setattr(golomb, "VECTOR", vector)
    monkeypatch.setattr(rans_vec, "SIMD", vector)
    groups = -(-n // (32 * s))
    g1 = groups if g1 is None else g1
    out = np.full(max(0, min(n, g1 * 32 * s) - g0 * 32 * s), 7, OUT[mode])
    before = numba.get_num_threads()
    if threads:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        golomb.decode_into(payload, n, s, center, step, out, mode, g0, g1)
        return out.tobytes()
    except FormatError as exc:
        return str(exc)
    finally:
        numba.set_num_threads(before)


def _same(payload, n, s, center, step, mode, monkeypatch, **kw):
    got = _decode(payload, n, s, center, step, mode, True, monkeypatch, **kw)
    assert got == _decode(payload, n, s, center, step, mode, False, monkeypatch, **kw)
    return got


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([1, 33, 1000, 5000, 40000, 70001]),
       s=st.sampled_from([16, 64, 1024]), p=st.floats(0.001, 0.9), big=st.booleans(),
       center=st.sampled_from([0, 5, -3]), step=st.sampled_from([0.013, 3.0, 2.0**-20]),
       mode=st.sampled_from(["F32", "BF16"]), threads=st.sampled_from([1, 2]))
def test_vector_steps_match_scalar(seed, n, s, p, big, center, step, mode, threads, monkeypatch):
    needs_simd()
    rng = np.random.default_rng(seed)
    payload = _payload(rng, n, s, p, big)
    got = _same(payload, n, s, center, step, mode, monkeypatch, threads=threads)
    if not big:
        assert isinstance(got, bytes)
        q = np.empty(n, np.int64)
        golomb.decode_into(payload, n, s, center, 1.0, q, "Q")
        want = np.float32(q) * np.float32(step)  # store_dequant: binary32 q times the binary32 step
        if mode == "BF16":
            b = want.view(np.uint32)
            want = ((b + np.uint32(0x7FFF) + ((b >> 16) & 1)) >> 16).astype(np.uint16)
        assert got == want.tobytes()


def test_group_ranges_match_scalar(monkeypatch):
    """A slice of groups (``get_slice``, tensor-parallel shards on the CPU) writes from its first group on."""
    needs_simd()
    rng = np.random.default_rng(5)
    n, s = 70001, 64
    payload = _payload(rng, n, s, 0.05)
    groups = -(-n // (32 * s))
    for g0, g1 in ((0, 1), (3, 7), (groups - 2, groups), (5, 5)):
        _same(payload, n, s, 1, 0.5, "BF16", monkeypatch, g0=g0, g1=g1)
        _same(payload, n, s, 1, 0.5, "F32", monkeypatch, g0=g0, g1=g1)


def test_corruptions_same_values_or_same_error(monkeypatch):
    """Flipped bits, zero runs longer than any code word (the run stops, the scalar step finds them), lane
    lengths moved, levels past 2^24, truncation: the vector kernel gives the scalar one's values or its error."""
    needs_simd()
    rng = np.random.default_rng(11)
    for n, s in ((40000, 64), (33000, 1024), (5000, 16)):
        payload = _payload(rng, n, s, 0.1)
        groups = -(-n // (32 * s))
        head = golomb.table_bytes(groups)
        cases = [payload[:-8], payload + bytes(8)]
        for _ in range(12):
            b = bytearray(payload)
            b[int(rng.integers(head, len(b)))] ^= 1 << int(rng.integers(0, 8))
            cases.append(bytes(b))
        for at in (head, head + (len(payload) - head) // 2, len(payload) - 24):
            b = bytearray(payload)
            b[at:at + 16] = bytes(16)  # 128 zero bits: longer than any code word
            cases.append(bytes(b))
        b = bytearray(payload)
        b[0] ^= 1  # lane 0 one bit longer, lane 1 one shorter: the group's total unchanged
        b[2] ^= 1
        cases.append(bytes(b))
        refused = 0
        for c in cases:
            got = _same(c, n, s, 0, 0.25, "BF16", monkeypatch)
            _same(c, n, s, 2, 0.25, "F32", monkeypatch)
            refused += isinstance(got, str)
        assert refused >= 5


def test_levels_out_of_range_are_refused(monkeypatch):
    needs_simd()
    u = np.zeros(40000, np.uint32)
    u[12345] = (1 << 25) - 1  # level -2^24: out of range for F32/BF16
    ks, lens = golomb.choose_orders(u, 64, 0, 24)
    payload = golomb.encode(u, 64, ks, lens)
    got = _same(payload, u.size, 64, 0, 1.0, "F32", monkeypatch)
    assert "2^24" in got


def test_usable_limit():
    assert golomb_vec.usable(np.zeros(8, np.uint64))
    assert not golomb_vec.usable(np.broadcast_to(np.uint64(0), (1 << 24,)))  # no memory


def test_a_kernel_that_does_not_compile_falls_back(monkeypatch):
    def broken(*args):
        raise numba.core.errors.LoweringError("no such intrinsic")

    rng = np.random.default_rng(3)
    n, s = 40000, 64
    payload = _payload(rng, n, s, 0.1)
    want = _decode(payload, n, s, 0, 0.5, "BF16", False, monkeypatch)
    monkeypatch.setattr(golomb_vec, "decode_groups", broken)
    monkeypatch.setattr(golomb_vec, "decode_groups_serial", broken)
    monkeypatch.setattr(golomb, "VECTOR", True)
    monkeypatch.setattr(rans_vec, "SIMD", True)
    out = np.empty(n, np.uint16)
    with pytest.warns(RuntimeWarning, match="did not compile"):
        golomb.decode_into(payload, n, s, 0, 0.5, out, "BF16")
    assert out.tobytes() == want and rans_vec.SIMD is False
