"""The ``ans`` / ``ans-dq`` decoder (spec 4.4, 4.6), bit-exact with ``rans_ref``: groups decoded in
parallel, dequantization fused (plain levels, or the dq state machine's)."""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np
from numba import prange

from ..container.errors import FormatError
from ..container.limits import LANES, MAX_SYMBOL_MAGNITUDE
from ..parallel import launch, serial_twin

# inlined into the cached decoder; bslcodec/jitcache.py keys numba's cache on dq.py too
from ..quantize.dq import level as _dq_level
from ..quantize.dq import next_state as _dq_next
from ..quantize.quant import store_dequant
from . import rans_vec
from .golomb import _step32
from .rans_header import min_length, parse, subpayload  # noqa: F401 - numpy-only, re-exported
from .rans_model import (
    _BAD_STATE,
    _END,
    _OVERRUN,
    _RANGE,
    _SHORT,
    _STATUS_TEXT,
    L,
)
from .rans_table import (
    tables,
)
from .rans_vec import slot_tables, token_table, vrun

# ---------------------------------------------------------------- decoder

_U16, _U32 = np.uint64(16), np.uint64(32)


@numba.njit(inline="always")
def _read(xv, words, p, last):
    """Renormalise (spec 4.4 ``read``) with the word index clamped to the group: (state, new p)."""
    rd = xv < L
    wv = np.uint64(words[min(p, last)])
    return (((xv << _U16) | wv) if rd else xv), p + np.uint64(rd)


@numba.njit(inline="always")
def _emit(out, ebase, qs, lt, mode, step32, step64):
    """Levels ``qs[:lt]`` dequantized to ``out[ebase:ebase + lt]`` (spec 4.3); one simple loop per mode.
    Returns whether any |q| >= 2^24."""
    lim = np.int32(MAX_SYMBOL_MAGNITUDE)
    bad = False
    for j in range(lt):
        qv = qs[j]
        bad |= (qv >= lim) | (qv <= -lim)
    if mode == 0:
        for j in range(lt):
            out[ebase + np.uint64(j)] = np.float32(qs[j]) * step32
    elif mode == 1:
        for j in range(lt):
            store_dequant(out, ebase + np.uint64(j), qs[j], 1, step32, step64)
    elif mode == 2:
        for j in range(lt):
            out[ebase + np.uint64(j)] = np.float64(qs[j]) * step64
    else:
        for j in range(lt):
            out[ebase + np.uint64(j)] = qs[j]
    return bad


@numba.njit(inline="always")
def _dq_levels(qs, st, lt, c32):
    """Levels ``qs[:lt]`` (center + index) of one step turned into dependent-quantization levels (spec
    4.6), advancing each lane's state ``st[j]``."""
    for j in range(lt):
        k = qs[j] - c32
        s = st[j]
        qs[j] = c32 + _dq_level(k, s)
        st[j] = _dq_next(s, k)


_NS = 8  # dq states: the token table has one entry per (live token, state)
_RAW_BIT = np.uint64(1) << np.uint64(40)  # token table: the token has raw bits (the general step decodes it)


@numba.njit(inline="always")
def _fill_token_table(tinfo, center, mode, step32, step64, dq, ttab):
    """``ttab[k * 8 + σ]`` for live token k in dq state σ (state 0 only without ``dq``): the output's bits
    (bf16 in bits 0-15, binary32 in 0-31: what ``store_dequant`` writes for the level the token gives
    without raw bits) | next state << 32 | ``_RAW_BIT`` where the token has raw bits (its entry is a
    placeholder: a step that meets such a token is decoded again by the general step)."""
    c32 = np.int32(center)
    one = np.zeros(1, np.float32)
    half = np.zeros(1, np.uint16)
    for k in range(tinfo.size):
        e = tinfo[k]
        uu = np.int32(e >> np.uint64(37))
        d = (uu >> np.int32(1)) ^ -(uu & np.int32(1))
        raw = _RAW_BIT if (e >> _U32) & np.uint64(31) else np.uint64(0)
        for st in range(_NS):
            q = c32 + _dq_level(d, st) if dq else c32 + d
            nxt = np.uint64(_dq_next(st, d)) if dq else np.uint64(0)
            if mode == 1:
                store_dequant(half, 0, q, 1, step32, step64)
                bits = np.uint64(half[0])
            else:
                store_dequant(one, 0, q, 0, step32, step64)
                bits = np.uint64(one.view(np.uint32)[0])
            ttab[k * _NS + st] = bits | (nxt << _U32) | raw


@numba.njit(inline="always")
def _general_step(x, st, lt, ent, low, qs, tos, tinfo, words, p, last, mask, Pu, c32, has_hi, dq):
    """One step of ``lt`` lanes, any token (spec 4.4: the token, the raw bits up to 16, those above 16, each
    phase renormalising in lane order with the word index clamped to the group), the levels to ``qs``
    (dq: advancing the lane states ``st``). Returns the new word index."""
    for j in range(lt):  # phase 1: token
        xv = x[j]
        slot = xv & mask
        e = tinfo[tos[slot]]
        xv = (e & np.uint64(0xFFFF)) * (xv >> Pu) + slot - ((e >> _U16) & np.uint64(0xFFFF))
        x[j], p = _read(xv, words, p, last)
        ent[j] = e
    for j in range(lt):  # phase 2: low raw bits
        nb = (ent[j] >> _U32) & np.uint64(31)
        n1 = min(nb, np.uint64(16))
        xv = x[j]
        low[j] = xv & ((np.uint64(1) << n1) - np.uint64(1))
        x[j], p = _read(xv >> n1, words, p, last)
    if has_hi:
        for j in range(lt):  # phase 3: raw bits above 16
            nb = (ent[j] >> _U32) & np.uint64(31)
            n2 = nb - np.uint64(16) if nb > np.uint64(16) else np.uint64(0)
            xv = x[j]
            low[j] |= (xv & ((np.uint64(1) << n2) - np.uint64(1))) << _U16
            x[j], p = _read(xv >> n2, words, p, last)
    for j in range(lt):
        uu = np.int32((ent[j] >> np.uint64(37)) + low[j])
        qs[j] = c32 + ((uu >> np.int32(1)) ^ -(uu & np.int32(1)))
    if dq:
        _dq_levels(qs, st, lt, c32)
    return p


@numba.njit(nogil=True, cache=True)
def _decode_group(gi, words, W, wstart, tos, tinfo, ttab, P, g_first, n_elems, lane_symbols, center, out, out_base,
                  mode, step32, step64, status, has_hi, check, dq):
    """Decode group ``g_first + gi`` (spec 4.4); a plain function (not inlined into the parallel loop, where
    numba's parfor lowering optimises it less well). ``tos[slot]``: the token (index into ``tinfo``) of a
    slot; ``tinfo[token]`` = f | c << 16 | nb << 32 | base << 37. States are uint64 below 2^32; indices
    are unsigned (no negative-index wraparound in the generated code); levels fit int32 (|q| < 2^25).

    The usual step (32 lanes, every read inside the group; ``ttab`` given, i.e. F32/BF16 output and no
    level out of range) is one loop a lane: token, renormalisation, and the output and next dq state
    looked up in ``ttab`` by (token, state). Its lane states and dq states go to a second buffer; a step
    that meets a token with raw bits (rare at a few bits a weight) is decoded again from the first buffer
    by the general step, which also decodes the group's tail and every step without ``ttab``."""
    gsize = LANES * lane_symbols
    mask = (np.uint64(1) << np.uint64(P)) - np.uint64(1)
    Pu = np.uint64(P)
    g = g_first + gi
    start = g * gsize
    ng = min(n_elems, start + gsize) - start
    A = min(LANES, ng)
    T = (ng + LANES - 1) // LANES
    if W[g] < 2 * A:
        status[gi] = _SHORT
        return
    w0 = np.uint64(wstart[g])
    wend = w0 + np.uint64(W[g])
    x = np.empty(LANES, np.uint64)
    xb = np.empty(LANES, np.uint64)  # the usual step's second buffers
    ent = np.empty(LANES, np.uint64)
    low = np.empty(LANES, np.uint64)
    qs = np.empty(LANES, np.int32)
    st = np.zeros(LANES, np.int32)  # dependent-quantization states (``dq``), one a lane
    stb = np.zeros(LANES, np.int32)
    c32 = np.int32(center)
    bad = False
    for j in range(A):
        x[j] = np.uint64(words[w0 + np.uint64(2 * j)]) | (np.uint64(words[w0 + np.uint64(2 * j + 1)]) << _U16)
        bad |= x[j] < L
    if bad:
        status[gi] = _BAD_STATE
        return
    p = w0 + np.uint64(2 * A)
    last = wend - np.uint64(1)
    out_of_range = False
    fast = ttab.size > 0
    for t in range(T):
        lt = min(LANES, ng - LANES * t)
        ebase = np.uint64(start + LANES * t - out_base)
        if fast and lt == LANES and p + np.uint64(2 * LANES) <= wend:
            # every read (at most 2 a lane) inside the group: no clamping; only p is carried across lanes
            p0 = p
            seen = np.uint64(0)
            for j in range(LANES):
                xv = x[j]
                slot = xv & mask
                k = np.uint64(tos[slot])
                e = tinfo[k]
                xv = (e & np.uint64(0xFFFF)) * (xv >> Pu) + slot - ((e >> _U16) & np.uint64(0xFFFF))
                rd = xv < L
                wv = np.uint64(words[p])
                xb[j] = ((xv << _U16) | wv) if rd else xv
                p += np.uint64(rd)
                te = ttab[k * np.uint64(_NS) + np.uint64(st[j])]
                if mode == 1:
                    out[ebase + np.uint64(j)] = np.uint16(te & np.uint64(0xFFFF))
                else:
                    out[ebase + np.uint64(j)] = np.uint32(te & np.uint64(0xFFFFFFFF)).view(np.float32)
                stb[j] = np.int32((te >> _U32) & np.uint64(7))
                seen |= te
            if not seen & _RAW_BIT:
                x, xb = xb, x
                st, stb = stb, st
                continue
            p = p0  # a token with raw bits: this step again, from the first buffers
        p = _general_step(x, st, lt, ent, low, qs, tos, tinfo, words, p, last, mask, Pu, c32, has_hi, dq)
        out_of_range |= _emit(out, ebase, qs, lt, mode, step32, step64)
    if p > wend:
        status[gi] = _OVERRUN
        return
    ok = p == wend
    for j in range(A):
        ok &= x[j] == L
    if not ok:
        status[gi] = _END
    elif out_of_range:
        status[gi] = _RANGE


@numba.njit(nogil=True, cache=True)
def _decode_group_v(gi, words, W, wstart, tos, tinfo, sf, sk, tt, P, g_first, n_elems, lane_symbols, center, out,
                    out_base, mode, step32, step64, status, has_hi, dq):
    """``_decode_group`` with its usual step run as vector code (``rans_vec.vrun``), bit-identical: the same
    steps take the usual step (32 lanes, ``p + 64 <= group end``), one with a raw-bit token and every other
    step go to the same general step. ``tt``: the token table as ``vrun`` reads it (``slot_tables``; F32:
    ``ttab`` itself); ``sf``, ``sk``: its slot tables. The lane states live in uint32 arrays (below 2^32)."""
    gsize = LANES * lane_symbols
    mask = (np.uint64(1) << np.uint64(P)) - np.uint64(1)
    Pu = np.uint64(P)
    g = g_first + gi
    start = g * gsize
    ng = min(n_elems, start + gsize) - start
    A = min(LANES, ng)
    T = (ng + LANES - 1) // LANES
    if W[g] < 2 * A:
        status[gi] = _SHORT
        return
    w0 = np.uint64(wstart[g])
    wend = w0 + np.uint64(W[g])
    x = np.empty(LANES, np.uint64)  # the general step's buffers
    ent = np.empty(LANES, np.uint64)
    low = np.empty(LANES, np.uint64)
    qs = np.empty(LANES, np.int32)
    st = np.zeros(LANES, np.int32)
    x32 = np.zeros(LANES, np.uint32)  # the lane states between steps (lanes >= A unused)
    st32 = np.zeros(LANES, np.uint32)
    c32 = np.int32(center)
    bad = False
    for j in range(A):
        xj = np.uint64(words[w0 + np.uint64(2 * j)]) | (np.uint64(words[w0 + np.uint64(2 * j + 1)]) << _U16)
        x32[j] = np.uint32(xj)
        bad |= xj < L
    if bad:
        status[gi] = _BAD_STATE
        return
    p = w0 + np.uint64(2 * A)
    last = wend - np.uint64(1)
    out_of_range = False
    t = 0
    while t < T:
        lt = min(LANES, ng - LANES * t)
        ebase = np.uint64(start + LANES * t - out_base)
        if lt == LANES and p + np.uint64(2 * LANES) <= wend:
            k, p = vrun(x32, st32, words, p, wend - np.uint64(2 * LANES), out, ebase, np.uint64(ng // LANES - t),
                        sf, sk, tt, Pu)
            if k:
                t += np.int64(k)
                continue  # else step t has a raw-bit token
        for j in range(LANES):
            x[j] = np.uint64(x32[j])
            st[j] = np.int32(st32[j])
        p = _general_step(x, st, lt, ent, low, qs, tos, tinfo, words, p, last, mask, Pu, c32, has_hi, dq)
        out_of_range |= _emit(out, ebase, qs, lt, mode, step32, step64)
        for j in range(LANES):
            x32[j] = np.uint32(x[j])
            st32[j] = np.uint32(st[j])
        t += 1
    if p > wend:
        status[gi] = _OVERRUN
        return
    ok = p == wend
    for j in range(A):
        ok &= x32[j] == np.uint32(L)
    if not ok:
        status[gi] = _END
    elif out_of_range:
        status[gi] = _RANGE


@numba.njit(parallel=True, nogil=True, cache=True)
def _decode_groups(words, W, wstart, tos, tinfo, P, g_first, n_elems, lane_symbols, center, out, out_base,
                   mode, step32, step64, status, has_hi, check, dq, table):
    ttab = np.empty(tinfo.size * _NS if table else 0, np.uint64)  # ``table``: the usual step's token table
    if table:
        _fill_token_table(tinfo, center, mode, step32, step64, dq, ttab)
    for gi in prange(status.size):
        _decode_group(np.int64(gi), words, W, wstart, tos, tinfo, ttab, P, g_first, n_elems, lane_symbols, center, out,
                      out_base, mode, step32, step64, status, has_hi, check, dq)


@numba.njit(parallel=True, nogil=True, cache=True)
def _decode_groups_vec(words, W, wstart, tos, tinfo, P, g_first, n_elems, lane_symbols, center, out, out_base,
                       mode, step32, step64, status, has_hi, dq):
    """``_decode_groups`` with the token table and the vector usual step (``_decode_group_v``): F32 (float32
    ``out``) or BF16 (uint16 ``out``), no level out of range. A kernel of its own, so that the scalar one
    never depends on the vector code compiling."""
    ttab = np.empty(tinfo.size * _NS, np.uint64)
    _fill_token_table(tinfo, center, mode, step32, step64, dq, ttab)
    sf, sk, tt = slot_tables(tos, tinfo, ttab)
    tt = token_table(out, ttab, tt)  # F32: ttab; BF16: the 32-bit table
    for g in prange(status.size):
        gi = np.int64(g)  # (int64 as in the typing before the parfor rewrite: one compiled signature, not two)
        _decode_group_v(gi, words, W, wstart, tos, tinfo, sf, sk, tt, P, g_first, n_elems, lane_symbols, center,
                        out, out_base, mode, step32, step64, status, has_hi, dq)


def decode_tables(table: np.ndarray) -> tuple:
    """(tos, tinfo, has_hi, d_max) for the decoder from ``slot_table``'s packed per-slot entries (the slow
    reference of ``tables``, which builds them from the frequencies directly): the
    (live) token of each slot, per token f | c << 16 | nb << 32 | base << 37, whether a token has more
    than 16 raw bits, and the largest |d| any token can give."""
    t = np.asarray(table, np.int64)
    first = ((t >> 15) & 0x3FFF) == 0  # a token's first slot
    starts = np.flatnonzero(first)
    tok = np.cumsum(first) - 1
    e = t[starts]
    f, nb, base = e & 0x7FFF, (e >> 29) & 31, e >> 34
    tinfo = (f | (starts << 16) | (nb << 32) | (base << 37)).astype(np.uint64)
    tos = tok.astype(np.uint8 if starts.size <= 256 else np.uint16)
    u_max = int((base + (np.int64(1) << nb) - 1).max()) if starts.size else 0
    return tos, tinfo, bool(starts.size and int(nb.max()) > 16), (u_max + 1) >> 1


MODES = {"F32": 0, "BF16": 1, "F64": 2, "Q": 3}
#: ``decode_into`` takes ``rans_gen``'s vector general step where the table allows it (no raw bits above 16,
#: no level near 2^24): as fast as ``vrun`` without raw bits, ~5x the scalar step with them (a fine step's
#: payloads). Tests turn it off to run ``vrun``, which stays for tables with raw bits above 16.
VEC_GENERAL = True
#: Elements a token-table entry must pay for (8 entries a live token): below, the general step decodes all
#: (a table costs about as much to fill as ~10 symbols to decode; a 64x64 tensor goes without)
TABLE_ELEMS_PER_ENTRY = 64


def decode_into(payload, n_elems: int, lane_symbols: int, center: int, step: float, out: np.ndarray,
                mode: str, g_first: int = 0, g_last: int | None = None, parsed=None, dq: bool = False) -> None:
    """Decode groups [g_first, g_last) into ``out`` (flat; element e goes to out[e - g_first*32*S]).

    ``dq``: the symbols are dependent-quantization indices (codec ``ans-dq``, spec 4.6).
    ``mode``: "F32" (out float32), "BF16" (out uint16 bf16 bits), "F64" (out float64), "Q" (int64 q).
    ``parsed``: ``parse()``'s result for this payload, when the caller already has it.
    """
    P, s, m, freqs, W, wstart, words = parsed if parsed is not None else parse(payload, n_elems, lane_symbols)
    if g_last is None:
        g_last = W.size
    tos, tinfo, has_hi, d_max = tables(P, s, m, freqs)
    # else no level of the table is out of range (dq levels reach 2 |index|)
    check = abs(int(center)) + (2 * d_max if dq else d_max) >= MAX_SYMBOL_MAGNITUDE
    status = np.zeros(max(0, g_last - g_first), np.uint8)
    work = min(n_elems, g_last * LANES * lane_symbols) - g_first * LANES * lane_symbols
    table = mode in ("F32", "BF16") and not check and work >= TABLE_ELEMS_PER_ENTRY * _NS * tinfo.size
    args = (words, W, wstart, tos, tinfo, P, g_first, n_elems, lane_symbols, np.int64(center), out,
            g_first * LANES * lane_symbols, MODES[mode], _step32(step), np.float64(step), status, has_hi)
    # the vector steps store 16-bit (BF16) or 32-bit (F32) lanes: only into the array those modes decode to
    vec = rans_vec.SIMD and mode in ("F32", "BF16") and out.dtype == (np.uint16 if mode == "BF16" else np.float32)
    if vec and VEC_GENERAL and not has_hi and not check:  # the vector general step: every token
        from . import rans_gen  # here: rans_gen imports this module's step helpers

        if rans_vec.launch_vector(rans_gen.decode_groups, rans_gen.decode_groups_serial, words, W, wstart, P, s, m,
                                  freqs, np.int64(g_first), np.int64(n_elems), np.int64(lane_symbols),
                                  np.int64(center), out, np.int64(g_first * LANES * lane_symbols), MODES[mode],
                                  _step32(step), np.float64(step), status, dq, work=work, status=status):
            table = vec = None
        else:
            vec = False
    if vec and table and rans_vec.launch_vector(_decode_groups_vec, _SERIAL['_decode_groups_vec'], *args, dq,
                                                work=work, status=status):
        table = None  # the usual step's vector run (tokens without raw bits), the general step scalar
    if table is not None:
        launch(_decode_groups, _SERIAL['_decode_groups'], *args, check, dq, table, work=work)
    if status.size and status.any():
        bad = int(np.flatnonzero(status)[0])
        raise FormatError(f"ans payload group {g_first + bad}: {_STATUS_TEXT[int(status[bad])]}")


# serial twins of the parallel kernels, for parallel.launch (forked children under OpenMP)
_SERIAL = {k.py_func.__name__: serial_twin(k) for k in (_decode_groups, _decode_groups_vec)}
