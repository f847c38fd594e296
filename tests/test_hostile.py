"""Hostile files: every input ends in a BslError with a message, or a correct decode (spec 2-6, issue 7).

Checksums catch random corruption, but an attacker recomputes them, so most cases here are built with
correct checksums (``tools/fuzz_reader.build``) and aim at the parsers and decoders themselves. The
corpus in ``fixtures/corpus/`` (regenerate with ``python tools/fuzz_reader.py --write-corpus``) is
replayed through bytes, memory-mapped files and buffers that end at an unreadable page, so a read past
the end of the file is a crash here, not a silent wrong answer. The long fuzzing run lives in
``tools/fuzz_reader.py``; this file keeps to a bounded budget (well under 90 s on 2 cores).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import random
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import fuzz_reader as fr  # noqa: E402

import bslcodec  # noqa: E402
from bslcodec.codecs import golomb, golomb_ref  # noqa: E402
from bslcodec.container.errors import BslError, ChecksumError, FormatError, LimitError  # noqa: E402
from bslcodec.container.format import PREAMBLE_BYTES  # noqa: E402
from bslcodec.container.limits import MAX_HEADER_BYTES, ZSTD_MAX_RATIO  # noqa: E402

MANIFEST = json.loads((fr.CORPUS / "manifest.json").read_text())
SEEDS = fr.seeds()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a)


def guarded(data: bytes):
    """``data`` in a buffer whose next byte is an unreadable page (Linux): reading past the end faults."""
    page = mmap.PAGESIZE
    size = -(-max(1, len(data)) // page) * page
    m = mmap.mmap(-1, size + page)
    m[size - len(data):size] = data
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(addr + size, page, 0) != 0:
        pytest.skip("mprotect is not available")
    return m, memoryview(m)[size - len(data):size]


def outcome(data) -> str:
    try:
        return fr.check(data)
    except fr.Finding as f:
        pytest.fail(f"reader misbehaved: {f}")


# ---------------------------------------------------------------- the corpus


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_case_has_its_outcome(name, tmp_path):
    data = (fr.CORPUS / f"{name}.bsl").read_bytes()
    want = MANIFEST[name]
    assert outcome(data) == want
    path = tmp_path / "f.bsl"
    path.write_bytes(data)
    try:  # the memory-mapped path
        got = bslcodec.load_file(path)
        assert want == "ok", f"load_file accepted a file that must fail with {want}"
        assert set(got) == {e["name"] for e in json.loads(fr.header_json(data))["tensors"]}
    except BslError as exc:
        assert type(exc).__name__ == want, exc
        assert str(path) in str(exc)  # errors name the file


def test_corpus_cases_in_guarded_buffers():
    """Every corpus file (the valid seeds too) at the very end of readable memory (in a child process, so a
    read past the end is reported as a failure rather than taking down the test run)."""
    code = f"""
import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); sys.path.insert(0, {str(ROOT / 'tools')!r})
import json, test_hostile as t, fuzz_reader as fr
man = json.loads((fr.CORPUS / "manifest.json").read_text())
bad = []
for name, want in sorted(man.items()):
    m, buf = t.guarded((fr.CORPUS / (name + ".bsl")).read_bytes())
    try:
        got = fr.check(buf)
    except fr.Finding as f:
        got = "finding: " + str(f).splitlines()[0]
    if got != want:
        bad.append((name, want, got))
print(json.dumps(bad))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"child died ({r.returncode}): {r.stderr[-2000:]}"
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_corpus_is_current():
    """The designed cases in tools/fuzz_reader.py and fixtures/corpus/ agree (regenerate on change)."""
    cases = fr.corpus_cases()
    for name, (data, want) in cases.items():
        assert MANIFEST.get(name) == want, f"{name}: run python tools/fuzz_reader.py --write-corpus"


# ---------------------------------------------------------------- damage without checksum repair


def test_truncation_at_every_length():
    data = SEEDS["mixed"]
    for n in range(len(data)):
        with pytest.raises(FormatError) as ei:
            bslcodec.load(data[:n])
        assert str(ei.value)


def test_every_header_bit_flip_is_detected():
    data = SEEDS["mixed"]
    hlen = struct.unpack_from("<Q", data, 16)[0]
    want = bslcodec.load(data)
    for byte in range(PREAMBLE_BYTES + hlen):
        for bit in range(8):
            bad = bytearray(data)
            bad[byte] ^= 1 << bit
            if byte in (10, 11):  # the minor version: any minor is accepted (spec 2) and decodes the same
                assert same(bslcodec.load(bytes(bad)), want)
                continue
            with pytest.raises(FormatError) as ei:
                bslcodec.load(bytes(bad))
            if byte >= PREAMBLE_BYTES:
                assert isinstance(ei.value, ChecksumError) and "header" in str(ei.value)


def test_compressed_header_bit_flips_are_detected():
    """A compressed header (spec 2.1): any flipped bit of its region is a header checksum error; clearing
    the flag reads the frame as JSON and setting another flag bit is refused: FormatError, never a crash."""
    data = SEEDS["zstd_header"]
    minor, flags, hlen = struct.unpack_from("<HIQ", data, 10)
    assert (minor, flags) == (2, 1)
    for byte in range(PREAMBLE_BYTES, PREAMBLE_BYTES + hlen):
        bad = bytearray(data)
        bad[byte] ^= 1 << (byte % 8)
        with pytest.raises(ChecksumError, match="header"):
            bslcodec.load(bytes(bad))
    for f in (0, 2, 3, 1 << 31):
        bad = bytearray(data)
        struct.pack_into("<I", bad, 12, f)
        with pytest.raises(FormatError):
            bslcodec.load(bytes(bad))


def test_compressed_header_bomb_is_refused_before_allocating():
    """A small file whose header declares 100 MB of JSON (the most a header may hold) from a frame of about
    1 KB: LimitError, with nothing near that allocated."""
    doc, payloads, _ = fr.split(SEEDS["zstd_header"])
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    plain = fr.build(doc, payloads)
    region = plain[PREAMBLE_BYTES + struct.unpack_from("<Q", plain, 16)[0]:]
    data = fr.assemble(fr.zstd_header(raw, jlen=MAX_HEADER_BYTES), region, minor=2, flags=1)
    assert len(data) < 10_000
    tracemalloc.start()
    try:
        with pytest.raises(LimitError, match="over 64x"):
            bslcodec.load(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def _payload_spans(data):
    doc, _, _ = fr.split(data)
    d0 = PREAMBLE_BYTES + struct.unpack_from("<Q", data, 16)[0]
    return d0, [(t["name"], d0 + t["offset"], t["length"]) for t in doc["tensors"]]


def test_every_payload_bit_flip_names_its_tensor():
    data = SEEDS["mixed"]
    d0, spans = _payload_spans(data)
    covered = set()
    bad = bytearray(data)
    for name, start, length in spans:
        for byte in range(start, start + length):
            covered.add(byte)
            bad[byte] ^= 1 << (byte % 8)
            src = bslcodec.files.api._Source(data=bad)  # header intact: parse it, then read the damaged tensor
            with pytest.raises(ChecksumError, match=f"tensor {name!r}"):
                src.tensor(name)
            if byte == start + length // 2:  # and once through the public API
                with pytest.raises(ChecksumError, match=f"tensor {name!r}"):
                    bslcodec.load(bytes(bad))
            bad[byte] ^= 1 << (byte % 8)
    # alignment padding between payloads carries no data: flips there are not errors and change nothing
    want = bslcodec.load(data)
    for byte in sorted(set(range(d0, len(data))) - covered):
        bad = bytearray(data)
        bad[byte] ^= 0x80
        assert same(bslcodec.load(bytes(bad)), want)


def test_lazy_reader_names_the_corrupted_tensor_only(tmp_path):
    data = SEEDS["mixed"]
    _, spans = _payload_spans(data)
    name, start, length = spans[0]
    bad = bytearray(data)
    bad[start + length // 2] ^= 4
    path = tmp_path / "bad.bsl"
    path.write_bytes(bytes(bad))
    with bslcodec.safe_open(path) as f:
        for other, _, _ in spans[1:]:
            f.get_tensor(other)  # the others still read
        with pytest.raises(ChecksumError, match=f"{path}.*tensor {name!r}"):
            f.get_tensor(name)


# ---------------------------------------------------------------- structure-aware mutation (checksums fixed)


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 2**63), which=st.sampled_from(sorted(SEEDS)))
def test_mutated_files_fail_cleanly_or_decode(seed, which):
    data = SEEDS[which]
    mutated = fr.mutate(data, random.Random(seed), fr.split(data))
    outcome(mutated)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**63), n=st.integers(1, 1500), s=st.sampled_from([16, 32]),
       p=st.floats(0.05, 0.9), flips=st.integers(1, 4), where=st.sampled_from(["lens", "ks", "words"]))
def test_numba_decoder_agrees_with_reference_on_damaged_payloads(seed, n, s, p, flips, where):
    """Damaged ``eg`` payloads: the fast decoder accepts exactly what the reference accepts, with the same
    symbols (mode "Q" checks no |q| bound, like the reference)."""
    rng = np.random.default_rng(seed)
    u = (rng.geometric(p, size=n) - 1).clip(0, (1 << 25) - 1).astype(np.uint32)
    ks, lens = golomb.choose_orders(u, s, 0, 6)
    payload = bytearray(golomb.encode(u, s, ks, lens))
    g = ks.size
    head = golomb.table_bytes(g)
    lo, hi = {"lens": (0, 64 * g), "ks": (64 * g, 65 * g), "words": (head, len(payload) - 8)}[where]
    for _ in range(flips):
        i = int(rng.integers(lo, hi)) if hi > lo else lo
        payload[i] ^= 1 << int(rng.integers(0, 8))
    payload = bytes(payload)
    try:
        ref = golomb_ref.decode_payload(payload, n, s)
    except FormatError:
        ref = None
    out = np.empty(n, np.int64)
    try:
        golomb.decode_into(payload, n, s, 0, 1.0, out, "Q")
        fast = out
    except FormatError:
        fast = None
    if ref is None or fast is None:
        assert ref is None and fast is None, "one decoder accepted what the other rejected"
    else:
        u2 = ref.astype(np.int64)
        assert np.array_equal(fast, (u2 >> 1) ^ -(u2 & 1))


# ---------------------------------------------------------------- allocation bounds


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    except BslError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def _bound(data: bytes) -> int:
    """What a file may make the reader allocate (spec 5): output bytes the payloads can really hold,
    a small multiple of them, plus the header's objects."""
    try:
        doc, payloads, _ = fr.split(data)
        out = 0
        for t, p in zip(doc["tensors"], payloads):
            k = {"raw": 1, "eg": 64, "ans": 8192, "ans-dq": 8192, "fexp": 4,
                 "zstd": ZSTD_MAX_RATIO}.get(t.get("codec"), 64)
            out += k * len(p)
    except Exception:  # noqa: BLE001 - not parseable: only the header may cost memory
        out = 0
    return (1 << 20) + 30 * len(data) + 3 * out


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_allocations_are_bounded_by_the_file(name):
    data = (fr.CORPUS / f"{name}.bsl").read_bytes()
    assert _peak(lambda: bslcodec.load(data)) <= _bound(data)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**63), which=st.sampled_from(sorted(SEEDS)))
def test_mutated_allocations_are_bounded(seed, which):
    data = fr.mutate(SEEDS[which], random.Random(seed), fr.split(SEEDS[which]))
    assert _peak(lambda: bslcodec.load(data)) <= _bound(data)


def test_tiny_files_cannot_declare_huge_tensors():
    """A few hundred bytes declaring 2^40..2^48 elements fail before any large allocation."""
    for name in ("eg_huge_shape_tiny_payload", "zstd_declares_2_40_elems", "raw_shape_2_48_u8",
                 "zstd_chunk_2_28_tiny_frame", "zstd_chunk_count_2_32"):
        data = (fr.CORPUS / f"{name}.bsl").read_bytes()
        peak = _peak(lambda: bslcodec.load(data))
        assert peak < (4 << 20) + 30 * len(data), (name, peak)


def test_zstd_bound_rejects_no_valid_frame():
    """The 32768x rule is zstd's own limit: the most compressible input still fits under it."""
    import zstandard
    for level in (1, 3, 19):
        raw = bytes(1 << 24)
        frame = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)
        assert len(raw) < ZSTD_MAX_RATIO * len(frame)
    x = np.zeros(1 << 22, np.float32)  # 16 MiB of zeros: four chunks of ~150 bytes
    assert np.array_equal(bslcodec.load(bslcodec.save({"z": x}, lossless=["z"]))["z"], x)


def test_header_length_limits_are_checked_before_reading():
    pre = fr.PREAMBLE.pack(fr.MAGIC, 1, 0, 0, MAX_HEADER_BYTES + 32, 0)
    with pytest.raises(LimitError, match="over the limit"):
        bslcodec.load(pre + bytes(64))
    pre = fr.PREAMBLE.pack(fr.MAGIC, 1, 0, 0, 2**64 - 1, 0)
    with pytest.raises(LimitError):
        bslcodec.load(pre + bytes(64))


def test_header_parse_memory_is_a_small_multiple_of_its_size():
    """The worst JSON for memory (many tiny containers) costs ~25 bytes per header byte (documented)."""
    body = b",".join([b"[]"] * 150_000)
    data = fr.assemble(fr.pad_header(b'{"metadata":{},"tensors":[],"x":[' + body + b"]}"), b"")
    assert _peak(lambda: bslcodec.load(data)) <= 40 * len(data)


def test_payload_errors_name_the_tensor():
    for name, want in MANIFEST.items():
        if want == "ok" or not name.startswith(("eg_", "zstd_", "raw_", "bool_")):
            continue
        with pytest.raises(BslError) as ei:
            bslcodec.load((fr.CORPUS / f"{name}.bsl").read_bytes())
        assert "tensor '" in str(ei.value), (name, str(ei.value))


def test_writer_rejects_names_that_no_reader_accepts():
    """A lone surrogate cannot be written as UTF-8: the writer says so (EncodeError), as the reader does."""
    from bslcodec.container.errors import EncodeError
    with pytest.raises(EncodeError, match="lone surrogate"):
        bslcodec.save({"w\ud800": np.zeros(3)})
    with pytest.raises(EncodeError, match="lone surrogate"):
        bslcodec.save({"w": np.zeros(3)}, metadata={"k": "\udc80"})


def test_newer_minor_unknown_codec_says_upgrade(tmp_path):
    """A file of a later minor version with a codec this reader lacks: a FormatError that says to upgrade."""
    import json
    import struct

    import xxhash

    from bslcodec.container import format as fmt

    data = bytearray(bslcodec.save({"w": np.zeros(4, np.float32)}, rel_step=0.1))
    hlen = struct.unpack_from("<Q", data, 16)[0]
    doc = json.loads(bytes(data[32:32 + hlen]).decode())
    doc["tensors"][0]["codec"] = "future"
    header = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (hlen - len(header))
    assert len(header) == hlen
    data[32:32 + hlen] = header
    struct.pack_into("<H", data, 10, fmt.MINOR + 1)
    struct.pack_into("<Q", data, 24, xxhash.xxh3_64_intdigest(header))
    with pytest.raises(bslcodec.BslError, match="newer than this reader"):
        bslcodec.load(bytes(data))
    struct.pack_into("<H", data, 10, fmt.MINOR)  # same minor: unknown codec, no upgrade hint
    with pytest.raises(bslcodec.BslError, match="unknown codec") as info:
        bslcodec.load(bytes(data))
    assert "newer" not in str(info.value)


@pytest.mark.parametrize("codec", ["eg", "ans"])
def test_corpus_recode(codec, tmp_path):
    """bslcodec recode on every corpus file: a file that loads recodes to the same values; a file that must
    fail raises a BslError naming the file, and leaves no output behind."""
    from bslcodec.files.recode import recode_file

    for name, want in sorted(MANIFEST.items()):
        src = tmp_path / f"{name}.bsl"
        src.write_bytes((fr.CORPUS / f"{name}.bsl").read_bytes())
        dst = tmp_path / f"{name}.{codec}.bsl"
        try:
            recode_file(src, dst, codec=codec)
        except BslError as exc:
            assert want != "ok", (name, exc)
            assert str(src) in str(exc), (name, exc)
            assert not dst.exists(), name
            continue
        assert want == "ok", f"{name}: recode accepted a file that must fail with {want}"
        a, b = bslcodec.load_file(src), bslcodec.load_file(dst)
        assert list(a) == list(b), name
        for k in a:
            x, y = (np.ascontiguousarray(v).reshape(-1).view(np.uint8) for v in (a[k], b[k]))
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(x, y), (name, k)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_depth_check_by_levels_agrees_with_the_tree_walk(monkeypatch):
    """``_check_depth`` (level by level, used when the header holds no string to check) refuses exactly the
    trees that ``_check_tree``'s walk refuses, at every limit from 1 to 44."""
    import random

    from bslcodec.container import format as F

    def tree(rng, d):
        r = rng.random()
        if d > 40 or r < 0.3:
            return rng.choice([1, "s", None, 2.5])
        if r < 0.65:
            return [tree(rng, d + 1) for _ in range(rng.randint(0, 3))]
        return {str(i): tree(rng, d + 1) for i in range(rng.randint(0, 3))}

    rng = random.Random(7)
    for _ in range(600):
        doc = tree(rng, 0)
        if not isinstance(doc, (dict, list)):
            continue
        for limit in range(1, 45):
            monkeypatch.setattr(F, "MAX_JSON_DEPTH", limit)
            walk = level = False
            try:
                F._check_tree(doc, False)
            except bslcodec.FormatError:
                walk = True
            try:
                F._check_depth(doc)
            except bslcodec.FormatError:
                level = True
            assert walk == level
