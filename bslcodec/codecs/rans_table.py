"""The ``ans`` table bytes (spec 4.4): the writer, the parser, and the decoder tables built from them
(CPU slot tables, the GPU's)."""


import struct

import numba
import numpy as np

from ..container.errors import FormatError
from ..jitcache import loaded
from .rans_model import (
    Model,
    _align4,
)

# inlined into the cached decoder; bslcodec/jitcache.py keys numba's cache on dq.py too
from .rans_ref import MAX_MSB, MAX_PROB_BITS, MAX_SPLIT, MAX_TABLE_ZEROS, k_max

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


def _parse_table_np(tb: bytes, K: int, kq: int, M: int, freqs: np.ndarray) -> tuple:
    """``_parse_table`` in Python (the table as one integer, a code word a few operations): the same results and
    error codes; what a process uses before numba has loaded the kernel (``jitcache.loaded``)."""
    T, nbits, pos, i, run = int.from_bytes(tb, "little"), 8 * len(tb), 0, 0, False
    while i < K:
        k = 0 if run else kq
        x = T >> pos
        z = (x & -x).bit_length() - 1 if x else nbits - pos  # leading zeros before the code word's 1 bit
        if z > MAX_TABLE_ZEROS:
            return pos + MAX_TABLE_ZEROS + 1, 2
        if not x:
            return nbits, 1
        pos += z + 1
        n = z + k
        if pos + n > nbits:
            return pos, 1
        v = (1 << n) + ((T >> pos) & ((1 << n) - 1)) - (1 << k)
        pos += n
        if run:
            if i + v + 1 > K:
                return pos, 4
            i += v + 1
            run = False
        elif v > 0:
            if v > M:
                return pos, 3
            freqs[i] = v
            i += 1
        else:
            run = True
    return pos, 0


_TABLE_ERRORS = {1: "a code word reads past the table bit string",
                 2: f"a code word has more than {MAX_TABLE_ZEROS} leading zeros",
                 3: "a frequency is over M", 4: "a run of zero frequencies passes the table's end"}


_MODEL_HEADER = struct.Struct("<4BH2BI")  # model, P, s, m, K, kq, reserved, B (spec 4.4)


def parse_header(buf: np.ndarray) -> tuple:
    """(P, s, m, freqs, H) from payload bytes; FormatError on anything spec 4.4 rejects."""
    if buf.size < 12:
        raise FormatError(f"ans payload of {buf.size} bytes is shorter than its 12-byte model header")
    model, P, s, m, K, kq, reserved, B = _MODEL_HEADER.unpack_from(buf)
    if model != 0:
        raise FormatError(f"ans model {model} is unknown (only 0, a frequency table)")
    if not 1 <= P <= MAX_PROB_BITS or s > MAX_SPLIT or m > min(s, MAX_MSB) or kq > 15 or reserved:
        raise FormatError(f"ans model header out of range (P={P}, s={s}, m={m}, kq={kq}, reserved={reserved})")
    if not 1 <= K <= k_max(s, m):
        raise FormatError(f"ans table has {K} entries, allowed 1..{k_max(s, m)}")
    if 12 + B > buf.size:
        raise FormatError(f"ans table bit string of {B} bytes runs past the payload ({buf.size} bytes)")
    freqs = np.zeros(K, np.int64)
    if loaded(_parse_table):
        pos, err = _parse_table(buf[12:12 + B], K, kq, 1 << P, freqs)
    else:
        pos, err = _parse_table_np(bytes(buf[12:12 + B]), K, kq, 1 << P, freqs)
    if err:
        raise FormatError(f"ans table: {_TABLE_ERRORS[err]}")
    if B != (pos + 7) // 8:
        raise FormatError(f"ans table bit string is {B} bytes, its code words use {(pos + 7) // 8}")
    if int(freqs.sum()) != 1 << P:
        raise FormatError(f"ans table frequencies sum to {int(freqs.sum())}, not M = {1 << P}")
    return P, s, m, freqs, _align4(12 + B)


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


def gpu_table(P: int, s: int, m: int, freqs: np.ndarray) -> np.ndarray:
    """The default GPU kernel's slot table (int64, 2^P entries), see ``_fill_gpu_table``."""
    freqs = np.asarray(freqs, np.int64)
    if not loaded(_fill_gpu_table):
        return _gpu_table_np(P, s, m, freqs)
    out = np.empty(1 << P, np.int64)
    _fill_gpu_table(P, s, m, freqs, out)
    return out


def _gpu_table_np(P: int, s: int, m: int, freqs: np.ndarray) -> np.ndarray:
    """``gpu_table`` in numpy (``jitcache.loaded``): per live token its packed high word and f, repeated f times."""
    live = np.flatnonzero(freqs > 0)
    f = freqs[live]
    i = live - (1 << s)
    small = live < (1 << s)
    nb = np.where(small, 0, s + (i >> m) - m)
    base = np.where(small, live, ((1 << m) + (i & ((1 << m) - 1))) << np.maximum(nb, 0))
    start = np.cumsum(f) - f
    # f | (slot - c) << 15 | hi with + for |: f <= 2^MAX_PROB_BITS < 2^15 and slot - c < 2^15 share no bits
    out = np.repeat(f + ((nb | (base << 5)) << 32) - (start << 15), f)
    out += np.arange(0, 1 << (P + 15), 1 << 15, dtype=np.int64)
    return out


def slot_table(P: int, s: int, m: int, freqs: np.ndarray) -> np.ndarray:
    """Per slot, packed: f (15 bits) | slot - c (14 bits) << 15 | raw bits (5) << 29 | symbol base << 34."""
    K = freqs.size
    tok = np.arange(K, dtype=np.int64)
    i = tok - (1 << s)
    nb = np.where(tok < (1 << s), 0, s + (i >> m) - m)
    base = np.where(tok < (1 << s), tok, ((1 << m) + (i & ((1 << m) - 1))) << np.maximum(nb, 0))
    cum = np.concatenate(([0], np.cumsum(freqs)))
    slot_tok = np.repeat(tok, freqs)
    slots = np.arange(1 << P, dtype=np.int64)
    return (freqs[slot_tok] | ((slots - cum[slot_tok]) << 15) | (nb[slot_tok] << 29)
            | (base[slot_tok] << 34)).astype(np.int64)
