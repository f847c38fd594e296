"""The ``fexp`` decoder's vector steps (``codecs/fexp_vec.py``, issue 19) as a file's small tensors decode in a
batch (``batch_dec.decode_many``): bit-identical to the scalar batch kernel and to ``fexp.decode`` one by
one (and its refusals) on BF16 / F16 / F32 payloads of every ``m`` and lane length, special bit patterns,
partial steps, and corrupted payloads (the same values or the same refusal); F64 stays scalar."""

import numpy as np
import pytest
from ans_simd import needs_simd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fexp import FLOATS, bits_of, corruptions, special_bits

from bslcodec.codecs import batch_dec, fexp, rans_vec
from bslcodec.container.errors import FormatError


def _pack(payloads):
    offs, at = [], 0
    for p in payloads:
        offs.append(at)
        at += -(-len(p) // 64) * 64
    data = np.zeros(at + 64, np.uint8)
    for o, p in zip(offs, payloads):
        data[o:o + len(p)] = np.frombuffer(p, np.uint8)
    return data, offs


def _batch(payloads, n, s, isz, simd, monkeypatch):
    monkeypatch.setattr(rans_vec, "SIMD", simd)
    data, offs = _pack(payloads)
    out, o, ok = batch_dec.decode_many(data, "fexp", isz, [(a, len(p), n, s) for a, p in zip(offs, payloads)])
    return [out[o[t]:o[t + 1]].tobytes() if ok[t] else None for t in range(len(payloads))]


def _one(payload, n, s, isz):
    try:
        return fexp.decode(payload, n, isz, s).tobytes()
    except FormatError:
        return None


def _check(payloads, n, s, isz, monkeypatch):
    got = _batch(payloads, n, s, isz, True, monkeypatch)
    assert got == _batch(payloads, n, s, isz, False, monkeypatch)
    assert got == [_one(p, n, s, isz) for p in payloads]
    return got


def _values(rng, name, n):
    dt = FLOATS[name]
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return (rng.standard_normal(n) * rng.choice([0.02, 1.0, 300.0])).astype(dt)
    if kind == 1:
        return special_bits(np.dtype(dt).itemsize, rng, n).view(dt)
    x = np.full(n, 1.5, dt)  # few exponents (a single symbol is possible)
    x[::7] = -1.25
    return x


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(["BF16", "F16", "F32", "F64"]),
       n=st.sampled_from([1, 31, 32, 33, 100, 1024, 4096, 4097, 20000]), s=st.sampled_from([16, 64, 1024]),
       m=st.sampled_from([None, 0, 2, 4]))
def test_vector_steps_match_scalar(seed, name, n, s, m, monkeypatch):
    needs_simd()
    rng = np.random.default_rng(seed)
    xs = [_values(rng, name, n) for _ in range(3)]
    payloads = [fexp.encode(x, s, m)[1].tobytes() if m is not None else fexp.encode(x, s)[1].tobytes() for x in xs]
    got = _check(payloads, n, s, xs[0].dtype.itemsize, monkeypatch)
    for g, x in zip(got, xs):
        assert g == bits_of(x).tobytes()


def test_corrupt_payloads_same_values_or_refused(monkeypatch):
    """``test_fexp``'s corruptions (header, code lengths, lane table, flipped bits, sizes) of payloads of
    each float width: the vector kernel gives what the scalar one and ``fexp.decode`` give."""
    needs_simd()
    rng = np.random.default_rng(11)
    for name, n, s in (("BF16", 4096, 1024), ("BF16", 33, 16), ("F16", 4099, 128), ("F32", 1541, 16),
                       ("F32", 4096, 1024), ("BF16", 2 * 32 * 32 - 1, 32)):
        for _ in range(3):
            x = _values(rng, name, n)
            _, p = fexp.encode(x, s)
            bad, flips = corruptions(p.tobytes(), n, x.dtype.itemsize, s, rng)
            got = _check([q.tobytes() for q in bad + flips], n, s, x.dtype.itemsize, monkeypatch)
            assert got[:len(bad)] == [None] * len(bad)


def test_stream_bits_past_the_payload_do_not_matter(monkeypatch):
    """The payloads of a file lie side by side: a tensor's decode is the same whatever follows it."""
    needs_simd()
    rng = np.random.default_rng(4)
    x = _values(rng, "BF16", 4096)
    p = fexp.encode(x, 1024)[1].tobytes()
    monkeypatch.setattr(rans_vec, "SIMD", True)
    for fill in (0, 0xFF, 0x55):
        data = np.full(-(-len(p) // 64) * 64 + 4096, fill, np.uint8)
        data[:len(p)] = np.frombuffer(p, np.uint8)
        out, _, ok = batch_dec.decode_many(data, "fexp", 2, [(0, len(p), 4096, 1024)])
        assert ok[0] and out.tobytes() == bits_of(x).tobytes()


def test_a_kernel_that_does_not_compile_falls_back_to_scalar(monkeypatch):
    import numba

    def broken(*args):
        raise numba.core.errors.LoweringError("no such intrinsic")

    rng = np.random.default_rng(3)
    x = _values(rng, "BF16", 3000)
    p = fexp.encode(x, 64)[1].tobytes()
    monkeypatch.setattr(batch_dec, "_fexp_many_vec", broken)
    monkeypatch.setattr(rans_vec, "SIMD", True)
    data, _ = _pack([p])
    with pytest.warns(RuntimeWarning, match="did not compile"):
        out, _, ok = batch_dec.decode_many(data, "fexp", 2, [(0, len(p), 3000, 64)])
    assert ok[0] and out.tobytes() == bits_of(x).tobytes() and rans_vec.SIMD is False


# ---------------------------------------------------------------- a whole tensor's groups (decode_into)

def _whole(payload, n, s, isz, vector, monkeypatch, threads=None):
    """``fexp.decode`` with the whole-tensor vector kernel (``fexp_vec.decode_groups``) on or off."""
    import numba

    from bslcodec.codecs import fexp_dec

    monkeypatch.setattr(fexp_dec, "VECTOR", vector)
    monkeypatch.setattr(rans_vec, "SIMD", vector)
    before = numba.get_num_threads()
    if threads:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        return _one(payload, n, s, isz)
    finally:
        numba.set_num_threads(before)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(["BF16", "F16", "F32", "F64"]),
       n=st.sampled_from([1, 33, 4097, 40000, 70001]), s=st.sampled_from([16, 64, 1024]),
       m=st.sampled_from([None, 0, 2, 4]), threads=st.sampled_from([1, 2]))
def test_whole_tensor_vector_kernel_matches_scalar(seed, name, n, s, m, threads, monkeypatch):
    """Large tensors (parallel or serial twin) and small ones, every float width (F64 stays scalar): the
    vector kernel's output is the scalar kernel's and the input's bits."""
    needs_simd()
    rng = np.random.default_rng(seed)
    x = _values(rng, name, n)
    p = (fexp.encode(x, s, m) if m is not None else fexp.encode(x, s))[1].tobytes()
    isz = x.dtype.itemsize
    got = _whole(p, n, s, isz, True, monkeypatch, threads)
    assert got == _whole(p, n, s, isz, False, monkeypatch, threads) == bits_of(x).tobytes()


def test_whole_tensor_corruptions_same_values_or_refused(monkeypatch):
    """``test_fexp``'s corruptions of tensors big enough for the parallel kernel: the vector kernel gives
    the scalar one's values or refusal."""
    needs_simd()
    rng = np.random.default_rng(12)
    for name, n, s in (("BF16", 40000, 1024), ("F32", 33000, 64), ("F16", 50001, 128)):
        x = _values(rng, name, n)
        _, p = fexp.encode(x, s)
        bad, flips = corruptions(p.tobytes(), n, x.dtype.itemsize, s, rng)
        for q in bad + flips:
            q = q.tobytes()
            assert _whole(q, n, s, x.dtype.itemsize, True, monkeypatch) == \
                _whole(q, n, s, x.dtype.itemsize, False, monkeypatch)
        assert all(_whole(q.tobytes(), n, s, x.dtype.itemsize, True, monkeypatch) is None for q in bad)


def test_whole_tensor_slices_and_limits(monkeypatch):
    """A slice of groups runs the scalar kernel (the vector one decodes whole tensors); ``usable_whole``
    refuses 8-byte floats and streams or rest-bit offsets past int32."""
    from bslcodec.codecs import fexp_vec

    rng = np.random.default_rng(5)
    x = _values(rng, "BF16", 70000)
    _, p = fexp.encode(x, 64)
    bits = bits_of(x)
    monkeypatch.setattr(rans_vec, "SIMD", True)
    out = np.empty(32 * 64 * 3, np.uint16)
    fexp.decode_into(p, x.size, 2, 64, out, 5, 8)
    assert np.array_equal(out, bits[5 * 32 * 64:8 * 32 * 64])
    small = np.zeros(8, np.uint64)
    assert fexp_vec.usable_whole(small, 2, 1000, 6) and fexp_vec.usable_whole(small, 4, 1000, 22)
    assert not fexp_vec.usable_whole(small, 8, 1000, 54)
    assert not fexp_vec.usable_whole(small, 4, 1 << 27, 22)  # 22 x 2^27 rest bits >= 2^31
    assert not fexp_vec.usable_whole(np.broadcast_to(np.uint64(0), (1 << 25,)), 2, 1000, 6)  # no memory


def test_whole_tensor_kernel_that_does_not_compile_falls_back(monkeypatch):
    import numba

    from bslcodec.codecs import fexp_dec, fexp_vec

    def broken(*args):
        raise numba.core.errors.LoweringError("no such intrinsic")

    rng = np.random.default_rng(3)
    x = _values(rng, "BF16", 40000)
    _, p = fexp.encode(x, 1024)
    monkeypatch.setattr(fexp_vec, "decode_groups", broken)
    monkeypatch.setattr(fexp_vec, "decode_groups_serial", broken)
    monkeypatch.setattr(fexp_dec, "VECTOR", True)
    monkeypatch.setattr(rans_vec, "SIMD", True)
    with pytest.warns(RuntimeWarning, match="did not compile"):
        got = fexp.decode(p.tobytes(), x.size, 2, 1024)
    assert got.tobytes() == bits_of(x).tobytes() and rans_vec.SIMD is False
