"""The ``ans`` / ``ans-dq`` decoder's usual step (``rans_dec._decode_group``) in LLVM vector IR (issue 19).

numba's LLVM leaves the 32-lane loop scalar, so ``vrun`` writes the step itself (a numba ``@intrinsic``):
the 32 lane states of a group are one ``<32 x i32>`` (states stay below 2^32, spec 4.4), and one step is

* ``slot = x & (2^P - 1)``; ``f | (slot - c) << 16`` and ``8 * token`` gathered per slot
  (``llvm.masked.gather`` of the tables ``slot_tables`` builds): ``x = f * (x >> P) + slot - c``;
* renormalisation: the lanes with ``x < 2^16`` read the next words in lane order, which is the stream
  order (lane j reads word ``p + (lanes before j that read)``), then ``p += popcount``. With AVX-512 VBMI2
  that is ``llvm.masked.expandload`` (``vpexpandw``), else a prefix popcount and a 32-bit gather per lane;
* the output bits and the next dq state gathered from the token table by (token, dq state), as the scalar
  step does; a raw-bit token in any lane stops the run *before* that step, which the scalar general step
  then decodes from the same states (it reads exactly what the vector step would have read up to there).

``vgrun`` is the general step the same way (tokens with up to 16 raw bits, the raw bits' own
renormalisation, the dq level and the output: ``rans_gen``, for fine-step and small payloads).

Each step reads at most one word a lane, all inside the group (the caller's ``p + 64 <= group end``, as in
the scalar step), so a run is bit-identical to the scalar loop on every payload, valid or not: same words
read, same outputs, same final states and word index. The generic vector types lower to whatever the
target has; ``SIMD`` says whether the decoder uses the run: only where LLVM emits hardware gathers for
them (AVX-512: F and BW). Elsewhere (AVX2 only, where LLVM scalarises gathers on most cores) the scalar
step is as fast or faster.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import os
import warnings

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, overload

from ..container.limits import LANES
from ..parallel import launch
from ..quantize.dq import NEXT_PACKED
from .rans_model import L

_I1, _I16, _I32, _I64 = ir.IntType(1), ir.IntType(16), ir.IntType(32), ir.IntType(64)
_F32 = ir.FloatType()
_U16, _U32 = np.uint64(16), np.uint64(32)
_NS = 8  # dq states a token-table entry per live token (rans_dec._NS)


def _target_features() -> set:
    """The CPU features numba compiles for (``NUMBA_CPU_FEATURES`` where set, else the host's)."""
    if config.CPU_FEATURES is not None:
        return {f[1:] for f in config.CPU_FEATURES.split(",") if f.startswith("+")}
    import llvmlite.binding as ll

    return {k for k, v in ll.get_host_cpu_features().items() if v}


_FEATURES = _target_features()
#: Whether ``rans_dec`` decodes the usual step with ``vrun`` and ``rans_enc`` encodes it with
#: ``rans_venc.venc_run`` (tests flip it to compare both paths)
SIMD = {"avx512f", "avx512bw"} <= _FEATURES and os.environ.get("BSLCODEC_ANS_SIMD", "1") != "0"


def disable(exc) -> None:
    """Turn the vector steps (decoder and encoder) off for this process (their code failed to compile:
    another numba / LLVM), once, with a warning; the scalar kernels give the same values and bytes."""
    global SIMD
    if SIMD:
        SIMD = False
        warnings.warn(f"bslcodec: the vector ans code did not compile ({type(exc).__name__}: "
                      f"{str(exc)[:200]}); using the scalar one", RuntimeWarning, stacklevel=3)


def launch_vector(kernel, serial, *args, work, status=None) -> bool:
    """``parallel.launch`` of a kernel built on the vector steps: True, or False where its code does not
    compile here; then the vector code is turned off (``disable``) and ``status`` (the kernel's per-group
    flags, where it has them) cleared for the scalar kernel the caller runs instead."""
    try:
        launch(kernel, serial, *args, work=work)
    except (numba.core.errors.NumbaError, RuntimeError) as exc:  # the vector code did not compile here
        disable(exc)
        if status is not None:
            status[:] = 0
        return False
    return True


#: Renormalise with ``llvm.masked.expandload`` (one ``vpexpandw``); without VBMI2 LLVM would scalarise it
EXPAND = "avx512vbmi2" in _FEATURES


def _v(t):
    return ir.VectorType(t, LANES)


def _const(t, c):
    return ir.Constant(_v(t), [c] * LANES)


def _splat(builder, val):
    v = builder.insert_element(ir.Constant(_v(val.type), None), val, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(_v(val.type), None), ir.Constant(_v(_I32), [0] * LANES))


def _vptr(builder, p, t):
    return builder.bitcast(p, ir.PointerType(_v(t)))


def _fn(builder, name, ret, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _gather(builder, base, idx, t, et=None, on=None):
    """``base[idx]`` per lane (elements of type ``et``, read as ``t``), lanes ``on`` only (0 elsewhere)."""
    ptrs = builder.gep(base, [idx], source_etype=et or t)
    ptrs.type = _v(base.type)  # llvmlite types a vector GEP as its scalar pointer
    # the pointer suffix is p0 (opaque pointers) or p0i32 (typed pointers, older LLVM)
    fn = _fn(builder, f"llvm.masked.gather.v{LANES}i{t.width}.v{LANES}{base.type.intrinsic_name}", _v(t),
             [_v(base.type), _I32, _v(_I1), _v(t)])
    mask, passthru = (_const(_I1, 1), ir.Constant(_v(t), None)) if on is None else (on, _const(t, 0))
    return builder.call(fn, [ptrs, ir.Constant(_I32, (et or t).width // 8), mask, passthru])


def _renorm(builder, xn, words, p):
    """Renormalisation of the states ``xn``: the lanes with ``xn < 2^16`` read the next words from ``words[p]``
    in lane order. Returns (states, words read (i32))."""
    rd = builder.icmp_unsigned("<", xn, _const(_I32, L))
    wp = builder.gep(words, [p])
    mbits = builder.bitcast(rd, _I32)
    if EXPAND:
        w = builder.call(_fn(builder, f"llvm.masked.expandload.v{LANES}i16", _v(_I16), [wp.type, _v(_I1), _v(_I16)]),
                         [wp, rd, ir.Constant(_v(_I16), None)])
        w = builder.zext(w, _v(_I32))
    else:  # 32-bit reads of word p + rank: the word after the last one read is still inside the group
        below = ir.Constant(_v(_I32), [(1 << j) - 1 for j in range(LANES)])
        rank = builder.call(_fn(builder, f"llvm.ctpop.v{LANES}i32", _v(_I32), [_v(_I32)]),
                            [builder.and_(_splat(builder, mbits), below)])
        w = _gather(builder, builder.bitcast(wp, ir.PointerType(_I32)), rank, _I32, _I16, rd)
        w = builder.and_(w, _const(_I32, 0xFFFF))
    xr = builder.select(rd, builder.or_(builder.shl(xn, _const(_I32, 16)), w), xn)
    return xr, builder.call(_fn(builder, "llvm.ctpop.i32", _I32, [_I32]), [mbits])


def _step(builder, xv, sv, p, ob, tabs, Pv, mask, wide):
    """One step in IR: (states, dq states, words read (i32), any raw-bit token (i1)); outputs stored at ``ob``."""
    words, sf, sk, tt = tabs
    slot = builder.and_(xv, mask)
    fb = _gather(builder, sf, slot, _I32)
    xn = builder.add(builder.mul(builder.and_(fb, _const(_I32, 0xFFFF)), builder.lshr(xv, Pv)),
                     builder.lshr(fb, _const(_I32, 16)))
    xr, cnt = _renorm(builder, xn, words, p)
    k8 = _gather(builder, sk, slot, _I32)
    if wide:  # binary32 output: rans_dec's 64-bit token table (bits | next state << 32 | raw bit 40)
        te = _gather(builder, tt, builder.add(builder.zext(k8, _v(_I64)), builder.zext(sv, _v(_I64))), _I64)
        builder.store(builder.trunc(te, _v(_I32)), _vptr(builder, ob, _I32), align=4)
        sn = builder.trunc(builder.and_(builder.lshr(te, _const(_I64, 32)), _const(_I64, 7)), _v(_I32))
        raw = builder.icmp_unsigned("!=", builder.and_(te, _const(_I64, 1 << 40)), _const(_I64, 0))
    else:  # bf16 output: bits | next state << 16 | raw << 31
        te = _gather(builder, tt, builder.add(k8, sv), _I32)
        builder.store(builder.trunc(te, _v(_I16)), _vptr(builder, ob, _I16), align=2)
        sn = builder.and_(builder.lshr(te, _const(_I32, 16)), _const(_I32, 7))
        raw = builder.icmp_signed("<", te, _const(_I32, 0))
    return xr, sn, cnt, builder.icmp_unsigned("!=", builder.bitcast(raw, _I32), ir.Constant(_I32, 0))


@intrinsic
def vrun(typingctx, x, st, words, p, pend, out, ebase, nsteps, sf, sk, tt, Pu):
    """Up to ``nsteps`` usual steps of a group's 32 lanes while ``p <= pend``, stopping before a step with a
    raw-bit token: ``x`` (uint32 states) and ``st`` (uint32 dq states) updated in place, outputs from
    ``out[ebase]`` on (32 a step). Returns (steps done, new word index)."""
    sig = types.UniTuple(types.uint64, 2)(x, st, words, p, pend, out, ebase, nsteps, sf, sk, tt, Pu)
    wide = tt.dtype == types.uint64

    def codegen(context, builder, sig, args):
        arr = [context.make_array(t)(context, builder, a) if isinstance(t, types.Array) else None
               for t, a in zip(sig.args, args)]
        p0, pend, ebase, nsteps, Pu = args[3], args[4], args[6], args[7], args[11]
        tabs = (arr[2].data, arr[8].data, arr[9].data, arr[10].data)
        P32 = builder.trunc(Pu, _I32)
        mask = _splat(builder, builder.sub(builder.shl(ir.Constant(_I32, 1), P32), ir.Constant(_I32, 1)))
        Pv = _splat(builder, P32)
        xp, sp = _vptr(builder, arr[0].data, _I32), _vptr(builder, arr[1].data, _I32)
        x0, s0 = builder.load(xp, align=4), builder.load(sp, align=4)
        entry = builder.block
        head, body, cont, done = (builder.append_basic_block(f"vrun.{n}") for n in ("head", "body", "cont", "done"))
        builder.branch(head)
        builder.position_at_end(head)
        xv, sv, p, t = builder.phi(_v(_I32)), builder.phi(_v(_I32)), builder.phi(_I64), builder.phi(_I64)
        for ph, v in ((xv, x0), (sv, s0), (p, p0), (t, ir.Constant(_I64, 0))):
            ph.add_incoming(v, entry)
        builder.cbranch(builder.and_(builder.icmp_unsigned("<", t, nsteps), builder.icmp_unsigned("<=", p, pend)),
                        body, done)
        builder.position_at_end(body)
        ob = builder.gep(arr[5].data, [builder.add(ebase, builder.shl(t, ir.Constant(_I64, 5)))])
        xr, sn, cnt, raw = _step(builder, xv, sv, p, ob, tabs, Pv, mask, wide)
        builder.cbranch(raw, done, cont)  # the step's outputs are written again by the general step
        builder.position_at_end(cont)
        for ph, v in ((xv, xr), (sv, sn), (p, builder.add(p, builder.zext(cnt, _I64))),
                      (t, builder.add(t, ir.Constant(_I64, 1)))):
            ph.add_incoming(v, cont)
        builder.branch(head)
        builder.position_at_end(done)
        builder.store(xv, xp, align=4)
        builder.store(sv, sp, align=4)
        return context.make_tuple(builder, sig.return_type, [t, p])

    return sig, codegen


def _gstep(builder, xv, sv, p, ob, words, sf, sb, Pv, mask, c, step, dq, bf16):
    """One general step (``rans_dec._general_step`` without raw bits above 16, then ``_emit``) in IR: the
    token and its renormalisation, its raw bits (``sb``: nb | base << 5 a slot) and theirs, the level (dq:
    ``dq.level`` and ``dq.next_state``), the output (binary32, or its bf16 bits rounded as ``store_dequant``
    does). Returns (states, dq states, new word index)."""
    slot = builder.and_(xv, mask)
    fb = _gather(builder, sf, slot, _I32)
    xn = builder.add(builder.mul(builder.and_(fb, _const(_I32, 0xFFFF)), builder.lshr(xv, Pv)),
                     builder.lshr(fb, _const(_I32, 16)))
    x1, c1 = _renorm(builder, xn, words, p)
    p = builder.add(p, builder.zext(c1, _I64))
    g = _gather(builder, sb, slot, _I32)
    nb = builder.and_(g, _const(_I32, 31))
    low = builder.and_(x1, builder.sub(builder.shl(_const(_I32, 1), nb), _const(_I32, 1)))
    x2, c2 = _renorm(builder, builder.lshr(x1, nb), words, p)
    p = builder.add(p, builder.zext(c2, _I64))
    u = builder.add(builder.lshr(g, _const(_I32, 5)), low)
    d = builder.xor(builder.lshr(u, _const(_I32, 1)), builder.sub(_const(_I32, 0), builder.and_(u, _const(_I32, 1))))
    sg = builder.sub(builder.zext(builder.icmp_signed(">", d, _const(_I32, 0)), _v(_I32)),
                     builder.zext(builder.icmp_signed("<", d, _const(_I32, 0)), _v(_I32)))
    lev = builder.sub(builder.shl(d, _const(_I32, 1)), builder.mul(builder.and_(sv, _const(_I32, 1)), sg))
    sh = builder.mul(builder.add(builder.shl(sv, _const(_I32, 1)), builder.and_(d, _const(_I32, 1))), _const(_I32, 3))
    nxt = builder.trunc(builder.and_(builder.lshr(_const(_I64, NEXT_PACKED), builder.zext(sh, _v(_I64))),
                                     _const(_I64, 7)), _v(_I32))
    dqv = _splat(builder, dq)
    q = builder.add(c, builder.select(dqv, lev, d))
    f = builder.fmul(builder.sitofp(q, _v(_F32)), step)
    if bf16:  # round to nearest even on the top 16 bits (store_dequant, mode 1)
        b = builder.bitcast(f, _v(_I32))
        b = builder.add(builder.add(b, _const(_I32, 0x7FFF)), builder.and_(builder.lshr(b, _const(_I32, 16)),
                                                                          _const(_I32, 1)))
        builder.store(builder.trunc(builder.lshr(b, _const(_I32, 16)), _v(_I16)), _vptr(builder, ob, _I16), align=2)
    else:
        builder.store(f, _vptr(builder, ob, _F32), align=4)
    return x2, builder.select(dqv, nxt, sv), p


@intrinsic
def vgrun(typingctx, x, st, words, p, pend, out, ebase, nsteps, sf, sb, Pu, center, step32, dq):
    """Up to ``nsteps`` general steps (tokens with up to 16 raw bits) of a group's 32 lanes while ``p <=
    pend``: ``x`` (uint32 states) and ``st`` (uint32 dq states, ``dq``) updated in place, the levels
    ``center`` + (dq) index dequantized by ``step32`` to ``out[ebase]`` on (float32, or uint16 bf16 bits).
    ``sf``: per slot f | (slot - c) << 16; ``sb``: per slot nb | base << 5 (nb <= 16). A step reads at
    most two words a lane: ``pend`` = group end - 65 keeps every read (also the 32-bit reads of the
    non-VBMI2 renormalisation) inside the group. The caller makes sure no level reaches 2^24 (no range
    check here). Returns (steps done, new word index)."""
    if out.dtype not in (types.float32, types.uint16):
        return None
    sig = types.UniTuple(types.uint64, 2)(x, st, words, p, pend, out, ebase, nsteps, sf, sb, Pu, center, step32, dq)
    bf16 = out.dtype == types.uint16

    def codegen(context, builder, sig, args):
        arr = [context.make_array(t)(context, builder, a) if isinstance(t, types.Array) else None
               for t, a in zip(sig.args, args)]
        p0, pend, ebase, nsteps, Pu, center, step32, dq = (args[i] for i in (3, 4, 6, 7, 10, 11, 12, 13))
        P32 = builder.trunc(Pu, _I32)
        mask = _splat(builder, builder.sub(builder.shl(ir.Constant(_I32, 1), P32), ir.Constant(_I32, 1)))
        Pv = _splat(builder, P32)
        c, step = _splat(builder, builder.trunc(center, _I32)), _splat(builder, step32)
        dq1 = builder.icmp_unsigned("!=", dq, ir.Constant(dq.type, 0))
        xp, sp = _vptr(builder, arr[0].data, _I32), _vptr(builder, arr[1].data, _I32)
        x0, s0 = builder.load(xp, align=4), builder.load(sp, align=4)
        entry = builder.block
        head, body, done = (builder.append_basic_block(f"vgrun.{n}") for n in ("head", "body", "done"))
        builder.branch(head)
        builder.position_at_end(head)
        xv, sv, p, t = builder.phi(_v(_I32)), builder.phi(_v(_I32)), builder.phi(_I64), builder.phi(_I64)
        for ph, v in ((xv, x0), (sv, s0), (p, p0), (t, ir.Constant(_I64, 0))):
            ph.add_incoming(v, entry)
        builder.cbranch(builder.and_(builder.icmp_unsigned("<", t, nsteps), builder.icmp_unsigned("<=", p, pend)),
                        body, done)
        builder.position_at_end(body)
        ob = builder.gep(arr[5].data, [builder.add(ebase, builder.shl(t, ir.Constant(_I64, 5)))])
        xr, sn, pn = _gstep(builder, xv, sv, p, ob, arr[2].data, arr[8].data, arr[9].data, Pv, mask, c, step, dq1,
                            bf16)
        for ph, v in ((xv, xr), (sv, sn), (p, pn), (t, builder.add(t, ir.Constant(_I64, 1)))):
            ph.add_incoming(v, builder.block)
        builder.branch(head)
        builder.position_at_end(done)
        builder.store(xv, xp, align=4)
        builder.store(sv, sp, align=4)
        return context.make_tuple(builder, sig.return_type, [t, p])

    return sig, codegen


@numba.njit(inline="always")
def slot_tables(tos, tinfo, ttab):
    """(sf, sk, tt) for ``vrun``: per slot f | (slot - c) << 16 and 8 * token (uint32); the BF16 token table
    as bits | next dq state << 16 | raw << 31 (uint32) from ``ttab`` (bits | next << 32 | raw bit 40)."""
    sf = np.empty(tos.size, np.uint32)
    sk = np.empty(tos.size, np.uint32)
    for slot in range(tos.size):
        k = np.uint64(tos[slot])
        e = tinfo[k]
        sf[slot] = np.uint32((e & np.uint64(0xFFFF)) | ((np.uint64(slot) - ((e >> _U16) & np.uint64(0xFFFF))) << _U16))
        sk[slot] = np.uint32(k * np.uint64(_NS))
    tt = np.empty(ttab.size, np.uint32)
    for i in range(ttab.size):
        e = ttab[i]
        raw = np.uint64(1 << 31) if e >> np.uint64(40) else np.uint64(0)
        tt[i] = np.uint32((e & np.uint64(0xFFFF)) | (((e >> _U32) & np.uint64(7)) << _U16) | raw)
    return sf, sk, tt


def token_table(out, ttab, tt):
    """The token table ``vrun`` reads for output array ``out``: ``ttab`` (64-bit) for binary32 output, else
    ``tt`` (``slot_tables``' 32-bit BF16 table); chosen when compiling, so that a decoder kernel compiles
    one vector group decoder per output type, not two."""
    return ttab if out.dtype == np.float32 else tt


@overload(token_table)
def _token_table(out, ttab, tt):
    if out.dtype == types.float32:
        return lambda out, ttab, tt: ttab
    return lambda out, ttab, tt: tt
