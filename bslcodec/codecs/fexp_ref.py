"""Slow, obviously correct reference of the ``fexp`` payload (spec 4.5): the oracle for the fast paths.

``fexp`` is lossless: each float's bits ``v`` (``W = 8 * itemsize`` bits) are rotated left by one,
``r = rotl(v, 1)``; the top ``8 + m`` bits of ``r`` (the exponent of BF16 / F32 and the ``m`` leading
mantissa bits) are a symbol coded with a per-tensor canonical Huffman code (code words of 1..12 bits),
and the other ``W - 8 - m`` bits (sign and low mantissa) are stored raw, bit-packed. Works on Python ints
bit by bit; for tests and small inputs only.

The choice of code lengths (``code_lengths``: optimal length-limited Huffman by package-merge) is the
encoder's business, not the format's; the fast encoder (``bslcodec.codecs.fexp``) uses this same function.
"""

import numpy as np

from ..container.errors import FormatError
from ..container.limits import LANES

MAX_CODE_LEN = 12  # code words are 1..12 bits: one 4096-entry table resolves any of them
HEAD_BYTES = 8  # m, then 7 reserved zero bytes
MAX_M = 4  # symbols are the top 8 + m bits: at most 4096 of them
MIN_LANE_SYMBOLS = 16
MAX_LANE_SYMBOLS = 4096  # 4096 * 12 bits < 2^16: a lane length always fits its uint16
ITEMSIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


# ---------------------------------------------------------------- value split

def split(bits: np.ndarray, itemsize: int, m: int) -> tuple:
    """(symbols, rest) of element bits: r = rotl(v, 1); symbol = top 8+m bits of r; rest = the other W-8-m."""
    w, m = 8 * itemsize, int(m)
    v = np.asarray(bits).astype(np.uint64).ravel()
    mask = np.uint64((1 << w) - 1) if w < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    r = ((v << np.uint64(1)) | (v >> np.uint64(w - 1))) & mask
    rb = w - 8 - m
    return (r >> np.uint64(rb)).astype(np.int64), r & np.uint64((1 << rb) - 1)


def join(sym: int, rest: int, itemsize: int, m: int) -> int:
    """Element bits from a symbol and its rest (inverse of ``split``)."""
    w = 8 * itemsize
    r = (sym << (w - 8 - m)) | rest
    return (r >> 1) | ((r & 1) << (w - 1))


# ---------------------------------------------------------------- code construction

def code_lengths(counts, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """Optimal prefix-code lengths (<= max_len) for symbol counts (package-merge); 0 for absent symbols.

    A single present symbol gets length 1. Deterministic: ties go leaves first, then by symbol.
    """
    counts = np.asarray(counts, np.int64)
    present = [int(s) for s in np.flatnonzero(counts)]
    lengths = np.zeros(counts.size, np.uint8)
    n = len(present)
    if n <= 1:
        lengths[present] = 1
        return lengths
    if n > 1 << max_len:
        raise ValueError("too many symbols for the length limit")
    leaves = sorted((int(counts[s]), s) for s in present)
    leaf_w = [w for w, _ in leaves]
    # levels[i]: the merged list of level max_len - i as (weight, leaf symbol or -1 for a package)
    prev = [(w, s) for w, s in leaves]
    levels = [prev]
    for _ in range(max_len - 1):
        packs = [prev[k][0] + prev[k + 1][0] for k in range(0, len(prev) - 1, 2)]
        merged, a, b = [], 0, 0
        while a < n or b < len(packs):  # merge: a leaf goes first at equal weight
            if b >= len(packs) or (a < n and leaf_w[a] <= packs[b]):
                merged.append(leaves[a])
                a += 1
            else:
                merged.append((packs[b], -1))
                b += 1
        prev = merged
        levels.append(prev)
    # the selected items of each level are a prefix: 2n-2 at the top, twice the packages below
    take = 2 * n - 2
    for lst in reversed(levels):
        packages = 0
        for w, s in lst[:take]:
            if s >= 0:
                lengths[s] += 1
            else:
                packages += 1
        take = 2 * packages
    return lengths


def kraft_ok(lengths) -> bool:
    lengths = np.asarray(lengths, np.int64)
    used = lengths[lengths > 0]
    return bool(np.all(lengths <= MAX_CODE_LEN)) and int((1 << (MAX_CODE_LEN - used)).sum()) <= 1 << MAX_CODE_LEN


def canonical_codes(lengths) -> dict:
    """symbol -> (length, code value); code words are assigned in (length, symbol) order (DEFLATE style)."""
    order = sorted((int(l), s) for s, l in enumerate(lengths) if l > 0)
    codes, code, prev = {}, 0, 0
    for ln, s in order:
        code <<= ln - prev
        codes[s] = (ln, code)
        code += 1
        prev = ln
    return codes


def codeword_bits(code: int, length: int) -> list:
    """Stream bits of a code word: most significant bit first."""
    return [(code >> (length - 1 - i)) & 1 for i in range(length)]


def pack_lengths(lengths) -> bytes:
    nib = np.asarray(lengths, np.uint8)
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_lengths(table: bytes, m: int) -> np.ndarray:
    b = np.frombuffer(table, np.uint8, 128 << m)
    out = np.empty(256 << m, np.uint8)
    out[0::2] = b & 15
    out[1::2] = b >> 4
    return out


# ---------------------------------------------------------------- layout

def n_groups(n_elems: int, lane_symbols: int) -> int:
    return -(-n_elems // (LANES * lane_symbols))


def lane_elements(n_elems: int, lane_symbols: int, g: int, j: int) -> range:
    start = g * LANES * lane_symbols
    end = min(n_elems, start + LANES * lane_symbols)
    return range(start + j, end, LANES)


def rest_bits(itemsize: int, m: int) -> int:
    return 8 * itemsize - 8 - m


def layout(n_elems: int, itemsize: int, m: int) -> tuple:
    """(rest region offset, lane table offset T): header 8 bytes, code lengths 2^(7+m) bytes, rest words."""
    rest_off = HEAD_BYTES + (128 << m)
    rest_words = -(-rest_bits(itemsize, m) * n_elems // 64)
    return rest_off, rest_off + 8 * rest_words


# ---------------------------------------------------------------- payload

def encode_payload(bits, itemsize: int, lane_symbols: int, m: int, lengths=None) -> bytes:
    """The ``fexp`` payload of element bits ``bits`` (unsigned ints of ``itemsize`` bytes)."""
    m = int(m)
    sym, rest = split(bits, itemsize, m)
    n = sym.size
    if lengths is None:
        lengths = code_lengths(np.bincount(sym, minlength=256 << m))
    codes = canonical_codes(lengths)
    g_count = n_groups(n, lane_symbols)
    lane_len, streams = [], []
    for g in range(g_count):
        group_bits = []
        for j in range(LANES):
            lane = []
            for e in lane_elements(n, lane_symbols, g, j):
                ln, c = codes[int(sym[e])]
                lane += codeword_bits(c, ln)
            lane_len.append(len(lane))
            group_bits += lane
        group_bits += [0] * (-len(group_bits) % 64)
        streams.append(group_bits)
    out = bytearray([m, 0, 0, 0, 0, 0, 0, 0]) + pack_lengths(lengths)
    rb = rest_bits(itemsize, m)
    acc = 0
    for e in range(n):
        acc |= int(rest[e]) << (rb * e)
    rest_off, t = layout(n, itemsize, m)
    out += acc.to_bytes(t - rest_off, "little")
    out += np.asarray(lane_len, "<u2").tobytes()
    bits_ = [b for s in streams for b in s] + [0] * 64
    for w in range(0, len(bits_), 64):
        out += sum(bit << i for i, bit in enumerate(bits_[w:w + 64])).to_bytes(8, "little")
    return bytes(out)


def decode_payload(payload: bytes, n_elems: int, itemsize: int, lane_symbols: int) -> np.ndarray:
    """Element bits (uint of ``itemsize`` bytes) of an ``fexp`` payload; FormatError for anything the spec
    says a reader must reject."""
    if not MIN_LANE_SYMBOLS <= lane_symbols <= MAX_LANE_SYMBOLS or lane_symbols & (lane_symbols - 1):
        raise FormatError(f"fexp lane_symbols {lane_symbols} is not a power of two in 16..4096")
    if len(payload) < HEAD_BYTES:
        raise FormatError("fexp payload shorter than its header")
    m = payload[0]
    if m > MAX_M or any(payload[1:HEAD_BYTES]):
        raise FormatError(f"fexp header: m = {m} > {MAX_M} or reserved bytes not zero")
    g_count = n_groups(n_elems, lane_symbols)
    rest_off, t = layout(n_elems, itemsize, m)
    if len(payload) < t + 64 * g_count + 8:
        raise FormatError("fexp payload shorter than its tables")
    lengths = unpack_lengths(payload[HEAD_BYTES:rest_off], m)
    if not kraft_ok(lengths):
        raise FormatError("fexp code lengths: a length over 12 or Kraft sum over 1")
    by_code = {(ln, c): s for s, (ln, c) in canonical_codes(lengths).items()}
    lane_len = np.frombuffer(payload, "<u2", LANES * g_count, t).reshape(g_count, LANES)
    words = [-(-int(lane_len[g].sum(dtype=np.int64)) // 64) for g in range(g_count)]
    wstart = t + 64 * g_count
    if len(payload) != wstart + 8 * (sum(words) + 1):
        raise FormatError("fexp payload length does not match its lane table")
    stream = int.from_bytes(payload[wstart:], "little")
    rest_all = int.from_bytes(payload[rest_off:t], "little")
    rb = rest_bits(itemsize, m)
    out = np.zeros(n_elems, _UINT[itemsize])
    word0 = 0
    for g in range(g_count):
        pos = 64 * word0
        for j in range(LANES):
            end = pos + int(lane_len[g, j])
            for e in lane_elements(n_elems, lane_symbols, g, j):
                code, ln = 0, 0
                while True:
                    if pos >= end:
                        raise FormatError(f"group {g} lane {j}: code words run past the lane's length")
                    code = (code << 1) | ((stream >> pos) & 1)
                    pos += 1
                    ln += 1
                    if (ln, code) in by_code:
                        break
                    if ln >= MAX_CODE_LEN:
                        raise FormatError(f"group {g} lane {j}: a code word that is not in the code")
                s = by_code[(ln, code)]
                out[e] = join(s, (rest_all >> (rb * e)) & ((1 << rb) - 1), itemsize, m)
            if pos != end:
                raise FormatError(f"group {g} lane {j}: code words end at bit {pos}, not at {end}")
        word0 += words[g]
    return out
