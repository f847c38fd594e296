"""The ``fexp`` decoder's fast path (``fexp_dec._decode_group``) with its full steps as vector code (issue 19):
``fvrun`` (a numba ``@intrinsic`` in LLVM vector IR, as ``rans_vec.vrun``) decodes a step of a group's 32
lanes at once: per lane a 32-bit read at byte ``pos >> 3`` of the stream (its 12 bits from ``pos``), the
code table entry (``lut``, uint16, read as 32 bits: the table has 2 entries of padding), the rest bits of
the element (a 32-bit read at byte ``b e >> 3`` of the rest bits), the output bits of 2- or 4-byte floats.

Lanes are independent in ``fexp`` (each has its own bit position), so the order in which steps and lanes
run does not change what is read or written: every read is the scalar fast path's, within the same bound
(``reach``, each code word at most 12 bits), and a bad code or lane end is found by the same checks at
the end. Positions are int32 lanes: only for streams below 2^31 bits (``usable``). Used by the batched
small tensors (``batch_dec``) and, for a whole tensor's groups, by ``fexp_dec.decode_into``
(``decode_groups``, where element indices times rest bits stay below 2^31: ``usable_whole``), behind
``rans_vec.SIMD`` (the switch of all vector decoding code).
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ..container.limits import LANES
from ..parallel import serial_twin
from .fexp_dec import _BAD_CODE, _LANE_END, _OVERRUN, _decode_group, _emit, _sym
from .fexp_ref import MAX_CODE_LEN
from .rans_vec import _I16, _I32, _I64, _const, _gather, _splat, _v, _vptr

_I8 = ir.IntType(8)
#: Entries of the code table ``fvrun`` reads (a 32-bit read of entry 4095 ends in the padding)
LUT_ENTRIES = (1 << MAX_CODE_LEN) + 2


def _umin(builder, a, b):
    return builder.select(builder.icmp_unsigned("<", a, b), a, b)


@intrinsic
def fvrun(typingctx, pos, wbytes, lut, rbytes, out, e0, nsteps, b):
    """``nsteps`` full steps of 32 lanes from element ``e0`` (lane j, step t: element ``e0 + j + 32 t``,
    written to ``out`` at that index): ``pos`` (int32 bit positions in the stream bytes ``wbytes``)
    advanced in place; ``lut``: the code table (``LUT_ENTRIES``); ``rbytes``: the rest bits' bytes, ``b``
    a element. Returns the shortest code length met (0: bits that begin no code word), 15 for no step."""
    if out.dtype not in (types.uint16, types.uint32):
        return None
    sig = types.uint64(pos, wbytes, lut, rbytes, out, e0, nsteps, b)
    w = out.dtype.bitwidth

    def codegen(context, builder, sig, args):
        arr = [context.make_array(t)(context, builder, a) if isinstance(t, types.Array) else None
               for t, a in zip(sig.args, args)]
        e0, nsteps, b = args[5], args[6], args[7]
        b32 = builder.trunc(b, _I32)
        bv = _splat(builder, b32)
        bmask = _splat(builder, builder.sub(builder.shl(ir.Constant(_I32, 1), b32), ir.Constant(_I32, 1)))
        lane = ir.Constant(_v(_I32), list(range(LANES)))
        wb, lt, rb = (builder.bitcast(arr[i].data, ir.PointerType(_I32)) for i in (1, 2, 3))
        pp = _vptr(builder, arr[0].data, _I32)
        p0 = builder.load(pp, align=4)
        e032 = builder.trunc(e0, _I32)
        entry = builder.block
        head, body, done = (builder.append_basic_block(f"fvrun.{n}") for n in ("head", "body", "done"))
        builder.branch(head)
        builder.position_at_end(head)
        pv, mn, t = builder.phi(_v(_I32)), builder.phi(_v(_I32)), builder.phi(_I64)
        for ph, v in ((pv, p0), (mn, _const(_I32, 15)), (t, ir.Constant(_I64, 0))):
            ph.add_incoming(v, entry)
        builder.cbranch(builder.icmp_unsigned("<", t, nsteps), body, done)
        builder.position_at_end(body)
        dw = _gather(builder, wb, builder.lshr(pv, _const(_I32, 3)), _I32, _I8)
        code = builder.and_(builder.lshr(dw, builder.and_(pv, _const(_I32, 7))), _const(_I32, (1 << MAX_CODE_LEN) - 1))
        ent = builder.and_(_gather(builder, lt, code, _I32, _I16), _const(_I32, 0xFFFF))
        ln = builder.lshr(ent, _const(_I32, MAX_CODE_LEN))
        ev = builder.add(_splat(builder, builder.add(e032, builder.shl(builder.trunc(t, _I32), ir.Constant(_I32, 5)))),
                         lane)
        eb = builder.mul(ev, bv)  # the element's first rest bit
        rd = _gather(builder, rb, builder.lshr(eb, _const(_I32, 3)), _I32, _I8)
        rest = builder.and_(builder.lshr(rd, builder.and_(eb, _const(_I32, 7))), bmask)
        r = builder.or_(builder.shl(builder.and_(ent, _const(_I32, (1 << MAX_CODE_LEN) - 1)), bv), rest)
        o = builder.or_(builder.lshr(r, _const(_I32, 1)), builder.shl(builder.and_(r, _const(_I32, 1)),
                                                                       _const(_I32, w - 1)))
        ob = builder.gep(arr[4].data, [builder.add(e0, builder.shl(t, ir.Constant(_I64, 5)))])
        if w == 16:
            builder.store(builder.trunc(o, _v(_I16)), _vptr(builder, ob, _I16), align=2)
        else:
            builder.store(o, _vptr(builder, ob, _I32), align=4)
        for ph, v in ((pv, builder.add(pv, ln)), (mn, _umin(builder, mn, ln)), (t, builder.add(t, ir.Constant(_I64, 1)))):
            ph.add_incoming(v, builder.block)
        builder.branch(head)
        builder.position_at_end(done)
        builder.store(pv, pp, align=4)
        m = builder.extract_element(mn, ir.Constant(_I32, 0))
        for j in range(1, LANES):
            m = _umin(builder, m, builder.extract_element(mn, ir.Constant(_I32, j)))
        return builder.zext(m, _I64)

    return sig, codegen


@numba.njit(inline="always")
def usable(words, itemsize):
    """Whether ``decode_group`` takes a stream of ``words``: 2- or 4-byte floats, bit positions below 2^31."""
    return itemsize <= 4 and words.size < 1 << 25


def usable_whole(words, itemsize: int, n: int, b: int) -> bool:
    """Whether ``decode_groups`` takes a tensor of ``n`` elements with ``b`` rest bits each: ``usable``, and
    the rest bits' bit offsets (``b e``) and element indices fit ``fvrun``'s int32 lanes."""
    return itemsize in (2, 4) and words.size < 1 << 25 and n * max(b, 1) < 1 << 31


@numba.njit(nogil=True, cache=True)
def decode_group(gi, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, status):
    """``fexp_dec._decode_group`` (``g_first`` and ``out_base`` 0) where it takes its fast path, the full
    steps by ``fvrun``, the last partial step as there; returns False (and decodes nothing) where it would
    not take the fast path. ``lut``: ``LUT_ENTRIES`` entries; ``usable(words, w // 8)``."""
    start = gi * LANES * lane_symbols
    n_g = min(n, start + LANES * lane_symbols) - start
    pos = np.empty(LANES, np.int64)
    end = np.empty(LANES, np.int64)
    p = word_start[gi] * 64
    reach = np.int64(0)
    for j in range(LANES):
        pos[j] = p
        p += np.int64(lens[gi, j])
        end[j] = p
        reach = max(reach, pos[j] + MAX_CODE_LEN * ((n_g - j + LANES - 1) // LANES))
    if p > word_start[gi + 1] * 64:
        status[gi] = _OVERRUN
        return True
    if reach > (words.size - 1) * 64:
        return False
    full = n_g // LANES
    pos32 = np.empty(LANES, np.int32)
    for j in range(LANES):
        pos32[j] = np.int32(pos[j])
    short = np.int64(fvrun(pos32, words.view(np.uint8), lut, rest.view(np.uint8), out, np.int64(start),
                           np.uint64(full), np.int64(b)))
    for j in range(LANES):
        pos[j] = np.int64(pos32[j])
    bmask = (np.uint64(1) << np.uint64(b)) - np.uint64(1)
    top = np.uint64(w - 1)
    for j in range(n_g - LANES * full):  # the last group's ragged step
        ent = _sym(words, lut, pos[j])
        short = min(short, ent >> 12)
        pos[j] += ent >> 12
        _emit(ent, start + LANES * full + j, rest, b, bmask, top, out, 0)
    if short == 0:
        status[gi] = _BAD_CODE
        return True
    for j in range(LANES):
        if pos[j] != end[j]:
            status[gi] = _LANE_END
            return True
    return True


@numba.njit(parallel=True, nogil=True, cache=True)
def decode_groups(g_lo, g_hi, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, status):
    """Groups [g_lo, g_hi) of a tensor (``fexp_dec._decode_groups`` with ``g_first`` and ``out_base`` 0): the
    fast path's full steps by ``fvrun`` (``decode_group``), a group it does not take (where the read-ahead
    would pass the end of ``words``) by the scalar ``_decode_group``. ``lut``: ``LUT_ENTRIES`` entries;
    ``usable_whole``. ``status`` has an entry for every group of the tensor."""
    for g in prange(g_hi - g_lo):
        gi = np.int64(g_lo + g)
        if not decode_group(gi, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, status):
            _decode_group(gi, 0, words, lens, word_start, lut, rest, b, w, n, lane_symbols, out, 0, status)


decode_groups_serial = serial_twin(decode_groups)
