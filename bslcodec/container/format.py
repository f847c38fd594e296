"""The container (spec sections 2, 3, 5, 6): preamble, JSON header, payload placement, checksums.

Pure bytes and JSON: knows nothing of numpy codecs. Every length is checked before it is trusted.
"""

import itertools
import json
import math
import re
import struct
from dataclasses import dataclass, field

import xxhash
import zstandard

from .dtypes import NUMPY_DTYPES
from .errors import ChecksumError, FormatError, LimitError
from .limits import (MAX_ELEMENTS, MAX_HEADER_BYTES, MAX_HEADER_RATIO, MAX_JSON_DEPTH, MAX_NAME_BYTES,
                     MAX_NUMBER_CHARS, MAX_RANK)

MAGIC = b"\x89BSL\r\n\x1a\n"
MAJOR, MINOR = 1, 2
PREAMBLE = struct.Struct("<8sHHIQQ")  # magic, major, minor, flags, header length, header checksum
PREAMBLE_BYTES = PREAMBLE.size  # 32
FLAG_ZSTD_HEADER = 1  # flags bit 0 (.bsl 1.2, spec 2.1): the header is a zstd frame behind two sizes
FLAGS_KNOWN = FLAG_ZSTD_HEADER
ZSTD_HEADER_MINOR = 2
ZHEAD = struct.Struct("<QQ")  # compressed header: JSON length J, frame length F (spec 2.1)
# The header's zstd frame: level 15's window and tables with the lazy2 match finder (search depth 2^6, matches
# of 5+ bytes). On the headers of three real models (MiniLM 103 tensors, EfficientNet-Lite0 247, a character LM
# 30; save_file) its frames are within 0.2 % of level 15's (the CLI's MiniLM file: 4,927 against 4,765 bytes,
# +3.4 %, +128 bytes of 20.7 MB) and take 2-3 us a tensor instead of 5; on 300 alike 64x64
# tensors (names and shapes repeating) 7 % larger (51 against 48 bytes a tensor: 0.08 % of that file) and 3
# instead of 31 us a tensor, where level 15's optimal parser chases the repeats (2026-12-07, eleventh session).
# Level 19 took ~90 us a tensor there; levels 3-12 leave frames 6-15 % larger.
HEADER_ZSTD_PARAMS = {"window_log": 17, "chain_log": 17, "hash_log": 17, "search_log": 6, "min_match": 5,
                      "target_length": 16, "strategy": zstandard.STRATEGY_LAZY2}
# Writers compress headers of at least this many bytes of JSON (~15 tensors): below it the saving is a few
# 64-byte units, not worth making the file unreadable to a 1.0/1.1 reader
ZSTD_HEADER_MIN_BYTES = 4096
ALIGN = 64
CODECS = ("raw", "zstd", "eg", "ans", "fexp", "ans-dq")
QUANTIZED_CODECS = ("eg", "ans", "ans-dq")  # the codecs of spec 4.3/4.4/4.6: a step, a center, symbols
CODEC_MINOR = {"ans-dq": 1}  # the minor version that added a codec (section 7); others are 1.0


def align(x: int, a: int = ALIGN) -> int:
    return x + (-x % a)


#: Payloads of at least this many bytes are hashed with the GIL released (see ``checksum``)
GIL_FREE_BYTES = 1 << 16


def checksum(data) -> str:
    """A payload's checksum (spec 3.2: XXH3-64, seed 0, as 16 lowercase hex digits).

    python-xxhash's one-shot ``xxh3_64_hexdigest`` keeps the GIL while it hashes; its streaming object releases
    it in ``update``. The loaders verify payloads on several threads beside decoding and launching, so a large
    payload goes through the streaming form (the same digest: one update of a fresh seed-0 state)."""
    n = data.nbytes if hasattr(data, "nbytes") else len(data)
    if n >= GIL_FREE_BYTES:
        return xxhash.xxh3_64(data).hexdigest()
    return xxhash.xxh3_64_hexdigest(data)


@dataclass
class Entry:
    """One tensor's index entry (spec 3.2)."""

    name: str
    dtype: str
    shape: tuple
    codec: str
    params: dict
    offset: int = 0
    length: int = 0
    checksum: str = ""
    extra: dict = field(default_factory=dict)  # unknown keys, kept for tools

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "codec": self.codec,
                "params": self.params, "offset": self.offset, "length": self.length,
                "checksum": self.checksum}


def _no_duplicates(pairs):
    d = dict(pairs)
    if len(d) != len(pairs):  # rare: find the key for the message
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise FormatError(f"duplicate key {k!r} in header")
            seen.add(k)
    return d


def _utf8_len(s: str) -> int:
    """UTF-8 byte length of a header string; FormatError for a lone surrogate (a JSON escape such as
    \\ud800 parses to a str that no UTF-8 byte sequence can hold)."""
    try:
        return len(s.encode("utf-8"))
    except UnicodeEncodeError:
        raise FormatError(f"header string {s[:80]!r} is not valid Unicode (lone surrogate)") from None


def _no_constant(name):
    raise FormatError(f"header holds {name}, which is not JSON (RFC 8259)")


def _number_token(s: str) -> None:
    if len(s) > MAX_NUMBER_CHARS:
        raise FormatError(f"header holds a number of {len(s)} characters, over the limit of {MAX_NUMBER_CHARS}")


def _parse_int(s: str) -> int:
    """A JSON number without fraction or exponent: an int (``1.0`` and ``1e2`` are floats, spec 5)."""
    _number_token(s)
    return int(s)


def _parse_float(s: str) -> float:
    """Any other JSON number: the nearest binary64 (``1e400`` gives inf, which no numeric field accepts)."""
    _number_token(s)
    return float(s)


# every byte that can be part of a JSON number -> "1", any other -> "0": a header whose translation holds no
# run of MAX_NUMBER_CHARS + 1 ones has no over-long number token (a translate and a substring search run at
# memory speed; a regex with that repeat count took ~35 ns a byte)
_NUMBER_BYTES = bytes(49 if chr(i) in "-+.0123456789eE" else 48 for i in range(256))
_NUMBER_RUN = b"1" * (MAX_NUMBER_CHARS + 1)
# a lone surrogate can only come from a \uD800-\uDFFF escape (the UTF-8 decoder refuses encoded ones)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _items(obj):
    return iter(obj.items()) if isinstance(obj, dict) else zip(itertools.repeat(None), obj)


def _check_tree(doc, strings: bool) -> None:
    """Spec 3/5: nesting depth <= MAX_JSON_DEPTH; with ``strings``, every string of the header (keys and
    values, anywhere, unknown keys included) is valid Unicode. Depth-first with one iterator per level: no
    recursion and no memory beyond MAX_JSON_DEPTH iterators, whatever the header holds."""
    stack = [_items(doc)]  # the top-level value is depth 1
    while stack:
        for k, v in stack[-1]:
            if strings and k is not None:
                _utf8_len(k)
            if isinstance(v, (dict, list)):
                if len(stack) >= MAX_JSON_DEPTH:
                    raise FormatError(f"header nests arrays/objects deeper than {MAX_JSON_DEPTH} levels")
                stack.append(_items(v))
                break
            if strings and isinstance(v, str):
                _utf8_len(v)
        else:
            stack.pop()


def _check_depth(doc) -> None:
    """``_check_tree``'s depth limit alone (no string to check), level by level: each level's containers
    gathered by one comprehension (the iterator walk makes a Python step per item: 2.1 -> 1.2 us a tensor
    entry of a 300-tensor header).
    Holds one level's containers at a time (references into ``doc``, which is in memory anyway)."""
    level, depth = [doc], 1  # the top-level value is depth 1
    while True:
        level = [v for c in level for v in (c.values() if type(c) is dict else c)
                 if type(v) is dict or type(v) is list]
        if not level:
            return
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise FormatError(f"header nests arrays/objects deeper than {MAX_JSON_DEPTH} levels")


def _int(value, what: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise FormatError(f"{what} must be an integer in [{lo}, {hi}], found {value!r}")
    return value


def _newer(minor: int) -> str:
    """What to add to an "unknown ..." error for a file of a later minor version than this reader."""
    if minor > MINOR:
        return (f"; the file is .bsl {MAJOR}.{minor}, newer than this reader ({MAJOR}.{MINOR}): "
                "upgrade bslcodec to read it")
    return ""


_ENTRY_KEYS = ("name", "dtype", "shape", "codec", "params", "offset", "length", "checksum")
_ENTRY_KEY_SET = frozenset(_ENTRY_KEYS)
_HEX16 = re.compile(r"[0-9a-f]{16}")


def _entry_from_json(obj, index: int, minor: int = MINOR) -> Entry:
    if not isinstance(obj, dict):
        raise FormatError(f"tensor entry {index} is not an object")
    if not _ENTRY_KEY_SET <= obj.keys():
        key = next(k for k in _ENTRY_KEYS if k not in obj)
        raise FormatError(f"tensor entry {index} lacks the key {key!r}")
    name = obj["name"]
    if not isinstance(name, str) or not name or _utf8_len(name) > MAX_NAME_BYTES:
        raise FormatError(f"tensor entry {index}: name must be a string of 1..{MAX_NAME_BYTES} bytes")
    dtype, codec, shape, params, cs = obj["dtype"], obj["codec"], obj["shape"], obj["params"], obj["checksum"]
    offset, length = obj["offset"], obj["length"]
    # the usual entry passes every check below in one expression (~1 us of the ~3 an entry took); any
    # other is checked step by step, which finds the first failing check and says what it is
    if not (type(dtype) is str and dtype in NUMPY_DTYPES and type(codec) is str and codec in CODECS
            and type(shape) is list and len(shape) <= MAX_RANK
            and all(type(d) is int and 0 <= d <= _MAX_DIM for d in shape)
            and 0 < math.prod(shape) <= MAX_ELEMENTS and type(params) is dict
            and type(cs) is str and _HEX16.fullmatch(cs) is not None
            and type(offset) is int and 0 <= offset <= _MAX_OFFSET
            and type(length) is int and 0 <= length <= _MAX_OFFSET):
        _check_entry(name, dtype, codec, shape, params, cs, offset, length, minor)
    return Entry(name, dtype, tuple(shape), codec, params, offset, length, cs,
                 {k: v for k, v in obj.items() if k not in _ENTRY_KEY_SET} if len(obj) > 8 else {})


_MAX_DIM, _MAX_OFFSET = 2**53 - 1, 2**63 - 1


def _check_entry(name, dtype, codec, shape, params, cs, offset, length, minor) -> None:
    """``_entry_from_json``'s checks one by one (FormatError / LimitError naming the first that fails)."""
    where = f"tensor {name!r}"
    if not isinstance(dtype, str) or dtype not in NUMPY_DTYPES:
        raise FormatError(f"{where}: unknown dtype {dtype!r}{_newer(minor)}")
    if not isinstance(codec, str) or codec not in CODECS:
        raise FormatError(f"{where}: unknown codec {codec!r} (this reader knows {', '.join(CODECS)})"
                          f"{_newer(minor)}")
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        raise LimitError(f"{where}: shape must be a list of at most {MAX_RANK} dimensions")
    shape = tuple(_int(d, f"{where}: dimension", 0, _MAX_DIM) for d in shape)
    if math.prod(shape) > MAX_ELEMENTS:
        raise LimitError(f"{where}: {math.prod(shape)} elements is over the limit of {MAX_ELEMENTS}")
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:  # e.g. [0, 2^40, 2^40]: empty, but numpy cannot
        raise LimitError(f"{where}: shape {list(shape)} is over the limit of {MAX_ELEMENTS} elements "
                         "(the product of its non-zero dimensions counts)")
    if not isinstance(params, dict):
        raise FormatError(f"{where}: params must be an object")
    if not isinstance(cs, str) or _HEX16.fullmatch(cs) is None:
        raise FormatError(f"{where}: checksum must be 16 lowercase hex digits")
    _int(offset, f"{where}: offset", 0, _MAX_OFFSET)
    _int(length, f"{where}: length", 0, _MAX_OFFSET)


def _json_header(entries: list, metadata: dict) -> bytes:
    doc = {"metadata": metadata, "tensors": [e.to_json() for e in entries]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _pad(raw: bytes, fill: bytes) -> bytes:
    return raw + fill * (align(PREAMBLE_BYTES + len(raw)) - PREAMBLE_BYTES - len(raw))


def build_header(entries: list, metadata: dict, compact: bool = True) -> tuple:
    """(header bytes, padded; preamble flags) for entries whose offsets/lengths/checksums are final.

    The JSON text (spec 3) is stored as it is, or, with ``compact``, for a JSON text of at least
    ``ZSTD_HEADER_MIN_BYTES`` and where that makes the file smaller (by at least one 64-byte unit), as a zstd
    frame behind its two sizes (spec 2.1, flag bit 0, .bsl 1.2): a 300-tensor header shrinks ~7x (~210
    bytes a tensor to ~30). Deterministic: the same JSON gives the same frame for a given zstd library
    version, level and parameters."""
    raw = _json_header(entries, metadata)
    if len(raw) > MAX_HEADER_BYTES:
        raise LimitError(f"header of {len(raw)} bytes is over the limit of {MAX_HEADER_BYTES}")
    plain = _pad(raw, b" ")
    if compact and len(raw) >= ZSTD_HEADER_MIN_BYTES:
        params = zstandard.ZstdCompressionParameters(write_content_size=True, write_checksum=False,
                                                     **HEADER_ZSTD_PARAMS)
        frame = zstandard.ZstdCompressor(compression_params=params).compress(raw)
        packed = _pad(ZHEAD.pack(len(raw), len(frame)) + frame, b"\0")
        if len(packed) < len(plain) and len(raw) <= MAX_HEADER_RATIO * len(frame):
            return packed, FLAG_ZSTD_HEADER
    return plain, 0


def minor_for(entries: list, flags: int = 0) -> int:
    """The lowest minor version whose codecs and header form these entries use (section 7): old readers
    keep reading files that use none of the newer features."""
    codecs = max((CODEC_MINOR.get(e.codec, 0) for e in entries), default=0)
    return max(codecs, ZSTD_HEADER_MINOR if flags & FLAG_ZSTD_HEADER else 0)


def build_preamble(header: bytes, minor: int = 0, flags: int = 0) -> bytes:
    return PREAMBLE.pack(MAGIC, MAJOR, minor, flags, len(header), xxhash.xxh3_64_intdigest(header))


def place(entries: list, lengths: list) -> int:
    """Set offsets per spec 3.2; returns the data region's size."""
    pos = 0
    for e, n in zip(entries, lengths):
        e.offset = align(pos)
        e.length = n
        pos = e.offset + n
    return pos


@dataclass
class Index:
    entries: list
    metadata: dict
    data_start: int  # D
    minor: int
    flags: int = 0  # preamble flags: FLAG_ZSTD_HEADER
    json_bytes: int = 0  # length of the header's JSON text (after decompression)


def read_header_length(pre: bytes, file_size: int) -> tuple:
    """Validate the 32-byte preamble; returns (header length, header checksum, minor, flags)."""
    if len(pre) < PREAMBLE_BYTES:
        raise FormatError(f"file of {file_size} bytes is too short for a .bsl preamble ({PREAMBLE_BYTES} bytes)")
    magic, major, minor, flags, hlen, hsum = PREAMBLE.unpack(pre[:PREAMBLE_BYTES])
    if magic != MAGIC:
        raise FormatError("not a .bsl file (bad magic)")
    if major != MAJOR:
        raise FormatError(f"unsupported .bsl major version {major} (this reader reads {MAJOR}.x)")
    if flags & ~FLAGS_KNOWN:
        raise FormatError(f"reserved flags are {flags & ~FLAGS_KNOWN:#x}, must be 0{_newer(minor)}")
    if hlen > MAX_HEADER_BYTES:
        raise LimitError(f"header length {hlen} is over the limit of {MAX_HEADER_BYTES}")
    if (PREAMBLE_BYTES + hlen) % ALIGN:
        raise FormatError(f"header length {hlen} does not end on a {ALIGN}-byte boundary")
    if PREAMBLE_BYTES + hlen > file_size:
        raise FormatError(f"header length {hlen} runs past the end of the {file_size}-byte file (truncated?)")
    return hlen, hsum, minor, flags


def unpack_header(header, flags: int) -> bytes:
    """The JSON text of a checksum-verified header region (spec 2.1): the region itself, or the zstd frame's
    content, whose sizes are checked against the region and the limits before anything is allocated."""
    if not flags & FLAG_ZSTD_HEADER:
        return bytes(header)
    hlen = len(header)
    if hlen < ZHEAD.size:
        raise FormatError(f"compressed header of {hlen} bytes is too short for its two sizes ({ZHEAD.size} bytes)")
    jlen, flen = ZHEAD.unpack_from(header, 0)
    if flen > hlen - ZHEAD.size:
        raise FormatError(f"compressed header: frame of {flen} bytes runs past the {hlen}-byte header region")
    if hlen - ZHEAD.size - flen >= ALIGN:
        raise FormatError(f"compressed header: {hlen - ZHEAD.size - flen} bytes after the frame, "
                          f"padding must be under {ALIGN}")
    if any(bytes(header[ZHEAD.size + flen:])):
        raise FormatError("compressed header: padding after the frame must be zero bytes")
    if not 1 <= jlen <= MAX_HEADER_BYTES:
        raise LimitError(f"compressed header declares {jlen} bytes of JSON, must be 1..{MAX_HEADER_BYTES}")
    if jlen > MAX_HEADER_RATIO * flen:  # a decompression bomb: refused before allocating
        raise LimitError(f"compressed header declares {jlen} bytes of JSON from a {flen}-byte frame, "
                         f"over {MAX_HEADER_RATIO}x")
    frame = bytes(header[ZHEAD.size:ZHEAD.size + flen])
    try:
        declared = zstandard.get_frame_parameters(frame).content_size
        if declared != jlen:
            raise FormatError(f"compressed header: the zstd frame declares {declared} bytes, "
                              f"the header {jlen}")
        raw = zstandard.ZstdDecompressor().decompress(frame, max_output_size=jlen, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise FormatError(f"compressed header: corrupt zstd frame: {exc}") from None
    if len(raw) != jlen:
        raise FormatError(f"compressed header decompressed to {len(raw)} bytes, declared {jlen}")
    return raw


def parse_header(header: bytes, hsum: int, minor: int, file_size: int, flags: int = 0) -> Index:
    """Parse and validate the header region against the file size (spec 2.1, 3)."""
    if xxhash.xxh3_64_intdigest(header) != hsum:
        raise ChecksumError("header checksum mismatch: the file is corrupted")
    text = unpack_header(header, flags)
    # the number hooks only enforce MAX_NUMBER_CHARS (int() and float() parse as json does without them): a
    # header with no run of that many number characters anywhere has no such number, and is parsed without
    # one Python call per number
    long_number = _NUMBER_RUN in bytes(text).translate(_NUMBER_BYTES)
    try:
        doc = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_no_constant, parse_int=_parse_int if long_number else None,
                         parse_float=_parse_float if long_number else None)
    except RecursionError:  # deeper than Python's parser goes: far over MAX_JSON_DEPTH
        raise FormatError(f"header nests arrays/objects deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"header is not valid UTF-8 JSON: {exc}") from None
    if isinstance(doc, (dict, list)):
        if _SURROGATE_ESCAPE.search(text) is not None:
            _check_tree(doc, strings=True)
        else:  # no string to check: the depth alone
            _check_depth(doc)
    if not isinstance(doc, dict) or not isinstance(doc.get("tensors"), list):
        raise FormatError("header must be an object with a 'tensors' list")
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError("header 'metadata' must map strings to strings")
    for k, v in metadata.items():
        _utf8_len(k), _utf8_len(v)
    entries = [_entry_from_json(o, i, minor) for i, o in enumerate(doc["tensors"])]
    data_start = PREAMBLE_BYTES + len(header)
    names, pos = set(), 0
    for e in entries:
        if e.name in names:
            raise FormatError(f"tensor name {e.name!r} appears twice")
        names.add(e.name)
        if e.offset != align(pos):
            raise FormatError(f"tensor {e.name!r}: payload offset {e.offset} should be {align(pos)} "
                              "(payloads overlap or leave a hole)")
        pos = e.offset + e.length
    if data_start + pos != file_size:
        raise FormatError(f"payloads end at byte {data_start + pos} but the file has {file_size} bytes "
                          "(truncated or trailing data)")
    return Index(entries, metadata, data_start, minor, flags, len(text))
