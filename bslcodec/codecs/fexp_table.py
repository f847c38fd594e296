"""The ``fexp`` payload's compiled table work (spec 4.5), shared by ``fexp_enc`` and ``fexp_dec``: the Kraft check
and decoding-table fill that ``fexp_header`` uses once loaded, and ``parse``: the checked header and lane table.
The numba-free half (layout, canonical codes, ``build_lut``, ``parse_header``) is ``fexp_header``."""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np

from ..container.errors import FormatError
from ..container.limits import LANES
from . import fexp_header
from .fexp_header import (  # noqa: F401 - fexp_table.<name> as before
    ITEMSIZES,
    LUT_SIZE,
    UINTS,
    _bitrev,
    _lut,
    _lut_np,
    _lut_order,
    build_lut,
    build_lut_ref,
    canonical,
    check_lengths,
    default_lane_symbols,
    layout,
    min_payload,
    parse_header,
    rest_bits,
)
from .fexp_ref import MAX_CODE_LEN


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


fexp_header.KERNELS.update(kraft=_kraft, fill_lut=_fill_lut)
