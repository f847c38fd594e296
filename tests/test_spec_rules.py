"""Rules of spec/bsl-v1.md that a porter could get wrong, one test each: JSON strictness (depth, number
length, integers, surrogates), step parsing, required and informational keys, zstd framing, padding.

Files are built with correct checksums (``tools/fuzz_reader.build``), so only the rule under test decides.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

import fuzz_reader as fr  # noqa: E402

import bslcodec  # noqa: E402
from bslcodec.codecs import fexp, golomb, lossless, rans  # noqa: E402
from bslcodec.container.errors import FormatError  # noqa: E402
from bslcodec.container.limits import MAX_JSON_DEPTH, MAX_NUMBER_CHARS  # noqa: E402

RAW = {"name": "t", "dtype": "U8", "shape": [4], "codec": "raw", "params": {}}


def _dumps(doc) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def with_text(doc: dict, payloads: list, placeholder: str, text: str) -> bytes:
    """A file whose header has the JSON ``text`` where ``doc`` holds the string ``placeholder``."""
    return fr.build(doc, payloads, dumps=lambda d: _dumps(d).replace(f'"{placeholder}"'.encode(), text.encode()))


def raw_file(text: str, where: str = "top") -> bytes:
    """One raw U8 tensor; ``text`` (raw JSON) is the value of an unknown key at ``where``."""
    entry = dict(RAW)
    doc = {"metadata": {}, "tensors": [entry]}
    {"top": doc, "entry": entry, "params": entry["params"]}[where]["x_unknown"] = "@@"
    return with_text(doc, [bytes(4)], "@@", text)


def lossy(codec: str, x=None, **kw):
    x = np.random.default_rng(0).normal(0, 1, (64, 40)).astype(np.float32) if x is None else x
    if codec == "ans-dq":
        codec, kw = "ans", dict(kw, quantizer="dq")
    data = bslcodec.save({"w": x}, codec=codec, **kw)
    codec = "ans-dq" if kw.get("quantizer") == "dq" else codec
    doc, payloads, minor = fr.split(data)
    assert doc["tensors"][0]["codec"] == codec
    return doc, payloads, minor


# ---------------------------------------------------------------- JSON strictness (spec 3, 5)

def test_nesting_depth_limit():
    """The top-level object is depth 1; an unknown key at the top level holding d nested arrays is depth
    d + 1."""
    ok = raw_file("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))
    assert bslcodec.load(ok)["t"].tolist() == [0, 0, 0, 0]
    for d in (MAX_JSON_DEPTH, 900, 100_000):
        with pytest.raises(FormatError, match="deeper than 64"):
            bslcodec.load(raw_file("[" * d + "]" * d))
    with pytest.raises(FormatError, match="deeper"):  # objects count as arrays do
        bslcodec.load(raw_file('{"a":' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH))


@pytest.mark.parametrize("token", ["1" * MAX_NUMBER_CHARS, "0." + "0" * (MAX_NUMBER_CHARS - 3) + "1",
                                   "-" + "9" * (MAX_NUMBER_CHARS - 1), "1e400"])
def test_number_tokens_up_to_the_limit_are_json(token):
    assert bslcodec.load(raw_file(token, "params"))["t"].size == 4


@pytest.mark.parametrize("token", ["1" * (MAX_NUMBER_CHARS + 1), "0." + "0" * MAX_NUMBER_CHARS + "1",
                                   "9" * 100_000])
def test_number_tokens_over_the_limit_are_rejected(token):
    with pytest.raises(FormatError, match="number of .* characters"):
        bslcodec.load(raw_file(token, "params"))


@pytest.mark.parametrize("token", ['"' + "1" * 5000 + '"', '"e-1", "' + "9" * 2000 + '": -' + "2" * 1000])
def test_long_runs_of_number_characters_in_strings_are_fine(token):
    """The reader skips its per-number checks only where no run of 1,025 number characters exists anywhere
    in the header; a string (value or key) holding such a run takes the checked path and still parses."""
    assert bslcodec.load(raw_file(token, "params"))["t"].size == 4


@pytest.mark.parametrize("text", ["1.0", "1e2", "4E0", "4.0e0", "true", '"4"'])
def test_integers_have_no_fraction_or_exponent(text):
    entry = dict(RAW, shape=["@@"])
    with pytest.raises(FormatError, match="integer"):
        bslcodec.load(with_text({"metadata": {}, "tensors": [entry]}, [bytes(4)], "@@", text))


def test_minus_zero_is_the_integer_zero():
    entry = dict(RAW, shape=[4])
    doc = {"metadata": {}, "tensors": [entry]}
    data = fr.build(doc, [bytes(4)], dumps=lambda d: _dumps(d).replace(b'"offset":0', b'"offset":-0'))
    assert b'"offset":-0' in data
    assert bslcodec.load(data)["t"].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("where", ["top", "entry", "params"])
@pytest.mark.parametrize("text", ['"\\ud800"', '"a\\udfffb"', '["\\udbff"]', '{"\\ud800":1}'])
def test_lone_surrogate_anywhere_is_rejected(where, text):
    with pytest.raises(FormatError, match="lone surrogate"):
        bslcodec.load(raw_file(text, where))


def test_escaped_pairs_and_escaped_backslashes_are_fine():
    for text in ['"\\ud83d\\ude00"', '"\\\\ud800"', '{"\\u00e9\\ud83d\\ude00":"\\\\udfff"}']:
        assert bslcodec.load(raw_file(text, "entry"))["t"].size == 4


def test_lone_surrogate_in_a_params_key_is_rejected():
    doc, payloads, minor = lossy("eg")
    doc["tensors"][0]["params"]["@@"] = 1
    with pytest.raises(FormatError, match="lone surrogate"):
        bslcodec.load(with_text(doc, payloads, "@@", '"\\udc00"'))


# ---------------------------------------------------------------- step: nearest binary64, must be binary32

@pytest.mark.parametrize("codec", ["eg", "ans", "ans-dq"])
def test_step_is_the_nearest_binary64_and_must_be_a_binary32(codec):
    doc, payloads, minor = lossy(codec, quantizer="dq" if codec == "ans-dq" else "uniform", rel_step=0.1)
    step = doc["tensors"][0]["params"]["step"]
    want = bslcodec.load(fr.build(doc, payloads, minor=minor))["w"]
    exact = f"{np.float32(step).item():.60f}".rstrip("0")  # the exact decimal of the binary32 value
    doc["tensors"][0]["params"]["step"] = "@@"
    for text in (repr(step), exact, exact + "0000", f"{step!r}e0", exact.replace("0.", "0.0", 1) + "e1"):
        assert float(text) == step, text  # all spell the same binary64
        assert np.array_equal(bslcodec.load(with_text(doc, payloads, "@@", text))["w"], want), text
    # a decimal whose nearest binary64 is not a binary32 value: rejected for F32, F16 and BF16
    near = repr(float(np.float32(step)) + float(np.spacing(np.float64(step))))
    with pytest.raises(FormatError, match="not a binary32"):
        bslcodec.load(with_text(doc, payloads, "@@", near))
    for text in ("1e400", "2" + "0" * 400):  # nearest binary64 is +inf (2**1024 - 1: issue 20 finding 1)
        with pytest.raises(FormatError, match="positive finite"):
            bslcodec.load(with_text(doc, payloads, "@@", text))


def test_f64_step_may_be_any_binary64():
    x = np.random.default_rng(1).normal(0, 1, (60, 50))
    doc, payloads, minor = lossy("eg", x=x, rel_step=0.1, quantizer="uniform")
    doc["tensors"][0]["params"]["step"] = 0.1  # not a binary32 value: fine for F64
    out = bslcodec.load(fr.build(doc, payloads, minor=minor))["w"]
    assert np.abs(out - x).max() < 0.6 and np.unique(np.round(out / 0.1, 6) % 1).size == 1


# ---------------------------------------------------------------- required and informational keys

@pytest.mark.parametrize("codec, required", [
    ("eg", ["step", "center", "lane_symbols"]), ("ans", ["step", "center", "lane_symbols"]),
    ("ans-dq", ["step", "center", "lane_symbols"]), ("fexp", ["lane_symbols"]),
    ("zstd", ["chunk_elems", "shuffle"])])
def test_required_params_and_only_those(codec, required):
    if codec in ("fexp", "zstd"):
        x = np.random.default_rng(2).normal(0, 1, 5000).astype(np.float32)
        data = bslcodec.save({"w": x}, lossless=["w"])
        doc, payloads, minor = fr.split(data)
        if doc["tensors"][0]["codec"] != codec:  # make the one asked for
            params, payload = (lossless.encode_zstd(x) if codec == "zstd" else fexp.encode(x, 16))
            doc["tensors"][0].update(codec=codec, params=params)
            payloads = [bytes(payload)]
    else:
        doc, payloads, minor = lossy(codec, quantizer="dq" if codec == "ans-dq" else "uniform")
    params = doc["tensors"][0]["params"]
    want = bslcodec.load(fr.build(doc, payloads, minor=minor))["w"]
    for key in required:
        d = json.loads(json.dumps(doc))
        del d["tensors"][0]["params"][key]
        with pytest.raises(FormatError):
            bslcodec.load(fr.build(d, payloads, minor=minor))
    # every other key is informational: absent or nonsense, the file decodes the same
    d = json.loads(json.dumps(doc))
    d["tensors"][0]["params"] = {k: v for k, v in params.items() if k in required}
    assert np.array_equal(bslcodec.load(fr.build(d, payloads, minor=minor))["w"], want)
    d["tensors"][0]["params"].update(k=99, gg_nu="x", gg_scale=None, max_abs_error=[1], zzz={})
    assert np.array_equal(bslcodec.load(fr.build(d, payloads, minor=minor))["w"], want)


@pytest.mark.parametrize("key", ["name", "dtype", "shape", "codec", "params", "offset", "length", "checksum"])
def test_required_entry_keys(key):
    entry = dict(RAW)
    doc = {"metadata": {}, "tensors": [entry]}
    data = fr.build(doc, [bytes(4)])
    d, p, _ = fr.split(data)
    del d["tensors"][0][key]
    with pytest.raises(FormatError, match=key if key != "params" else "params"):
        bslcodec.load(fr.build(d, p, fix_checksums=key != "checksum", fix_offsets=key != "offset",
                               fix_lengths=key != "length"))


def test_top_level_keys():
    assert bslcodec.load(fr.assemble(fr.pad_header(b'{"tensors":[]}'), b"")) == {}  # metadata may be absent
    for text in (b'{"metadata":{}}', b'{"metadata":{},"tensors":{}}', b"[]", b'{"tensors":[],"metadata":[]}'):
        with pytest.raises(FormatError):
            bslcodec.load(fr.assemble(fr.pad_header(text), b""))


# ---------------------------------------------------------------- zstd: one frame per chunk, nothing after

def test_zstd_chunk_is_exactly_one_frame():
    import zstandard
    x = np.arange(3000, dtype=np.uint16)
    c = zstandard.ZstdCompressor(write_content_size=True)
    doc = {"metadata": {}, "tensors": [{"name": "z", "dtype": "U16", "shape": [3000], "codec": "zstd",
                                         "params": {"chunk_elems": 3000, "shuffle": False}}]}
    one = c.compress(x.tobytes())
    assert np.array_equal(bslcodec.load(fr.build(doc, [fr.zstd_payload([one])]))["z"], x)
    half = x.tobytes()[:3000], x.tobytes()[3000:]
    two = c.compress(half[0]) + c.compress(half[1])  # two frames in one chunk: same bytes out, refused
    with_sum = zstandard.ZstdCompressor(write_content_size=True, write_checksum=True).compress(x.tobytes())
    assert np.array_equal(bslcodec.load(fr.build(doc, [fr.zstd_payload([with_sum])]))["z"], x)
    bad_sum = with_sum[:-1] + bytes([with_sum[-1] ^ 1])  # a frame checksum present: it is verified
    with pytest.raises(FormatError, match="checksum"):
        bslcodec.load(fr.build(doc, [fr.zstd_payload([bad_sum])]))
    skippable = (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"abcd"
    for frame in (two, one + b"\0", one + bytes(8), one + one, one + skippable, skippable + one):
        with pytest.raises(FormatError, match="zstd chunk 0"):
            bslcodec.load(fr.build(doc, [fr.zstd_payload([frame])]))


def test_zstd_frames_too_small_for_their_chunks_are_refused():
    """The expansion bound (spec 4.2: a frame expands at most ZSTD_MAX_RATIO x) over several chunks: checked
    summed before the output is allocated, naming the first chunk that breaks it; a chunk whose own frame
    breaks it while the sum does not is refused when it decodes. A valid multi-chunk payload decodes, and
    a refusal leaves the thread's decompressor usable for the next tensor."""
    import zstandard
    x = np.arange(3000, dtype=np.uint16)
    c = zstandard.ZstdCompressor(write_content_size=True)
    frames = [c.compress(x[i:i + 1000].tobytes()) for i in (0, 1000, 2000)]
    doc = {"metadata": {}, "tensors": [{"name": "z", "dtype": "U16", "shape": [3000], "codec": "zstd",
                                         "params": {"chunk_elems": 1000, "shuffle": False}}]}
    good = fr.build(doc, [fr.zstd_payload(frames)])
    assert np.array_equal(bslcodec.load(good)["z"], x)
    with pytest.raises(FormatError, match="zstd chunk 0 is 0 bytes, too small"):
        bslcodec.load(fr.build(doc, [fr.zstd_payload([b"", b"", b""])]))
    with pytest.raises(FormatError, match="zstd chunk 1"):
        bslcodec.load(fr.build(doc, [fr.zstd_payload([frames[0], b"", frames[2]])]))
    with pytest.raises(FormatError, match="zstd chunk 2"):
        bslcodec.load(fr.build(doc, [fr.zstd_payload([frames[0], frames[1], frames[2][:-3]])]))
    assert np.array_equal(bslcodec.load(good)["z"], x)


# ---------------------------------------------------------------- padding: writers 0, readers ignore

def _refill(payload: bytes, spans: list) -> bytes:
    b = bytearray(payload)
    for a, z in spans:
        assert a < z <= len(b) and not any(b[a:z]), (a, z)  # writers put zeros there
        b[a:z] = bytes([0xA5]) * (z - a)
    return bytes(b)


def _padding_spans(codec: str, payload: bytes, n: int, s: int, itemsize: int) -> list:
    if codec == "eg":
        g = golomb.n_groups(n, s)
        return [(64 * g + g, golomb.table_bytes(g)), (len(payload) - 8, len(payload))]
    if codec in ("ans", "ans-dq"):
        buf = np.frombuffer(payload, np.uint8)
        B = int(np.frombuffer(payload, "<u4", 1, 8)[0])
        h = (12 + B + 3) // 4 * 4
        spans = [(12 + B, h)] if h > 12 + B else []
        g = -(-n // (32 * s))
        words = np.frombuffer(payload, "<u4", g, h).astype(np.int64)
        pos = h + 4 * g
        for w in words:
            pos += 2 * w
            if w % 2:
                spans.append((pos, pos + 2))
                pos += 2
        assert pos == buf.size
        return spans
    assert codec == "fexp"
    m = payload[0]
    bits = 8 * itemsize - 8 - m
    rest = 8 + 2 ** (7 + m)
    r = -(-bits * n // 64)
    spans = [(len(payload) - 8, len(payload))]
    first_free = rest + -(-bits * n // 8)
    if first_free < rest + 8 * r:
        spans.append((first_free, rest + 8 * r))
    return spans


@pytest.mark.parametrize("codec", ["eg", "ans", "ans-dq", "fexp"])
def test_padding_is_ignored(codec):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (41, 1000)).astype(np.float32)  # several groups, a short last one
    if codec == "fexp":
        params, payload = fexp.encode(x.reshape(-1), 16)
        doc = {"metadata": {}, "tensors": [{"name": "w", "dtype": "F32", "shape": list(x.shape), "codec": "fexp",
                                             "params": params}]}
        minor, payload = 0, bytes(payload)
    else:
        kw = {"quantizer": "dq"} if codec == "ans-dq" else {"quantizer": "uniform"}
        doc, (payload,), minor = lossy(codec, x=x, rel_step=1 / 8, **kw)
    s = doc["tensors"][0]["params"]["lane_symbols"]
    want = bslcodec.load(fr.build(doc, [payload], minor=minor))["w"]
    spans = _padding_spans(codec, payload, x.size, s, 4)
    assert spans
    got = bslcodec.load(fr.build(doc, [_refill(payload, spans)], minor=minor))["w"]
    assert got.tobytes() == want.tobytes()


def test_ans_active_lanes_closed_form():
    """Spec 4.4: sum of A_g = 32(G-1) + min(32, N - 32S(G-1)) for G >= 1 (0 for N = 0)."""
    for n in (0, 1, 31, 32, 33, 511, 512, 513, 1000, 32 * 16 * 7 + 5, 32 * 16 * 7 + 40):
        s = 16
        g = -(-n // (32 * s))
        per_group = sum(min(32, min(n, (i + 1) * 32 * s) - i * 32 * s) for i in range(g))
        closed = 0 if g == 0 else 32 * (g - 1) + min(32, n - 32 * s * (g - 1))
        assert per_group == closed
        if n:
            payload = rans.encode(np.zeros(n, np.uint32), s, rans.build_model(np.zeros(n, np.uint32))[0])
            assert len(payload) >= 4 * g + 4 * closed


# ---------------------------------------------------------------- the spec's known answers

SPEC = (ROOT / "spec" / "bsl-v1.md").read_text()


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", " "))


def test_spec_known_answer_payloads():
    import xxhash

    from bslcodec.codecs import fexp_ref, golomb_ref, rans_ref
    p = golomb_ref.encode_payload(np.array([0, 1, 2, 3], np.uint32), 16, [0])
    assert len(p) == 88 and p[:8] == _hex("01 00 03 00 03 00 05 00") and p[72:80] == _hex("65 02 00 00 00 00 00 00")
    assert not any(p[8:72]) and not any(p[80:])
    cases = [
        ([1], dict(prob_bits=1, s=1, m=0, freqs=[1, 1]), "00 01 01 00 02 00 00 00 | 01 00 00 00 | 12 | 00 00 00 | "
         "02 00 00 00 | 01 00 02 00"),
        ([(1 << 20) + 0x5A5A5], dict(prob_bits=1, s=0, m=0, freqs=[0] * 21 + [2]),
         "00 01 00 00 16 00 00 00 | 02 00 00 00 | 61 19 | 00 00 | 03 00 00 00 | a5 a5 10 00 05 00 | 00 00"),
        ([0] * 40, dict(prob_bits=3, s=0, m=0, freqs=[8]),
         "00 03 00 00 01 00 00 00 | 01 00 00 00 | 18 | 00 00 00 | 40 00 00 00"),
    ]
    for u, kw, text in cases:
        got = rans_ref.encode_payload(np.array(u, np.uint32), 16, kw["prob_bits"], kw["s"], kw["m"], kw["freqs"], 0)
        assert text in SPEC
        if len(u) == 40:
            assert got == _hex(text) + _hex("00 00 01 00") * 32
        else:
            assert got == _hex(text)
        assert rans_ref.decode_payload(got, len(u), 16).tolist() == u
    lengths = np.zeros(256, np.uint8)
    lengths[[127, 128]] = 1
    p = fexp_ref.encode_payload(np.array([0x3F80, 0x4000, 0x4000], np.uint16), 2, 16, 0, lengths)
    want = bytearray(224)
    want[71], want[72], want[144:150], want[208] = 0x10, 0x01, _hex("01 00 01 00 01 00"), 0x06
    assert p == bytes(want)
    assert xxhash.xxh3_64_hexdigest(b"") == "2d06800538d394c2" and "2d06800538d394c2" in SPEC
    assert xxhash.xxh3_64_hexdigest(b"bsl") == "acdaadbd281bce2d" and "acdaadbd281bce2d" in SPEC


def test_spec_golomb_and_token_tables_match_the_tests():
    from test_golomb import KNOWN
    for (k, u), bits in KNOWN.items():
        assert f"{u} → `{bits}`" in SPEC, (k, u)
    from bslcodec.codecs import rans_ref
    for (u, s, m), (tok, nb, r) in {(3, 2, 1): (3, 0, 0), (5, 2, 1): (4, 1, 1), (17, 2, 1): (8, 3, 1),
                                    (100, 2, 1): (13, 5, 4), (1, 0, 0): (1, 0, 0), (2, 0, 0): (2, 1, 0),
                                    (3, 0, 0): (2, 1, 1)}.items():
        assert rans_ref.token_of(u, s, m) == (tok, nb, r)
        assert f"({u}, {s}, {m}) → ({tok}, {nb}, {r})" in SPEC.replace("→\n(", "→ (")
    assert rans_ref.token_of((1 << 25) - 1, 12, 4) == (4303, 20, (1 << 20) - 1)
