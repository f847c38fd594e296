"""Numba encoding of the ``fexp`` payload (spec 4.5), bit-exact with ``fexp_ref``: the histogram of the top 12
bits, the choice of ``m`` and the code, the raw low bits packed, the lane lengths and the code words, groups in
parallel (``prange``) with their serial twins."""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np
from numba import prange

from ..container.limits import LANES
from ..parallel import launch, serial_twin
from .fexp_ref import (
    HEAD_BYTES,
    MAX_LANE_SYMBOLS,
    MAX_M,
    MAX_CODE_LEN,
    MIN_LANE_SYMBOLS,
)
from .rans_model import _segment_sums
from .fexp_table import (
    UINTS,
    _lut_order,
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
        _top12_chunk(np.int64(c), bits, w, top, hists)


_top12_serial = serial_twin(_top12_par)


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
        _pack_chunk(np.int64(c), bits, w, b, rest_words)


_pack_serial = serial_twin(_pack_par)


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
        _lane_lengths_group(np.int64(g), sym, lane_symbols, lengths, lens)


_lane_lengths_serial = serial_twin(_lane_lengths_par)


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
        _write_group(np.int64(g), sym, lane_symbols, lengths, rev, word_start, words)


_write_serial = serial_twin(_write_par)


@numba.njit(nogil=True, cache=True)
def _package_merge(w, sym, max_len, lengths):
    """``fexp_ref.code_lengths``'s package-merge, compiled: ``w``/``sym`` the n >= 2 leaves sorted by
    (count, symbol); adds each leaf's code length to ``lengths[sym]``. The same lists (a leaf before a
    package of equal weight) and the same selection, so the same lengths."""
    n = w.size
    cap = 2 * n  # a level holds n leaves and at most n - 1 packages
    lw = np.empty((max_len, cap), np.int64)  # level i: the merged list of level max_len - i
    ls = np.empty((max_len, cap), np.int64)  # its leaf symbols, -1 for a package
    ln = np.zeros(max_len, np.int64)
    lw[0, :n] = w
    ls[0, :n] = sym
    ln[0] = n
    for lv in range(1, max_len):
        n_packs = ln[lv - 1] // 2
        a, b, k = 0, 0, 0
        while a < n or b < n_packs:
            pk = lw[lv - 1, 2 * b] + lw[lv - 1, 2 * b + 1] if b < n_packs else 0
            if b >= n_packs or (a < n and w[a] <= pk):
                lw[lv, k], ls[lv, k] = w[a], sym[a]
                a += 1
            else:
                lw[lv, k], ls[lv, k] = pk, -1
                b += 1
            k += 1
        ln[lv] = k
    take = 2 * n - 2  # the selected items of each level are a prefix: 2n-2 at the top, twice the packages below
    for lv in range(max_len - 1, -1, -1):
        packages = 0
        for i in range(min(take, ln[lv])):
            if ls[lv, i] >= 0:
                lengths[ls[lv, i]] += 1
            else:
                packages += 1
        take = 2 * packages


def code_lengths(counts, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """``fexp_ref.code_lengths`` (optimal length-limited prefix code lengths, package-merge) with the merge
    compiled: the same lengths (tested against the reference), ~100x faster than its Python lists, which
    were most of a small tensor's lossless save."""
    counts = np.asarray(counts, np.int64)
    present = np.flatnonzero(counts)
    lengths = np.zeros(counts.size, np.uint8)
    n = present.size
    if n <= 1:
        lengths[present] = 1
        return lengths
    if n > 1 << max_len:
        raise ValueError("too many symbols for the length limit")
    order = present[np.lexsort((present, counts[present]))]  # by (count, symbol), as sorted() orders the pairs
    _package_merge(np.ascontiguousarray(counts[order]), order.astype(np.int64), np.int64(max_len), lengths)
    return lengths


def _code_bytes(counts: np.ndarray, lengths: np.ndarray) -> float:
    return float((counts.astype(np.float64) * lengths).sum()) / 8


@numba.njit(nogil=True, cache=True)
def _m_counts(top_hist, n_m):
    """The symbol counts of m = 0 .. n_m - 1 (``top_hist.reshape(256 << m, -1).sum(axis=1)``) one after the
    other, the live ones (as float64) one after the other, and where each m's live counts end. Each m's
    counts are pair sums of m + 1's (exact integers), from the 4096 counts of m = 4 down."""
    size = 256 * ((1 << n_m) - 1)
    counts = np.zeros(size, np.int64)
    o = size - (256 << (n_m - 1))  # the last m's counts: sums of top_hist's runs
    width = top_hist.size // (256 << (n_m - 1))
    for i in range(256 << (n_m - 1)):
        c = np.int64(0)
        for j in range(i * width, (i + 1) * width):
            c += top_hist[j]
        counts[o + i] = c
    for m in range(n_m - 2, -1, -1):
        p = o
        o -= 256 << m
        for i in range(256 << m):
            counts[o + i] = counts[p + 2 * i] + counts[p + 2 * i + 1]
    ends = np.zeros(n_m, np.int64)
    live = np.empty(size, np.float64)
    k = 0
    o = 0
    for m in range(n_m):
        for i in range(o, o + (256 << m)):
            if counts[i] > 0:
                live[k] = counts[i]
                k += 1
        o += 256 << m
        ends[m] = k
    return counts, live[:k], ends


def choose_m(top_hist: np.ndarray, n: int, itemsize: int, ms=range(MAX_M + 1)) -> tuple:
    """(m, code lengths) with the smallest payload, from the histogram of the top 12 bits of r.

    Candidates are ranked by entropy (+ raw bits + table); the exact Huffman size decides among the best three.
    The entropies of every m come from one compiled pass and one log2 (the same floats as m by m: numpy's
    log2 of each count, summed in numpy's pairwise order by ``_segment_sums``).
    """
    ms = list(ms)
    counts_all, live, ends = _m_counts(np.ascontiguousarray(top_hist, np.int64), max(ms) + 1)
    ent = -_segment_sums(live * np.log2(live / max(n, 1)), ends)
    est = []
    for m in ms:
        o = 256 * ((1 << m) - 1)  # counts of m start after those of 0 .. m - 1
        counts = counts_all[o:o + (256 << m)]
        h = float(ent[m]) / 8 if n else 0.0
        est.append((h + (128 << m) + 8 * -(-rest_bits(itemsize, m) * n // 64), m, counts))
    est.sort(key=lambda t: (t[0], t[1]))
    best = None
    for _, m, counts in est[:3]:
        lengths = code_lengths(counts)
        size = _code_bytes(counts, lengths) + (128 << m) + 8 * -(-rest_bits(itemsize, m) * n // 64)
        if best is None or size < best[0]:
            best = (size, m, lengths)
    return best[1], best[2]


def _choose_m_ref(top_hist: np.ndarray, n: int, itemsize: int, ms=range(MAX_M + 1)) -> tuple:
    """``choose_m`` m by m in numpy (the reference of the compiled counts)."""
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
        # the code words bit-reversed (stream order): the 12-bit reversal shifted down to each length
        rev[order] = (_lut_order()[code] >> (MAX_CODE_LEN - ln)).astype(np.uint64)
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
