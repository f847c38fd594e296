"""The ``ans`` / ``ans-dq`` decoder's general step as vector code (``rans_vec.vgrun``; issue 19): every token,
raw bits included, as long as none has more than 16 raw bits and no level can reach 2^24 (F32 / BF16
output). That is what a fine step writes (``rel_step`` 1/64, the default: most symbols carry raw bits, so
``rans_vec.vrun``, which stops at the first raw-bit token, does not apply) and what a small tensor's
payload decodes with (no token table: filling it costs more than 4,096 symbols save).

The tables are per slot (``slot_tables``): ``sf`` = f | (slot - c) << 16 (as ``rans_vec.slot_tables``) and
``sb`` = nb | base << 5, both uint32, filled straight from the frequencies. The steps ``vgrun`` does not
take (a partial step, the group's last words) run ``_step``, the scalar twin of ``rans_dec._general_step``
on the same tables: same words read (clamped to the group), same levels, same output, valid payload or not.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np
from numba import prange

from ..container.limits import LANES, MAX_SYMBOL_MAGNITUDE
from ..parallel import serial_twin
from .rans_dec import _U16, _dq_levels, _emit, _read
from .rans_model import _BAD_STATE, _END, _OVERRUN, _RANGE, _SHORT, L
from .rans_table import _nb_base
from .rans_vec import vgrun


@numba.njit(inline="always")
def slot_tables(s, m, freqs, sf, sb):
    """``sf``, ``sb`` (2^P entries each) from ``freqs`` (summing to 2^P, as ``parse_header`` checks); returns
    (live tokens, any token with raw bits above 16, largest symbol a live token can give) as
    ``rans_table._fill_tables``."""
    c = np.int64(0)
    live = 0
    hi = False
    u_max = np.int64(0)
    for tok in range(freqs.size):
        f = freqs[tok]
        if f <= 0:
            continue
        nb, base = _nb_base(np.int64(tok), s, m)
        f32 = np.uint32(f)
        seg = sf[c:c + f]
        for j in range(f):
            seg[j] = f32 | (np.uint32(j) << np.uint32(16))
        sb[c:c + f] = np.uint32((nb | (base << 5)) & 0xFFFFFFFF)  # exact where usable: nb <= 16, base < 2^25
        hi |= nb > 16
        u_max = max(u_max, base + (np.int64(1) << nb) - 1)
        c += f
        live += 1
    return live, hi, u_max


@numba.njit(inline="always")
def usable(hi, u_max, center, dq):
    """Whether ``vgrun`` decodes this table: no token above 16 raw bits, no level at 2^24 or beyond (where
    ``rans_dec`` checks each level: its ``check``)."""
    d_max = (u_max + 1) >> 1
    return not hi and abs(center) + (2 * d_max if dq else d_max) < MAX_SYMBOL_MAGNITUDE


@numba.njit(inline="always")
def _step(x, st, lt, ent, low, qs, sf, sb, words, p, last, mask, Pu, c32, dq):
    """``rans_dec._general_step`` (no raw bits above 16) on the slot tables: same reads, same levels."""
    for j in range(lt):  # token
        xv = x[j]
        slot = xv & mask
        fb = np.uint64(sf[slot])
        xv = (fb & np.uint64(0xFFFF)) * (xv >> Pu) + (fb >> _U16)
        x[j], p = _read(xv, words, p, last)
        ent[j] = np.uint64(sb[slot])
    for j in range(lt):  # raw bits
        nb = ent[j] & np.uint64(31)
        xv = x[j]
        low[j] = xv & ((np.uint64(1) << nb) - np.uint64(1))
        x[j], p = _read(xv >> nb, words, p, last)
    for j in range(lt):
        uu = np.int32((ent[j] >> np.uint64(5)) + low[j])
        qs[j] = c32 + ((uu >> np.int32(1)) ^ -(uu & np.int32(1)))
    if dq:
        _dq_levels(qs, st, lt, c32)
    return p


@numba.njit(nogil=True, cache=True)
def decode_group(gi, g_first, words, W, wstart, sf, sb, P, n_elems, lane_symbols, center, out, out_base, mode,
                 step32, step64, status, dq):
    """Group ``g_first + gi`` as ``rans_dec._decode_group`` decodes it (element e to ``out[e - out_base]``,
    F32 or BF16 ``mode``), for a table ``usable`` says ``vgrun`` takes; the same status on a bad group."""
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
    x32 = np.zeros(LANES, np.uint32)  # the lane states between steps (lanes >= A unused)
    st32 = np.zeros(LANES, np.uint32)
    bad = False
    for j in range(A):
        xj = np.uint64(words[w0 + np.uint64(2 * j)]) | (np.uint64(words[w0 + np.uint64(2 * j + 1)]) << _U16)
        x32[j] = np.uint32(xj)
        bad |= xj < L
    if bad:
        status[gi] = _BAD_STATE
        return
    p = w0 + np.uint64(2 * A)
    t = 0
    if ng >= LANES and p + np.uint64(2 * LANES + 1) <= wend:
        k, p = vgrun(x32, st32, words, p, wend - np.uint64(2 * LANES + 1), out, np.uint64(start - out_base),
                     np.uint64(ng // LANES), sf, sb, Pu, np.int64(center), step32, dq)
        t = np.int64(k)
    out_of_range = False
    if t < T:  # the last steps: scalar, reads clamped to the group
        x = np.empty(LANES, np.uint64)
        st = np.empty(LANES, np.int32)
        ent = np.empty(LANES, np.uint64)
        low = np.empty(LANES, np.uint64)
        qs = np.empty(LANES, np.int32)
        for j in range(LANES):
            x[j] = np.uint64(x32[j])
            st[j] = np.int32(st32[j])
        last = wend - np.uint64(1)
        c32 = np.int32(center)
        while t < T:
            lt = min(LANES, ng - LANES * t)
            ebase = np.uint64(start + LANES * t - out_base)
            p = _step(x, st, lt, ent, low, qs, sf, sb, words, p, last, mask, Pu, c32, dq)
            out_of_range |= _emit(out, ebase, qs, lt, mode, step32, step64)
            t += 1
        for j in range(LANES):
            x32[j] = np.uint32(x[j])
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
def decode_groups(words, W, wstart, P, s, m, freqs, g_first, n_elems, lane_symbols, center, out, out_base, mode,
                  step32, step64, status, dq):
    """``rans_dec._decode_groups`` by ``decode_group``: the slot tables, then the groups in parallel."""
    sf = np.empty(np.int64(1) << P, np.uint32)
    sb = np.empty(np.int64(1) << P, np.uint32)
    slot_tables(s, m, freqs, sf, sb)
    for gi in prange(status.size):  # np.int64: numba types the prange index uint64 too (the callee twice)
        decode_group(np.int64(gi), g_first, words, W, wstart, sf, sb, P, n_elems, lane_symbols, center, out,
                     out_base, mode, step32, step64, status, dq)


decode_groups_serial = serial_twin(decode_groups)
