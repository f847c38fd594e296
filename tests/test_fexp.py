"""fexp (spec 4.5, lossless floats): reference, Numba coder, GPU kernel (emulated on the CPU and real).

Layers:
* known answers and the reference coder's own round trip;
* the Numba encoder byte-identical to the reference, the Numba decoder bit-identical to it, both agreeing on
  what a corrupt payload is;
* the CUDA kernel source compiled as plain C++ (``-DBSL_HOST_EMU``) and run thread by thread;
* the real GPU decoder (skipped without CUDA);
* the codec hooks: ``encode_lossless`` picks fexp where it beats zstd, ``decode_flat`` ranges, files.
"""

import ctypes
import importlib.util
import pathlib
import shutil
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from bslcodec.codecs import fexp, fexp_ref
from bslcodec.container.errors import FormatError
from bslcodec.container.format import Entry
from bslcodec.pipeline import codec

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLOATS = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64}


def special_bits(itemsize, rng, n):
    """Bit patterns a lossless float codec must keep: NaN payloads, signed zeros, infinities, subnormals."""
    w = 8 * itemsize
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[itemsize]
    top = (1 << w) - 1
    pats = [0, 1 << (w - 1), top, top >> 1, 1, (1 << (w - 1)) | 1, top ^ 1]  # 0, -0, NaNs, subnormals
    exp_all = {2: 0x7F80, 4: 0x7F800000, 8: 0x7FF0000000000000}[itemsize]
    pats += [exp_all, exp_all | (1 << (w - 1)), exp_all | 1, exp_all | 0x40]  # inf, -inf, sNaN, NaN payload
    r = rng.integers(0, 256, n * itemsize, dtype=np.uint8).view(u).copy()
    k = min(n, len(pats))
    r[:k] = np.array(pats[:k], np.uint64).astype(u)
    return r


def cases():
    rng = np.random.default_rng(2024)
    out = []
    for i, (name, n, s) in enumerate([("BF16", 1, 16), ("BF16", 31, 16), ("BF16", 33, 16), ("F16", 512, 16),
                                      ("F32", 1541, 16), ("F64", 700, 16), ("BF16", 5000, 64), ("F32", 3, 1024),
                                      ("BF16", 2 * 32 * 32 - 1, 32), ("F16", 4099, 128), ("F32", 2048, 32)]):
        dt = FLOATS[name]
        x = (rng.standard_normal(n) * rng.choice([0.02, 1.0, 300.0])).astype(dt)
        if i % 3 == 1:
            x = special_bits(np.dtype(dt).itemsize, rng, n).view(dt)
        elif i % 3 == 2:  # few exponents (a single symbol is possible)
            x = np.full(n, 1.5, dt)
            x[::7] = -1.25
        out.append((name, x, s))
    return out


def bits_of(x):
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


# ------------------------------------------------------------------ reference
def test_known_answer_canonical_code():
    lengths = np.zeros(256, np.uint8)
    lengths[[5, 3, 7, 9]] = [1, 2, 3, 3]
    codes = fexp_ref.canonical_codes(lengths)
    assert codes == {5: (1, 0b0), 3: (2, 0b10), 7: (3, 0b110), 9: (3, 0b111)}
    # BF16, m = 0: symbols are the exponents. 1.0 = 0x3F80 -> r = 0x7F00: symbol 127, rest 0
    assert fexp_ref.split(np.array([0x3F80], np.uint16), 2, 0)[0][0] == 127
    assert fexp_ref.split(np.array([0xBF81], np.uint16), 2, 0)[1][0] == 0x03  # mantissa 1, sign 1
    lengths = np.zeros(256, np.uint8)
    lengths[[127, 128]] = 1  # 1.0 -> code 0, 2.0 -> code 1
    x = np.array([0x3F80, 0x4000, 0x4000], np.uint16)  # 1.0, 2.0, 2.0
    p = fexp_ref.encode_payload(x, 2, 16, 0, lengths)
    # header 8 + 128 bytes of lengths, 8 bytes of rests, 64 bytes of lane table, stream word, zero word
    assert len(p) == 8 + 128 + 8 + 64 + 16
    assert p[8 + 63] == 0x10 and p[8 + 64] == 0x01  # symbol 127: high nibble of byte 63; 128: low of 64
    assert list(np.frombuffer(p, "<u2", 3, 144)) == [1, 1, 1]  # one bit per lane
    assert p[208] == 0b110  # lanes 0, 1, 2: codes 0, 1, 1
    assert (fexp_ref.decode_payload(p, 3, 2, 16) == x).all()


def test_compiled_lut_matches_reference():
    """``build_lut`` (a counting sort, compiled) equals the numpy ``build_lut_ref`` (lexsort) for optimal
    codes of random histograms, incomplete codes (Kraft sum below 1) and a single symbol."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        k = int(rng.choice([256, 512, 1024, 4096]))
        counts = rng.geometric(rng.uniform(0.002, 0.5), k) * (rng.random(k) < rng.uniform(0.01, 1))
        counts[int(rng.integers(0, k))] += 1
        lengths = fexp_ref.code_lengths(counts).astype(np.uint8)
        assert np.array_equal(fexp.build_lut(lengths), fexp.build_lut_ref(lengths))
        lengths[lengths > 0] = np.minimum(12, lengths[lengths > 0] + rng.integers(0, 2, int((lengths > 0).sum())))
        assert np.array_equal(fexp.build_lut(lengths), fexp.build_lut_ref(lengths))  # incomplete code


def test_code_lengths_optimal_and_limited():
    rng = np.random.default_rng(0)
    for t in range(60):
        c = rng.geometric(0.02 + 0.3 * rng.random(), 1 << rng.integers(2, 13)).astype(np.int64) ** 3
        c[rng.random(c.size) < 0.3] = 0
        ln = fexp_ref.code_lengths(c)
        assert fexp_ref.kraft_ok(ln) and ln.max() <= 12
        assert ((ln > 0) == (c > 0)).all()
    ln = fexp_ref.code_lengths([0, 5, 0])
    assert list(ln) == [0, 1, 0]
    # a geometric source wants lengths 1, 2, ..., 24: limited to 12, and still the optimum under that limit
    c = np.array([2 ** (30 - i) for i in range(25)])
    ln = fexp_ref.code_lengths(c)
    assert ln.max() == 12 and fexp_ref.kraft_ok(ln)
    feasible = np.array(list(range(1, 8)) + [12] * 18)  # Kraft: 1 - 2^-7 + 18 * 2^-12 <= 1
    assert (c * ln).sum() <= (c * feasible).sum()
    # where unlimited Huffman fits in 12 bits, package-merge gives the same cost
    import heapq

    for t in range(40):
        c = rng.integers(1, 1000, rng.integers(2, 40))
        h = [(int(w), i, [i]) for i, w in enumerate(c)]
        heapq.heapify(h)
        hl = np.zeros(c.size, np.int64)
        k = c.size
        while len(h) > 1:
            a, b = heapq.heappop(h), heapq.heappop(h)
            for i in a[2] + b[2]:
                hl[i] += 1
            k += 1
            heapq.heappush(h, (a[0] + b[0], k, a[2] + b[2]))
        if hl.max() <= 12:
            assert (c * fexp_ref.code_lengths(c)).sum() == (c * hl).sum()


@pytest.mark.parametrize("name,x,s", cases()[:8])
def test_reference_round_trip(name, x, s):
    b = bits_of(x)
    for m in (0, 2, 4):
        p = fexp_ref.encode_payload(b, x.dtype.itemsize, s, m)
        assert (fexp_ref.decode_payload(p, b.size, x.dtype.itemsize, s) == b).all()


# ------------------------------------------------------------------ Numba against the reference
@pytest.mark.parametrize("name,x,s", cases())
def test_numba_matches_reference(name, x, s):
    isz = x.dtype.itemsize
    params, p = fexp.encode(x, s)
    m = int(p[0])
    assert params == {"lane_symbols": s}
    assert p.tobytes() == fexp_ref.encode_payload(bits_of(x), isz, s, m)
    assert (fexp.decode(p.tobytes(), x.size, isz, s) == bits_of(x)).all()
    assert len(p) == fexp.payload_size(x, s)


def test_every_m_and_choice():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(20000) * 0.02).astype(ml_dtypes.bfloat16)
    sizes = {}
    for m in range(5):
        _, p = fexp.encode(x, 64, m)
        assert p[0] == m
        assert (fexp.decode(p, x.size, 2, 64) == bits_of(x)).all()
        sizes[m] = len(p)
    _, p = fexp.encode(x, 64)
    assert len(p) <= min(sizes.values()) + 8 * 2  # the choice uses estimated sizes (rounding of lanes)


def corruptions(payload, n, isz, s, rng):
    p = np.frombuffer(payload, np.uint8).copy()
    m = int(p[0])
    rest_off, t, w0, g = fexp.layout(n, isz, m, s)
    bad = []
    q = p.copy()
    q[0] = 5  # m > 4
    bad.append(q)
    q = p.copy()
    q[3] = 1  # reserved byte
    bad.append(q)
    q = p.copy()
    q[8] = 0xDD  # a code length of 13
    bad.append(q)
    q = p.copy()
    q[8:rest_off] = 0x11  # every symbol of length 1: Kraft sum over 1
    bad.append(q)
    lanes = q[t:w0].view("<u2")
    if n > 32 and p[t:w0].view("<u2")[0] > 1:
        q = p.copy()
        lq = q[t:w0].view("<u2")
        lq[0] -= 1
        lq[1] += 1
        bad.append(q)
    bad.append(np.concatenate([p, np.zeros(8, np.uint8)]))  # one word too many
    bad.append(p[:-8])
    flips = []
    for _ in range(8):
        q = p.copy()
        lo = t if rng.random() < 0.7 else 0  # mostly in the lane table and stream
        for pos in rng.integers(8 * lo, q.size * 8, rng.integers(1, 4)):
            q[pos // 8] ^= np.uint8(1 << (pos % 8))
        flips.append(q)
    del lanes
    return bad, flips


def _agree(decode, payload, n, isz, s):
    try:
        want = fexp_ref.decode_payload(payload, n, isz, s)
    except FormatError:
        with pytest.raises(FormatError):
            decode(payload, n, isz, s)
        return
    np.testing.assert_array_equal(decode(payload, n, isz, s), want)


def test_numba_rejects_what_the_reference_rejects():
    rng = np.random.default_rng(11)
    for name, x, s in cases():
        if x.size > 5000:
            continue
        _, p = fexp.encode(x, s)
        bad, flips = corruptions(p.tobytes(), x.size, x.dtype.itemsize, s, rng)
        for q in bad:
            with pytest.raises(FormatError):
                fexp_ref.decode_payload(q.tobytes(), x.size, x.dtype.itemsize, s)
            with pytest.raises(FormatError):
                fexp.decode(q.tobytes(), x.size, x.dtype.itemsize, s)
        for q in flips:
            _agree(fexp.decode, q.tobytes(), x.size, x.dtype.itemsize, s)


def test_group_ranges():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(32 * 16 * 5 + 7) * 0.1).astype(np.float32)
    _, p = fexp.encode(x, 16)
    b = bits_of(x)
    for g0, g1 in [(0, 1), (1, 3), (4, 6), (5, 6), (2, 2)]:
        out = np.zeros(min(b.size, g1 * 512) - g0 * 512, np.uint32)
        fexp.decode_into(p, b.size, 4, 16, out, g0, g1)
        assert (out == b[g0 * 512: g1 * 512]).all()


def test_hostile_sizes_rejected_before_allocation():
    # a tiny payload cannot claim a huge tensor: the rest region alone needs B/8 bytes an element
    with pytest.raises(FormatError):
        fexp.parse(bytes(8 + 128 + 64 + 8), 1 << 40, 2, 1024)
    with pytest.raises(FormatError):
        fexp.parse(b"\x00" * 4, 10, 2, 16)
    with pytest.raises(FormatError):
        fexp.parse(bytes(500), 10, 2, 48)  # lane_symbols not a power of two


# ------------------------------------------------------------------ the kernel source on the CPU
def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler: the CPU emulation of the CUDA kernel needs g++")
    src = _load("bsl_fexp_src", ROOT / "bslcodec" / "gpu" / "_fexp_src.py").SOURCE
    d = tmp_path_factory.mktemp("fexp_emu")
    (d / "k.cpp").write_text(src)
    lib = d / "k.so"
    r = subprocess.run([cxx, "-std=c++14", "-O1", "-DBSL_HOST_EMU", "-shared", "-fPIC", str(d / "k.cpp"),
                        "-o", str(lib)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"C++ compiler could not build the emulation: {r.stderr[-500:]}")
    return ctypes.CDLL(str(lib))


def emu_decode(lib, payload, n, isz, s):
    """The kernel's per-thread function over every thread; mirrors bslcodec.gpu._fexp.decode_fexp."""
    p = np.frombuffer(bytes(payload), np.uint8)
    buf = np.zeros(p.size + 16, np.uint8)  # 16-byte aligned copy, as the GPU path makes
    buf = buf[-buf.ctypes.data % 16:][:p.size] if buf.ctypes.data % 16 else buf[:p.size]
    buf[:] = p
    m, lengths, rest_off, t, w0, g = fexp.parse_header(buf, n, isz, s)
    if buf.size < w0 + 8 or (buf.size - w0) % 8:
        raise FormatError("layout")
    n_words = (buf.size - w0) // 8 - 1
    lut = fexp.build_lut(lengths)
    offs = np.zeros(g + 1, np.int64)
    c = ctypes.c_void_p
    base = buf.ctypes.data
    lib.emu_group_words(c(base + t), ctypes.c_int64(g), c(offs.ctypes.data))
    offs = np.cumsum(offs)
    out = np.full(n, 0x5A, {2: np.uint16, 4: np.uint32, 8: np.uint64}[isz])
    err = np.zeros(1, np.int32)
    lib.emu_decode(ctypes.c_int(isz), c(lut.ctypes.data), c(base + t), c(base + w0), ctypes.c_int64(n_words),
                   c(base + rest_off), ctypes.c_uint32(fexp.rest_bits(isz, m)), ctypes.c_int64(n),
                   ctypes.c_int(s.bit_length() - 1), ctypes.c_int64(g), c(offs.ctypes.data), c(out.ctypes.data),
                   c(err.ctypes.data))
    if err[0]:
        raise FormatError(f"error flags {err[0]}")
    return out


def test_emulated_kernel_bit_exact(emu):
    for name, x, s in cases():
        for m in (None, 0, 3):
            _, p = fexp.encode(x, s, m)
            np.testing.assert_array_equal(emu_decode(emu, p, x.size, x.dtype.itemsize, s), bits_of(x))


def test_emulated_kernel_rejects_corruption(emu):
    rng = np.random.default_rng(12)
    dec = lambda *a: emu_decode(emu, *a)  # noqa: E731
    for name, x, s in cases():
        if x.size > 5000:
            continue
        _, p = fexp.encode(x, s)
        bad, flips = corruptions(p.tobytes(), x.size, x.dtype.itemsize, s, rng)
        for q in bad:
            with pytest.raises(FormatError):
                dec(q.tobytes(), x.size, x.dtype.itemsize, s)
        for q in flips:
            _agree(dec, q.tobytes(), x.size, x.dtype.itemsize, s)


# ------------------------------------------------------------------ the real GPU
@pytest.fixture(scope="module")
def gpu():
    try:
        import bslcodec.gpu as g
    except ImportError as exc:
        pytest.skip(f"no GPU: {exc}")
    from bslcodec.gpu._fexp import decode_fexp

    return decode_fexp


def test_gpu_bit_exact_and_rejects(gpu):
    import torch

    rng = np.random.default_rng(13)
    tdt = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    for i, (name, x, s) in enumerate(cases()):
        isz = x.dtype.itemsize
        for m in (None, 2):
            _, p = fexp.encode(x, s, m)
            t = gpu(p, x.size, s, tdt[name])
            got = t.view(ints[isz]).cpu().numpy().view(bits_of(x).dtype)
            np.testing.assert_array_equal(got, bits_of(x))
        if x.size <= 5000:
            bad, flips = corruptions(p.tobytes(), x.size, isz, s, rng)
            for q in bad:
                with pytest.raises(FormatError):
                    gpu(q.tobytes(), x.size, s, tdt[name])
            for q in flips[:4] if i % 2 else []:  # the reference decoder is slow: a sample
                dec = lambda pl, n, i, ss: gpu(pl, n, ss, tdt[name]).view(ints[i]).cpu().numpy().view(  # noqa
                    bits_of(x).dtype)
                _agree(dec, q.tobytes(), x.size, isz, s)


def test_gpu_large(gpu):
    import torch

    rng = np.random.default_rng(14)
    x = (rng.standard_normal(3_000_017) * 0.02).astype(ml_dtypes.bfloat16)
    for s in (1024, 4096):
        _, p = fexp.encode(x, s)
        t = gpu(p, x.size, s, torch.bfloat16)
        assert (t.view(torch.int16).cpu().numpy().view(np.uint16) == bits_of(x)).all()


# ------------------------------------------------------------------ codec hooks and files
def test_encode_lossless_picks_fexp_for_floats():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((300, 200)) * 0.02).astype(ml_dtypes.bfloat16)
    name, params, payload = codec.encode_lossless(x)
    assert name == "fexp"
    e = Entry("w", "BF16", x.shape, name, params)
    back = codec.decode(e, payload, "w")
    assert (back.view(np.uint16) == x.view(np.uint16)).all()
    for start, stop in [(0, 1), (5, 40000), (59999, 60000), (1000, 1000)]:
        part = codec.decode_flat(e, payload, "w", start, stop)
        assert (part.view(np.uint16) == x.reshape(-1)[start:stop].view(np.uint16)).all()
    # repetitive data: zstd stays the choice
    z = np.zeros((300, 200), np.float32)
    assert codec.encode_lossless(z)[0] == "zstd"
    assert codec.encode_lossless(np.arange(1000, dtype=np.int32))[0] in ("zstd", "raw")


def test_file_round_trip_lossless_all(tmp_path):
    import bslcodec

    rng = np.random.default_rng(6)
    t = {"a": (rng.standard_normal((64, 300)) * 0.05).astype(np.float32),
         "b": (rng.standard_normal((128, 128))).astype(ml_dtypes.bfloat16),
         "c": special_bits(2, rng, 5000).view(np.float16),
         "d": rng.standard_normal(3000)}
    path = tmp_path / "x.bsl"
    bslcodec.save_file(t, path, lossless=("*",))
    back = bslcodec.load_file(path)
    for k, v in t.items():
        assert back[k].dtype == v.dtype and (bits_of(back[k]) == bits_of(v)).all(), k
    with bslcodec.safe_open(path, framework="np") as f:
        codecs = {k: f.entry(k).codec for k in t}
        rows = f.get_slice("a")[10:20]
    assert codecs == {"a": "fexp", "b": "fexp", "c": "raw", "d": "fexp"}  # c: random bits
    assert (bits_of(np.ascontiguousarray(rows)) == bits_of(t["a"][10:20])).all()


def test_gpu_load_file_lossless(gpu, tmp_path):
    import torch

    import bslcodec

    rng = np.random.default_rng(15)
    t = {"a": (rng.standard_normal((300, 257)) * 0.02).astype(ml_dtypes.bfloat16),
         "b": (rng.standard_normal((64, 999)) * 3).astype(np.float16),
         "c": (rng.standard_normal((70000,)) * 0.1).astype(np.float32),
         "d": rng.standard_normal((100, 101))}
    path = tmp_path / "l.bsl"
    bslcodec.save_file(t, path, lossless=("*",))
    cpu = bslcodec.load_file(path, framework="pt")
    dev = bslcodec.load_file(path, framework="pt", device="cuda")
    with bslcodec.safe_open(path) as f:
        assert {k: f.entry(k).codec for k in t} == dict.fromkeys(t, "fexp")
    for k in t:
        assert dev[k].is_cuda and dev[k].dtype == cpu[k].dtype and dev[k].shape == cpu[k].shape
        assert torch.equal(dev[k].cpu().view(torch.uint8), cpu[k].view(torch.uint8)), k


def test_cli_lossless_all(tmp_path):
    import safetensors.numpy
    from click.testing import CliRunner

    import bslcodec
    from bslcodec.cli import main

    rng = np.random.default_rng(16)
    sd = {"w": (rng.standard_normal((256, 300)) * 0.02).astype(np.float32), "ids": np.arange(50, dtype=np.int64)}
    safetensors.numpy.save_file(sd, str(tmp_path / "m.safetensors"))
    r = CliRunner().invoke(main, ["encode", str(tmp_path / "m.safetensors"), str(tmp_path / "m.bsl"),
                                  "--lossless-all", "-q", "--workers", "1"])
    assert r.exit_code == 0, r.output
    back = bslcodec.load_file(tmp_path / "m.bsl")
    assert back["w"].tobytes() == sd["w"].tobytes() and (back["ids"] == sd["ids"]).all()
    with bslcodec.safe_open(tmp_path / "m.bsl") as f:
        assert f.entry("w").codec == "fexp"


def test_compiled_code_lengths_and_choose_m_match_reference():
    """The compiled package-merge (``fexp.code_lengths``) gives ``fexp_ref.code_lengths``'s lengths, and
    ``choose_m`` (every m's counts and entropy in one compiled pass) the numpy m-by-m choice, on random
    histograms: flat, geometric, huge dynamic range, ties, one or two symbols."""
    from bslcodec.codecs import fexp_enc

    rng = np.random.default_rng(11)
    for t in range(400):
        k = int(rng.choice([2, 3, 16, 256, 1024, 4096]))
        kind = t % 4
        if kind == 0:
            c = rng.geometric(0.02 + 0.3 * rng.random(), k).astype(np.int64) ** 3
        elif kind == 1:
            c = rng.integers(0, 4, k)  # many ties
        elif kind == 2:
            c = np.array([2 ** (40 - i) for i in range(min(k, 41))] + [1] * max(0, k - 41), np.int64)
        else:
            c = (rng.random(k) < 0.5) * rng.integers(1, 10**6, k)
        c[rng.random(k) < 0.2] = 0
        got, want = fexp.code_lengths(c), fexp_ref.code_lengths(c)
        assert got.dtype == want.dtype and np.array_equal(got, want)
    for t in range(150):
        h = np.zeros(4096, np.int64)
        idx = rng.integers(0, 4096, rng.integers(1, 60))
        h[idx] = rng.integers(1, 10 ** int(rng.integers(1, 7)), idx.size)
        for itemsize in (2, 4, 8):
            for ms in (range(5), (0,), (4,)):
                m1, l1 = fexp_enc.choose_m(h, int(h.sum()), itemsize, ms)
                m2, l2 = fexp_enc._choose_m_ref(h, int(h.sum()), itemsize, ms)
                assert m1 == m2 and np.array_equal(l1, l2)
