"""The ``fexp`` payload's layout and code tables (spec 4.5), shared by ``fexp_enc`` and ``fexp_dec``: sizes and
offsets, canonical Huffman codes and their Kraft check, the 4096-entry decoding table (``build_lut``, shared with
the GPU decoder, beside its numpy reference ``build_lut_ref``), and ``parse``: the checked header and lane table.
"""

import functools

import numba
import numpy as np

from ..container.errors import FormatError
from ..container.limits import LANES
from ..jitcache import loaded
from . import fexp_ref
from .fexp_ref import (
    HEAD_BYTES,
    MAX_CODE_LEN,
    MAX_LANE_SYMBOLS,
    MAX_M,
    MIN_LANE_SYMBOLS,
)

LUT_SIZE = 1 << MAX_CODE_LEN
ITEMSIZES = fexp_ref.ITEMSIZES
UINTS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


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
    if loaded(_kraft):
        top, total = _kraft(np.ascontiguousarray(lengths))
    else:  # numpy twin (jitcache.loaded)
        ln = np.asarray(lengths, np.int64)
        top = int(ln.max(initial=0))
        ok = (ln > 0) & (ln <= MAX_CODE_LEN)
        total = int(np.sum(np.left_shift(1, MAX_CODE_LEN - ln[ok])))
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
    if not loaded(_fill_lut):
        return _lut_np(lengths)
    lut = np.empty(LUT_SIZE, np.uint16)
    _fill_lut(np.ascontiguousarray(lengths), _lut_order(), lut)
    return lut


@numba.njit(nogil=True, cache=True)
def _fill_lut(lengths, order, lut):
    """``build_lut``'s table in one pass (Kraft-checked ``lengths``): canonical order is by (length,
    symbol), so a counting sort by length gives each symbol's first 12-bit prefix p; symbol k owns the
    2^(12 - l_k) prefixes from p on, i.e. the table indices whose low l_k bits are ``order[p]`` (``order``:
    table index <-> prefix, a bit reversal), written straight there; indices of no code word are 0."""
    first = np.zeros(MAX_CODE_LEN + 2, np.int64)  # first prefix of each length, in code order
    for sym in range(lengths.size):
        ln = np.int64(lengths[sym])
        if ln:
            first[ln + 1] += np.int64(1) << (MAX_CODE_LEN - ln)
    for ln in range(1, MAX_CODE_LEN + 2):
        first[ln] += first[ln - 1]
    for q in range(first[MAX_CODE_LEN + 1], LUT_SIZE):  # an incomplete code: prefixes no code word begins
        lut[order[q]] = 0
    for sym in range(lengths.size):
        ln = np.int64(lengths[sym])
        if ln:
            p = first[ln]
            first[ln] = p + (np.int64(1) << (MAX_CODE_LEN - ln))
            i0 = np.int64(order[p])  # < 2^ln: the code word's bits in stream order
            ent = np.uint16(sym | (ln << 12))
            for k in range(np.int64(1) << (MAX_CODE_LEN - ln)):
                lut[i0 + (k << ln)] = ent


def build_lut_ref(lengths: np.ndarray) -> np.ndarray:
    """``build_lut`` in numpy (canonical order by lexsort): the reference the compiled one is tested on."""
    check_lengths(lengths)
    return _lut_np(lengths)


def _lut_np(lengths: np.ndarray) -> np.ndarray:
    """``build_lut_ref`` of lengths that ``check_lengths`` accepted."""
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

