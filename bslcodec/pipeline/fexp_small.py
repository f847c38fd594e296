"""``fexp.encode`` of a small tensor (fewer than ``SMALL_BELOW`` elements) in two compiled calls (issue 19):
the same payload byte for byte, built from the encoder's own compiled pieces (``codecs/fexp_enc.py``).

``fexp.encode`` runs ~12 numpy and numba calls a tensor (the histogram, the five candidate ``m``s, three
package-merges, the canonical code, the lane lengths, the packing and the code words): ~120 us of a 4,096
element bf16 tensor's ~300 us lossless save, most of it call overhead. Here the first call makes the top-12
histogram and every ``m``'s counts; between the calls numpy's ``log2`` ranks the candidates (the same floats
as ``choose_m``: the ranking must not move); the second call costs the best three exactly and writes the
payload of the winner.
"""

from __future__ import annotations

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np

from ..codecs.fexp_enc import (
    _CHUNK,
    _lane_lengths_group,
    _m_counts,
    _pack_chunk,
    _package_merge,
    _top12_chunk,
    _write_group,
)
from ..codecs.fexp_table import UINTS, _lut_order, default_lane_symbols, rest_bits
from ..codecs.rans_model import _segment_sums
from ..container.limits import LANES
from ..parallel import SERIAL_BELOW

#: tensors of fewer elements than this take the two-call path (larger ones: ``fexp.encode``'s parallel kernels)
SMALL_BELOW = SERIAL_BELOW
_N_M = 5  # m = 0 .. MAX_M
_MAX_LEN = 12  # fexp_ref.MAX_CODE_LEN


@numba.njit(nogil=True, cache=True)
def _counts(bits, w, top):
    """The top-12 symbols (into ``top``) and every ``m``'s symbol counts (``fexp_enc._m_counts``)."""
    hists = np.zeros((max(1, (bits.size + _CHUNK - 1) // _CHUNK), 4096), np.int64)
    for c in range(hists.shape[0]):
        _top12_chunk(c, bits, w, top, hists)
    hist = hists[0].copy()
    for c in range(1, hists.shape[0]):
        hist += hists[c]
    return _m_counts(hist, _N_M)


@numba.njit(nogil=True, cache=True)
def _lengths_of(counts, lengths):
    """``fexp_enc.code_lengths``: the leaves sorted by (count, symbol), then the compiled package-merge."""
    k = 0
    for i in range(counts.size):
        k += counts[i] > 0
    if k <= 1:
        for i in range(counts.size):
            if counts[i] > 0:
                lengths[i] = 1
        return
    syms = np.empty(k, np.int64)
    j = 0
    for i in range(counts.size):
        if counts[i] > 0:
            syms[j] = i
            j += 1
    cs = counts[syms]
    order = np.argsort(cs, kind="mergesort")  # stable: equal counts stay in symbol order
    _package_merge(cs[order].copy(), syms[order].copy(), np.int64(_MAX_LEN), lengths)


@numba.njit(nogil=True, cache=True)
def _payload(bits, w, itemsize, top, counts_all, cand, lane_symbols, rev_order):
    """The payload (as 64-bit words) of the best of the candidate ``m``s ``cand`` (in rank order): each costed
    exactly as ``choose_m`` does (first smallest size wins), then written as ``fexp.encode`` writes it."""
    n = bits.size
    best_size, best_m = 0.0, -1
    best_len = np.zeros(4096, np.uint8)
    for ci in range(cand.size):
        m = cand[ci]
        o = 256 * ((1 << m) - 1)
        counts = counts_all[o:o + (256 << m)]
        lengths = np.zeros(256 << m, np.uint8)
        _lengths_of(counts, lengths)
        cb = 0
        for i in range(counts.size):
            cb += counts[i] * np.int64(lengths[i])
        rb = 8 * itemsize - 8 - m
        size = np.float64(cb) / 8 + (128 << m) + 8 * ((rb * n + 63) // 64)
        if best_m < 0 or size < best_size:
            best_size, best_m = size, m
            best_len[:lengths.size] = lengths
    m = best_m
    nsym = 256 << m
    lengths = best_len[:nsym].astype(np.int64)
    b = 8 * itemsize - 8 - m
    rest_off = 8 + (128 << m)
    t = rest_off + 8 * ((b * n + 63) // 64)
    g = (n + LANES * lane_symbols - 1) // (LANES * lane_symbols)
    w0 = t + 64 * g
    sym = np.empty(n, np.uint16)
    sh = np.uint16(4 - m)
    for i in range(n):
        sym[i] = top[i] >> sh
    lens = np.zeros((g, LANES), np.int64)
    for gi in range(g):
        _lane_lengths_group(gi, sym, lane_symbols, lengths, lens)
    word_start = np.zeros(g + 1, np.int64)
    for gi in range(g):
        tot = 0
        for j in range(LANES):
            tot += lens[gi, j]
        word_start[gi + 1] = word_start[gi] + (tot + 63) // 64
    words = np.zeros(w0 // 8 + word_start[g] + 1, np.uint64)
    buf = words.view(np.uint8)
    buf[0] = m
    for i in range(nsym // 2):
        buf[8 + i] = np.uint8(lengths[2 * i] | (lengths[2 * i + 1] << 4))
    rest = words[rest_off // 8:t // 8]
    for c in range((n + 63) // 64):
        _pack_chunk(c, bits, w, b, rest)
    for gi in range(g):
        for j in range(LANES):
            v = lens[gi, j]
            buf[t + 2 * (gi * LANES + j)] = np.uint8(v & 255)
            buf[t + 2 * (gi * LANES + j) + 1] = np.uint8((v >> 8) & 255)
    # canonical code (fexp_table.canonical): symbols by (length, symbol), values an exclusive prefix sum of
    # 2^(12 - length) shifted down; stored bit-reversed (stream order)
    first = np.zeros(_MAX_LEN + 2, np.int64)  # first 12-bit prefix of each length (a counting sort)
    for s in range(nsym):
        if lengths[s]:
            first[lengths[s] + 1] += np.int64(1) << (_MAX_LEN - lengths[s])
    for ln in range(1, _MAX_LEN + 2):
        first[ln] += first[ln - 1]
    rev = np.zeros(nsym, np.uint64)
    for s in range(nsym):
        ln = lengths[s]
        if ln:
            rev[s] = np.uint64(rev_order[first[ln] >> (_MAX_LEN - ln)] >> (_MAX_LEN - ln))
            first[ln] += np.int64(1) << (_MAX_LEN - ln)
    out = words[w0 // 8:]
    for gi in range(g):
        _write_group(gi, sym, lane_symbols, lengths, rev, word_start, out)
    return words


def encode(arr: np.ndarray) -> tuple:
    """``fexp.encode(arr)`` (default ``m`` and lane length) of an array of 1 .. ``SMALL_BELOW - 1`` elements:
    (params, payload as uint8)."""
    itemsize = arr.dtype.itemsize
    bits = np.ascontiguousarray(arr).reshape(-1).view(UINTS[itemsize])
    n = bits.size
    s = default_lane_symbols(n)
    top = np.empty(n, np.uint16)
    counts_all, live, ends = _counts(bits, np.int64(8 * itemsize), top)
    # choose_m's ranking: numpy's log2 of the live counts, summed per m in numpy's pairwise order
    ent = -_segment_sums(live * np.log2(live / max(n, 1)), ends)
    est = []
    for m in range(_N_M):
        h = float(ent[m]) / 8 if n else 0.0
        est.append((h + (128 << m) + 8 * -(-rest_bits(itemsize, m) * n // 64), m))
    est.sort()
    cand = np.array([m for _, m in est[:3]], np.int64)
    words = _payload(bits, np.int64(8 * itemsize), np.int64(itemsize), top, counts_all, cand, np.int64(s),
                     _lut_order())
    return {"lane_symbols": s}, words.view(np.uint8)

