"""Numba encoding of the ``fexp`` payload (spec 4.5), bit-exact with ``fexp_ref``: the histogram of the top 12
bits, the choice of ``m`` and the code, the raw low bits packed, the lane lengths and the code words, groups in
parallel (``prange``) with their serial twins."""

import numba
import numpy as np
from numba import prange

from ..container.limits import LANES
from ..parallel import launch
from .fexp_ref import (
    HEAD_BYTES,
    MAX_LANE_SYMBOLS,
    MAX_M,
    MIN_LANE_SYMBOLS,
    code_lengths,
)
from .fexp_table import (
    UINTS,
    _bitrev,
    canonical,
    default_lane_symbols,
    layout,
    rest_bits,
)

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
