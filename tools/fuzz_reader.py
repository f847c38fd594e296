"""Fuzz the ``.bsl`` reader: hostile files must end in ``BslError`` or a correct decode, never a crash.

Usage::

    python tools/fuzz_reader.py --seconds 300                 # structure-aware mutation fuzzer (no deps)
    python tools/fuzz_reader.py --atheris --seconds 300        # coverage-guided (pip install atheris)
    python tools/fuzz_reader.py --write-corpus                 # regenerate fixtures/corpus/

Each fuzz process runs under an address-space limit (``--mem-gb``, default 6): an allocation that is not
bounded by the file size shows up as a ``MemoryError`` finding instead of taking the machine down. Each
input runs in a child process watched by a per-input timeout, so a hang or a segfault is a finding too
(the input is saved under ``--findings``).

The mutation helpers here (``split``, ``build``, ``MUTATORS``, ``check``) are also used by
``tests/test_hostile.py``. Hostile files that are interesting are kept in ``fixtures/corpus/`` with the
outcome they must have (``manifest.json``); the normal test run replays them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import struct
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import xxhash

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bslcodec  # noqa: E402
from bslcodec.codecs import golomb  # noqa: E402
from bslcodec.container.errors import BslError  # noqa: E402
from bslcodec.container.format import MAGIC, PREAMBLE, PREAMBLE_BYTES, align  # noqa: E402

CORPUS = ROOT / "fixtures" / "corpus"

# ---------------------------------------------------------------- building files by hand


def header_json(data: bytes) -> bytes:
    """The JSON text of a file's header (spec 2.1: a compressed header is unpacked; trusts the sizes)."""
    _, _, _, flags, hlen, _ = PREAMBLE.unpack(data[:PREAMBLE_BYTES])
    region = data[PREAMBLE_BYTES:PREAMBLE_BYTES + hlen]
    if not flags & 1:
        return region
    import zstandard
    jlen, flen = struct.unpack_from("<QQ", region, 0)
    return zstandard.ZstdDecompressor().decompress(region[16:16 + flen], max_output_size=jlen)


def zstd_header(raw: bytes, *, jlen=None, flen=None, frame=None, pad=None) -> bytes:
    """A compressed header region (spec 2.1) for JSON ``raw``; each part may be overridden (hostile cases)."""
    import zstandard
    frame = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(raw) if frame is None else frame
    body = struct.pack("<QQ", len(raw) if jlen is None else jlen, len(frame) if flen is None else flen) + frame
    return body + (bytes(align(PREAMBLE_BYTES + len(body)) - PREAMBLE_BYTES - len(body)) if pad is None else pad)


def split(data: bytes) -> tuple:
    """(doc, payloads, minor) of a well-formed file (trusts it: use on seeds only)."""
    _, _, minor, _, hlen, _ = PREAMBLE.unpack(data[:PREAMBLE_BYTES])
    doc = json.loads(header_json(data).decode("utf-8"))
    d0 = PREAMBLE_BYTES + hlen
    payloads = [data[d0 + t["offset"]:d0 + t["offset"] + t["length"]] for t in doc["tensors"]]
    return doc, payloads, minor


def pad_header(raw: bytes) -> bytes:
    return raw + b" " * (align(PREAMBLE_BYTES + len(raw)) - PREAMBLE_BYTES - len(raw))


def assemble(header: bytes, region: bytes, *, hsum=None, hlen=None, magic=MAGIC, major=1, minor=0,
             flags=0) -> bytes:
    """Preamble + header + data region; the header checksum is recomputed unless ``hsum`` is given."""
    hsum = xxhash.xxh3_64_intdigest(header) if hsum is None else hsum
    hlen = len(header) if hlen is None else hlen
    return PREAMBLE.pack(magic, major, minor, flags, hlen, hsum) + header + region


def build(doc: dict, payloads: list, *, fix_checksums=True, fix_offsets=True, fix_lengths=True, minor=0,
          dumps=None) -> bytes:
    """A file from a header document and payloads, with checksums/offsets/lengths recomputed as asked.

    An attacker can always do this, so a file built here is "valid" as far as checksums go: only the
    parsers and decoders stand between it and the process.
    """
    doc = json.loads(json.dumps(doc))  # private copy
    region = bytearray()
    for t, p in zip(doc["tensors"], payloads):
        if fix_offsets:
            region += bytes(align(len(region)) - len(region))
            t["offset"] = len(region)
        if fix_lengths:
            t["length"] = len(p)
        if fix_checksums:
            t["checksum"] = xxhash.xxh3_64_hexdigest(p)
        region += p
    dumps = dumps or (lambda d: json.dumps(d, sort_keys=True, separators=(",", ":"),
                                           ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return assemble(pad_header(dumps(doc)), bytes(region), minor=minor)


def rechecksum(data: bytes) -> bytes:
    """Recompute the header checksum and every payload checksum of ``data``, where it still parses."""
    try:
        _, _, minor, flags, hlen, _ = PREAMBLE.unpack(data[:PREAMBLE_BYTES])
        header = data[PREAMBLE_BYTES:PREAMBLE_BYTES + hlen]
        doc = json.loads(header_json(data).decode("utf-8"))
        d0 = PREAMBLE_BYTES + hlen
        changed = False
        for t in doc["tensors"]:
            p = data[d0 + t["offset"]:d0 + t["offset"] + t["length"]]
            cs = xxhash.xxh3_64_hexdigest(p)
            if t.get("checksum") != cs:
                t["checksum"], changed = cs, True
        if changed:
            raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            new = zstd_header(raw) if flags & 1 else pad_header(raw)
            if len(new) == hlen:  # same length: keep offsets valid
                header = new
        return assemble(header, data[d0:], minor=minor, flags=flags, hlen=hlen)
    except Exception:  # noqa: BLE001 - not parseable any more: fix only the header checksum
        if len(data) < PREAMBLE_BYTES:
            return data
        hlen = struct.unpack_from("<Q", data, 16)[0]
        header = data[PREAMBLE_BYTES:PREAMBLE_BYTES + hlen]
        return data[:24] + struct.pack("<Q", xxhash.xxh3_64_intdigest(header)) + data[32:]


# ---------------------------------------------------------------- seeds


def seeds() -> dict:
    """Small valid files covering every codec, dtype family and group/chunk edge."""
    rng = np.random.default_rng(7)
    w = rng.normal(0, 0.02, (64, 40)).astype(np.float32)
    out = {}
    out["mixed"] = bslcodec.save({
        "a.w": w,                                                    # eg, F32, 3 groups of 32*... (S=512: 1 group)
        "b.bias": rng.normal(0, 1, 40).astype(np.float32),          # zstd or raw
        "c.ids": np.arange(300, dtype=np.int64),                     # zstd
        "d.mask": (rng.random(50) > 0.5),                            # BOOL
        "e.h": rng.normal(0, 1, (48, 48)).astype(np.float16),        # eg F16
        "f.scalar": np.float64(3.5),                                 # 0-d
        "g.empty": np.zeros((0, 3), np.float32),                     # empty
        "h.rnd": rng.integers(0, 256, 100).astype(np.uint8),         # raw (incompressible)
    }, metadata={"format": "test", "ü": "ß"}, expert={"rel_step": 1 / 16})
    import ml_dtypes
    out["bf16_f64"] = bslcodec.save({
        "bf": rng.normal(0, 1, (40, 40)).astype(ml_dtypes.bfloat16),
        "d": rng.normal(0, 1, (30, 30)).astype(np.float64)}, max_error=0.05)
    out["zeros"] = bslcodec.save({"z": np.zeros(5000, np.float32), "o": np.ones((70, 70), np.float32)},
                                 exact=["z", "o"])
    out["empty"] = bslcodec.save({})
    # a header of over 4 KiB: written compressed (spec 2.1, .bsl 1.2)
    out["zstd_header"] = bslcodec.save({f"layer.{i}.{k}": rng.normal(0, 1, 8 + i).astype(np.float32)
                                        for i in range(24) for k in ("weight", "bias")}, expert={"rel_step": 1 / 16})
    return out


def eg_file(u: np.ndarray, lane_symbols=16, ks=None, dtype="F32", step=0.5, center=0, shape=None,
            payload=None) -> bytes:
    """A one-tensor ``eg`` file holding symbols ``u`` (or the given payload), checksums correct."""
    n = u.size
    if payload is None:
        if ks is None:
            ks, lens = golomb.choose_orders(u.astype(np.uint32), lane_symbols, 0, 4)
        else:
            lens = _lens(u, lane_symbols, ks)
        payload = golomb.encode(u.astype(np.uint32), lane_symbols, np.asarray(ks, np.uint8), lens)
    doc = {"metadata": {}, "tensors": [{
        "name": "t", "dtype": dtype, "shape": list(shape if shape is not None else (n,)), "codec": "eg",
        "params": {"step": step, "center": center, "lane_symbols": lane_symbols, "k": 0, "gg_nu": 2.0,
                   "gg_scale": 1.0, "max_abs_error": 0.25}, "offset": 0, "length": 0, "checksum": ""}]}
    return build(doc, [payload])


def eg_past_end_file() -> bytes:
    """A file that ends on a 4096-byte page boundary with an ``eg`` payload whose last lane is declared
    one code word short and ends exactly at its group's last word: a decoder that looks at the next code
    word before checking the lane end reads 8 bytes past the end of the file (a segfault when mapped)."""
    s, k = 16, 1
    n = 32 * s
    u = np.zeros(n, np.int64)
    lane31 = [(1 << 23) - 2] * 8 + [(1 << 18) - 2] + [0] * 7  # code lengths 46 x 8, 36, 2 x 7 (k = 1)
    u[31::32] = lane31
    ks = np.array([k], np.uint8)
    lens = _lens(u, s, ks)
    assert lens.sum() == 992 + 416 + 2, lens.sum()
    full = golomb.encode(u.astype(np.uint32), s, ks, lens)
    cut = lens.copy()
    cut[0, 31] -= 2  # the last code word (u = 0, 2 bits) is no longer inside the lane
    words = 1408 // 64
    head = golomb.table_bytes(1)
    payload = cut.astype("<u2").tobytes() + bytes([k]) + bytes(head - 65) + full[head:head + 8 * words] + bytes(8)
    assert len(payload) % 64 == 0
    doc, payloads, _ = split(eg_file(u.astype(np.uint32), lane_symbols=s, payload=payload, center=0))
    for pad in range(0, 4096, 64):
        doc["metadata"] = {"pad": "x" * pad}
        data = build(doc, payloads)
        if len(data) % 4096 == 0:
            return data
    raise AssertionError("no padding gives a page-aligned file")


def _lens(u, s, ks):
    from bslcodec.codecs.golomb_ref import codeword_length
    g_count = golomb.n_groups(u.size, s)
    lens = np.zeros((g_count, 32), np.int64)
    for e, x in enumerate(u):
        g = e // (32 * s)
        lens[g, (e - g * 32 * s) % 32] += codeword_length(int(x), int(ks[g]))
    return lens


def one_tensor(entry: dict, payload: bytes, metadata=None) -> bytes:
    base = {"name": "t", "dtype": "F32", "shape": [1], "codec": "raw", "params": {}, "offset": 0,
            "length": 0, "checksum": ""}
    base.update(entry)
    return build({"metadata": metadata or {}, "tensors": [base]}, [payload])


def zstd_payload(frames: list) -> bytes:
    return struct.pack(f"<{1 + len(frames)}I", len(frames), *map(len, frames)) + b"".join(frames)


# ---------------------------------------------------------------- the oracle


class Finding(Exception):
    """The reader misbehaved on an input (anything but BslError or a correct decode)."""


def check(data: bytes, *, slices=True) -> str:
    """Read ``data`` every way the API allows; returns "ok" or the BslError class name.

    Raises :class:`Finding` for any other exception. "Correct decode" for a file that passes: every
    tensor has its declared dtype and shape, and a slice read agrees with the full read.
    """
    import warnings

    # the modules by name: since the thirteenth session ``import bslcodec`` loads neither files.api nor
    # pipeline.codec (a load onto a GPU imports no encoder), so attribute access alone failed in a fresh worker
    from bslcodec.container.dtypes import numpy_dtype
    from bslcodec.files.source import _Source
    from bslcodec.pipeline import codec as _codec
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # -W error must not turn a read into a crash
                got = bslcodec.load(data)
        except BslError as exc:
            if not str(exc):
                raise Finding(f"{type(exc).__name__} without a message") from None
            return type(exc).__name__
        src = _Source(data=data)
        for e in src.index.entries:
            arr = got[e.name]
            want = numpy_dtype(e.dtype)
            if arr.dtype != want or arr.shape != tuple(e.shape):
                raise Finding(f"tensor {e.name!r}: decoded {arr.dtype}{arr.shape}, header says "
                              f"{e.dtype}{list(e.shape)}")
            if slices and e.shape and e.shape[0] > 1:
                h = e.shape[0] // 2
                part = _codec.decode_flat(e, src.payload(e), "slice", h * (arr.size // e.shape[0]),
                                          arr.size).reshape((e.shape[0] - h,) + tuple(e.shape[1:]))
                if not np.array_equal(part.view(np.uint8), arr[h:].view(np.uint8)):
                    raise Finding(f"tensor {e.name!r}: slice decode differs from the full decode")
        return "ok"
    except Finding:
        raise
    except Exception as exc:  # noqa: BLE001 - this is exactly what we hunt for
        raise Finding(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}") from None


# ---------------------------------------------------------------- mutators (structure-aware)


def _flip(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    i = rnd.randrange(len(b))
    b[i] ^= 1 << rnd.randrange(8)
    return bytes(b)


def _truncate(data: bytes, rnd: random.Random) -> bytes:
    return data[:rnd.randrange(len(data))]


def _append(data: bytes, rnd: random.Random) -> bytes:
    return data + bytes(rnd.randrange(256) for _ in range(rnd.choice([1, 7, 64])))


def _bytes_in_region(data, rnd, region):
    """Overwrite 1-8 bytes inside the preamble / header / data region with interesting values."""
    try:
        hlen = struct.unpack_from("<Q", data, 16)[0]
    except struct.error:
        return _flip(data, rnd)
    lo, hi = {"pre": (0, 32), "head": (32, 32 + hlen), "data": (32 + hlen, len(data))}[region]
    hi = min(hi, len(data))
    if hi <= lo:
        return _flip(data, rnd)
    b = bytearray(data)
    i = rnd.randrange(lo, hi)
    val = rnd.choice([b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                      b"\xff" * 8, b"\x00" * 8, bytes([rnd.randrange(256)]), b"\xc0", b"\xed\xa0\x80"])
    b[i:i + len(val)] = val[:max(0, min(len(val), len(b) - i))]
    return bytes(b)


HUGE = [2**31, 2**32, 2**32 - 1, 2**48, 2**48 + 1, 2**53 - 1, 2**53, 2**63 - 1, 2**63, 2**64, 10**30, -1,
        -(2**63)]
ODD = [None, True, False, 0, -1, 1.5, float("nan"), float("inf"), "", "x", [], {}, [1], {"a": 1}, 10**400,
       1e308, -0.0, 2**64]


def _mut_doc(doc: dict, payloads: list, rnd: random.Random) -> tuple:
    """Mutate the header document (checksums are recomputed by the caller)."""
    ts = doc["tensors"]
    op = rnd.randrange(18)
    if not ts:
        doc["tensors"] = [{"name": "x", "dtype": "F32", "shape": [rnd.choice(HUGE)], "codec": "raw",
                           "params": {}, "offset": 0, "length": 0, "checksum": "0" * 16}]
        return doc, [b""], {}
    t = rnd.choice(ts)
    fix = {}
    if op == 0:  # huge or odd shape
        t["shape"] = [rnd.choice(HUGE + [0, 1, 2, 3])] + [rnd.choice([1, 2, 2**20, 2**40]) for _ in range(rnd.randrange(3))]
    elif op == 1:
        t["shape"] = rnd.choice([[1] * 33, [2**24] * 3, [[1]], ["3"], [1.0], [True], {}, "12", None, [-1]])
    elif op == 2:  # shape off by one: element count no longer matches the payload
        if t["shape"]:
            i = rnd.randrange(len(t["shape"]))
            t["shape"][i] = max(0, t["shape"][i] + rnd.choice([-1, 1, 17, 1024, 2**20]))
        else:
            t["shape"] = [rnd.choice([0, 2, 2**30])]
    elif op == 3:
        t["dtype"] = rnd.choice(["F32", "F64", "F16", "BF16", "I8", "U64", "BOOL", "f32", "", [], None, "F8"])
    elif op == 4:
        t["codec"] = rnd.choice(["raw", "zstd", "eg", "EG", "gzip", None, 1])
    elif op == 5:  # params with wrong types / ranges
        key = rnd.choice(["step", "center", "lane_symbols", "chunk_elems", "shuffle", "k", "gg_nu", "zzz"])
        t["params"][key] = rnd.choice(ODD + HUGE + [16, 32, 1024, 2048, 8, 2**28, 2**28 + 1, 1e-45, 3.4e38])
    elif op == 6:
        t["params"] = rnd.choice([None, [], "x", 1, {}])
    elif op == 7:  # names: empty, long, duplicate, non-string, surrogates, control chars
        t["name"] = rnd.choice(["", "a" * 1025, "é" * 600, ts[0]["name"], 1, None, "\ud800", "\x00", "a/../b",
                                "\u202e", "a" * 1024])
    elif op == 8:  # offsets: swapped, overlapping, unaligned, huge
        if len(ts) > 1 and rnd.random() < 0.5:
            a, b = rnd.sample(range(len(ts)), 2)
            ts[a]["offset"], ts[b]["offset"] = ts[b]["offset"], ts[a]["offset"]
        else:
            t["offset"] = rnd.choice(HUGE + [1, 63, 64, t["offset"] + 64, max(0, t["offset"] - 64), 1.0, "0"])
        fix["offsets"] = False
    elif op == 9:  # lengths
        t["length"] = rnd.choice(HUGE + [0, t["length"] + 1, max(0, t["length"] - 1), t["length"] + 64])
        fix["lengths"] = False
    elif op == 10:  # reorder entries (offsets recomputed -> names no longer sorted)
        rnd.shuffle(ts)
    elif op == 11:  # drop a key / add unknown keys
        if rnd.random() < 0.5:
            del t[rnd.choice(["name", "dtype", "shape", "codec", "params", "offset", "length", "checksum"])]
        else:
            t[rnd.choice(["extra", "future"])] = rnd.choice(ODD[:6])
            doc["x-future"] = 1
    elif op == 12:
        doc["metadata"] = rnd.choice([{"a": 1}, [], None, {"k": "\ud83d"}, {"": ""}, "x"])
    elif op == 13:  # duplicate a tensor entry (duplicate name)
        ts.append(json.loads(json.dumps(t)))
        payloads.append(payloads[ts.index(t)])
    elif op == 14:
        doc["tensors"] = rnd.choice([None, {}, "x", [1], [[]]])
    elif op == 15:  # swap codecs / params between tensors
        o = rnd.choice(ts)
        t["params"], o["params"] = o["params"], t["params"]
    elif op == 16:  # checksum field odd
        t["checksum"] = rnd.choice(["", "0" * 15, "G" * 16, "0" * 16, t.get("checksum", "").upper(), 0])
        fix["checksums"] = False
    else:  # rank / scalar edge
        t["shape"] = rnd.choice([[], [0], [1] * 32, [2**16, 2**16, 2**16], [2**24, 2**24]])
    return doc, payloads, fix


def _mut_payload(doc: dict, payloads: list, rnd: random.Random) -> tuple:
    """Mutate a payload structurally (the caller recomputes its checksum)."""
    if not payloads:
        return doc, payloads, {}
    i = rnd.randrange(len(payloads))
    p = bytearray(payloads[i])
    t = doc["tensors"][i]
    codec = t.get("codec")
    op = rnd.randrange(8)
    if op == 0 and p:  # bit flip with a correct checksum: the decoder itself must notice (or decode)
        j = rnd.randrange(len(p))
        p[j] ^= 1 << rnd.randrange(8)
    elif op == 1:  # truncate / extend
        p = p[:rnd.randrange(len(p) + 1)] if rnd.random() < 0.7 else p + bytes(rnd.choice([1, 8, 64]))
    elif op == 2 and codec == "eg" and len(p) >= 64:  # lane lengths (uint16 table at the start)
        g = _groups(t)
        j = rnd.randrange(max(1, 32 * g))
        v = rnd.choice([0, 1, 0xFFFF, rnd.randrange(1 << 16)])
        if 2 * j + 2 <= len(p):
            p[2 * j:2 * j + 2] = struct.pack("<H", v)
    elif op == 3 and codec == "eg":  # group orders
        g = _groups(t)
        if 64 * g + g <= len(p) and g:
            p[64 * g + rnd.randrange(g)] = rnd.choice([0, 1, 24, 25, 255])
    elif op == 4 and codec == "zstd" and len(p) >= 8:  # chunk table
        j = rnd.randrange(len(p[:4 + 4 * max(1, struct.unpack_from("<I", p)[0] if len(p) >= 4 else 1)]) // 4)
        if 4 * j + 4 <= len(p):
            p[4 * j:4 * j + 4] = struct.pack("<I", rnd.choice([0, 1, 2**31, 2**32 - 1, rnd.randrange(1 << 12)]))
    elif op == 5 and codec == "zstd":  # frame content-size field / whole frame replaced by a bomb
        n = max(1, rnd.choice([1, 2**20, 2**28, 2**40]))
        import zstandard
        frame = zstandard.ZstdCompressor(write_content_size=True).compress(b"\0" * min(n, 1 << 20))
        if n > 1 << 20:  # rewrite the declared content size (FCS field of the frame header)
            frame = _with_content_size(frame, n)
        p = bytearray(zstd_payload([frame]))
        t["params"] = {"chunk_elems": rnd.choice([1, 2**20, 2**28]), "shuffle": rnd.random() < 0.5}
        t["shape"] = [rnd.choice([n, n // 4, 1, 2**28, 2**40])]
    elif op == 6 and len(p) >= 8:  # zero or 0xff a whole word
        j = rnd.randrange(len(p) // 8) * 8
        p[j:j + 8] = rnd.choice([bytes(8), b"\xff" * 8])
    else:
        p = bytearray(rnd.randbytes(rnd.choice([0, 1, 8, 73, 200])))
    payloads[i] = bytes(p)
    return doc, payloads, {}


def _groups(t: dict) -> int:
    try:
        s = t["params"].get("lane_symbols", 512)
        return int(golomb.n_groups(int(math.prod(t["shape"])), s if isinstance(s, int) and s > 0 else 512))
    except Exception:  # noqa: BLE001 - a mutated entry: any guess will do
        return 1


def _with_content_size(frame: bytes, size: int) -> bytes:
    """Rewrite a zstd frame header so that it declares an 8-byte content size ``size``."""
    fhd = frame[4]
    single = (fhd >> 5) & 1
    dict_id = [0, 1, 2, 4][fhd & 3]
    fcs_code = fhd >> 6
    fcs_len = [1 if single else 0, 2, 4, 8][fcs_code]
    pos = 5 + (0 if single else 1) + dict_id
    new_fhd = (fhd & 0x3F) | (3 << 6)
    return frame[:4] + bytes([new_fhd]) + frame[5:pos] + struct.pack("<Q", size) + frame[pos + fcs_len:]


def mutate(data: bytes, rnd: random.Random, seed_parts=None) -> bytes:
    """One hostile variant of a valid file: raw byte damage, or a structural change with checksums fixed."""
    if len(data) < 2:
        return data + rnd.randbytes(rnd.choice([1, 31, 32, 64]))
    kind = rnd.random()
    if kind < 0.15 or seed_parts is None:
        return rnd.choice([_flip, _truncate, _append])(data, rnd)
    if kind < 0.3:
        out = _bytes_in_region(data, rnd, rnd.choice(["pre", "head", "data"]))
        return rechecksum(out) if rnd.random() < 0.7 else out
    doc, payloads, minor = seed_parts
    doc = json.loads(json.dumps(doc))
    payloads = list(payloads)
    fix = {}
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        try:
            doc, payloads, f = (_mut_doc if rnd.random() < 0.55 else _mut_payload)(doc, payloads, rnd)
        except (TypeError, KeyError, AttributeError, ValueError, IndexError):
            continue  # an earlier mutation left nothing this one understands
        fix.update(f)
    try:
        return build(doc, payloads, fix_checksums=fix.get("checksums", True),
                     fix_offsets=fix.get("offsets", True) and _offsets_ok(doc),
                     fix_lengths=fix.get("lengths", True), minor=minor)
    except (TypeError, ValueError, KeyError):  # the mutation broke the doc too far for build(): dump as is
        raw = json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
        return assemble(pad_header(raw), b"".join(payloads))


def _offsets_ok(doc):
    return isinstance(doc.get("tensors"), list) and all(isinstance(t, dict) for t in doc["tensors"])


# ---------------------------------------------------------------- corpus

def corpus_cases() -> dict:
    """name -> (bytes, expected outcome): hostile files with correct checksums, found or designed."""
    import zstandard
    c = {}
    s = seeds()
    rng = np.random.default_rng(1)
    u = (rng.geometric(0.3, 2000) - 1).astype(np.uint32)
    good = eg_file(u)
    doc, payloads, _ = split(good)

    # --- eg payloads whose tables lie (checksums correct)
    n = 32 * 16  # one full group, S = 16
    zero_len = bytearray(golomb.table_bytes(1) + 8)  # lanes of length 0, one zero word
    c["eg_zero_lanes"] = (eg_file(np.zeros(n, np.uint32), payload=bytes(zero_len)), "FormatError")
    c["eg_lane_ends_at_file_end_page"] = (eg_past_end_file(), "FormatError")
    p = bytearray(golomb.encode(np.zeros(n, np.uint32), 16, np.zeros(1, np.uint8),
                                np.full((1, 32), 16, np.int64)))
    p[0:2] = struct.pack("<H", 8)  # lane 0: 8 bits for 16 symbols
    p[2:4] = struct.pack("<H", 24)  # lane 1 takes them: group total unchanged, payload length still matches
    c["eg_lane_too_short_same_total"] = (eg_file(np.zeros(n, np.uint32), payload=bytes(p)), "FormatError")
    big = np.full(n, (1 << 25) - 1, np.uint32)  # symbol that gives |q| >= 2^24
    c["eg_symbol_over_2_24"] = (eg_file(big, ks=[0]), "FormatError")
    c["eg_center_plus_symbol_over_2_24"] = (eg_file(np.full(n, 2, np.uint32), center=(1 << 24) - 1),
                                             "FormatError")
    c["eg_order_25"] = (eg_file(np.zeros(n, np.uint32), payload=bytes(_set(bytearray(golomb.encode(
        np.zeros(n, np.uint32), 16, np.zeros(1, np.uint8), np.full((1, 32), 16, np.int64))), 64, 25))),
        "FormatError")
    # 2^48 F64 elements declared over a 73-byte payload
    c["eg_huge_shape_tiny_payload"] = (eg_file(np.zeros(n, np.uint32), shape=[2**24, 2**24], dtype="F64",
                                               payload=bytes(zero_len)), "FormatError")
    c["eg_shape_one_more_group"] = (eg_file(u, shape=[u.size + 32 * 16]), "FormatError")
    c["eg_shape_one_less"] = (eg_file(u, shape=[u.size - 1]), "FormatError")
    c["eg_step_huge_int"] = (eg_file(u, step=10**400), "FormatError")
    # issue 20: an integer step just below 2^1024 (bit_length 1024) still overflows float(); and eg group
    # tables with no code words (65 bytes a group declaring 32·1024 elements: the GPU decoder used to
    # allocate the output before noticing)
    c["eg_step_int_2_1024_minus_1"] = (eg_file(u, step=2**1024 - 1), "FormatError")
    c["eg_tables_only_1000_groups"] = (eg_file(np.zeros(n, np.uint32), lane_symbols=1024, shape=[1000 * 32 * 1024],
                                               payload=bytes(golomb.table_bytes(1000) + 8)), "FormatError")
    c["eg_step_not_binary32"] = (eg_file(u, step=0.1), "FormatError")
    c["eg_step_bool"] = (eg_file(u, step=True), "FormatError")
    c["eg_lane_symbols_2048"] = (_patch_params(good, lane_symbols=2048), "FormatError")
    c["eg_f16_overflow_to_inf"] = (eg_file(np.full(600, 40, np.uint32), dtype="F16", step=10000.0), "ok")
    c["eg_for_int_dtype"] = (_patch_entry(good, dtype="I32"), "FormatError")

    # --- zstd: bombs and lying tables
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(1 << 16))
    bomb = _with_content_size(frame, 2**40 * 4)
    c["zstd_declares_2_40_elems"] = (one_tensor({"dtype": "F32", "shape": [2**40], "codec": "zstd",
                                                 "params": {"chunk_elems": 2**28, "shuffle": False}},
                                                zstd_payload([bomb] * 4096)), "FormatError")
    c["zstd_chunk_2_28_tiny_frame"] = (one_tensor({"dtype": "F64", "shape": [2**28], "codec": "zstd",
                                                   "params": {"chunk_elems": 2**28, "shuffle": True}},
                                                  zstd_payload([_with_content_size(frame, 2**31)])),
                                       "FormatError")
    nocs = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(400))
    c["zstd_frame_without_size"] = (one_tensor({"dtype": "F32", "shape": [100], "codec": "zstd",
                                                "params": {"chunk_elems": 100, "shuffle": True}},
                                               zstd_payload([nocs])), "FormatError")
    ok = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(400))
    c["zstd_frame_plus_trailing_garbage"] = (one_tensor({"dtype": "F32", "shape": [100], "codec": "zstd",
                                                         "params": {"chunk_elems": 100, "shuffle": True}},
                                                        zstd_payload([ok + b"\x00garbage"])), "FormatError")
    c["zstd_two_frames_in_one_chunk"] = (one_tensor({"dtype": "F32", "shape": [100], "codec": "zstd",
                                                     "params": {"chunk_elems": 100, "shuffle": True}},
                                                    zstd_payload([ok + ok])), "FormatError")
    c["zstd_chunk_count_2_32"] = (one_tensor({"dtype": "U8", "shape": [2**32], "codec": "zstd",
                                              "params": {"chunk_elems": 1, "shuffle": False}},
                                             struct.pack("<I", 0)), "FormatError")
    c["zstd_params_wrong_types"] = (one_tensor({"dtype": "F32", "shape": [100], "codec": "zstd",
                                                "params": {"chunk_elems": 100.0, "shuffle": 1}},
                                               zstd_payload([ok])), "FormatError")
    c["zstd_valid_all_zeros"] = (one_tensor({"dtype": "F32", "shape": [100], "codec": "zstd",
                                             "params": {"chunk_elems": 100, "shuffle": True}},
                                            zstd_payload([ok])), "ok")
    c["bool_byte_2"] = (one_tensor({"dtype": "BOOL", "shape": [3], "codec": "raw"}, b"\x00\x01\x02"),
                        "FormatError")
    c["raw_length_mismatch"] = (one_tensor({"dtype": "F32", "shape": [3], "codec": "raw"}, bytes(8)),
                                "FormatError")
    c["raw_shape_2_48_u8"] = (one_tensor({"dtype": "U8", "shape": [2**24, 2**24], "codec": "raw"}, bytes(8)),
                              "FormatError")
    c["shape_over_max_elements"] = (one_tensor({"dtype": "U8", "shape": [2**24, 2**24, 2], "codec": "raw"},
                                               b""), "LimitError")
    c["shape_rank_33"] = (one_tensor({"dtype": "U8", "shape": [1] * 33, "codec": "raw"}, b"\x01"),
                          "LimitError")
    c["shape_zero_times_huge"] = (one_tensor({"dtype": "F64", "shape": [0, 2**20, 2**40], "codec": "raw"}, b""),
                                  "LimitError")  # found by the fuzzer: numpy cannot make this empty array
    c["shape_dim_2_53"] = (one_tensor({"dtype": "U8", "shape": [2**53, 0], "codec": "raw"}, b""),
                           "FormatError")
    c["dtype_unhashable"] = (one_tensor({"dtype": ["F32"]}, bytes(4)), "FormatError")
    c["codec_unhashable"] = (one_tensor({"codec": {"raw": 1}}, bytes(4)), "FormatError")
    c["name_lone_surrogate"] = (one_tensor({"name": "\ud800"}, bytes(4)), "FormatError")
    ascii_dump = lambda d: json.dumps(d, sort_keys=True, separators=(",", ":")).encode()  # noqa: E731
    c["name_escaped_surrogate"] = (build({"metadata": {}, "tensors": [
        {"name": "a\udc80", "dtype": "U8", "shape": [1], "codec": "raw", "params": {}, "offset": 0,
         "length": 0, "checksum": ""}]}, [b"\x01"], dumps=ascii_dump), "FormatError")
    c["metadata_escaped_surrogate"] = (build({"metadata": {"\ud83d": "x"}, "tensors": []}, [], dumps=ascii_dump),
                                       "FormatError")
    c["metadata_lone_surrogate"] = (one_tensor({}, bytes(4), metadata={"k": "\udfff"}), "FormatError")
    c["name_1025_bytes"] = (one_tensor({"name": "a" * 1025}, bytes(4)), "FormatError")
    c["name_1024_bytes"] = (one_tensor({"name": "é" * 512}, bytes(4)), "ok")
    # duplicates: names and JSON keys
    two = {"metadata": {}, "tensors": [
        {"name": "t", "dtype": "U8", "shape": [1], "codec": "raw", "params": {}, "offset": 0, "length": 0,
         "checksum": ""}] * 2}
    c["duplicate_name"] = (build(two, [b"\x01", b"\x02"]), "FormatError")
    c["duplicate_json_key"] = (assemble(pad_header(b'{"metadata":{},"metadata":{},"tensors":[]}'), b""),
                               "FormatError")
    c["header_invalid_utf8"] = (assemble(pad_header(b'{"metadata":{"a":"\xff"},"tensors":[]}'), b""),
                                "FormatError")
    c["header_nan_literal"] = (assemble(pad_header(b'{"metadata":{},"tensors":[],"x":NaN}'), b""),
                               "FormatError")
    c["header_deep_nesting"] = (assemble(pad_header(b'{"metadata":{},"tensors":[],"x":' + b"[" * 100000 +
                                                    b"]" * 100000 + b"}"), b""), "FormatError")
    c["header_int_100k_digits"] = (assemble(pad_header(b'{"metadata":{},"tensors":[],"x":' + b"9" * 100000 +
                                                       b"}"), b""), "FormatError")
    c["header_len_huge"] = (PREAMBLE.pack(MAGIC, 1, 0, 0, 2**64 - 32, 0) + bytes(32), "LimitError")
    c["header_len_unaligned"] = (PREAMBLE.pack(MAGIC, 1, 0, 0, 31, 0) + bytes(31), "FormatError")
    c["header_len_past_eof"] = (PREAMBLE.pack(MAGIC, 1, 0, 0, 32 + 64 * 1000, 0) + bytes(32), "FormatError")
    c.update(zstd_header_cases(s["mixed"]))
    # placement
    d2, p2, _ = split(s["mixed"])
    d2["tensors"][0]["offset"], d2["tensors"][1]["offset"] = d2["tensors"][1]["offset"], d2["tensors"][0]["offset"]
    c["offsets_swapped"] = (build(d2, p2, fix_offsets=False), "FormatError")
    d3, p3, _ = split(s["mixed"])
    d3["tensors"][2]["offset"] -= 64
    c["offsets_overlap"] = (build(d3, p3, fix_offsets=False), "FormatError")
    c["trailing_byte"] = (s["mixed"] + b"\x00", "FormatError")
    c["minor_version_7"] = (build(*split(s["mixed"])[:2], minor=7), "ok")
    d4, p4, _ = split(s["mixed"])
    d4["tensors"][0]["shape"] = [2**24, 2**24]  # an ans (or eg) payload of 1 KB declaring 2^48 elements
    c["lossy_seed_shape_2_48"] = (build(d4, p4), "FormatError")
    c.update(ans_fexp_cases())
    for name, data in s.items():
        c[f"seed_{name}"] = (data, "ok")
    return c


def zstd_header_cases(seed: bytes) -> dict:
    """Compressed headers (spec 2.1, .bsl 1.2): valid ones and every size check, checksums correct."""
    import zstandard
    doc, payloads, _ = split(seed)
    plain = build(doc, payloads)
    hlen = struct.unpack_from("<Q", plain, 16)[0]
    raw, region = plain[PREAMBLE_BYTES:PREAMBLE_BYTES + hlen].rstrip(b" "), plain[PREAMBLE_BYTES + hlen:]
    z = lambda h, flags=1: assemble(h, region, minor=2, flags=flags)  # noqa: E731
    c = {"zhead_ok": (z(zstd_header(raw)), "ok")}
    c["zhead_ok_minor_0"] = (assemble(zstd_header(raw), region, minor=0, flags=1), "ok")  # minor is not checked
    frame = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(raw)
    c["zhead_bomb_ratio"] = (z(zstd_header(raw, jlen=65 * len(frame), frame=frame)), "LimitError")
    c["zhead_jlen_over_limit"] = (z(zstd_header(raw, jlen=10**8 + 1)), "LimitError")
    c["zhead_jlen_zero"] = (z(zstd_header(raw, jlen=0)), "LimitError")
    c["zhead_jlen_differs_from_frame"] = (z(zstd_header(raw, jlen=len(raw) - 1)), "FormatError")
    c["zhead_flen_past_region"] = (z(zstd_header(raw, flen=2**63)), "FormatError")
    c["zhead_flen_short"] = (z(zstd_header(raw, flen=len(frame) - 1, frame=frame)), "FormatError")
    c["zhead_second_frame"] = (z(zstd_header(raw, frame=frame + frame)), "FormatError")
    c["zhead_skippable_after"] = (z(zstd_header(raw, frame=frame + b"\x50\x2a\x4d\x18" + bytes(4))), "FormatError")
    good = zstd_header(raw)
    c["zhead_padding_not_zero"] = (z(good[:-1] + b"\x01") if good[-1:] == b"\0" else z(good + bytes(63) + b"\x01"),
                                   "FormatError")
    c["zhead_padding_64"] = (z(good + bytes(64)), "FormatError")
    c["zhead_empty_frame"] = (z(struct.pack("<QQ", 5, 0) + bytes(16)), "LimitError")  # 5 bytes from none
    nosize = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(raw)
    c["zhead_frame_without_size"] = (z(zstd_header(raw, frame=nosize)), "FormatError")
    bad = bytearray(frame)
    bad[len(bad) // 2] ^= 0x55
    c["zhead_frame_corrupt"] = (z(zstd_header(raw, frame=bytes(bad))), "FormatError")
    c["zhead_not_json"] = (z(zstd_header(b"\xff" * 200)), "FormatError")
    c["zhead_flag_bit_1"] = (assemble(zstd_header(raw), region, minor=2, flags=3), "FormatError")
    c["zhead_flag_unset"] = (assemble(zstd_header(raw), region, minor=2, flags=0), "FormatError")  # not JSON
    c["plain_header_flag_set"] = (assemble(plain[PREAMBLE_BYTES:PREAMBLE_BYTES + hlen], region, flags=1),
                                  "FormatError")
    return c


def ans_fexp_cases() -> dict:
    """Hostile ``ans`` / ``ans-dq`` / ``fexp`` payloads (spec 4.4-4.6) with correct checksums, and valid
    corner cases that a reader must accept (non-zero padding, phase 3, F64 with m = 4)."""
    import ml_dtypes

    from bslcodec.codecs import fexp_ref, rans_ref
    c = {}

    def ans(payload, codec="ans", shape=(1,), dtype="F32", center=0, s=16):
        return one_tensor({"dtype": dtype, "shape": list(shape), "codec": codec,
                           "params": {"step": 1.0, "center": center, "lane_symbols": s}}, bytes(payload))

    one = bytearray(rans_ref.encode_payload([1], 16, 1, 1, 0, [1, 1], 0))  # spec 4.4's first known answer
    assert len(one) == 24
    u3 = (1 << 20) + 0x5A5A5  # 20 raw bits: phase 3
    p3 = bytearray(rans_ref.encode_payload([u3], 16, 1, 0, 0, [0] * 21 + [2], 0))
    assert len(p3) == 28 and p3[-2:] == b"\0\0"  # W[0] = 3 words and a pad word
    c["ans_valid_phase3"] = (ans(p3), "ok")
    c["ans_odd_group_pad_word_nonzero"] = (ans(p3[:-2] + b"\xff\xff"), "ok")  # padding: ignored
    c["ans_table_pad_nonzero"] = (ans(one[:13] + b"\xff\xff\xff" + one[16:]), "ok")
    c["ans_model_1"] = (ans(_set(bytearray(one), 0, 1)), "FormatError")
    c["ans_reserved_byte"] = (ans(_set(bytearray(one), 7, 1)), "FormatError")
    c["ans_prob_bits_15"] = (ans(_set(bytearray(one), 1, 15)), "FormatError")
    c["ans_table_sum_not_M"] = (ans(_set(bytearray(one), 1, 2)), "FormatError")  # P = 2 (M = 4), f = [1, 1]
    c["ans_table_bytes_too_many"] = (ans(one[:8] + struct.pack("<I", 2) + one[12:13] + b"\0\0\0" + one[16:]),
                                     "FormatError")  # B = 2 for 6 bits: a reader must reject B != ceil(bits/8)
    c["ans_initial_state_below_2_16"] = (ans(one[:20] + b"\x01\x00\x00\x00"), "FormatError")
    c["ans_final_state_not_2_16"] = (ans(one[:20] + b"\x02\x00\x02\x00"), "FormatError")
    c["ans_no_room_for_states"] = (ans(one[:16] + struct.pack("<I", 0)), "FormatError")
    c["ans_word_count_past_payload"] = (ans(one[:16] + struct.pack("<I", 4) + one[20:]), "FormatError")
    # 2^48 elements, S = 16: G = 2^39 groups declared over 24 bytes (a per-group loop before the size check hangs)
    c["ans_groups_2_39"] = (ans(one, shape=(2**24, 2**24), dtype="F64"), "FormatError")
    c["ans_center_plus_symbol_over_2_24"] = (ans(one, center=-(1 << 24) + 1), "FormatError")  # q = c - 1
    # u = 2^24 + 2: k = 2^23 + 1 is a valid ans value, but as an ans-dq index its level 2k is 2^24 + 2
    big = rans_ref.encode_payload([(1 << 24) + 2], 16, 1, 0, 0, [0] * 25 + [2], 0)
    c["ans_symbol_2_24_plus_2"] = (ans(big), "ok")
    c["ansdq_level_over_2_24"] = (ans(big, codec="ans-dq"), "FormatError")
    c["ansdq_valid_phase3"] = (ans(p3, codec="ans-dq", center=5), "ok")
    c["ans_for_int_dtype"] = (ans(one, dtype="I32"), "FormatError")
    c["ans_lane_symbols_8192"] = (ans(one, s=8192), "FormatError")

    def fx(payload, dtype="BF16", shape=(3,), s=16):
        return one_tensor({"dtype": dtype, "shape": list(shape), "codec": "fexp", "params": {"lane_symbols": s}},
                          bytes(payload))

    lengths = np.zeros(256, np.uint8)
    lengths[[127, 128]] = 1
    f = bytearray(fexp_ref.encode_payload(np.array([0x3F80, 0x4000, 0x4000], np.uint16), 2, 16, 0, lengths))
    assert len(f) == 224  # spec 4.5's known answer
    c["fexp_valid_bf16"] = (fx(f), "ok")
    c["fexp_final_word_nonzero"] = (fx(f[:216] + b"\xff" * 8), "ok")  # padding: ignored
    c["fexp_rest_bits_past_end_nonzero"] = (fx(f[:137] + b"\xff" * 7 + f[144:]), "ok")  # 24 rest bits used
    c["fexp_reserved_byte"] = (fx(_set(bytearray(f), 3, 1)), "FormatError")
    c["fexp_m_5"] = (fx(_set(bytearray(f), 0, 5)), "FormatError")
    c["fexp_code_length_13"] = (fx(_set(bytearray(f), 71, 0xD0)), "FormatError")
    c["fexp_kraft_over_1"] = (fx(_set(bytearray(f), 72, 0x11)), "FormatError")  # lengths 1, 1, 1
    c["fexp_lane_lengths_moved"] = (fx(f[:144] + struct.pack("<HH", 2, 0) + f[148:]), "FormatError")
    c["fexp_huge_shape_tiny_payload"] = (fx(f, shape=(2**24, 2**24)), "FormatError")
    c["fexp_for_int_dtype"] = (fx(f, dtype="I16"), "FormatError")
    c["fexp_lane_symbols_8"] = (fx(f, s=8), "FormatError")
    rng = np.random.default_rng(3)
    x = (rng.normal(0, 1, 1100) * np.exp(rng.normal(0, 30, 1100))).view(np.uint64)
    f64 = fexp_ref.encode_payload(x, 8, 16, 4)  # F64, m = 4: 11 exponent bits and one mantissa bit
    c["fexp_valid_f64_m4"] = (fx(f64, dtype="F64", shape=(1100,)), "ok")
    del ml_dtypes
    return c


def _set(b: bytearray, i: int, v: int) -> bytearray:
    b[i] = v
    return b


def _patch_entry(data: bytes, **kw) -> bytes:
    doc, payloads, minor = split(data)
    doc["tensors"][0].update(kw)
    return build(doc, payloads, minor=minor)


def _patch_params(data: bytes, **kw) -> bytes:
    doc, payloads, minor = split(data)
    doc["tensors"][0]["params"].update(kw)
    return build(doc, payloads, minor=minor)


def write_corpus(extra: dict | None = None) -> None:
    CORPUS.mkdir(parents=True, exist_ok=True)
    manifest_path = CORPUS / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name, (data, outcome) in {**corpus_cases(), **(extra or {})}.items():
        (CORPUS / f"{name}.bsl").write_bytes(data)
        manifest[name] = outcome
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    total = sum(f.stat().st_size for f in CORPUS.glob("*.bsl"))
    print(f"{len(manifest)} corpus files, {total} bytes, in {CORPUS}")


# ---------------------------------------------------------------- the fuzz loops


def _limit_memory(gb: float) -> None:
    try:
        import resource
        lim = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    except (ImportError, ValueError, OSError):
        pass


def _save_finding(folder: Path, data: bytes, why: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha1(data).hexdigest()[:12]
    path = folder / f"crash-{h}.bsl"
    path.write_bytes(data)
    (folder / f"crash-{h}.txt").write_text(why)
    return path


def _worker(conn, mem_gb):
    """Child process: reads inputs from the pipe, answers outcomes (a crash kills only this child)."""
    _limit_memory(mem_gb)
    parent = os.getppid()
    while True:
        while not conn.poll(1.0):
            if os.getppid() != parent:  # the fuzzer was killed: do not linger
                return
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # the fuzzer is done
            return
        try:
            conn.send(("ok", check(data)))
        except Finding as f:
            conn.send(("finding", str(f)))


class _Runner:
    """Runs inputs in a child process so segfaults and hangs are caught and reported."""

    def __init__(self, mem_gb, timeout):
        import multiprocessing as mp
        self.ctx, self.mem_gb, self.timeout, self.proc = mp.get_context("spawn"), mem_gb, timeout, None

    def _start(self):
        self.parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.mem_gb), daemon=True)
        self.proc.start()
        for seed in seeds_for_warmup():  # compile / load numba caches before any input is timed
            self.parent.send_bytes(seed)
            if not self.parent.poll(600):
                raise RuntimeError("fuzz worker does not start")
            self.parent.recv()

    def run(self, data: bytes, confirm: bool = True) -> tuple:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.parent.send_bytes(data)
        if self.parent.poll(self.timeout):
            try:
                return self.parent.recv()
            except EOFError:
                pass
        else:
            self.proc.kill()
            self.proc.join()
            self.proc = None
            if confirm:  # a loaded machine can stall a process: a hang must repeat in a fresh worker
                return self.run(data, confirm=False)
            return "finding", f"hang: no answer within {self.timeout:.0f} s, twice"
        self.proc.join()
        code = self.proc.exitcode
        self.proc = None
        return "finding", f"child process died with exit code {code} (signal {-code if code and code < 0 else '-'})"


_WARMUP = []


def seeds_for_warmup() -> list:
    if not _WARMUP:
        _WARMUP.extend(seeds().values())
    return _WARMUP


def fuzz_mutations(seconds: float, seed: int, findings: Path, mem_gb: float, timeout: float,
                   in_process: bool = False) -> dict:
    """Structure-aware mutation fuzzing of the seeds for ``seconds``; returns statistics."""
    rnd = random.Random(seed)
    seed_files = list(seeds().values())
    for f in sorted(CORPUS.glob("*.bsl")):
        seed_files.append(f.read_bytes())
    parts = []
    for d in seed_files:
        try:
            parts.append(split(d))
        except Exception:  # noqa: BLE001 - hostile corpus files: byte-level mutation only
            parts.append(None)
    runner = None if in_process else _Runner(mem_gb, timeout)
    stats = {"cases": 0, "outcomes": {}, "findings": 0, "seconds": 0.0}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        i = rnd.randrange(len(seed_files))
        data = mutate(seed_files[i], rnd, parts[i])
        if rnd.random() < 0.2:  # stack mutations
            data = mutate(data, rnd, None)
        if in_process:
            try:
                res = ("ok", check(data))
            except Finding as f:
                res = ("finding", str(f))
        else:
            res = runner.run(data)
        stats["cases"] += 1
        if res[0] == "finding":
            stats["findings"] += 1
            path = _save_finding(findings, data, res[1])
            print(f"FINDING {path}: {res[1].splitlines()[0]}", flush=True)
        else:
            stats["outcomes"][res[1]] = stats["outcomes"].get(res[1], 0) + 1
    stats["seconds"] = round(time.monotonic() - t0, 1)
    return stats


def fuzz_atheris(seconds: float, findings: Path, mem_gb: float) -> None:
    """Coverage-guided fuzzing with atheris (libFuzzer) and a checksum-fixing custom mutator."""
    import inspect

    import atheris

    seed_files = seeds()  # encode before instrumenting: numba cannot compile instrumented bytecode
    from bslcodec.codecs import lossless
    from bslcodec.container import format
    from bslcodec.files import api
    from bslcodec.pipeline import codec
    n_funcs = 0
    for mod in (format, codec, lossless, api, golomb, bslcodec.container.dtypes):
        for obj in list(vars(mod).values()):
            funcs = [obj] if inspect.isfunction(obj) else (
                [f for f in vars(obj).values() if inspect.isfunction(f)] if inspect.isclass(obj) else [])
            for f in funcs:
                if f.__module__ == mod.__name__:  # plain Python only (numba dispatchers are not functions)
                    atheris.instrument_func(f)  # patches f.__code__ in place
                    n_funcs += 1
    print(f"instrumented {n_funcs} reader functions", flush=True)
    _limit_memory(mem_gb)

    def one(data: bytes):
        try:
            check(data, slices=True)
        except Finding as f:
            _save_finding(findings, data, str(f))
            raise

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rnd = random.Random(seed)
        try:
            parts = split(data)
        except Exception:  # noqa: BLE001
            parts = None
        if rnd.random() < 0.4:
            out = atheris.Mutate(data, max_size)
            return rechecksum(out) if rnd.random() < 0.8 else out
        return mutate(data, rnd, parts)[:max_size]

    corpus_dir = findings / "atheris-corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for name, d in seed_files.items():
        (corpus_dir / f"seed-{name}.bsl").write_bytes(d)
    for f in CORPUS.glob("*.bsl"):
        if f.stat().st_size < 1 << 16:
            (corpus_dir / f.name).write_bytes(f.read_bytes())
    argv = [sys.argv[0], str(corpus_dir), f"-max_total_time={int(seconds)}", "-max_len=65536",
            f"-artifact_prefix={findings}/", "-timeout=20", "-rss_limit_mb=0", "-print_final_stats=1"]
    atheris.Setup(argv, one, custom_mutator=mutator)
    atheris.Fuzz()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--atheris", action="store_true", help="coverage-guided (needs: pip install atheris)")
    ap.add_argument("--findings", type=Path, default=Path("fuzz-findings"))
    ap.add_argument("--mem-gb", type=float, default=6.0, help="address-space limit of the fuzzed process")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds one input may take")
    ap.add_argument("--in-process", action="store_true", help="faster, but a segfault ends the run")
    ap.add_argument("--write-corpus", action="store_true")
    args = ap.parse_args(argv)
    if args.write_corpus:
        write_corpus()
        return 0
    if args.atheris:
        fuzz_atheris(args.seconds, args.findings, args.mem_gb)
        return 0
    stats = fuzz_mutations(args.seconds, args.seed, args.findings, args.mem_gb, args.timeout, args.in_process)
    print(json.dumps(stats))
    return 1 if stats["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
