"""Numba coding of the ``fexp`` payload (spec 4.5): lossless floats, bit-exact with ``fexp_ref``.

Each element's bits ``v`` (``W`` bits) become ``r = rotl(v, 1)``; the top ``8 + m`` bits of ``r`` (exponent
and ``m`` leading mantissa bits) are a symbol coded with a per-tensor, length-limited (<= 12 bits) canonical
Huffman code in the ``eg`` lane layout (groups of 32 lanes x S symbols, 64-bit aligned), and the other
``B = W - 8 - m`` bits are stored raw, bit-packed, where any element's bits are found at ``B * e``.
Decoding is one lookup in a 4096-entry table per symbol (``build_lut``, shared with the GPU decoder).
Groups are encoded and decoded in parallel (``prange``); per-element work never runs in Python.
"""

import functools

import numba
import numpy as np
from numba import prange

from ..container.errors import FormatError
from . import fexp_ref
from .fexp_ref import HEAD_BYTES, MAX_CODE_LEN, MAX_LANE_SYMBOLS, MAX_M, MIN_LANE_SYMBOLS, code_lengths

try:
    from ..parallel import launch
except ImportError:  # older tree: the launcher lived in golomb
    from .golomb import _launch as launch
from ..container.limits import LANES

LUT_SIZE = 1 << MAX_CODE_LEN
ITEMSIZES = fexp_ref.ITEMSIZES
UINTS = {2: np.uint16, 4: np.uint32, 8: np.uint64}

# status codes, one per group (0 = fine)
_BAD_CODE, _LANE_END, _OVERRUN = 1, 2, 3
_STATUS_TEXT = {
    _BAD_CODE: "bits that begin no code word",
    _LANE_END: "code words do not end at the lane's declared length",
    _OVERRUN: "a lane reads past its group's words",
}


def default_lane_symbols(n: int) -> int:
    """Lane length for ``n`` elements: 1024 (lane table 0.016 bits/weight) unless the tensor is so big that
    longer lanes still leave >= 64K lanes for a GPU (2048 from 2^27 elements, 4096 from 2^28)."""
    return 4096 if n >= 1 << 28 else 2048 if n >= 1 << 27 else 1024


# ---------------------------------------------------------------- shared pieces

def rest_bits(itemsize: int, m: int) -> int:
    return 8 * itemsize - 8 - m


def layout(n: int, itemsize: int, m: int, lane_symbols: int) -> tuple:
    """(rest offset, lane table offset T, word offset, groups) of an ``fexp`` payload."""
    rest_off, t = fexp_ref.layout(n, itemsize, m)
    g = -(-n // (LANES * lane_symbols))
    return rest_off, t, t + 64 * g, g


def min_payload(n: int, itemsize: int) -> int:
    """Bytes of the smallest ``fexp`` payload of ``n`` elements whatever their values: its tables, the raw low
    bits and the closing zero word. Where this is not below ``n * itemsize``, raw storage is smaller."""
    s = default_lane_symbols(n)
    return min(layout(n, itemsize, m, s)[2] + 8 for m in range(MAX_M + 1))


def canonical(lengths: np.ndarray) -> tuple:
    """(symbols in canonical order, their lengths, their code values) for code lengths (0 = absent)."""
    lengths = np.asarray(lengths, np.int64)
    syms = np.flatnonzero(lengths)
    order = syms[np.lexsort((syms, lengths[syms]))]
    ln = lengths[order]
    # c / 2^l = sum of 2^-l' over the symbols before: in units of 2^-12, an exclusive prefix sum
    span = np.left_shift(1, MAX_CODE_LEN - ln)
    start = np.concatenate([[0], np.cumsum(span)[:-1]]).astype(np.int64)
    return order, ln, start >> (MAX_CODE_LEN - ln)


def _bitrev(x: np.ndarray, nbits) -> np.ndarray:
    x = np.asarray(x, np.int64)
    out = np.zeros_like(x)
    nbits = np.broadcast_to(np.asarray(nbits, np.int64), x.shape)
    for i in range(MAX_CODE_LEN):
        out |= np.where(i < nbits, ((x >> i) & 1) << np.maximum(nbits - 1 - i, 0), 0)
    return out


@numba.njit(nogil=True, cache=True)
def _kraft(lengths):
    """(longest code length, sum of 2^(12 - l) over the present symbols); lengths over 12 count 0."""
    top, total = np.int64(0), np.int64(0)
    for i in range(lengths.size):
        ln = np.int64(lengths[i])
        top = max(top, ln)
        if 0 < ln <= MAX_CODE_LEN:
            total += np.int64(1) << (MAX_CODE_LEN - ln)
    return top, total


def check_lengths(lengths: np.ndarray) -> None:
    top, total = _kraft(np.ascontiguousarray(lengths))
    if top > MAX_CODE_LEN:
        raise FormatError(f"fexp code length {int(top)} is over {MAX_CODE_LEN}")
    if total > LUT_SIZE:
        raise FormatError("fexp code lengths break the Kraft inequality (sum of 2^-l over 1)")


def build_lut(lengths: np.ndarray) -> np.ndarray:
    """The 4096-entry decoding table: entry i = symbol | length << 12 for the code word whose bits, in stream
    order, are the low ``length`` bits of i (first bit least significant); 0 where no code word matches."""
    check_lengths(lengths)
    return _lut(lengths)


def _lut(lengths: np.ndarray) -> np.ndarray:
    """``build_lut`` of lengths that ``check_lengths`` accepted."""
    lut = np.empty(LUT_SIZE, np.uint16)
    _fill_lut(np.ascontiguousarray(lengths), _lut_order(), lut)
    return lut


@numba.njit(nogil=True, cache=True)
def _fill_lut(lengths, order, lut):
    """``build_lut``'s table in one pass (Kraft-checked ``lengths``): canonical order is by (length,
    symbol), so a counting sort by length gives each symbol's first 12-bit prefix; symbol k owns the next
    2^(12 - l_k) prefixes; ``order`` maps a table index to its prefix (bit reversal)."""
    first = np.zeros(MAX_CODE_LEN + 2, np.int64)  # first prefix of each length, in code order
    for sym in range(lengths.size):
        ln = np.int64(lengths[sym])
        if ln:
            first[ln + 1] += np.int64(1) << (MAX_CODE_LEN - ln)
    for ln in range(1, MAX_CODE_LEN + 2):
        first[ln] += first[ln - 1]
    by_prefix = np.zeros(LUT_SIZE, np.uint16)
    for sym in range(lengths.size):
        ln = np.int64(lengths[sym])
        if ln:
            span = np.int64(1) << (MAX_CODE_LEN - ln)
            p = first[ln]
            for q in range(p, p + span):
                by_prefix[q] = np.uint16(sym | (ln << 12))
            first[ln] = p + span
    for i in range(LUT_SIZE):
        lut[i] = by_prefix[order[i]]


def build_lut_ref(lengths: np.ndarray) -> np.ndarray:
    """``build_lut`` in numpy (canonical order by lexsort): the reference the compiled one is tested on."""
    check_lengths(lengths)
    order, ln, _ = canonical(lengths)
    # in code (MSB-first) order, symbol k owns the next 2^(12 - l_k) of the 4096 12-bit prefixes
    by_prefix = np.zeros(LUT_SIZE, np.uint16)
    ent = (order | (ln << 12)).astype(np.uint16)
    owned = np.repeat(ent, np.left_shift(1, MAX_CODE_LEN - ln))
    by_prefix[:owned.size] = owned
    return by_prefix[_lut_order()]


@functools.cache
def _lut_order() -> np.ndarray:
    """Table index -> 12-bit prefix (bit reversal): the same permutation for every table, computed once."""
    return _bitrev(np.arange(LUT_SIZE), MAX_CODE_LEN)


def parse_header(payload, n: int, itemsize: int, lane_symbols: int, total: int | None = None) -> tuple:
    """(m, code lengths, rest offset, T, word offset, G) with the checks that need no lane table.

    ``payload`` may be just the payload's first bytes (at least 8 + 2^(7+m)) when ``total`` gives its length.
    """
    if not (MIN_LANE_SYMBOLS <= lane_symbols <= MAX_LANE_SYMBOLS and lane_symbols & (lane_symbols - 1) == 0):
        raise FormatError(f"fexp lane_symbols {lane_symbols} is not a power of two in "
                          f"{MIN_LANE_SYMBOLS}..{MAX_LANE_SYMBOLS}")
    buf = np.frombuffer(payload, np.uint8)
    if buf.size < HEAD_BYTES:
        raise FormatError(f"fexp payload of {buf.size} bytes is shorter than its header")
    m = int(buf[0])
    if m > MAX_M or buf[1:HEAD_BYTES].any():
        raise FormatError(f"fexp header: m = {m} (at most {MAX_M}) or a reserved byte is not zero")
    rest_off, t, w0, g = layout(n, itemsize, m, lane_symbols)
    total = buf.size if total is None else total
    if total < w0 + 8 or buf.size < rest_off:
        raise FormatError(f"fexp payload of {total} bytes cannot hold {n} elements (at least {w0 + 8})")
    nib = buf[HEAD_BYTES:rest_off]
    lengths = np.empty(256 << m, np.uint8)
    lengths[0::2] = nib & 15
    lengths[1::2] = nib >> 4
    check_lengths(lengths)
    return m, lengths, rest_off, t, w0, g


@numba.njit(nogil=True, cache=True)
def _lane_table(lens, n, lane_symbols, word_start):
    """Check that every lane of c symbols holds c..12c bits and fill ``word_start`` (first 64-bit word of
    each group, then the total); returns g * 32 + j of the first bad lane, or -1."""
    G = lens.shape[0]
    n_last = n - (G - 1) * LANES * lane_symbols
    word_start[0] = 0
    for g in range(G):
        bits = np.int64(0)
        for j in range(LANES):
            cnt = np.int64(lane_symbols) if g < G - 1 else max(np.int64(0), (n_last - j + LANES - 1) // LANES)
            ln = np.int64(lens[g, j])
            if ln < cnt or ln > MAX_CODE_LEN * cnt:
                return g * LANES + j
            bits += ln
        word_start[g + 1] = word_start[g] + (bits + 63) // 64
    return -1


def parse(payload, n: int, itemsize: int, lane_symbols: int) -> dict:
    """Everything a decoder needs, checked: sizes, code, lane table, word offsets."""
    m, lengths, rest_off, t, w0, g = parse_header(payload, n, itemsize, lane_symbols)
    buf = np.frombuffer(payload, np.uint8)
    lens = buf[t:t + 64 * g].view("<u2").reshape(g, LANES)
    word_start = np.empty(g + 1, np.int64)
    # a lane of c symbols holds c..12c bits: bounds the element count by the payload before decoding
    bad = _lane_table(lens, n, lane_symbols, word_start)
    if bad >= 0:
        gi, j = divmod(bad, LANES)
        n_last = n - (g - 1) * LANES * lane_symbols
        cnt = lane_symbols if gi < g - 1 else max(0, (n_last - j + LANES - 1) // LANES)
        raise FormatError(f"fexp group {gi} lane {j}: {int(lens[gi, j])} bits cannot hold "
                          f"{cnt} code words of 1..{MAX_CODE_LEN} bits")
    expect = w0 + 8 * (int(word_start[-1]) + 1)
    if buf.size != expect:
        raise FormatError(f"fexp payload is {buf.size} bytes, its lane table says {expect}")
    return {"m": m, "lengths": lengths, "lut": _lut(lengths), "lens": lens, "word_start": word_start,
            "words": buf[w0:].view("<u8"), "rest": buf[rest_off:t + 8].view("<u8"), "rest_bits": rest_bits(itemsize, m),
            "groups": g}


# ---------------------------------------------------------------- encoding

_CHUNK = 1 << 16  # elements per histogram chunk


@numba.njit(inline="always")
def _top12_chunk(c, bits, w, top, hists):
    """Top 12 bits of rotl(v, 1) (the symbol for m = 4) of one chunk of elements, and their histogram."""
    h = hists[c]
    for i in range(c * _CHUNK, min(bits.size, c * _CHUNK + _CHUNK)):
        v = np.uint64(bits[i])
        r = (v << np.uint64(1)) | (v >> np.uint64(w - 1))
        t = np.int64((r >> np.uint64(w - 12)) & np.uint64(4095))
        top[i] = t
        h[t] += 1


@numba.njit(parallel=True, nogil=True, cache=True)
def _top12_par(bits, w, top, hists):
    for c in prange(hists.shape[0]):
        _top12_chunk(c, bits, w, top, hists)


@numba.njit(nogil=True, cache=True)
def _top12_serial(bits, w, top, hists):
    for c in range(hists.shape[0]):
        _top12_chunk(c, bits, w, top, hists)


def _top12(bits: np.ndarray, w: int) -> tuple:
    top = np.empty(bits.size, np.uint16)
    hists = np.zeros((-(-bits.size // _CHUNK), 4096), np.int64)
    if bits.size:
        launch(_top12_par, _top12_serial, bits, np.int64(w), top, hists, work=bits.size)
    return top, hists.sum(axis=0) if bits.size else np.zeros(4096, np.int64)


@numba.njit(inline="always")
def _pack_chunk(c, bits, w, b, rest_words):
    """Bit-pack the low ``b`` bits of rotl(v, 1), element e at bit b*e: 64 elements fill exactly b words."""
    mask = (np.uint64(1) << np.uint64(b)) - np.uint64(1)
    wi = c * b
    acc = np.uint64(0)
    nb = np.int64(0)
    for e in range(c * 64, min(bits.size, c * 64 + 64)):
        v = np.uint64(bits[e])
        r = ((v << np.uint64(1)) | (v >> np.uint64(w - 1))) & mask
        acc |= r << np.uint64(nb)
        nb += b
        if nb >= 64:
            rest_words[wi] = acc
            wi += 1
            nb -= 64
            acc = r >> np.uint64(b - nb) if nb > 0 else np.uint64(0)
    if nb > 0:
        rest_words[wi] = acc


@numba.njit(parallel=True, nogil=True, cache=True)
def _pack_par(bits, w, b, rest_words):
    for c in prange((bits.size + 63) // 64):
        _pack_chunk(c, bits, w, b, rest_words)


@numba.njit(nogil=True, cache=True)
def _pack_serial(bits, w, b, rest_words):
    for c in range((bits.size + 63) // 64):
        _pack_chunk(c, bits, w, b, rest_words)


@numba.njit(inline="always")
def _lane_lengths_group(g, sym, lane_symbols, lengths, lens):
    start = g * LANES * lane_symbols
    end = min(sym.size, start + LANES * lane_symbols)
    for j in range(LANES):
        acc = np.int64(0)
        for e in range(start + j, end, LANES):
            acc += lengths[sym[e]]
        lens[g, j] = acc


@numba.njit(parallel=True, nogil=True, cache=True)
def _lane_lengths_par(sym, lane_symbols, lengths, lens):
    for g in prange(lens.shape[0]):
        _lane_lengths_group(g, sym, lane_symbols, lengths, lens)


@numba.njit(nogil=True, cache=True)
def _lane_lengths_serial(sym, lane_symbols, lengths, lens):
    for g in range(lens.shape[0]):
        _lane_lengths_group(g, sym, lane_symbols, lengths, lens)


def _lane_lengths(sym: np.ndarray, lane_symbols: int, lengths: np.ndarray) -> np.ndarray:
    lens = np.zeros((-(-sym.size // (LANES * lane_symbols)), LANES), np.int64)
    if sym.size:
        launch(_lane_lengths_par, _lane_lengths_serial, sym, np.int64(lane_symbols), lengths, lens, work=sym.size)
    return lens


@numba.njit(inline="always")
def _write_group(g, sym, lane_symbols, lengths, rev, word_start, words):
    start = g * LANES * lane_symbols
    end = min(sym.size, start + LANES * lane_symbols)
    w = word_start[g]
    acc = np.uint64(0)
    nb = np.int64(0)
    for j in range(LANES):
        for e in range(start + j, end, LANES):
            s = sym[e]
            code = np.uint64(rev[s])
            length = np.int64(lengths[s])
            acc |= code << np.uint64(nb)
            nb += length
            if nb >= 64:
                words[w] = acc
                w += 1
                nb -= 64
                acc = code >> np.uint64(length - nb) if nb > 0 else np.uint64(0)
    if nb > 0:
        words[w] = acc


@numba.njit(parallel=True, nogil=True, cache=True)
def _write_par(sym, lane_symbols, lengths, rev, word_start, words):
    for g in prange(word_start.size - 1):
        _write_group(g, sym, lane_symbols, lengths, rev, word_start, words)


@numba.njit(nogil=True, cache=True)
def _write_serial(sym, lane_symbols, lengths, rev, word_start, words):
    for g in range(word_start.size - 1):
        _write_group(g, sym, lane_symbols, lengths, rev, word_start, words)


def _code_bytes(counts: np.ndarray, lengths: np.ndarray) -> float:
    return float((counts.astype(np.float64) * lengths).sum()) / 8


def choose_m(top_hist: np.ndarray, n: int, itemsize: int, ms=range(MAX_M + 1)) -> tuple:
    """(m, code lengths) with the smallest payload, from the histogram of the top 12 bits of r.

    Candidates are ranked by entropy (+ raw bits + table); the exact Huffman size decides among the best three.
    """
    ms = list(ms)
    est = []
    for m in ms:
        counts = top_hist.reshape(256 << m, -1).sum(axis=1)
        c = counts[counts > 0].astype(np.float64)
        h = float(-(c * np.log2(c / max(n, 1))).sum()) / 8 if n else 0.0
        est.append((h + (128 << m) + 8 * -(-rest_bits(itemsize, m) * n // 64), m, counts))
    est.sort(key=lambda t: (t[0], t[1]))
    best = None
    for _, m, counts in est[:3]:
        lengths = code_lengths(counts)
        size = _code_bytes(counts, lengths) + (128 << m) + 8 * -(-rest_bits(itemsize, m) * n // 64)
        if best is None or size < best[0]:
            best = (size, m, lengths)
    return best[1], best[2]


def encode(arr: np.ndarray, lane_symbols: int | None = None, m: int | None = None) -> tuple:
    """(params, payload) of a float array (any shape, C order); ``m`` and ``lane_symbols`` chosen if None."""
    itemsize = arr.dtype.itemsize
    if itemsize not in UINTS:
        raise TypeError(f"fexp encodes 2-, 4- and 8-byte floats, not {arr.dtype}")
    bits = np.ascontiguousarray(arr).reshape(-1).view(UINTS[itemsize])
    n = bits.size
    s = default_lane_symbols(n) if lane_symbols is None else int(lane_symbols)
    if not (MIN_LANE_SYMBOLS <= s <= MAX_LANE_SYMBOLS and s & (s - 1) == 0):
        raise ValueError(f"lane_symbols must be a power of two in {MIN_LANE_SYMBOLS}..{MAX_LANE_SYMBOLS}")
    w = 8 * itemsize
    top, hist = _top12(bits, w)
    m, lengths = choose_m(hist, n, itemsize, range(MAX_M + 1) if m is None else (m,))
    b = rest_bits(itemsize, m)
    sym = top >> np.uint16(4 - m) if m < 4 else top
    lens = _lane_lengths(sym, s, lengths.astype(np.int64))
    rest_off, t, w0, g = layout(n, itemsize, m, s)
    group_words = (lens.sum(axis=1) + 63) // 64
    word_start = np.zeros(g + 1, np.int64)
    np.cumsum(group_words, out=word_start[1:])
    buf = np.zeros(w0 + 8 * (int(word_start[-1]) + 1), np.uint8)
    buf[0] = m
    buf[HEAD_BYTES:rest_off] = lengths[0::2] | (lengths[1::2] << 4)
    if n:
        launch(_pack_par, _pack_serial, bits, np.int64(w), np.int64(b), buf[rest_off:t].view("<u8"), work=n)
        buf[t:w0] = lens.astype("<u2").reshape(-1).view(np.uint8)
        order, ln, code = canonical(lengths)
        rev = np.zeros(lengths.size, np.uint64)
        rev[order] = _bitrev(code, ln).astype(np.uint64)
        launch(_write_par, _write_serial, sym, np.int64(s), lengths.astype(np.int64), rev, word_start,
               buf[w0:].view("<u8"), work=n)
    return {"lane_symbols": s}, buf


def payload_size(arr: np.ndarray, lane_symbols: int | None = None) -> int:
    """Exact ``fexp`` payload bytes of ``arr`` (what ``encode`` would produce), without writing it."""
    itemsize = arr.dtype.itemsize
    bits = np.ascontiguousarray(arr).reshape(-1).view(UINTS[itemsize])
    n = bits.size
    s = default_lane_symbols(n) if lane_symbols is None else lane_symbols
    top, hist = _top12(bits, 8 * itemsize)
    m, lengths = choose_m(hist, n, itemsize)
    sym = top >> np.uint16(4 - m) if m < 4 else top
    lens = _lane_lengths(sym, s, lengths.astype(np.int64))
    _, _, w0, _ = layout(n, itemsize, m, s)
    return w0 + 8 * (int(((lens.sum(axis=1) + 63) // 64).sum()) + 1)


# ---------------------------------------------------------------- decoding

@numba.njit(inline="always")
def _peek(words, p):
    w = p >> 6
    s = np.uint64(p & 63)
    return (words[w] >> s) | ((words[w + 1] << np.uint64(1)) << (np.uint64(63) - s))


@numba.njit(inline="always")
def _emit(ent, e, rest, b, bmask, top, out, out_base):
    r = (np.uint64(ent & 4095) << np.uint64(b)) | (_peek(rest, b * e) & bmask)
    out[e - out_base] = (r >> np.uint64(1)) | ((r & np.uint64(1)) << top)


@numba.njit(inline="always")
def _put(ent, rv, ub, bmask, top, out, i):
    r = (np.uint64(ent & 4095) << ub) | (rv & bmask)
    out[i] = (r >> np.uint64(1)) | ((r & np.uint64(1)) << top)


@numba.njit(inline="always")
def _sym(words, lut, q):
    return np.int64(lut[np.int64(_peek(words, q) & np.uint64(4095))])


@numba.njit(inline="always")
def _decode_group(gi, g_first, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, out_base, status):
    g = g_first + gi
    start = g * LANES * lane_symbols
    n_g = min(n, start + LANES * lane_symbols) - start
    pos = np.empty(LANES, np.int64)
    end = np.empty(LANES, np.int64)
    p = word_start[g] * 64
    reach = np.int64(0)
    for j in range(LANES):
        pos[j] = p
        p += np.int64(lens[g, j])
        end[j] = p
        reach = max(reach, pos[j] + MAX_CODE_LEN * ((n_g - j + LANES - 1) // LANES))
    if p > word_start[g + 1] * 64:
        status[gi] = _OVERRUN
        return
    bmask = (np.uint64(1) << np.uint64(b)) - np.uint64(1)
    top = np.uint64(w - 1)
    short = np.int64(12)
    if reach <= (words.size - 1) * 64:
        # fast path: even 12-bit code words keep every lane inside the stream, so errors are checked once at
        # the end; 8 lanes at a time, so that 8 independent lookup chains overlap
        for j0 in range(0, LANES, 8):
            q0, q1, q2, q3 = pos[j0], pos[j0 + 1], pos[j0 + 2], pos[j0 + 3]
            q4, q5, q6, q7 = pos[j0 + 4], pos[j0 + 5], pos[j0 + 6], pos[j0 + 7]
            both = max(0, (n_g - j0 - 7 + LANES - 1) // LANES)  # steps where all 8 lanes have a symbol
            for t in range(both):
                e = start + j0 + LANES * t
                s0 = _sym(words, lut, q0)
                s1 = _sym(words, lut, q1)
                s2 = _sym(words, lut, q2)
                s3 = _sym(words, lut, q3)
                s4 = _sym(words, lut, q4)
                s5 = _sym(words, lut, q5)
                s6 = _sym(words, lut, q6)
                s7 = _sym(words, lut, q7)
                q0 += s0 >> 12
                q1 += s1 >> 12
                q2 += s2 >> 12
                q3 += s3 >> 12
                q4 += s4 >> 12
                q5 += s5 >> 12
                q6 += s6 >> 12
                q7 += s7 >> 12
                short = min(short, min(min(min(s0, s1), min(s2, s3)), min(min(s4, s5), min(s6, s7))) >> 12)
                if b <= 8:  # 2-byte floats: the 8 elements' rests are one 64-bit peek
                    rv = _peek(rest, b * e)
                    ub = np.uint64(b)
                    _put(s0, rv, ub, bmask, top, out, e - out_base)
                    rv >>= ub
                    _put(s1, rv, ub, bmask, top, out, e + 1 - out_base)
                    rv >>= ub
                    _put(s2, rv, ub, bmask, top, out, e + 2 - out_base)
                    rv >>= ub
                    _put(s3, rv, ub, bmask, top, out, e + 3 - out_base)
                    rv >>= ub
                    _put(s4, rv, ub, bmask, top, out, e + 4 - out_base)
                    rv >>= ub
                    _put(s5, rv, ub, bmask, top, out, e + 5 - out_base)
                    rv >>= ub
                    _put(s6, rv, ub, bmask, top, out, e + 6 - out_base)
                    rv >>= ub
                    _put(s7, rv, ub, bmask, top, out, e + 7 - out_base)
                else:
                    _emit(s0, e, rest, b, bmask, top, out, out_base)
                    _emit(s1, e + 1, rest, b, bmask, top, out, out_base)
                    _emit(s2, e + 2, rest, b, bmask, top, out, out_base)
                    _emit(s3, e + 3, rest, b, bmask, top, out, out_base)
                    _emit(s4, e + 4, rest, b, bmask, top, out, out_base)
                    _emit(s5, e + 5, rest, b, bmask, top, out, out_base)
                    _emit(s6, e + 6, rest, b, bmask, top, out, out_base)
                    _emit(s7, e + 7, rest, b, bmask, top, out, out_base)
            pos[j0], pos[j0 + 1], pos[j0 + 2], pos[j0 + 3] = q0, q1, q2, q3
            pos[j0 + 4], pos[j0 + 5], pos[j0 + 6], pos[j0 + 7] = q4, q5, q6, q7
            for j in range(j0, j0 + 8):  # the last group's ragged step
                for e in range(start + j + LANES * both, start + n_g, LANES):
                    ent = _sym(words, lut, pos[j])
                    short = min(short, ent >> 12)
                    pos[j] += ent >> 12
                    _emit(ent, e, rest, b, bmask, top, out, out_base)
    else:
        for j in range(LANES):
            for e in range(start + j, start + n_g, LANES):
                if pos[j] >= end[j]:
                    status[gi] = _LANE_END
                    return
                ent = _sym(words, lut, pos[j])
                if ent >> 12 == 0:
                    status[gi] = _BAD_CODE
                    return
                pos[j] += ent >> 12
                _emit(ent, e, rest, b, bmask, top, out, out_base)
    if short == 0:
        status[gi] = _BAD_CODE
        return
    for j in range(LANES):
        if pos[j] != end[j]:
            status[gi] = _LANE_END
            return


@numba.njit(parallel=True, nogil=True, cache=True)
def _decode_groups(g_first, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, out_base, status):
    for gi in prange(status.size):
        _decode_group(gi, g_first, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, out_base, status)


@numba.njit(nogil=True, cache=True)
def _decode_groups_serial(g_first, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, out_base,
                          status):
    for gi in range(status.size):
        _decode_group(gi, g_first, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, out_base, status)


def decode_into(payload, n: int, itemsize: int, lane_symbols: int, out: np.ndarray, g_first: int = 0,
                g_last: int | None = None, parsed: dict | None = None) -> None:
    """Decode groups [g_first, g_last) into ``out`` (unsigned ints of ``itemsize`` bytes; element e goes to
    out[e - g_first * 32 * S]). ``parsed``: what ``parse`` returned, when the caller has it."""
    p = parsed if parsed is not None else parse(payload, n, itemsize, lane_symbols)
    g = p["groups"]
    g_last = g if g_last is None else g_last
    gsize = LANES * lane_symbols
    if not 0 <= g_first <= g_last <= g or out.size < min(n, g_last * gsize) - g_first * gsize:
        raise ValueError(f"decode_into: groups [{g_first}, {g_last}) of {g} do not fit out[{out.size}]")
    if out.dtype != UINTS[itemsize]:
        raise TypeError(f"out must be {np.dtype(UINTS[itemsize])}")
    status = np.zeros(max(0, g_last - g_first), np.uint8)
    if status.size:
        launch(_decode_groups, _decode_groups_serial, np.int64(g_first), p["words"], p["lens"], p["word_start"],
                p["lut"], p["rest"], np.int64(p["rest_bits"]), np.int64(8 * itemsize), np.int64(n),
                np.int64(lane_symbols), out, np.int64(g_first * gsize), status, work=out.size)
    if status.any():
        bad = int(np.flatnonzero(status)[0])
        raise FormatError(f"fexp payload group {g_first + bad}: {_STATUS_TEXT[int(status[bad])]}")


def decode(payload, n: int, itemsize: int, lane_symbols: int) -> np.ndarray:
    """All ``n`` element bits (uint16/32/64) of an ``fexp`` payload."""
    p = parse(payload, n, itemsize, lane_symbols)
    out = np.empty(n, UINTS[itemsize])
    decode_into(payload, n, itemsize, lane_symbols, out, parsed=p)
    return out
