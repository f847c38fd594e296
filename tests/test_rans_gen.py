"""The ans / ans-dq decoder's vector general step (``rans_vec.vgrun``, ``codecs/rans_gen.py``; issue 19), as a
file's small tensors decode in a batch (``batch_dec.decode_many``): bit-identical to the scalar batch kernel
and to ``rans.decode_into`` one by one, on random payloads (tokens with raw bits, some above 16 bits, dq or
not, F32 / BF16, centers near the 2^24 limit), on corrupted payloads (same values or the same refusal), and
in whole files with a damaged tensor (the same BslError as one by one)."""

import numpy as np
import pytest
from ans_simd import child, corrupted, needs_simd, symbols
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bslcodec
from bslcodec.codecs import batch_dec, rans, rans_dec, rans_vec
from bslcodec.container.errors import FormatError

DT = {"F32": np.float32, "BF16": np.uint16}


def _pack(payloads):
    """(data, offsets): payloads at 64-byte aligned offsets of one uint8 buffer, as in a file."""
    offs, at = [], 0
    for p in payloads:
        offs.append(at)
        at += -(-len(p) // 64) * 64
    data = np.zeros(at + 64, np.uint8)
    for o, p in zip(offs, payloads):
        data[o:o + len(p)] = np.frombuffer(p, np.uint8)
    return data, offs


def _batch(data, items, mode, simd, monkeypatch):
    monkeypatch.setattr(rans_vec, "SIMD", simd)
    out, offs, ok = batch_dec.decode_many(data, "ans", mode, items)
    return [out[offs[t]:offs[t + 1]].tobytes() if ok[t] else None for t in range(len(items))]


def _one(payload, n, s, center, step, mode, dq, monkeypatch):
    monkeypatch.setattr(rans_vec, "SIMD", False)
    out = np.empty(n, DT[mode])
    try:
        rans.decode_into(payload, n, s, center, step, out, mode, dq=dq)
    except FormatError:
        return None
    return out.tobytes()


def _tensors(rng, count):
    """(payload, n, S, center, step, dq) of ``count`` random small tensors."""
    out = []
    for _ in range(count):
        s = int(rng.choice([1, 16, 64, 1024]))
        n = int(rng.integers(1, 5000))
        u = symbols(rng, n, float(rng.choice([0.3, 3.0, 40.0, 400.0])), float(rng.choice([0.0, 0.01, 0.3])),
                    bool(rng.random() < 0.15))
        center = int(rng.choice([0, int(rng.integers(-100, 100)), (1 << 24) - 2000, -(1 << 24) + 5]))
        out.append((rans.encode(u, s, rans.build_model(u)[0]), n, s, center, float(rng.uniform(1e-5, 0.1)),
                    bool(rng.random() < 0.6)))
    return out


def _check(tensors, mode, monkeypatch):
    data, offs = _pack([t[0] for t in tensors])
    items = [(o, len(t[0]), t[1], t[2], t[3], t[4], t[5]) for o, t in zip(offs, tensors)]
    vec = _batch(data, items, mode, True, monkeypatch)
    assert vec == _batch(data, items, mode, False, monkeypatch)
    assert vec == [_one(*t, mode=m, dq=dq, monkeypatch=monkeypatch) for t, m, dq in
                   ((t[:5], mode, t[5]) for t in tensors)]
    return vec


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_vector_general_step_matches_scalar(seed, monkeypatch):
    needs_simd()
    rng = np.random.default_rng(seed)
    tensors = _tensors(rng, 12)
    for mode in DT:
        got = _check(tensors, mode, monkeypatch)
        assert all(g is not None for g, t in zip(got, tensors) if abs(t[3]) < 1 << 23)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_corrupt_payloads_same_values_or_refused(seed, monkeypatch):
    """Flipped bits anywhere (header, table, word counts, states, words), word counts moved between groups,
    truncated or lengthened payloads: the vector kernel gives what the scalar one gives, value or refusal."""
    needs_simd()
    rng = np.random.default_rng(seed)
    tensors = []
    for p, n, s, center, step, dq in _tensors(rng, 10):
        q = bytearray(p)
        kind = int(rng.integers(0, 4))
        if kind == 0:  # words
            for _ in range(int(rng.integers(1, 4))):
                q[int(rng.integers(len(q) // 2, len(q)))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # anywhere
            q[int(rng.integers(0, len(q)))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2 and rans.n_groups(n, s) > 1:  # word counts: one group's words given to the next
            H = 12 + int.from_bytes(q[8:12], "little")
            at = H + (-H % 4) + 4 * int(rng.integers(0, rans.n_groups(n, s) - 1))
            dw = 2 * int(rng.integers(-40, 40))
            w0, w1 = (int.from_bytes(q[a:a + 4], "little") for a in (at, at + 4))
            q[at:at + 4] = ((w0 - dw) % 2**32).to_bytes(4, "little")
            q[at + 4:at + 8] = ((w1 + dw) % 2**32).to_bytes(4, "little")
        else:  # length
            q = q[:-2] if rng.random() < 0.5 else q + bytes(2)
        tensors.append((bytes(q), n, s, center, step, dq))
    for mode in DT:
        _check(tensors, mode, monkeypatch)


def test_states_run_to_the_group_end(monkeypatch):
    """Payloads whose last steps run scalar (the vector steps stop 65 words before a group's end) and
    payloads decoded by the vector step to their end give the same values as one by one."""
    needs_simd()
    rng = np.random.default_rng(1)
    tensors = []
    for n in (31, 32, 33, 64, 95, 4096, 4097, 32 * 1024 - 1):
        for scale in (0.3, 3.0, 300.0):
            u = symbols(rng, n, scale, 0.01, False)
            tensors.append((rans.encode(u, 1024, rans.build_model(u)[0]), n, 1024, 3, 0.01, True))
    for mode in DT:
        assert None not in _check(tensors, mode, monkeypatch)


def test_a_kernel_that_does_not_compile_falls_back_to_scalar(monkeypatch):
    import numba

    def broken(*args):
        raise numba.core.errors.LoweringError("no such intrinsic")

    rng = np.random.default_rng(3)
    tensors = _tensors(rng, 4)
    data, offs = _pack([t[0] for t in tensors])
    items = [(o, len(t[0]), t[1], t[2], t[3], t[4], t[5]) for o, t in zip(offs, tensors)]
    want = _batch(data, items, "BF16", False, monkeypatch)
    monkeypatch.setattr(batch_dec, "_ans_many_vec", broken)
    monkeypatch.setattr(rans_vec, "SIMD", True)
    with pytest.warns(RuntimeWarning, match="did not compile"):
        out, o, ok = batch_dec.decode_many(data, "ans", "BF16", items)
    assert [out[o[t]:o[t + 1]].tobytes() if ok[t] else None for t in range(len(items))] == want
    assert rans_vec.SIMD is False


def test_fine_step_file_loads_the_same(tmp_path, monkeypatch):
    """The default (fine step) small matrices of every float dtype: ``load_file`` with the vector step gives
    the scalar one's arrays; a damaged payload (checksum recomputed) raises the one-by-one error."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    t = {f"w.{i}": rng.normal(0, 0.02, (64, 48 + i)).astype(dt)
         for i, dt in enumerate([np.float32, ml_dtypes.bfloat16, np.float16, np.float64] * 2)}
    path = tmp_path / "a.bsl"
    bslcodec.save_file(t, path)
    got = []
    for simd in (True, False):
        monkeypatch.setattr(rans_vec, "SIMD", simd)
        got.append({k: v.tobytes() for k, v in bslcodec.load_file(path).items()})
    assert got[0] == got[1]
    assert {bslcodec.safe_open(path).entry(k).codec for k in t} == {"ans-dq"}


def _decode_into(payload, n, s, center, step, mode, dq, general, monkeypatch, g0=0, g1=None):
    """``rans.decode_into`` of groups [g0, g1) with rans_gen's vector general step, or with the scalar kernel."""
    monkeypatch.setattr(rans_vec, "SIMD", general)
    monkeypatch.setattr(rans_dec, "VEC_GENERAL", general)
    g1 = rans.n_groups(n, s) if g1 is None else g1
    out = np.full(min(n, g1 * 32 * s) - g0 * 32 * s, 7, DT[mode])
    try:
        rans.decode_into(payload, n, s, center, step, out, mode, g0, g1, dq=dq)
    except FormatError as exc:
        return str(exc)
    return out.tobytes()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), s=st.sampled_from([16, 64, 256, 1024]), groups=st.integers(1, 5),
       tail=st.integers(0, 100), scale=st.sampled_from([0.3, 3.0, 40.0, 400.0]),
       raw_rate=st.sampled_from([0.0, 0.01, 0.3]), wide=st.booleans(), dq=st.booleans(),
       center=st.sampled_from([0, -37, 5000, (1 << 24) - 3000]), data=st.data())
def test_decode_into_matches_scalar(seed, s, groups, tail, scale, raw_rate, wide, dq, center, data, monkeypatch):
    """Whole payloads and group ranges (``get_slice``), F32 and BF16: rans_gen's kernel (parallel over groups)
    gives the scalar kernel's values or its error."""
    needs_simd()
    rng = np.random.default_rng(seed)
    n = 32 * s * groups + tail
    u = symbols(rng, n, scale, raw_rate, wide)
    payload = rans.encode(u, s, rans.build_model(u)[0])
    G = rans.n_groups(n, s)
    g0 = data.draw(st.integers(0, G - 1))
    g1 = data.draw(st.integers(g0 + 1, G))
    step = float(rng.uniform(1e-4, 0.1))
    for mode in DT:
        for r in ((0, None), (g0, g1)):
            a = _decode_into(payload, n, s, center, step, mode, dq, True, monkeypatch, *r)
            assert a == _decode_into(payload, n, s, center, step, mode, dq, False, monkeypatch, *r)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), dq=st.booleans(), raw_rate=st.sampled_from([0.0, 0.01, 0.5]))
def test_decode_into_corrupt_same_values_or_error(seed, dq, raw_rate, monkeypatch):
    """Flipped bits in the words, word counts moved between groups: the same values or the same FormatError."""
    needs_simd()
    rng = np.random.default_rng(seed)
    s, n = 64, 32 * 64 * 3 + 50
    u = symbols(rng, n, 30.0, raw_rate, False)
    model = rans.build_model(u)[0]
    p = rans.encode(u, s, model)
    for q in corrupted(p, model.header_size, rans.n_groups(n, s), rng):
        for mode in DT:
            a = _decode_into(q, n, s, 3, 0.01, mode, dq, True, monkeypatch)
            assert a == _decode_into(q, n, s, 3, 0.01, mode, dq, False, monkeypatch)


CHILD = r"""
import numpy as np
from bslcodec.codecs import batch_dec, rans, rans_vec
print("target", rans_vec.SIMD, rans_vec.EXPAND)
rng = np.random.default_rng(5)
ps, items, at = [], [], 0
for s, scale, n in ((16, 3.0, 3000), (1024, 300.0, 4096), (64, 40.0, 2049)):
    d = np.rint(rng.laplace(0, scale, n)).astype(np.int64)
    u = ((d << 1) ^ (d >> 63)).astype(np.uint32)
    p = rans.encode(u, s, rans.build_model(u)[0])
    items.append((at, len(p), n, s, 2, 0.01, s != 64))
    ps.append(p + bytes(-len(p) % 64))
    at += len(ps[-1])
data = np.frombuffer(b"".join(ps) + bytes(64), np.uint8)
for mode in ("BF16", "F32"):
    got = []
    for on in (True, False):
        rans_vec.SIMD = on
        o, offs, ok = batch_dec.decode_many(data, "ans", mode, items)
        assert ok.all()
        got.append(o.tobytes())
    assert got[0] == got[1], mode
k = batch_dec._ans_many_vec
asm = "\n".join(k.inspect_asm(sig) for sig in k.signatures)
print("gathers", asm.count("vpgatherdd"), "expands", asm.count("vpexpandw"), "zmm", asm.count("zmm"))
"""


def test_without_avx512_same_values():
    """Compiled for Skylake (AVX2; the renormalisation by prefix popcount and 32-bit gathers), the vector
    general step forced on decodes the same bytes; compiled for this machine it is vector code."""
    words = child(CHILD, "skylake", "+avx2,+fma,+bmi2,+popcnt,+f16c")
    n = {k: int(words[words.index(k) + 1]) for k in ("gathers", "zmm", "expands")}
    assert words[words.index("target") + 1] == "False" and n["gathers"] >= 8 and n["zmm"] == 0
