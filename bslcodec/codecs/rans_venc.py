"""The ``ans`` encoder's usual step (``rans_enc._encode_group``'s fast path) in LLVM vector IR (issue 18): the
mirror of ``rans_vec.vrun``, behind the same switch (``rans_vec.SIMD``, ``BSLCODEC_ANS_SIMD=0``).

``venc_run`` (a numba ``@intrinsic``) encodes a group's steps backwards, the 32 lane states one ``<32 x i32>``
(below 2^32, spec 4.4). One step of symbols ``u[b:b + 32]`` (all below the token table's 2^12 symbols, else
the run stops before it and the scalar step takes it):

* token and raw bit count ``nb`` (<= 16: groups of a table with more go to the scalar encoder) gathered per
  symbol (``rans_enc._token_lut``), ``f | c << 16`` gathered per token;
* phase 2, the raw bits: lanes with ``x >= 2^(32 - nb)`` emit ``x & 0xFFFF``, then ``x = x' << nb | raw``;
* phase 1: lanes with ``x >= f << (32 - P)`` emit, then ``x = (x // f) << P | x % f + c``. ``x // f`` is
  float32's ``x * (1 / f)`` (``vdivps``, ``vmulps``), then the remainder moves the quotient by one where it
  is off: for P >= 11 the estimate is within 0.38 of x / f (see ``quotient_estimate``), so the quotient is
  exact, as the scalar float64 one is (``rans_enc._coded_state``);
* the words: the scalar loops write the phase 2 words of lanes 31..0 backwards from ``q``, then phase 1's,
  so the stream holds, in lane order, phase 1's words then phase 2's: two compress-stores (``vpcompressw``
  with AVX-512 VBMI2, else ``vpcompressd`` into a buffer and a masked 16-bit store) at ``q - n1 - n2`` and
  ``q - n2``. The bytes are the scalar encoder's.
"""

from .. import jitcache

jitcache.install()  # before this module's cached kernels (bslcodec/jitcache.py)

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..container.limits import LANES
from . import rans_vec
from .rans_vec import _I1, _I16, _I32, _I64, _const, _fn, _gather, _splat, _v, _vptr

#: The smallest prob_bits ``venc_run`` takes (its float32 quotient is exact from there on)
P_MIN = 11


def quotient_estimate(x, f):
    """``venc_run``'s quotient estimate, in numpy (tests/test_rans_venc.py checks its bound on every f):
    trunc(fl32(fl32(x) * fl32(1 / f))). With u = 2^-24 each rounding is within a factor (1 + u), so the
    product is within x/f * ((1 + u)^3 - 1) < 2^(32 - P) * 3.0001 u <= 0.376 of x / f for P >= 11 (the state
    x < f * 2^(32 - P) when it is divided): the truncated estimate is q - 1, q or q + 1."""
    r = np.float32(1) / np.asarray(f).astype(np.float32)
    return (np.asarray(x).astype(np.float32) * r).astype(np.int64)


def _compress_store(builder, w32, on, dst, tmp):
    """The low 16 bits of ``w32`` (i32 lanes) of the lanes ``on``, in lane order, stored from ``dst`` on."""
    if rans_vec.EXPAND:  # one vpcompressw
        fn = _fn(builder, f"llvm.masked.compressstore.v{LANES}i16", ir.VoidType(), [_v(_I16), dst.type, _v(_I1)])
        builder.call(fn, [builder.trunc(w32, _v(_I16)), dst, on])
        return
    # without VBMI2 LLVM would scalarise a 16-bit compress: vpcompressd into ``tmp``, then the first
    # popcount words by a masked 16-bit store (AVX-512 BW)
    builder.call(_fn(builder, f"llvm.masked.compressstore.v{LANES}i32", ir.VoidType(), [_v(_I32), tmp.type, _v(_I1)]),
                 [w32, tmp, on])
    w = builder.trunc(builder.load(_vptr(builder, tmp, _I32), align=4), _v(_I16))
    cnt = builder.call(_fn(builder, "llvm.ctpop.i32", _I32, [_I32]), [builder.bitcast(on, _I32)])
    first = builder.icmp_unsigned("<", ir.Constant(_v(_I32), list(range(LANES))), _splat(builder, cnt))
    dst = _vptr(builder, dst, _I16)
    # the pointer suffix is p0 (opaque pointers) or p0v32i16 (typed pointers: older LLVM; newer ones remangle it)
    typed = getattr(ir.types, "ir_layer_typed_pointers_enabled", True)
    fn = _fn(builder, f"llvm.masked.store.v{LANES}i16.p0" + (f"v{LANES}i16" if typed else ""), ir.VoidType(),
             [_v(_I16), dst.type, _I32, _v(_I1)])
    builder.call(fn, [w, dst, ir.Constant(_I32, 2), first])


def _step(builder, xv, uv, q, tabs, Pv, sPv, tmp):
    """One step in IR: (new states, new q); its words stored below ``q``."""
    sd, lut, tp = tabs
    c16, cffff, one, zero = _const(_I32, 16), _const(_I32, 0xFFFF), _const(_I32, 1), _const(_I32, 0)
    pk = _gather(builder, lut, uv, _I32)
    nb = builder.lshr(pk, c16)
    raw = builder.and_(uv, builder.sub(builder.shl(one, nb), one))
    # phase 2: x >= 2^(32 - nb), as (x >> 16) >> (16 - nb) != 0 (a shift by 32 would be poison)
    e2 = builder.icmp_unsigned("!=", builder.lshr(builder.lshr(xv, c16), builder.sub(c16, nb)), zero)
    x2 = builder.or_(builder.shl(builder.select(e2, builder.lshr(xv, c16), xv), nb), raw)
    # phase 1: x >= f << (32 - P), as (x >> (32 - P)) >= f (f << (32 - P) is 2^32 for a one-token table)
    te = _gather(builder, tp, builder.and_(pk, cffff), _I32)
    f = builder.and_(te, cffff)
    e1 = builder.icmp_unsigned(">=", builder.lshr(x2, sPv), f)
    x3 = builder.select(e1, builder.lshr(x2, c16), x2)
    f32 = ir.FloatType()
    rc = builder.fdiv(ir.Constant(_v(f32), [1.0] * LANES), builder.uitofp(f, _v(f32)))
    qe = builder.fptoui(builder.fmul(builder.uitofp(x3, _v(f32)), rc), _v(_I32))
    rm = builder.sub(x3, builder.mul(qe, f))  # in (-f, 2f)
    neg = builder.icmp_signed("<", rm, zero)
    over = builder.icmp_signed(">=", rm, f)
    qe = builder.sub(builder.add(qe, builder.zext(over, _v(_I32))), builder.zext(neg, _v(_I32)))
    rm = builder.select(neg, builder.add(rm, f), builder.select(over, builder.sub(rm, f), rm))
    xn = builder.add(builder.add(builder.shl(qe, Pv), rm), builder.lshr(te, c16))
    ctpop = _fn(builder, "llvm.ctpop.i32", _I32, [_I32])
    q2 = builder.sub(q, builder.zext(builder.call(ctpop, [builder.bitcast(e2, _I32)]), _I64))
    q1 = builder.sub(q2, builder.zext(builder.call(ctpop, [builder.bitcast(e1, _I32)]), _I64))
    _compress_store(builder, xv, e2, builder.gep(sd, [q2]), tmp)
    _compress_store(builder, x2, e1, builder.gep(sd, [q1]), tmp)
    return xn, q1


@intrinsic
def venc_run(typingctx, x, u, base, nsteps, q, scratch, lut, tp, Pu):
    """Up to ``nsteps`` steps of symbols ``u[base - 32 i:][:32]`` (i = 0, 1, ...), words written backwards from
    ``scratch[q]``, stopping before a step with a symbol >= ``lut.size``; ``x`` (uint32 states) updated in
    place; ``tp``: f | c << 16 per token (uint32). Returns (steps done, new q)."""
    sig = types.UniTuple(types.uint64, 2)(x, u, base, nsteps, q, scratch, lut, tp, Pu)
    uw = u.dtype.bitwidth

    def codegen(context, builder, sig, args):
        arr = [context.make_array(t)(context, builder, a) if isinstance(t, types.Array) else None
               for t, a in zip(sig.args, args)]
        base, nsteps, q0, Pu = args[2], args[3], args[4], args[8]
        tabs = (arr[5].data, arr[6].data, arr[7].data)
        nlut = _splat(builder, builder.trunc(arr[6].nitems, _I32))
        tmp = builder.bitcast(cgutils.alloca_once(builder, ir.ArrayType(_I32, LANES)), ir.PointerType(_I32))
        P32 = builder.trunc(Pu, _I32)
        Pv, sPv = _splat(builder, P32), _splat(builder, builder.sub(ir.Constant(_I32, 32), P32))
        xp = _vptr(builder, arr[0].data, _I32)
        x0 = builder.load(xp, align=4)
        entry = builder.block
        head, body, cont, done = (builder.append_basic_block(f"venc.{n}") for n in ("head", "body", "cont", "done"))
        builder.branch(head)
        builder.position_at_end(head)
        xv, q, i = builder.phi(_v(_I32)), builder.phi(_I64), builder.phi(_I64)
        for ph, v in ((xv, x0), (q, q0), (i, ir.Constant(_I64, 0))):
            ph.add_incoming(v, entry)
        builder.cbranch(builder.icmp_unsigned("<", i, nsteps), body, done)
        builder.position_at_end(body)
        up = builder.gep(arr[1].data, [builder.sub(base, builder.shl(i, ir.Constant(_I64, 5)))])
        uv = builder.zext(builder.load(_vptr(builder, up, ir.IntType(uw)), align=uw // 8), _v(_I32))
        big = builder.bitcast(builder.icmp_unsigned(">=", uv, nlut), _I32)
        builder.cbranch(builder.icmp_unsigned("!=", big, ir.Constant(_I32, 0)), done, cont)
        builder.position_at_end(cont)
        xn, qn = _step(builder, xv, uv, q, tabs, Pv, sPv, tmp)
        for ph, v in ((xv, xn), (q, qn), (i, builder.add(i, ir.Constant(_I64, 1)))):
            ph.add_incoming(v, builder.block)
        builder.branch(head)
        builder.position_at_end(done)
        builder.store(xv, xp, align=4)
        return context.make_tuple(builder, sig.return_type, [i, q])

    return sig, codegen
