"""The ``ans`` table bytes (spec 4.4): the writer, the compiled parser, and the decoder tables built from them
(CPU slot tables, the GPU's). The numba-free half (header parse, GPU slot table) is ``rans_header``, which
uses this module's compiled forms once they are loaded."""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np

from . import rans_header
from .rans_header import (  # noqa: F401 - rans_table.<name> as before
    _MODEL_HEADER,
    _TABLE_ERRORS,
    _gpu_table_np,
    _parse_table_np,
    gpu_table,
    parse_header,
    slot_table,
)
from .rans_model import Model
from .rans_ref import MAX_TABLE_ZEROS

# ---------------------------------------------------------------- table bytes (writer and parser)

def header_bytes(model: Model) -> bytes:
    """The model header and table bit string (spec 4.4) of ``model`` (``_header_bytes_ref``, written by a
    compiled loop: the Python bit list took ~20 us of a 4,096-symbol tensor's encode)."""
    f, K, kq = np.ascontiguousarray(model.freqs, np.int64), model.freqs.size, model.kq
    tb = np.zeros(-(-model.table_bits // 8), np.uint8)
    n_bits = _write_table(f, np.int64(kq), tb)
    assert n_bits == model.table_bits
    head = bytes([0, model.prob_bits, model.s, model.m]) + int(K).to_bytes(2, "little") + bytes([kq, 0])
    head += len(tb).to_bytes(4, "little") + tb.tobytes()
    return head + bytes(-len(head) % 4)


@numba.njit(inline="always")
def _put_eg(tb, pos, v, k):
    """EG-k code word of ``v`` at bit ``pos`` of ``tb`` (LSB first): n - k zeros, a one, the n low bits of
    v + 2^k; returns the next bit position (or past ``tb``'s end, writing nothing there)."""
    w = v + (np.int64(1) << k)
    n = np.int64(0)
    while (w >> (n + 1)) > 0:
        n += 1
    pos += n - k
    if pos < 8 * tb.size:
        tb[pos >> 3] |= np.uint8(1 << (pos & 7))
    pos += 1
    for i in range(n):
        if (w >> i) & 1 and pos < 8 * tb.size:
            tb[pos >> 3] |= np.uint8(1 << (pos & 7))
        pos += 1
    return pos


@numba.njit(nogil=True, cache=True)
def _write_table(f, kq, tb):
    """The table bit string of frequencies ``f`` into zeroed ``tb``; returns its length in bits."""
    K = f.size
    pos = np.int64(0)
    i = 0
    while i < K:
        if f[i] > 0:
            pos = _put_eg(tb, pos, f[i], kq)
            i += 1
        else:
            j = i
            while j < K and f[j] == 0:
                j += 1
            pos = _put_eg(tb, pos, np.int64(0), kq)
            pos = _put_eg(tb, pos, np.int64(j - i - 1), np.int64(0))
            i = j
    return pos


def _header_bytes_ref(model: Model) -> bytes:
    """``header_bytes`` with a Python bit list (the reference)."""
    bits = []  # LSB-first bit list is fine: a table is at most a few thousand code words
    f, K, kq = model.freqs, model.freqs.size, model.kq

    def eg(v, k):
        w = int(v) + (1 << k)
        n = w.bit_length() - 1
        bits.extend([0] * (n - k))
        bits.append(1)
        bits.extend((w >> i) & 1 for i in range(n))

    i = 0
    while i < K:
        if f[i] > 0:
            eg(f[i], kq)
            i += 1
        else:
            j = i
            while j < K and f[j] == 0:
                j += 1
            eg(0, kq)
            eg(j - i - 1, 0)
            i = j
    assert len(bits) == model.table_bits
    arr = np.zeros(-(-len(bits) // 8) * 8, np.uint8)
    arr[:len(bits)] = bits
    tb = np.packbits(arr, bitorder="little").tobytes()
    head = bytes([0, model.prob_bits, model.s, model.m]) + int(K).to_bytes(2, "little") + bytes([kq, 0])
    head += len(tb).to_bytes(4, "little") + tb
    return head + bytes(-len(head) % 4)


@numba.njit(nogil=True, cache=True)
def _parse_table(tb, K, kq, M, freqs):
    """Fill ``freqs`` from the table bit string; returns (bits read, error code)."""
    nbits = tb.size * 8
    pos = 0
    i = 0
    while i < K:
        for which in range(2):
            k = kq if which == 0 else 0
            z = 0
            while True:
                if pos >= nbits:
                    return pos, 1
                bit = (tb[pos >> 3] >> (pos & 7)) & 1
                pos += 1
                if bit:
                    break
                z += 1
                if z > MAX_TABLE_ZEROS:
                    return pos, 2
            n = z + k
            if pos + n > nbits:
                return pos, 1
            r = 0
            for b in range(n):
                r |= np.int64((tb[(pos + b) >> 3] >> ((pos + b) & 7)) & 1) << b
            pos += n
            v = (np.int64(1) << n) + r - (np.int64(1) << k)
            if which == 0:
                if v > 0:
                    if v > M:
                        return pos, 3
                    freqs[i] = v
                    i += 1
                    break
            else:
                if i + v + 1 > K:
                    return pos, 4
                i += v + 1
    return pos, 0


@numba.njit(inline="always")
def _nb_base(tok, s, m):
    """(raw bit count, smallest symbol) of token ``tok`` under split (s, m) (spec 4.4)."""
    if tok < (np.int64(1) << s):
        return np.int64(0), tok
    i = tok - (np.int64(1) << s)
    nb = s + (i >> m) - m
    return nb, ((np.int64(1) << m) + (i & ((np.int64(1) << m) - 1))) << nb


@numba.njit(nogil=True, cache=True)
def _fill_tables(P, s, m, freqs, tos, tinfo):
    """The decoder's tables straight from the frequency table (what ``decode_tables(slot_table(...))``
    gives, without the 2^P-entry packed table in between): ``tos[slot]`` the live token of each slot,
    ``tinfo[live token]`` = f | c << 16 | nb << 32 | base << 37. Returns (live tokens, any nb > 16, largest
    symbol any live token can give). ``freqs`` sums to 2^P (``parse_header`` checked it)."""
    c = np.int64(0)
    live = 0
    hi = False
    u_max = np.int64(0)
    for tok in range(freqs.size):
        f = freqs[tok]
        if f <= 0:
            continue
        nb, base = _nb_base(np.int64(tok), s, m)
        tinfo[live] = np.uint64(f | (c << 16) | (nb << 32) | (base << 37))
        for j in range(c, c + f):
            tos[j] = live
        hi |= nb > 16
        u_max = max(u_max, base + (np.int64(1) << nb) - 1)
        c += f
        live += 1
    return live, hi, u_max


def tables(P: int, s: int, m: int, freqs: np.ndarray) -> tuple:
    """(tos, tinfo, has_hi, d_max) for the decoder (see ``decode_tables``), from the parsed header: one
    compiled call, a few microseconds (a small tensor's load is mostly such fixed costs)."""
    live = int(np.count_nonzero(freqs))
    tos = np.empty(1 << P, np.uint8 if live <= 256 else np.uint16)
    tinfo = np.empty(live, np.uint64)
    _, hi, u_max = _fill_tables(P, s, m, freqs, tos, tinfo)
    return tos, tinfo, bool(hi), (int(u_max) + 1) >> 1 if live else 0


@numba.njit(nogil=True, cache=True)
def _fill_gpu_table(P, s, m, freqs, out):
    """``out[slot]`` = (f | (slot - c) << 15) | (nb | base << 5) << 32: the GPU kernel's packing of
    ``slot_table`` (bslcodec/gpu/_ans.py), built in one pass."""
    c = np.int64(0)
    for tok in range(freqs.size):
        f = freqs[tok]
        if f <= 0:
            continue
        nb, base = _nb_base(np.int64(tok), s, m)
        hi = (nb | (base << 5)) << 32
        for j in range(f):
            out[c + j] = f | (j << 15) | hi
        c += f


rans_header.KERNELS.update(parse_table=_parse_table, fill_gpu_table=_fill_gpu_table)
