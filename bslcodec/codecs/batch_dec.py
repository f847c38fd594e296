"""Many small tensors of one codec decoded in one compiled call (a file's norms, biases and small matrices;
issue 19): per tensor, the payload checks of the one-by-one parsers (``rans_dec.parse`` with
``rans_table.parse_header``, ``fexp_table.parse``, ``golomb.parse_tables``), the tables they build and the
groups of the codec's ``_decode_group``, all inside the kernel, so that a tensor costs no Python or dispatch
of its own. Bit-exact with each codec's ``decode_into``.

A tensor the kernel refuses is only flagged (``ok[t]`` False): the caller decodes it again one by one,
which raises the same FormatError, with the same words, that a one-by-one load raises.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np

from ..container.limits import LANES, MAX_EG_ORDER, MAX_SYMBOL_MAGNITUDE
from . import fexp_dec, fexp_vec, golomb, rans_gen, rans_vec
from .fexp_ref import HEAD_BYTES, MAX_CODE_LEN, MAX_M
from .fexp_table import _fill_lut, _kraft, _lut_order
from .fexp_table import _lane_table as _fexp_lanes
from .golomb import _step32
from .rans_dec import (
    _NS,
    MODES,
    TABLE_ELEMS_PER_ENTRY,
    _decode_group,
    _fill_token_table,
)
from .rans_ref import MAX_MSB, MAX_PROB_BITS, MAX_SPLIT
from .rans_table import _fill_tables, _parse_table


@numba.njit(inline="always")
def _u32(buf, i):
    return (np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8) | (np.int64(buf[i + 2]) << 16)
            | (np.int64(buf[i + 3]) << 24))


@numba.njit(inline="always")
def _ans_head(buf, n, S):
    """``rans_dec.parse``'s checks of one payload: (P, s, m, freqs, W, wstart, words); P = 0 where it would
    raise."""
    size = buf.size
    nothing = (np.int64(0), np.int64(0), np.int64(0), np.zeros(0, np.int64), np.zeros(0, np.int64),
               np.zeros(0, np.int64), buf[:0].view(np.uint16))
    if size < 12:
        return nothing
    model, P, s, m = np.int64(buf[0]), np.int64(buf[1]), np.int64(buf[2]), np.int64(buf[3])
    K = np.int64(buf[4]) | (np.int64(buf[5]) << 8)
    kq, reserved = np.int64(buf[6]), np.int64(buf[7])
    B = _u32(buf, 8)
    if model != 0:
        return nothing
    if not (1 <= P <= MAX_PROB_BITS) or s > MAX_SPLIT or m > min(s, MAX_MSB) or kq > 15 or reserved:
        return nothing
    if not (1 <= K <= (np.int64(1) << s) + (25 - s) * (np.int64(1) << m)):
        return nothing
    if 12 + B > size:
        return nothing
    freqs = np.zeros(K, np.int64)
    pos, err = _parse_table(buf[12:12 + B], K, kq, np.int64(1) << P, freqs)
    if err or B != (pos + 7) // 8 or freqs.sum() != np.int64(1) << P:
        return nothing
    H = 12 + B
    H += -H % 4
    gsize = LANES * S
    G = (n + gsize - 1) // gsize
    need = H
    if G:
        need += 4 * G + 4 * (LANES * (G - 1) + min(LANES, n - (G - 1) * gsize))
    if size < need:
        return nothing
    W = np.empty(G, np.int64)
    wstart = np.zeros(G + 1, np.int64)
    for g in range(G):
        W[g] = _u32(buf, H + 4 * g)
        wstart[g + 1] = wstart[g] + W[g] + (W[g] % 2)
    if size != H + 4 * G + 2 * wstart[G]:
        return nothing
    return P, s, m, freqs, W, wstart, buf[H + 4 * G:].view(np.uint16)


@numba.njit(inline="always")
def _ans_scalar(P, s, m, freqs, W, wstart, words, n, S, center, step32, step64, mode, dq, out):
    """The tables and the groups of ``rans_dec.decode_into`` (its scalar kernel); False where it would raise."""
    live = 0
    for f in freqs:
        live += f > 0
    tos = np.empty(np.int64(1) << P, np.uint16)
    tinfo = np.empty(live, np.uint64)
    live, hi, u_max = _fill_tables(P, s, m, freqs, tos, tinfo)
    d_max = (u_max + 1) >> 1 if live else 0
    check = abs(center) + (2 * d_max if dq else d_max) >= MAX_SYMBOL_MAGNITUDE
    # the usual step's token table where ``rans_dec.decode_into`` takes it (same output either way)
    table = mode <= 1 and not check and n >= TABLE_ELEMS_PER_ENTRY * _NS * live
    ttab = np.empty(live * _NS if table else 0, np.uint64)
    if table:
        _fill_token_table(tinfo, center, mode, step32, step64, dq, ttab)
    status = np.zeros(W.size, np.uint8)
    for gi in range(W.size):
        _decode_group(gi, words, W, wstart, tos, tinfo, ttab, P, 0, n, S, center, out, 0, mode, step32, step64,
                      status, hi, check, dq)
        if status[gi]:
            return False
    return True


@numba.njit(nogil=True, cache=True)
def _ans_one(buf, n, S, center, step32, step64, mode, dq, out):
    """One tensor's payload ``buf`` into ``out`` (n elements); True where it decodes, False where
    ``rans_dec.parse`` / ``decode_into`` would raise."""
    P, s, m, freqs, W, wstart, words = _ans_head(buf, n, S)
    if P == 0:
        return False
    return _ans_scalar(P, s, m, freqs, W, wstart, words, n, S, center, step32, step64, mode, dq, out)


@numba.njit(nogil=True, cache=True)
def _ans_one_vec(buf, n, S, center, step32, step64, mode, dq, out):
    """``_ans_one`` with the vector general step (``rans_gen``) where the table allows it (F32 / BF16 output,
    no raw bits above 16, levels below 2^24), the same values and the same refusals: a kernel of its own, so
    that the scalar one never depends on the vector code compiling."""
    P, s, m, freqs, W, wstart, words = _ans_head(buf, n, S)
    if P == 0:
        return False
    sf = np.empty(np.int64(1) << P, np.uint32)
    sb = np.empty(np.int64(1) << P, np.uint32)
    _, hi, u_max = rans_gen.slot_tables(s, m, freqs, sf, sb)
    if not rans_gen.usable(hi, u_max, center, dq):
        return _ans_scalar(P, s, m, freqs, W, wstart, words, n, S, center, step32, step64, mode, dq, out)
    status = np.zeros(W.size, np.uint8)
    for gi in range(W.size):
        rans_gen.decode_group(gi, 0, words, W, wstart, sf, sb, P, n, S, center, out, 0, mode, step32, step64, status,
                              dq)
        if status[gi]:
            return False
    return True


@numba.njit(nogil=True, cache=True)
def _eg_one(buf, n, S, center, step32, step64, mode, out):
    """``_ans_one`` for an ``eg`` payload (``golomb.parse_tables``, ``golomb.decode_into``)."""
    size = buf.size
    G = (n + LANES * S - 1) // (LANES * S)
    head = 2 * LANES * G + G
    head += -head % 8
    if size < head + 8:
        return False
    lens = buf[:2 * LANES * G].view(np.uint16).reshape((G, LANES))
    ks = buf[2 * LANES * G:2 * LANES * G + G]
    for g in range(G):
        if ks[g] > MAX_EG_ORDER:
            return False
    word_start = np.empty(G + 1, np.int64)
    if golomb._lane_table(lens, ks, n, S, word_start) >= 0 or size != head + 8 * (word_start[G] + 1):
        return False
    words = buf[head:].view(np.uint64)
    status = np.zeros(G, np.uint8)
    for gi in range(G):
        golomb._decode_group(gi, words, lens, ks, word_start, 0, n, S, center, out, 0, mode, step32, step64,
                             status)
        if status[gi]:
            return False
    return True


@numba.njit(inline="always")
def _fexp_head(buf, n, isz, S):
    """``fexp_table.parse``'s checks of one payload: (code lengths, rest offset, T, word offset, G, word
    starts); G = -1 where it would raise."""
    size = buf.size
    nothing = (np.zeros(0, np.uint8), np.int64(0), np.int64(0), np.int64(0), np.int64(-1), np.zeros(1, np.int64))
    if size < HEAD_BYTES:
        return nothing
    m = np.int64(buf[0])
    if m > MAX_M:
        return nothing
    for i in range(1, HEAD_BYTES):
        if buf[i]:
            return nothing
    rb = 8 * isz - 8 - m
    rest_off = HEAD_BYTES + (np.int64(128) << m)
    t = rest_off + 8 * ((rb * n + 63) // 64)
    G = (n + LANES * S - 1) // (LANES * S)
    w0 = t + 64 * G
    if size < w0 + 8 or size < rest_off:
        return nothing
    lengths = np.empty(np.int64(256) << m, np.uint8)
    for i in range(np.int64(128) << m):
        v = buf[HEAD_BYTES + i]
        lengths[2 * i] = v & 15
        lengths[2 * i + 1] = v >> 4
    top, total = _kraft(lengths)
    if top > MAX_CODE_LEN or total > np.int64(1) << MAX_CODE_LEN:
        return nothing
    lens = buf[t:t + 64 * G].view(np.uint16).reshape((G, LANES))
    word_start = np.empty(G + 1, np.int64)
    if _fexp_lanes(lens, n, S, word_start) >= 0 or size != w0 + 8 * (word_start[G] + 1):
        return nothing
    return lengths, rest_off, t, w0, G, word_start


@numba.njit(inline="always")
def _fexp_words(buf, w0, G, word_start, S):
    """The stream's words, copied with zero padding where the fast path's read-ahead needs it
    (``fexp_dec.decode_into``)."""
    words = buf[w0:].view(np.uint64)
    need = word_start[G] + (MAX_CODE_LEN * S + 63) // 64 + 2
    if words.size < need:
        padded = np.zeros(need, np.uint64)
        padded[:words.size] = words
        words = padded
    return words


@numba.njit(nogil=True, cache=True)
def _fexp_one(buf, n, isz, S, out, order):
    """``_ans_one`` for an ``fexp`` payload (``fexp_table.parse``, ``fexp_dec.decode_into``); ``order``:
    ``fexp_table._lut_order()``."""
    lengths, rest_off, t, w0, G, word_start = _fexp_head(buf, n, isz, S)
    if G < 0:
        return False
    lut = np.empty(np.int64(1) << MAX_CODE_LEN, np.uint16)
    _fill_lut(lengths, order, lut)
    words = _fexp_words(buf, w0, G, word_start, S)
    rest = buf[rest_off:t + 8].view(np.uint64)
    lens = buf[t:t + 64 * G].view(np.uint16).reshape((G, LANES))
    rb = 8 * isz - 8 - np.int64(buf[0])
    status = np.zeros(G, np.uint8)
    for gi in range(G):
        fexp_dec._decode_group(gi, 0, words, lens, word_start, lut, rest, rb, 8 * isz, n, S, out, 0, status)
        if status[gi]:
            return False
    return True


@numba.njit(nogil=True, cache=True)
def _fexp_one_vec(buf, n, isz, S, out, order):
    """``_fexp_one`` with the full steps of its fast path as vector code (``fexp_vec``; 2- and 4-byte
    floats): the same values and refusals, a kernel of its own (as ``_ans_one_vec``)."""
    lengths, rest_off, t, w0, G, word_start = _fexp_head(buf, n, isz, S)
    if G < 0:
        return False
    lut = np.empty(fexp_vec.LUT_ENTRIES, np.uint16)  # 2 entries of padding for the 32-bit reads
    lut[-2:] = 0
    _fill_lut(lengths, order, lut[:np.int64(1) << MAX_CODE_LEN])
    words = _fexp_words(buf, w0, G, word_start, S)
    rest = buf[rest_off:t + 8].view(np.uint64)
    lens = buf[t:t + 64 * G].view(np.uint16).reshape((G, LANES))
    rb = 8 * isz - 8 - np.int64(buf[0])
    status = np.zeros(G, np.uint8)
    vec = fexp_vec.usable(words, isz)
    for gi in range(G):
        if not (vec and fexp_vec.decode_group(gi, words, lens, word_start, lut, rest, rb, 8 * isz, n, S, out,
                                              status)):
            fexp_dec._decode_group(gi, 0, words, lens, word_start, lut, rest, rb, 8 * isz, n, S, out, 0, status)
        if status[gi]:
            return False
    return True


@numba.njit(nogil=True, cache=True)
def _ans_many(data, offs, lens, ns, S, centers, step32, step64, mode, dq, out, out_offs, ok):
    for t in range(offs.size):
        ok[t] = _ans_one(data[offs[t]:offs[t] + lens[t]], ns[t], S[t], centers[t], step32[t], step64[t], mode,
                         dq[t], out[out_offs[t]:out_offs[t + 1]])


@numba.njit(nogil=True, cache=True)
def _ans_many_vec(data, offs, lens, ns, S, centers, step32, step64, mode, dq, out, out_offs, ok):
    for t in range(offs.size):
        ok[t] = _ans_one_vec(data[offs[t]:offs[t] + lens[t]], ns[t], S[t], centers[t], step32[t], step64[t], mode,
                             dq[t], out[out_offs[t]:out_offs[t + 1]])


@numba.njit(nogil=True, cache=True)
def _eg_many(data, offs, lens, ns, S, centers, step32, step64, mode, out, out_offs, ok):
    for t in range(offs.size):
        ok[t] = _eg_one(data[offs[t]:offs[t] + lens[t]], ns[t], S[t], centers[t], step32[t], step64[t], mode,
                        out[out_offs[t]:out_offs[t + 1]])


@numba.njit(nogil=True, cache=True)
def _fexp_many(data, offs, lens, ns, S, isz, order, out, out_offs, ok):
    for t in range(offs.size):
        ok[t] = _fexp_one(data[offs[t]:offs[t] + lens[t]], ns[t], isz, S[t], out[out_offs[t]:out_offs[t + 1]],
                          order)


@numba.njit(nogil=True, cache=True)
def _fexp_many_vec(data, offs, lens, ns, S, isz, order, out, out_offs, ok):
    for t in range(offs.size):
        ok[t] = _fexp_one_vec(data[offs[t]:offs[t] + lens[t]], ns[t], isz, S[t],
                              out[out_offs[t]:out_offs[t + 1]], order)


_OUT = {"F32": np.float32, "BF16": np.uint16, "F64": np.float64, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def decode_many(data: np.ndarray, kind: str, mode, items: list) -> tuple:
    """(out, offsets, ok) for ``items`` = [(payload offset in ``data``, bytes, elements, S, center, step)]
    of one codec family ``kind`` ("ans" with "ans-dq", "eg", "fexp"; an ``ans-dq`` item has a 7th member,
    True) and output ``mode`` ("F32", "BF16" or "F64" as ``decode_into``; for fexp the itemsize 2, 4 or
    8, centers and steps ignored): tensor t's elements are ``out[offsets[t]:offsets[t + 1]]``; ``ok[t]``
    False where its payload is refused (its part of ``out`` is then undefined). ``data``: uint8, every
    payload 8-byte aligned in it (the format aligns them to 64)."""
    T = len(items)
    col = lambda i, dt, f=None: np.fromiter((f(it[i]) if f else it[i] for it in items), dt, T)
    offs, lens, ns, S = (col(i, np.int64) for i in range(4))
    fexp = kind == "fexp"
    centers = np.zeros(T, np.int64) if fexp else col(4, np.int64)
    step64 = np.zeros(T, np.float64) if fexp else col(5, np.float64)
    step32 = np.zeros(T, np.float32) if fexp else col(5, np.float32, _step32)
    dq = np.fromiter((len(it) > 6 and it[6] for it in items), np.bool_, T)
    out_offs = np.zeros(T + 1, np.int64)
    np.cumsum(ns, out=out_offs[1:])
    out = np.empty(int(out_offs[-1]), _OUT[mode])
    ok = np.zeros(T, np.bool_)
    if not T:
        pass
    elif fexp:
        args = (data, offs, lens, ns, S, np.int64(mode), _lut_order(), out, out_offs, ok)
        if rans_vec.SIMD and mode in (2, 4):
            try:
                _fexp_many_vec(*args)
                return out, out_offs, ok
            except (numba.core.errors.NumbaError, RuntimeError) as exc:  # the vector code did not compile here
                rans_vec.disable(exc)
        _fexp_many(*args)
    elif kind == "eg":
        _eg_many(data, offs, lens, ns, S, centers, step32, step64, MODES[mode], out, out_offs, ok)
    else:
        args = (data, offs, lens, ns, S, centers, step32, step64, MODES[mode], dq, out, out_offs, ok)
        if rans_vec.SIMD and mode in ("F32", "BF16"):
            try:
                _ans_many_vec(*args)
                return out, out_offs, ok
            except (numba.core.errors.NumbaError, RuntimeError) as exc:  # the vector code did not compile here
                rans_vec.disable(exc)
        _ans_many(*args)
    return out, out_offs, ok
