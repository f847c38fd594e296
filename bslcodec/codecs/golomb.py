"""Numba exp-Golomb coding of the ``eg`` payload (spec 4.3), bit-exact with ``golomb_ref``.

Symbols are unsigned (< 2^25). The payload holds groups of 32 lanes × S symbols; groups start on
64-bit words, so groups are encoded and decoded in parallel (``prange``) with no shared words.
Per-element work never runs in Python.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np
from llvmlite import ir
from numba import prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from ..container.errors import FormatError
from ..container.limits import LANES, MAX_CODE_BITS, MAX_SYMBOL_MAGNITUDE
from ..parallel import launch, serial_twin
from ..quantize.quant import store_dequant
from . import golomb_header
from .golomb_header import (  # noqa: F401 - golomb.<name> as before
    _lane_table_np,
    n_groups,
    parse_tables,
    table_bytes,
    word_offsets,
)

_MAX_Z = (MAX_CODE_BITS - 1) // 2  # 25: zero-run limit for k = 0
_QLIM = MAX_SYMBOL_MAGNITUDE

# Status codes written by the kernels, one per group (0 = fine).
_BAD_CODE, _LANE_END, _OVERRUN, _BAD_SYMBOL = 1, 2, 3, 4
_STATUS_TEXT = {
    _BAD_CODE: "a code word has too many leading zeros",
    _LANE_END: "code words do not end at the lane's declared length",
    _OVERRUN: "a lane reads past its group's words",
    _BAD_SYMBOL: "a symbol gives a level |q| >= 2^24",
}


@intrinsic
def _cttz(typingctx, x):
    """Count trailing zeros; 64 for x == 0 (defined, so a zero word needs no separate test)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], cgutils.false_bit)

    return sig, codegen


@intrinsic
def _ctlz(typingctx, x):
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@numba.njit(inline="always")
def _floor_log2(v):
    return 63 - np.int64(_ctlz(np.uint64(v)))


@numba.njit(inline="always")
def code_length(u, k):
    """Bit length of the EG-k code word of ``u``: 2*floor(log2(u + 2^k)) - k + 1."""
    return 2 * _floor_log2(np.uint64(u) + (np.uint64(1) << np.uint64(k))) - k + 1


@numba.njit(nogil=True, cache=True)
def _group_orders(g, u, lane_symbols, k_lo, k_hi, ks, gbits):
    """Order and bit count of group ``g``: the order in [k_lo, k_hi] with the fewest bits (the first on a
    tie, as ``golomb_ref.choose_orders``). One branch-free pass per order over the group: floor(log2(v)) is the
    exponent field of float64(v) (exact for v < 2^53), so the loop vectorizes."""
    n = u.size
    start = g * LANES * lane_symbols
    end = min(n, start + LANES * lane_symbols)
    best_k = k_lo
    best_bits = np.int64(1) << 62
    for k in range(k_lo, k_hi + 1):
        add = np.int32(1 << k)  # u + 2^k < 2^26: int32, whose conversion to float64 vectorizes
        acc = np.int64(0)
        for e in range(np.uint64(start), np.uint64(end)):
            acc += np.float64(np.int32(np.int64(u[e]) + add)).view(np.int64) >> 52
        # code length 2*floor(log2(u + 2^k)) - k + 1; the exponent field is floor(log2) + 1023
        bits = 2 * (acc - 1023 * (end - start)) + (end - start) * (1 - k)
        if bits < best_bits:
            best_bits = bits
            best_k = k
    ks[g] = best_k
    gbits[g] = best_bits


@numba.njit(parallel=True, nogil=True, cache=True)
def _choose_orders_fast(u, lane_symbols, k_lo, k_hi, ks, gbits):
    for g in prange(ks.size):
        _group_orders(np.int64(g), u, lane_symbols, k_lo, k_hi, ks, gbits)


@numba.njit(nogil=True, cache=True)
def _lane_lengths_group(g, u, lane_symbols, ks, lens):
    n = u.size
    start = g * LANES * lane_symbols
    end = min(n, start + LANES * lane_symbols)
    k = np.int64(ks[g])
    add = np.int32(1 << k)
    acc = np.zeros(LANES, np.int64)
    full = start + (end - start) // LANES * LANES
    for e0 in range(start, full, LANES):
        for j in range(LANES):
            acc[j] += np.float64(np.int32(np.int64(u[np.uint64(e0 + j)]) + add)).view(np.int64) >> 52
    for e in range(full, end):
        acc[e - full] += np.float64(np.int32(np.int64(u[np.uint64(e)]) + add)).view(np.int64) >> 52
    for j in range(LANES):
        cnt = (end - start - j + LANES - 1) // LANES
        lens[g, j] = 2 * (acc[j] - 1023 * cnt) + cnt * (1 - k)


@numba.njit(parallel=True, nogil=True, cache=True)
def _lane_lengths(u, lane_symbols, ks, lens):
    for g in prange(ks.size):
        _lane_lengths_group(np.int64(g), u, lane_symbols, ks, lens)


def choose_group_orders(u, lane_symbols, k_lo, k_hi):
    """Per group, the order in [k_lo, k_hi] with the fewest bits (uint8) and that bit count (int64): what
    ``choose_orders`` picks, without the lane lengths (``lane_lengths``); ``payload_size_of_groups``
    gives the payload size from it."""
    g_count = n_groups(u.size, lane_symbols)
    ks = np.zeros(g_count, np.uint8)
    gbits = np.zeros(g_count, np.int64)
    if g_count:
        launch(_choose_orders_fast, _SERIAL["_choose_orders_fast"], np.ascontiguousarray(u), lane_symbols,
               k_lo, k_hi, ks, gbits, work=u.size)
    return ks, gbits


def lane_lengths(u, lane_symbols, ks):
    """Lane lengths (int64, groups x 32) of the EG codes of ``u`` with per-group orders ``ks``."""
    lens = np.zeros((ks.size, LANES), np.int64)
    if ks.size:
        launch(_lane_lengths, _SERIAL["_lane_lengths"], np.ascontiguousarray(u), lane_symbols, ks, lens,
               work=u.size)
    return lens


def choose_orders(u, lane_symbols, k_lo, k_hi):
    """Per group, the order in [k_lo, k_hi] with the fewest bits, and its lane lengths (int64)."""
    ks, _ = choose_group_orders(u, lane_symbols, k_lo, k_hi)
    return ks, lane_lengths(u, lane_symbols, ks)


def payload_size_of_groups(gbits: np.ndarray) -> int:
    """Exact payload bytes from per-group bit counts (matches ``encode`` and ``payload_size``)."""
    words = int(((gbits + 63) // 64).sum()) + 1
    return table_bytes(gbits.size) + 8 * words


@numba.njit(nogil=True, cache=True)
def _write_group(g, u, lane_symbols, ks, word_start, words):
    n = u.size
    start = g * LANES * lane_symbols
    end = min(n, start + LANES * lane_symbols)
    k = np.int64(ks[g])
    w = word_start[g]
    acc = np.uint64(0)
    nb = np.int64(0)
    for j in range(LANES):
        for e in range(start + j, end, LANES):
            v = np.uint64(u[e]) + (np.uint64(1) << np.uint64(k))
            nbits = _floor_log2(v)
            z = nbits - k
            r = v - (np.uint64(1) << np.uint64(nbits))
            code = (r << np.uint64(z + 1)) | (np.uint64(1) << np.uint64(z))
            length = 2 * z + k + 1
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
def _write_groups_par(u, lane_symbols, ks, word_start, words):
    for g in prange(ks.size):
        _write_group(np.int64(g), u, lane_symbols, ks, word_start, words)


_write_groups_serial = serial_twin(_write_groups_par)


def _write_groups(u, lane_symbols, ks, word_start, words):
    launch(_write_groups_par, _write_groups_serial, u, lane_symbols, ks, word_start, words, work=u.size)


def encode(u: np.ndarray, lane_symbols: int, ks: np.ndarray, lens: np.ndarray) -> bytes:
    """Build the ``eg`` payload of symbols ``u`` with per-group orders ``ks`` and lane lengths ``lens``."""
    g_count = ks.size
    group_words = (lens.sum(axis=1) + 63) // 64
    word_start = np.zeros(g_count + 1, np.int64)
    np.cumsum(group_words, out=word_start[1:])
    total_words = int(word_start[-1]) + 1  # + one zero word so readers may load 64 bits past any bit
    head = table_bytes(g_count)
    buf = np.zeros(head + 8 * total_words, np.uint8)
    buf[: 2 * LANES * g_count] = lens.astype("<u2").reshape(-1).view(np.uint8)
    buf[2 * LANES * g_count: 2 * LANES * g_count + g_count] = ks
    words = buf[head:].view("<u8")
    _write_groups(np.ascontiguousarray(u), lane_symbols, ks, word_start, words)
    return buf.tobytes()


def payload_size(lane_symbols: int, lens: np.ndarray) -> int:
    """Exact payload bytes for given lane lengths (matches ``encode``)."""
    words = int(((lens.sum(axis=1) + 63) // 64).sum()) + 1
    return table_bytes(lens.shape[0]) + 8 * words


@numba.njit(nogil=True, cache=True)
def _lane_table(lens, ks, n_elems, lane_symbols, word_start):
    """Check every lane's bit count against its symbol count and fill ``word_start`` (first 64-bit word of
    each group, then the total); returns the flat index g * 32 + j of the first bad lane, or -1.

    Every code word of order k is k+1 .. 51-k bits long, so a lane of c symbols is c(k+1) .. c(51-k) bits.
    Checking this bounds the element count by the payload size (>= 1 bit per element) before anyone
    allocates the output, and rejects inconsistent tables without decoding."""
    G = ks.size
    n_last = n_elems - (G - 1) * LANES * lane_symbols
    word_start[0] = 0
    for g in range(G):
        k = np.int64(ks[g])
        bits = np.int64(0)
        for j in range(LANES):
            cnt = np.int64(lane_symbols) if g < G - 1 else max(np.int64(0), (n_last - j + LANES - 1) // LANES)
            ln = np.int64(lens[g, j])
            if ln < cnt * (k + 1) or ln > cnt * (MAX_CODE_BITS - k):
                return g * LANES + j
            bits += ln
        word_start[g + 1] = word_start[g] + (bits + 63) // 64
    return -1


@numba.njit(inline="always")
def _peek(words, p):
    """The 64 stream bits from bit ``p`` on (branch-free: the double shift is 0 when p is word-aligned)."""
    w = p >> 6
    s = np.uint64(p & 63)
    return (words[w] >> s) | ((words[w + 1] << np.uint64(1)) << (np.uint64(63) - s))


@numba.njit(inline="always")
def _decode_lane(words, pos, end, k, start, stop, center, out, mode, step32, step64):
    """Decode one lane into ``out``; returns (new position, status)."""
    maxz = _MAX_Z - k
    for e in range(start, stop, LANES):
        if pos >= end:  # symbols left but no bits: stop before peeking (pos may be the stream's end)
            return pos, _LANE_END
        x = _peek(words, pos)
        z = np.int64(_cttz(x))
        if z > maxz:
            return pos, _BAD_CODE
        nbits = z + k
        mask = (np.uint64(1) << np.uint64(nbits)) - np.uint64(1)
        r = (x >> np.uint64(z + 1)) & mask
        pos += 2 * z + k + 1
        if pos > end:
            return pos, _OVERRUN
        uu = np.int64((np.uint64(1) << np.uint64(nbits)) + r) - (np.int64(1) << k)
        d = (uu >> 1) ^ -(uu & 1)  # zigzag inverse
        q = center + d
        if (q >= _QLIM or q <= -_QLIM) and mode != 3:  # mode 3 ("Q", tests): the whole 25-bit range
            return pos, _BAD_SYMBOL
        store_dequant(out, e, q, mode, step32, step64)
    return pos, 0


@numba.njit(nogil=True, cache=True)
def _decode_group_checked(gi, words, lens, ks, word_start, g_first, n_elems, lane_symbols, center, out, out_base,
                  mode, step32, step64, status):
    g = g_first + gi
    start = g * LANES * lane_symbols
    stop = min(n_elems, start + LANES * lane_symbols)
    pos = word_start[g] * 64
    group_end = word_start[g + 1] * 64
    k = np.int64(ks[g])
    for j in range(LANES):
        lane_end = pos + np.int64(lens[g, j])
        if lane_end > group_end:
            status[gi] = _OVERRUN
            return
        pos, st = _decode_lane(words, pos, lane_end, k, start + j - out_base, stop - out_base,
                               center, out, mode, step32, step64)
        if st == 0 and pos != lane_end:
            st = _LANE_END
        if st != 0:
            status[gi] = st
            return
        pos = lane_end



@numba.njit(inline="always")
def _peek_u(words, p):
    """``_peek`` with unsigned word indices (no negative-index wraparound code)."""
    w = np.uint64(p >> 6)
    s = np.uint64(p & 63)
    return (words[w] >> s) | ((words[w + np.uint64(1)] << np.uint64(1)) << (np.uint64(63) - s))


@numba.njit(inline="always")
def _eg_symbol(words, pos, lim, k):
    """One code word at bit ``pos`` (peeking at most at ``lim``): (next position, d, leading zeros)."""
    x = _peek_u(words, min(pos, lim))
    z = np.int64(_cttz(x))
    nbits = z + k
    r = (x >> np.uint64(z + 1)) & ((np.uint64(1) << np.uint64(nbits)) - np.uint64(1))
    uu = np.int64((np.uint64(1) << np.uint64(nbits)) + r) - (np.int64(1) << k)
    return pos + 2 * z + k + 1, (uu >> 1) ^ -(uu & 1), z


@numba.njit(inline="always")
def _group_setup(gi, lens, ks, word_start, g_first, n_elems, lane_symbols, out_base, mode):
    """What the fast group decoders need of group ``g_first + gi``: (first bit, the last bit a read may start
    at, order, zero-run limit, level limit, each lane's end bit, symbols to decode (0 for a bad lane table),
    the output index of its first element, the bad-table flag)."""
    g = g_first + gi
    start = g * LANES * lane_symbols
    stop = min(n_elems, start + LANES * lane_symbols)
    gpos = word_start[g] * 64
    group_end = word_start[g + 1] * 64
    k = np.int64(ks[g])
    qlim = np.int64(_QLIM) if mode != 3 else np.int64(1) << 40
    pos = gpos
    ends = np.empty(LANES, np.int64)
    for j in range(LANES):
        pos += np.int64(lens[g, j])
        ends[j] = pos
    bad = (pos > group_end) | (group_end <= gpos)
    n_g = stop - start if not bad else 0  # a bad table: straight to the checked decoder
    return gpos, max(group_end - 1, gpos), k, _MAX_Z - k, qlim, ends, n_g, start - out_base, bad


@numba.njit(inline="always")
def _lane_rest(words, p, lim, k, t0, t1, e, center, maxz, qlim, out, mode, step32, step64):
    """Symbols t0..t1-1 of one lane from bit ``p``, one at a time, written from ``out[e]`` on (every 32nd);
    returns (the next bit, whether a zero run or a level was out of range)."""
    bad = False
    for _ in range(t0, t1):
        p, d, z = _eg_symbol(words, p, lim, k)
        q = center + d
        bad |= (z > maxz) | (abs(q) >= qlim)
        store_dequant(out, e, q, mode, step32, step64)
        e += np.uint64(LANES)
    return p, bad


@numba.njit(nogil=True, cache=True)
def _decode_group(gi, words, lens, ks, word_start, g_first, n_elems, lane_symbols, center, out, out_base,
                  mode, step32, step64, status):
    """Decode a group four lanes at a time, so that the four lanes' serial bit-position chains overlap.
    Errors are only flagged here (reads are clamped to the group); a group with any flag is decoded
    again by ``_decode_group_checked``, which finds and reports the first error exactly as before."""
    gpos, lim, k, maxz, qlim, ends, n_g, base, bad = _group_setup(gi, lens, ks, word_start, g_first, n_elems,
                                                                 lane_symbols, out_base, mode)
    for j0 in range(0, LANES, 4):
        p0 = gpos if j0 == 0 else ends[j0 - 1]
        p1 = ends[j0]
        p2 = ends[j0 + 1]
        p3 = ends[j0 + 2]
        c3 = (n_g - j0 - 3 + LANES - 1) // LANES if n_g > j0 + 3 else 0  # the fewest symbols of the four lanes
        e = np.uint64(base + j0)
        for t in range(c3):
            p0, d0, z0 = _eg_symbol(words, p0, lim, k)
            p1, d1, z1 = _eg_symbol(words, p1, lim, k)
            p2, d2, z2 = _eg_symbol(words, p2, lim, k)
            p3, d3, z3 = _eg_symbol(words, p3, lim, k)
            q0 = center + d0
            q1 = center + d1
            q2 = center + d2
            q3 = center + d3
            bad |= (max(max(z0, z1), max(z2, z3)) > maxz)
            bad |= (max(max(abs(q0), abs(q1)), max(abs(q2), abs(q3))) >= qlim)
            store_dequant(out, e, q0, mode, step32, step64)
            store_dequant(out, e + np.uint64(1), q1, mode, step32, step64)
            store_dequant(out, e + np.uint64(2), q2, mode, step32, step64)
            store_dequant(out, e + np.uint64(3), q3, mode, step32, step64)
            e += np.uint64(LANES)
        # the rest of each lane (at most one symbol, or the whole lane in a short last group)
        for jj in range(4):
            j = j0 + jj
            pj = p0 if jj == 0 else (p1 if jj == 1 else (p2 if jj == 2 else p3))
            cj = (n_g - j + LANES - 1) // LANES if n_g > j else 0
            pj, bj = _lane_rest(words, pj, lim, k, c3, cj, np.uint64(base + j + c3 * LANES), center, maxz, qlim,
                                out, mode, step32, step64)
            bad |= bj | (pj != ends[j])
    if bad:
        _decode_group_checked(gi, words, lens, ks, word_start, g_first, n_elems, lane_symbols, center, out,
                              out_base, mode, step32, step64, status)


@numba.njit(parallel=True, nogil=True, cache=True)
def _decode_groups(words, lens, ks, word_start, g_first, n_elems, lane_symbols, center, out, out_base,
                   mode, step32, step64, status):
    for gi in prange(status.size):
        _decode_group(np.int64(gi), words, lens, ks, word_start, g_first, n_elems, lane_symbols, center, out, out_base,
                      mode, step32, step64, status)


_decode_groups_serial = serial_twin(_decode_groups)


MODES = {"F32": 0, "BF16": 1, "F64": 2, "Q": 3}
#: ``decode_into`` runs the vector steps (``golomb_vec``) where ``rans_vec.SIMD`` allows them, for F32 and BF16
#: outputs; tests turn it off to run the scalar kernel
VECTOR = True


def _vector(words, mode, out, args, work, status) -> bool:
    """``golomb_vec.decode_groups`` where it applies and compiles; False where the caller must run the scalar
    kernel (``status`` then cleared)."""
    if not VECTOR or mode not in ("F32", "BF16") or out.dtype != (np.uint16 if mode == "BF16" else np.float32):
        return False
    # imported here: golomb_vec imports this module's group decoders
    from . import golomb_vec, rans_vec

    if not (rans_vec.SIMD and golomb_vec.usable(words)):
        return False
    return rans_vec.launch_vector(golomb_vec.decode_groups, golomb_vec.decode_groups_serial, *args, work=work,
                                  status=status)


def _step32(step: float) -> np.float32:
    """The binary32 step of the F32/BF16 modes; an F64 tensor's step may lie beyond binary32 (it is then
    unused: F64 dequantizes in binary64), so overflow to inf is no RuntimeWarning."""
    if abs(step) <= 3.4e38:  # below binary32's largest value: no overflow (and no errstate context to enter)
        return np.float32(step)
    with np.errstate(over="ignore"):
        return np.float32(step)


def decode_into(payload, n_elems: int, lane_symbols: int, center: int, step: float, out: np.ndarray,
                mode: str, g_first: int = 0, g_last: int | None = None, tables=None) -> None:
    """Decode groups [g_first, g_last) into ``out`` (flat; element e goes to out[e - g_first*32*S]).

    ``tables``: what ``parse_tables(payload, n_elems, lane_symbols)`` returned, when the caller has it.

    ``mode``: "F32" (out float32), "BF16" (out uint16 bf16 bits), "F64" (out float64), "Q" (int64 q; the
    only mode that does not reject |q| >= 2^24, so tests can round-trip every 25-bit symbol).
    """
    lens, ks, word_start, words = tables if tables is not None else parse_tables(payload, n_elems, lane_symbols)
    if g_last is None:
        g_last = ks.size
    gsize = LANES * lane_symbols
    if not 0 <= g_first <= g_last <= ks.size or out.size < min(n_elems, g_last * gsize) - g_first * gsize:
        raise ValueError(f"decode_into: groups [{g_first}, {g_last}) of {ks.size} do not fit out[{out.size}]")
    status = np.zeros(max(0, g_last - g_first), np.uint8)
    out_base = g_first * gsize
    args = (words, lens, ks, word_start, g_first, n_elems, lane_symbols, np.int64(center), out, out_base,
            MODES[mode], _step32(step), np.float64(step), status)
    work = min(n_elems, g_last * gsize) - out_base
    if not (status.size and _vector(words, mode, out, args, work, status)):
        launch(_decode_groups, _decode_groups_serial, *args, work=work)
    if status.size and status.any():
        bad = int(np.flatnonzero(status)[0])
        raise FormatError(f"eg payload group {g_first + bad}: {_STATUS_TEXT[int(status[bad])]}")


# serial twins of the parallel kernels, for parallel.launch (forked children under OpenMP)
_SERIAL = {k.py_func.__name__: serial_twin(k) for k in (_choose_orders_fast, _lane_lengths)}

golomb_header.KERNELS["lane_table"] = _lane_table
