"""The ans / ans-dq decoder's vector usual step (``rans_vec.vrun``, issue 19) is bit-identical to the scalar
decoder: random payloads (tokens with and without raw bits, dq or not, F32 / BF16 output), whole tensors of
every float dtype through ``encode`` / ``decode``, and corrupted payloads (same values or same FormatError);
and on a target without AVX-512 (a subprocess compiling for Skylake's AVX2) it still gathers and still
matches."""

import ml_dtypes
import numpy as np
import pytest
from ans_simd import child, corrupted, needs_simd, symbols
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bslcodec
from bslcodec.codecs import rans, rans_dec, rans_vec
from bslcodec.container.errors import FormatError

pytestmark = pytest.mark.filterwarnings("ignore::bslcodec.QualityWarning")  # low bits= on purpose
DT = {"F32": np.float32, "BF16": np.uint16}


def _decode(payload, n, s, center, step, mode, dq, simd, monkeypatch):
    """The decode (or its FormatError's text) with the vector step on or off; the token table always used."""
    monkeypatch.setattr(rans_vec, "SIMD", simd)
    monkeypatch.setattr(rans_dec, "TABLE_ELEMS_PER_ENTRY", 0)
    monkeypatch.setattr(rans_dec, "VEC_GENERAL", False)  # vrun, not rans_gen's general step (tests/test_rans_gen.py)
    out = np.full(n, 7, DT[mode])
    try:
        rans.decode_into(payload, n, s, center, step, out, mode, dq=dq)
    except FormatError as exc:
        return str(exc)
    return out.tobytes()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), s=st.sampled_from([16, 64, 256]), groups=st.integers(1, 4),
       tail=st.integers(0, 100), scale=st.sampled_from([0.3, 2.0, 8.0, 40.0]),
       raw_rate=st.sampled_from([0.0, 0.0005, 0.01, 0.3]), wide=st.booleans(), dq=st.booleans(),
       center=st.integers(-100, 100))
def test_vector_step_matches_scalar(seed, s, groups, tail, scale, raw_rate, wide, dq, center, monkeypatch):
    needs_simd()
    rng = np.random.default_rng(seed)
    n = 32 * s * groups + tail
    u = symbols(rng, n, scale, raw_rate, wide)
    payload = rans.encode(u, s, rans.build_model(u)[0])
    step = float(rng.uniform(1e-4, 0.1))
    for mode in DT:
        a = _decode(payload, n, s, center, step, mode, dq, True, monkeypatch)
        b = _decode(payload, n, s, center, step, mode, dq, False, monkeypatch)
        assert a == b


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, ml_dtypes.bfloat16, np.float16]),
       bits=st.sampled_from([2, 3, 4, 6]), quantizer=st.sampled_from(["dq", "uniform"]),
       n=st.sampled_from([70_000, 140_001]))
def test_whole_tensors_decode_the_same(seed, dtype, bits, quantizer, n, monkeypatch):
    needs_simd()
    rng = np.random.default_rng(seed)
    x = (rng.laplace(0, 0.02, n) * rng.choice([1.0, 30.0], n, p=[0.999, 0.001])).astype(dtype)
    data = bslcodec.encode(x, bits=bits, expert={"quantizer": quantizer, "codec": "ans"})
    got = []
    for simd in (True, False):
        monkeypatch.setattr(rans_vec, "SIMD", simd)
        got.append(bslcodec.decode(data).tobytes())
    assert got[0] == got[1]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), dq=st.booleans(), raw_rate=st.sampled_from([0.0, 0.01]))
def test_corrupt_payloads_same_values_or_error(seed, dq, raw_rate, monkeypatch):
    """Flipped bits in the words or word counts shifted between groups: the vector step reads what the scalar
    one reads, so the same values or the same FormatError."""
    needs_simd()
    rng = np.random.default_rng(seed)
    s, n = 64, 32 * 64 * 3 + 50
    u = symbols(rng, n, 3.0, raw_rate, False)
    model = rans.build_model(u)[0]
    p = rans.encode(u, s, model)
    for q in corrupted(p, model.header_size, rans.n_groups(n, s), rng):
        for mode in DT:
            a = _decode(q, n, s, 3, 0.01, mode, dq, True, monkeypatch)
            assert a == _decode(q, n, s, 3, 0.01, mode, dq, False, monkeypatch)


def test_a_kernel_that_does_not_compile_falls_back_to_scalar(monkeypatch):
    """Where the vector code fails to compile (another numba / LLVM), the decode warns once, turns the vector
    step off and gives the scalar decoder's values."""
    import numba

    def broken(*args):
        raise numba.core.errors.LoweringError("no such intrinsic")

    rng = np.random.default_rng(3)
    s, n = 16, 32 * 16 * 3
    u = symbols(rng, n, 3.0, 0.01, False)
    payload = rans.encode(u, s, rans.build_model(u)[0])
    want = _decode(payload, n, s, 1, 0.01, "BF16", True, False, monkeypatch)
    monkeypatch.setattr(rans_dec, "VEC_GENERAL", False)
    monkeypatch.setattr(rans_dec, "_decode_groups_vec", broken)
    monkeypatch.setitem(rans_dec._SERIAL, "_decode_groups_vec", broken)
    monkeypatch.setattr(rans_vec, "SIMD", True)
    out = np.full(n, 7, np.uint16)
    with pytest.warns(RuntimeWarning, match="did not compile"):
        rans.decode_into(payload, n, s, 1, 0.01, out, "BF16", dq=True)
    assert out.tobytes() == want and rans_vec.SIMD is False


def _child(name, features):
    words = child(CHILD, name, features)
    at = words.index("target")
    return words[at + 1:at + 3], {k: int(words[words.index(k) + 1]) for k in ("gathers", "expands", "zmm")}


CHILD = r"""
import sys
import numpy as np
from bslcodec.codecs import rans, rans_dec, rans_vec
simd, expand = rans_vec.SIMD, rans_vec.EXPAND
print("target", simd, expand)
rng = np.random.default_rng(5)
rans_dec.TABLE_ELEMS_PER_ENTRY = 0
rans_dec.VEC_GENERAL = False
for s, raw, dq in ((16, 0.0, True), (64, 0.01, False), (16, 0.2, True)):
    n = 32 * s * 3 + 17
    d = np.rint(rng.laplace(0, 3, n)).astype(np.int64)
    far = rng.random(n) < raw
    d[far] = rng.integers(-3000, 3000, int(far.sum()))
    u = ((d << 1) ^ (d >> 63)).astype(np.uint32)
    p = rans.encode(u, s, rans.build_model(u)[0])
    for mode, dt in (("BF16", np.uint16), ("F32", np.float32)):
        got = []
        for on in (True, False):
            rans_vec.SIMD = on
            o = np.empty(n, dt)
            rans.decode_into(p, n, s, 2, 0.01, o, mode, dq=dq)
            got.append(o.tobytes())
        assert got[0] == got[1], (s, raw, dq, mode)
kernel = rans_dec._SERIAL["_decode_groups_vec"]  # NUMBA_NUM_THREADS=1: the serial twin ran
asm = "\n".join(kernel.inspect_asm(sig) for sig in kernel.signatures)
print("gathers", asm.count("vpgatherdd"), "expands", asm.count("vpexpandw"), "zmm", asm.count("zmm"))
"""


def test_this_target_vectorises():
    """Compiled for this machine: the vector step is vector code (hardware gathers; vpexpandw with VBMI2)."""
    needs_simd()
    (simd, expand), n = _child(None, None)
    assert simd == "True" and n["gathers"] >= 4
    assert (n["expands"] >= 1) == (expand == "True")


def test_without_avx512_same_values_and_still_gathers():
    """Compiled for Skylake (AVX2, no AVX-512): ``SIMD`` is off there by default; forced on, the vector step
    lowers to 8-wide gathers (renormalisation by prefix popcount + gather) and decodes the same bytes."""
    (simd, expand), n = _child("skylake", "+avx2,+fma,+bmi2,+popcnt,+f16c")
    assert simd == "False" and expand == "False"
    assert n["gathers"] >= 8 and n["zmm"] == 0 and n["expands"] == 0
