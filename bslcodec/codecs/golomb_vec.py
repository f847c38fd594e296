"""The ``eg`` decoder's steps as vector code (issue 19): ``egvrun`` (a numba ``@intrinsic`` in LLVM vector IR, as
``rans_vec.vrun`` and ``fexp_vec.fvrun``) decodes a step of a group's 32 lanes at once: per lane a 64-bit read
at byte ``p >> 3`` of the stream (``p`` = the lane's bit position, clamped to the group's last bit as
``golomb._eg_symbol`` clamps it), the trailing zeros, the ``z + k`` bits after the 1, the zigzag-decoded
level ``center + d`` and its dequantized output (binary32, or its bf16 bits rounded as ``store_dequant``).

Lanes are independent in ``eg`` (each has its own bit position), so the order in which steps and lanes run
does not change what is read or written. A 64-bit read from a byte holds at least 57 stream bits: a step
where a lane's code word is longer (more than 28 leading zeros at order 0; never in a quantized tensor of
sane step) is left to the scalar step, which reads 64 bits at any bit; the run stops before it. Levels
out of range and zero runs past the order's limit only set a flag, as in ``golomb._decode_group``: the
caller then decodes the group again with the checked decoder, which reports the error. Positions are
int32 lanes: streams below 2^31 bits. Behind ``rans_vec.SIMD`` (the switch of all vector decoding code).
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
from .golomb import _decode_group_checked, _group_setup, _lane_rest
from .rans_vec import (
    _F32,
    _I1,
    _I16,
    _I32,
    _I64,
    _const,
    _fn,
    _gather,
    _splat,
    _v,
    _vptr,
)

_I8 = ir.IntType(8)
#: The fewest stream bits a 64-bit read from byte ``p >> 3`` holds from bit ``p`` on (orders are at most
#: ``MAX_EG_ORDER`` = 24, so every order's shortest code word, k + 1 bits, fits)
READ_BITS = 57


def _vreduce_or(builder, v):
    fn = _fn(builder, f"llvm.vector.reduce.or.v{LANES}i1", _I1, [_v(_I1)])
    return builder.call(fn, [v])


@intrinsic
def egvrun(typingctx, pos, wbytes, lim, k, out, ebase, nsteps, center, step32, qlim, maxz):
    """Up to ``nsteps`` full steps of 32 lanes (lane j, step t: output ``out[ebase + j + 32 t]``): ``pos``
    (int32 bit positions in the stream bytes ``wbytes``) advanced in place; reads at ``min(pos, lim)``.
    Stops before a step whose code word is longer than ``READ_BITS`` in any lane. Returns (steps done,
    flag): the flag is set where a lane's zero run is over ``maxz`` or a level's magnitude reaches ``qlim``."""
    if out.dtype not in (types.float32, types.uint16):
        return None
    sig = types.UniTuple(types.uint64, 2)(pos, wbytes, lim, k, out, ebase, nsteps, center, step32, qlim, maxz)
    bf16 = out.dtype == types.uint16

    def codegen(context, builder, sig, args):
        arr = [context.make_array(t)(context, builder, a) if isinstance(t, types.Array) else None
               for t, a in zip(sig.args, args)]
        lim, k, ebase, nsteps, center, step32, qlim, maxz = (args[i] for i in (2, 3, 5, 6, 7, 8, 9, 10))
        limv = _splat(builder, builder.trunc(lim, _I32))
        kv = _splat(builder, k)
        one = _const(_I64, 1)
        kbit = builder.shl(one, kv)  # 1 << k
        cv, qv, zv = _splat(builder, center), _splat(builder, qlim), _splat(builder, maxz)
        step = _splat(builder, step32)
        wb = builder.bitcast(arr[1].data, ir.PointerType(_I64))
        pp = _vptr(builder, arr[0].data, _I32)
        p0 = builder.load(pp, align=4)
        cttz = _fn(builder, f"llvm.cttz.v{LANES}i64", _v(_I64), [_v(_I64), _I1])
        entry = builder.block
        head, body, ok, done = (builder.append_basic_block(f"egvrun.{n}") for n in ("head", "body", "ok", "done"))
        builder.branch(head)
        builder.position_at_end(head)
        pv, bad, t = builder.phi(_v(_I32)), builder.phi(_v(_I1)), builder.phi(_I64)
        for ph, v in ((pv, p0), (bad, _const(_I1, 0)), (t, ir.Constant(_I64, 0))):
            ph.add_incoming(v, entry)
        builder.cbranch(builder.icmp_unsigned("<", t, nsteps), body, done)
        builder.position_at_end(body)
        pr = builder.select(builder.icmp_signed("<", pv, limv), pv, limv)  # min(pos, lim)
        x = _gather(builder, wb, builder.lshr(pr, _const(_I32, 3)), _I64, _I8)
        x = builder.lshr(x, builder.zext(builder.and_(pr, _const(_I32, 7)), _v(_I64)))
        z = builder.call(cttz, [x, ir.Constant(_I1, 0)])
        ln = builder.add(builder.add(builder.shl(z, one), kv), one)  # 2 z + k + 1
        long_ = _vreduce_or(builder, builder.icmp_unsigned(">", ln, _const(_I64, READ_BITS)))
        builder.cbranch(long_, done, ok)
        builder.position_at_end(ok)
        nbits = builder.add(z, kv)
        top = builder.shl(one, nbits)
        r = builder.and_(builder.lshr(x, builder.add(z, one)), builder.sub(top, one))
        uu = builder.sub(builder.add(top, r), kbit)
        d = builder.xor(builder.lshr(uu, one), builder.sub(_const(_I64, 0), builder.and_(uu, one)))
        q = builder.add(cv, d)
        aq = builder.select(builder.icmp_signed("<", q, _const(_I64, 0)), builder.sub(_const(_I64, 0), q), q)
        bad1 = builder.or_(bad, builder.or_(builder.icmp_signed(">", z, zv), builder.icmp_signed(">=", aq, qv)))
        f = builder.fmul(builder.sitofp(q, _v(_F32)), step)
        ob = builder.gep(arr[4].data, [builder.add(ebase, builder.shl(t, ir.Constant(_I64, 5)))])
        if bf16:  # round to nearest even on the top 16 bits (store_dequant, mode 1)
            b = builder.bitcast(f, _v(_I32))
            b = builder.add(builder.add(b, _const(_I32, 0x7FFF)), builder.and_(builder.lshr(b, _const(_I32, 16)),
                                                                              _const(_I32, 1)))
            builder.store(builder.trunc(builder.lshr(b, _const(_I32, 16)), _v(_I16)), _vptr(builder, ob, _I16),
                          align=2)
        else:
            builder.store(f, _vptr(builder, ob, _F32), align=4)
        for ph, v in ((pv, builder.add(pv, builder.trunc(ln, _v(_I32)))), (bad, bad1),
                      (t, builder.add(t, ir.Constant(_I64, 1)))):
            ph.add_incoming(v, builder.block)
        builder.branch(head)
        builder.position_at_end(done)
        pf, bf, tf = builder.phi(_v(_I32)), builder.phi(_v(_I1)), builder.phi(_I64)
        for ph, v in ((pf, pv), (bf, bad), (tf, t)):
            ph.add_incoming(v, head)
            ph.add_incoming(v, body)
        builder.store(pf, pp, align=4)
        flag = builder.zext(_vreduce_or(builder, bf), _I64)
        return context.make_tuple(builder, sig.return_type, [tf, flag])

    return sig, codegen


def usable(words) -> bool:
    """Whether ``decode_groups`` takes a stream of ``words``: bit positions below 2^30, so that a corrupt lane
    running on past its group's end (at most 57 bits a step, clamped reads) stays far below int32's end."""
    return words.size < 1 << 24


@numba.njit(nogil=True, cache=True)
def _decode_group_v(gi, words, lens, ks, word_start, g_first, n_elems, lane_symbols, center, out, out_base,
                    mode, step32, step64, status):
    """``golomb._decode_group`` with the full steps by ``egvrun`` (F32 into float32 ``out``, BF16 into uint16
    bits), the rest (a step ``egvrun`` leaves, the last partial step) by ``_eg_symbol`` lane by lane; any flag
    sends the group to ``_decode_group_checked``, as there."""
    gpos, lim, k, maxz, qlim, ends, n_g, base, bad = _group_setup(gi, lens, ks, word_start, g_first, n_elems,
                                                                 lane_symbols, out_base, mode)
    if not bad:
        pos32 = np.empty(LANES, np.int32)
        pos32[0] = np.int32(gpos)
        for j in range(1, LANES):
            pos32[j] = np.int32(ends[j - 1])
        steps, flag = egvrun(pos32, words.view(np.uint8), np.int64(lim), k, out, np.int64(base),
                             np.uint64(n_g // LANES), np.int64(center), step32, qlim, np.int64(maxz))
        bad = flag != 0
        t0 = np.int64(steps)
        for j in range(LANES):  # what the run left: a long code word's step on, and the last partial step
            pj, bj = _lane_rest(words, np.int64(pos32[j]), lim, k, t0, (n_g - j + LANES - 1) // LANES,
                                np.uint64(base + j + t0 * LANES), center, maxz, qlim, out, mode, step32, step64)
            bad |= bj | (pj != ends[j])
    if bad:
        _decode_group_checked(gi, words, lens, ks, word_start, g_first, n_elems, lane_symbols, center, out,
                              out_base, mode, step32, step64, status)


@numba.njit(parallel=True, nogil=True, cache=True)
def decode_groups(words, lens, ks, word_start, g_first, n_elems, lane_symbols, center, out, out_base, mode, step32,
                  step64, status):
    """``golomb._decode_groups`` with ``_decode_group_v``: F32 (float32 ``out``) or BF16 (uint16 ``out``)
    modes, ``usable(words)``. A kernel of its own, so that the scalar one never depends on the vector code
    compiling."""
    for g in prange(status.size):
        gi = np.int64(g)  # (int64 as in the typing before the parfor rewrite: one compiled signature, not two)
        _decode_group_v(gi, words, lens, ks, word_start, g_first, n_elems, lane_symbols, center, out, out_base,
                        mode, step32, step64, status)


decode_groups_serial = serial_twin(decode_groups)
