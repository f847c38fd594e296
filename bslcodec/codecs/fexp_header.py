"""The ``fexp`` payload's layout and code tables (spec 4.5) in numpy only: sizes and offsets, canonical Huffman
codes and their Kraft check, the 4096-entry decoding table (``build_lut``, shared with the GPU decoder, beside its
numpy reference ``build_lut_ref``) and ``parse_header``: what a decoder on any device needs before its kernels
run, importable without numba (a GPU-only process never imports it).

``fexp_table`` registers its compiled Kraft check and table fill in :data:`KERNELS`; they are used once numba
has them loaded (``jitcache.loaded``), the numpy twins until then (tested equal, ``tests/test_cold_twins.py``).
:mod:`bslcodec.codecs.fexp` is the face importers use."""

import functools

import numpy as np

from ..container.errors import FormatError
from ..container.limits import LANES
from ..jitcache import ready
from . import fexp_ref
from .fexp_ref import (
    HEAD_BYTES,
    MAX_CODE_LEN,
    MAX_LANE_SYMBOLS,
    MAX_M,
    MIN_LANE_SYMBOLS,
)

#: Compiled forms of this module's twins, set by ``fexp_table`` at its import: "kraft", "fill_lut"
KERNELS: dict = {}

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


def check_lengths(lengths: np.ndarray) -> None:
    fast = ready(KERNELS, "kraft")
    if fast is not None:
        top, total = fast(np.ascontiguousarray(lengths))
    else:  # numpy twin (jitcache.ready)
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
    fast = ready(KERNELS, "fill_lut")
    if fast is None:
        return _lut_np(lengths)
    lut = np.empty(LUT_SIZE, np.uint16)
    fast(np.ascontiguousarray(lengths), _lut_order(), lut)
    return lut


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
