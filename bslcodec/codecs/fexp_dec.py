"""Numba decoding of the ``fexp`` payload (spec 4.5), bit-exact with ``fexp_ref``: one lookup in the 4096-entry
table per symbol, groups in parallel (``prange``) with their serial twin; a bad group is reported by status code."""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np
from numba import prange

from ..container.errors import FormatError
from ..container.limits import LANES
from ..parallel import SERIAL_BELOW, launch, serial_twin
from .fexp_ref import MAX_CODE_LEN
from .fexp_table import UINTS, parse
from .golomb import _peek  # the 64 stream bits from bit p: the eg decoder's reader

# status codes, one per group (0 = fine)
_BAD_CODE, _LANE_END, _OVERRUN = 1, 2, 3
_STATUS_TEXT = {
    _BAD_CODE: "bits that begin no code word",
    _LANE_END: "code words do not end at the lane's declared length",
    _OVERRUN: "a lane reads past its group's words",
}


# ---------------------------------------------------------------- decoding

@numba.njit(inline="always")
def _emit(ent, e, rest, b, bmask, top, out, out_base):
    r = (np.uint64(ent & 4095) << np.uint64(b)) | (_peek(rest, b * e) & bmask)
    out[e - out_base] = (r >> np.uint64(1)) | ((r & np.uint64(1)) << top)


@numba.njit(inline="always")
def _put(ent, rv, ub, bmask, top, out, i):
    r = (np.uint64(ent & 4095) << ub) | (rv & bmask)
    out[i] = (r >> np.uint64(1)) | ((r & np.uint64(1)) << top)


@numba.njit(inline="always")
def _sym(words, lut, q):
    return np.int64(lut[np.int64(_peek(words, q) & np.uint64(4095))])


@numba.njit(inline="always")
def _decode_group(gi, g_first, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, out_base, status):
    g = g_first + gi
    start = g * LANES * lane_symbols
    n_g = min(n, start + LANES * lane_symbols) - start
    pos = np.empty(LANES, np.int64)
    end = np.empty(LANES, np.int64)
    p = word_start[g] * 64
    reach = np.int64(0)
    for j in range(LANES):
        pos[j] = p
        p += np.int64(lens[g, j])
        end[j] = p
        reach = max(reach, pos[j] + MAX_CODE_LEN * ((n_g - j + LANES - 1) // LANES))
    if p > word_start[g + 1] * 64:
        status[gi] = _OVERRUN
        return
    bmask = (np.uint64(1) << np.uint64(b)) - np.uint64(1)
    top = np.uint64(w - 1)
    short = np.int64(12)
    if reach <= (words.size - 1) * 64:
        # fast path: even 12-bit code words keep every lane inside the stream, so errors are checked once at
        # the end; 8 lanes at a time, so that 8 independent lookup chains overlap
        for j0 in range(0, LANES, 8):
            q0, q1, q2, q3 = pos[j0], pos[j0 + 1], pos[j0 + 2], pos[j0 + 3]
            q4, q5, q6, q7 = pos[j0 + 4], pos[j0 + 5], pos[j0 + 6], pos[j0 + 7]
            both = max(0, (n_g - j0 - 7 + LANES - 1) // LANES)  # steps where all 8 lanes have a symbol
            for t in range(both):
                e = start + j0 + LANES * t
                s0 = _sym(words, lut, q0)
                s1 = _sym(words, lut, q1)
                s2 = _sym(words, lut, q2)
                s3 = _sym(words, lut, q3)
                s4 = _sym(words, lut, q4)
                s5 = _sym(words, lut, q5)
                s6 = _sym(words, lut, q6)
                s7 = _sym(words, lut, q7)
                q0 += s0 >> 12
                q1 += s1 >> 12
                q2 += s2 >> 12
                q3 += s3 >> 12
                q4 += s4 >> 12
                q5 += s5 >> 12
                q6 += s6 >> 12
                q7 += s7 >> 12
                short = min(short, min(min(min(s0, s1), min(s2, s3)), min(min(s4, s5), min(s6, s7))) >> 12)
                if b <= 8:  # 2-byte floats: the 8 elements' rests are one 64-bit peek
                    rv = _peek(rest, b * e)
                    ub = np.uint64(b)
                    _put(s0, rv, ub, bmask, top, out, e - out_base)
                    rv >>= ub
                    _put(s1, rv, ub, bmask, top, out, e + 1 - out_base)
                    rv >>= ub
                    _put(s2, rv, ub, bmask, top, out, e + 2 - out_base)
                    rv >>= ub
                    _put(s3, rv, ub, bmask, top, out, e + 3 - out_base)
                    rv >>= ub
                    _put(s4, rv, ub, bmask, top, out, e + 4 - out_base)
                    rv >>= ub
                    _put(s5, rv, ub, bmask, top, out, e + 5 - out_base)
                    rv >>= ub
                    _put(s6, rv, ub, bmask, top, out, e + 6 - out_base)
                    rv >>= ub
                    _put(s7, rv, ub, bmask, top, out, e + 7 - out_base)
                else:
                    _emit(s0, e, rest, b, bmask, top, out, out_base)
                    _emit(s1, e + 1, rest, b, bmask, top, out, out_base)
                    _emit(s2, e + 2, rest, b, bmask, top, out, out_base)
                    _emit(s3, e + 3, rest, b, bmask, top, out, out_base)
                    _emit(s4, e + 4, rest, b, bmask, top, out, out_base)
                    _emit(s5, e + 5, rest, b, bmask, top, out, out_base)
                    _emit(s6, e + 6, rest, b, bmask, top, out, out_base)
                    _emit(s7, e + 7, rest, b, bmask, top, out, out_base)
            pos[j0], pos[j0 + 1], pos[j0 + 2], pos[j0 + 3] = q0, q1, q2, q3
            pos[j0 + 4], pos[j0 + 5], pos[j0 + 6], pos[j0 + 7] = q4, q5, q6, q7
            for j in range(j0, j0 + 8):  # the last group's ragged step
                for e in range(start + j + LANES * both, start + n_g, LANES):
                    ent = _sym(words, lut, pos[j])
                    short = min(short, ent >> 12)
                    pos[j] += ent >> 12
                    _emit(ent, e, rest, b, bmask, top, out, out_base)
    else:
        for j in range(LANES):
            for e in range(start + j, start + n_g, LANES):
                if pos[j] >= end[j]:
                    status[gi] = _LANE_END
                    return
                ent = _sym(words, lut, pos[j])
                if ent >> 12 == 0:
                    status[gi] = _BAD_CODE
                    return
                pos[j] += ent >> 12
                _emit(ent, e, rest, b, bmask, top, out, out_base)
    if short == 0:
        status[gi] = _BAD_CODE
        return
    for j in range(LANES):
        if pos[j] != end[j]:
            status[gi] = _LANE_END
            return


@numba.njit(parallel=True, nogil=True, cache=True)
def _decode_groups(g_first, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, out_base, status):
    for g in prange(status.size):
        gi = np.int64(g)  # (int64 as in the typing before the parfor rewrite: one compiled signature, not two)
        _decode_group(gi, g_first, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, out_base, status)


_decode_groups_serial = serial_twin(_decode_groups)


#: ``decode_into`` decodes a whole tensor's groups with the vector steps (``fexp_vec.decode_groups``) where
#: ``rans_vec.SIMD`` allows them; tests turn it off to run the scalar kernel
VECTOR = True


def _vector_groups(p, itemsize, n, lane_symbols, out, status) -> bool:
    """Every group by ``fexp_vec.decode_groups`` where it applies and compiles; False where the caller must
    run the scalar kernel (``status`` then cleared)."""
    if not VECTOR:
        return False
    # imported here: fexp_vec imports this module's group decoder
    from . import fexp_vec, rans_vec

    words, ws, g = p["words"], p["word_start"], p["groups"]
    if not (rans_vec.SIMD and fexp_vec.usable_whole(words, itemsize, n, p["rest_bits"])):
        return False
    lut = np.zeros(fexp_vec.LUT_ENTRIES, np.uint16)  # 2 entries of padding for its 32-bit reads
    lut[:p["lut"].size] = p["lut"]
    # groups [0, g0) end far enough before the stream's end for the fast path's read-ahead (each lane's
    # symbols at 12 bits from its start); the last ones decode from a copy of their words with zeros after
    ahead = -(-MAX_CODE_LEN * lane_symbols // 64) + 1
    g0 = int(np.searchsorted(ws[1:], words.size - ahead, side="right"))
    args = (p["lens"], ws, lut, p["rest"], np.int64(p["rest_bits"]), np.int64(8 * itemsize), np.int64(n),
            np.int64(lane_symbols), out, status)
    kernels = (fexp_vec.decode_groups, fexp_vec.decode_groups_serial)
    if g0 and not rans_vec.launch_vector(*kernels, np.int64(0), np.int64(g0), words, *args,
                                         work=min(out.size, g0 * LANES * lane_symbols), status=status):
        return False
    if g0 == g:
        return True
    tail = np.zeros(words.size - int(ws[g0]) + ahead + 1, np.uint64)
    tail[:words.size - int(ws[g0])] = words[int(ws[g0]):]
    return rans_vec.launch_vector(*kernels, np.int64(g0), np.int64(g), tail, p["lens"], ws - ws[g0], *args[2:],
                                  work=0, status=status)  # (work 0: the serial kernel, a group or two)


def decode_into(payload, n: int, itemsize: int, lane_symbols: int, out: np.ndarray, g_first: int = 0,
                g_last: int | None = None, parsed: dict | None = None) -> None:
    """Decode groups [g_first, g_last) into ``out`` (unsigned ints of ``itemsize`` bytes; element e goes to
    out[e - g_first * 32 * S]). ``parsed``: what ``parse`` returned, when the caller has it."""
    p = parsed if parsed is not None else parse(payload, n, itemsize, lane_symbols)
    g = p["groups"]
    g_last = g if g_last is None else g_last
    gsize = LANES * lane_symbols
    if not 0 <= g_first <= g_last <= g or out.size < min(n, g_last * gsize) - g_first * gsize:
        raise ValueError(f"decode_into: groups [{g_first}, {g_last}) of {g} do not fit out[{out.size}]")
    if out.dtype != UINTS[itemsize]:
        raise TypeError(f"out must be {np.dtype(UINTS[itemsize])}")
    status = np.zeros(max(0, g_last - g_first), np.uint8)
    done = status.size and g_first == 0 and g_last == g and _vector_groups(p, itemsize, n, lane_symbols, out, status)
    if status.size and not done:
        words = p["words"]
        if out.size < SERIAL_BELOW:
            # a small tensor's groups are too short for the fast path's read-ahead (12 bits a symbol past each
            # lane's start must lie inside the stream): zero words after a copy give it room (a few KB). Valid
            # streams decode the same either way; a corrupt one is still refused (checked once at the end).
            need = int(p["word_start"][g_last]) + -(-MAX_CODE_LEN * lane_symbols // 64) + 2
            if words.size < need:
                words = np.concatenate([words, np.zeros(need - words.size, words.dtype)])
        launch(_decode_groups, _decode_groups_serial, np.int64(g_first), words, p["lens"], p["word_start"],
                p["lut"], p["rest"], np.int64(p["rest_bits"]), np.int64(8 * itemsize), np.int64(n),
                np.int64(lane_symbols), out, np.int64(g_first * gsize), status, work=out.size)
    if status.any():
        bad = int(np.flatnonzero(status)[0])
        raise FormatError(f"fexp payload group {g_first + bad}: {_STATUS_TEXT[int(status[bad])]}")


def decode(payload, n: int, itemsize: int, lane_symbols: int) -> np.ndarray:
    """All ``n`` element bits (uint16/32/64) of an ``fexp`` payload."""
    p = parse(payload, n, itemsize, lane_symbols)
    out = np.empty(n, UINTS[itemsize])
    decode_into(payload, n, itemsize, lane_symbols, out, parsed=p)
    return out
