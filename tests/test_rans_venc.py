"""The ans encoder's vector step (``rans_venc.venc_run``, issue 18) writes the scalar encoder's bytes: random
symbol streams (uint16 / uint32, tokens with and without raw bits, escapes past the 2^12-symbol token table,
every prob_bits, partial groups and tails), whole tensors of every float dtype (dq or not) through
``encode`` / ``decode``; its float32 quotient is exact (the bound, on every frequency); a kernel that does
not compile falls back to the scalar one; and on targets without VBMI2 (AVX-512 F+BW only) or without
AVX-512 (Skylake's AVX2, forced on) it still writes the same bytes."""

import ml_dtypes
import numpy as np
import pytest
from ans_simd import child, needs_simd, symbols
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bslcodec
from bslcodec.codecs import rans, rans_enc, rans_vec, rans_venc

pytestmark = pytest.mark.filterwarnings("ignore::bslcodec.QualityWarning")  # low bits= on purpose


def _encode(u, s, model, simd, monkeypatch):
    monkeypatch.setattr(rans_vec, "SIMD", simd)
    return rans.encode(u, s, model)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), s=st.sampled_from([1, 16, 64, 256]), groups=st.integers(0, 4),
       tail=st.integers(0, 100), scale=st.sampled_from([0.3, 2.0, 8.0, 40.0, 600.0]),
       raw_rate=st.sampled_from([0.0, 0.0005, 0.01, 0.3]), wide=st.booleans(), u16=st.booleans(),
       prob_bits=st.sampled_from([(10,), (11,), (12,), (13,), (14,), (11, 12, 13)]))
def test_vector_step_writes_the_scalar_bytes(seed, s, groups, tail, scale, raw_rate, wide, u16, prob_bits,
                                             monkeypatch):
    needs_simd()
    rng = np.random.default_rng(seed)
    n = 32 * s * groups + tail
    if n == 0:
        return
    u = symbols(rng, n, scale, raw_rate, wide)
    if u16 and u.max() < 1 << 16:
        u = u.astype(np.uint16)
    model = rans.build_model(u, prob_bits_choices=prob_bits)[0]
    a = _encode(u, s, model, True, monkeypatch)
    assert a == _encode(u, s, model, False, monkeypatch)
    back = np.empty(n, np.int64)
    rans.decode_into(a, n, s, 0, 1.0, back, "Q")
    assert np.array_equal((back << 1) ^ (back >> 63), u.astype(np.int64))


def test_one_token_table_and_escapes(monkeypatch):
    """A one-token table (f = 2^P: f << (32 - P) is 2^32) and symbols past the token table in full steps."""
    needs_simd()
    for u in (np.zeros(32 * 64 * 2 + 5, np.uint16), np.full(32 * 64, 5000, np.uint32)):
        model = rans.build_model(u)[0]
        assert _encode(u, 64, model, True, monkeypatch) == _encode(u, 64, model, False, monkeypatch)
    rng = np.random.default_rng(9)
    u = symbols(rng, 32 * 256 * 3, 3.0, 0.0, False)
    u[rng.integers(0, u.size, 40)] = rng.integers(4096, 6000, 40)  # escapes in scattered steps
    model = rans.build_model(u)[0]
    assert _encode(u, 256, model, True, monkeypatch) == _encode(u, 256, model, False, monkeypatch)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, ml_dtypes.bfloat16, np.float16]),
       bits=st.sampled_from([2, 3, 4, 6]), quantizer=st.sampled_from(["dq", "uniform"]),
       n=st.sampled_from([70_000, 140_001]))
def test_whole_tensors_encode_the_same(seed, dtype, bits, quantizer, n, monkeypatch):
    needs_simd()
    rng = np.random.default_rng(seed)
    x = (rng.laplace(0, 0.02, n) * rng.choice([1.0, 30.0], n, p=[0.999, 0.001])).astype(dtype)
    got = []
    for simd in (True, False):
        monkeypatch.setattr(rans_vec, "SIMD", simd)
        got.append(bslcodec.encode(x, bits=bits, expert={"quantizer": quantizer, "codec": "ans"}))
    assert got[0] == got[1]
    assert bslcodec.decode(got[0]).shape == x.shape


@pytest.mark.parametrize("P", [11, 12, 13, 14])
def test_float32_quotient_is_within_one(P):
    """``venc_run``'s quotient estimate is floor(x / f) - 1, + 0 or + 1 for every f of a 2^P table and the
    states it divides (x < f * 2^(32 - P)): at the top of the range, around multiples of f, and at random."""
    f = np.arange(1, (1 << P) + 1, dtype=np.int64)
    top = f << (32 - P)
    rng = np.random.default_rng(P)
    cols = [top - 1, top - f, top - f - 1, (top // 2 // f) * f, (top // 2 // f) * f - 1, f, f - 1,
            (top * 2 // 3 // f) * f + f - 1]
    cols += [(rng.random(f.size) * top).astype(np.int64) for _ in range(24)]
    cols += [(rng.integers(0, 1 << (32 - P), f.size) * f + k) for k in (0, 1)]
    for x in cols:
        x = np.clip(x, 0, top - 1)
        d = rans_venc.quotient_estimate(x, f) - x // f
        assert np.abs(d).max() <= 1, P


def test_a_kernel_that_does_not_compile_falls_back_to_scalar(monkeypatch):
    """Where the vector code fails to compile, the encode warns once, turns the vector steps off and writes
    the scalar encoder's bytes."""
    import numba

    def broken(*args):
        raise numba.core.errors.LoweringError("no such intrinsic")

    rng = np.random.default_rng(3)
    u = symbols(rng, 32 * 64 * 3 + 7, 3.0, 0.01, False)
    model = rans.build_model(u)[0]
    want = _encode(u, 64, model, False, monkeypatch)
    monkeypatch.setattr(rans_enc, "_encode_groups_vec", broken)
    monkeypatch.setitem(rans_enc._SERIAL, "_encode_groups_vec", broken)
    monkeypatch.setattr(rans_vec, "SIMD", True)
    with pytest.warns(RuntimeWarning, match="did not compile"):
        got = rans.encode(u, 64, model)
    assert got == want and rans_vec.SIMD is False


def _child(name, features):
    words = child(CHILD, name, features)
    at = words.index("target")
    return words[at + 1:at + 3], {k: int(words[words.index(k) + 1]) for k in ("compressw", "compressd", "zmm")}


CHILD = r"""
import numpy as np
from bslcodec.codecs import rans, rans_enc, rans_vec
print("target", rans_vec.SIMD, rans_vec.EXPAND)
rng = np.random.default_rng(5)
for s, raw, P, u16 in ((16, 0.0, 13, True), (64, 0.01, 11, False), (16, 0.2, 12, True), (64, 0.001, 14, False)):
    n = 32 * s * 3 + 17
    d = np.rint(rng.laplace(0, 3, n)).astype(np.int64)
    far = rng.random(n) < raw
    d[far] = rng.integers(-3000, 3000, int(far.sum()))
    u = ((d << 1) ^ (d >> 63)).astype(np.uint16 if u16 else np.uint32)
    model = rans.build_model(u, prob_bits_choices=(P,))[0]
    got = []
    for on in (True, False):
        rans_vec.SIMD = on
        got.append(rans.encode(u, s, model))
    assert got[0] == got[1], (s, raw, P)
kernel = rans_enc._SERIAL["_encode_groups_vec"]  # NUMBA_NUM_THREADS=1: the serial twin ran
asm = "\n".join(kernel.inspect_asm(sig) for sig in kernel.signatures)
print("compressw", asm.count("vpcompressw"), "compressd", asm.count("vpcompressd"), "zmm", asm.count("zmm"))
"""


def test_this_target_compresses():
    """Compiled for this machine: the words stored by vpcompressw (VBMI2) or vpcompressd."""
    needs_simd()
    (simd, expand), n = _child(None, None)
    assert simd == "True" and (n["compressw"] >= 2 if expand == "True" else n["compressd"] >= 2)


def test_avx512_without_vbmi2_same_bytes():
    """Compiled for Skylake-AVX512 (F, BW, no VBMI2): the vector step is on, its words go by vpcompressd."""
    needs_simd()  # runs the AVX-512 code it compiles
    (simd, expand), n = _child("skylake-avx512", "+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd,+avx2,+avx,"
                                                 "+fma,+bmi2,+popcnt,+f16c")
    assert simd == "True" and expand == "False" and n["compressw"] == 0 and n["compressd"] >= 2


def test_without_avx512_same_bytes():
    """Compiled for Skylake (AVX2, no AVX-512): ``SIMD`` is off there by default; forced on, the vector step
    still writes the scalar bytes."""
    (simd, expand), n = _child("skylake", "+avx2,+fma,+bmi2,+popcnt,+f16c")
    assert simd == "False" and expand == "False" and n["zmm"] == 0
