"""Experiment (issue 19): the vector usual step with one 64-bit gather a lane, from a (slot, dq state) table.

``rans_vec.vrun`` gathers three tables a lane (f | slot - c and 8 * token by slot, then the token table by
token and dq state). Here one table of 2^P x 8 entries (512 KB at P = 13) gives all of it: output bits (low 32),
next dq state, raw flag, f - 1 and slot - c. Fewer gathers, but the table no longer fits L1.

    PYTHONPATH=. python tools/experiments/ans_vec_bigtable.py
"""

import os
import sys
import tempfile
import time

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from bslcodec.codecs import rans, rans_dec, rans_vec
from bslcodec.codecs.golomb import _step32
from bslcodec.codecs.rans_dec import _NS, _emit, _fill_token_table, _general_step
from bslcodec.codecs.rans_model import L
from bslcodec.codecs.rans_vec import (
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
from bslcodec.container.limits import LANES

_U16, _U32 = np.uint64(16), np.uint64(32)


def _step(builder, xv, sv, p, ob, words, big, Pv, mask, wide):
    slot = builder.and_(xv, mask)
    idx = builder.add(builder.shl(slot, _const(_I32, 3)), sv)
    e = _gather(builder, big, idx, _I64)
    lo = builder.trunc(e, _v(_I32))
    hi = builder.trunc(builder.lshr(e, _const(_I64, 32)), _v(_I32))
    f = builder.add(builder.and_(builder.lshr(hi, _const(_I32, 4)), _const(_I32, 0x3FFF)), _const(_I32, 1))
    xn = builder.add(builder.mul(f, builder.lshr(xv, Pv)), builder.lshr(hi, _const(_I32, 18)))
    rd = builder.icmp_unsigned("<", xn, _const(_I32, L))
    wp = builder.gep(words, [p])
    mbits = builder.bitcast(rd, _I32)
    w = builder.call(_fn(builder, f"llvm.masked.expandload.v{LANES}i16", _v(_I16), [wp.type, _v(ir.IntType(1)), _v(_I16)]),
                     [wp, rd, ir.Constant(_v(_I16), None)])
    xr = builder.select(rd, builder.or_(builder.shl(xn, _const(_I32, 16)), builder.zext(w, _v(_I32))), xn)
    if wide:
        builder.store(lo, _vptr(builder, ob, _I32), align=4)
    else:
        builder.store(builder.trunc(lo, _v(_I16)), _vptr(builder, ob, _I16), align=2)
    sn = builder.and_(hi, _const(_I32, 7))
    raw = builder.icmp_unsigned("!=", builder.and_(hi, _const(_I32, 8)), _const(_I32, 0))
    cnt = builder.call(_fn(builder, "llvm.ctpop.i32", _I32, [_I32]), [mbits])
    return xr, sn, cnt, builder.icmp_unsigned("!=", builder.bitcast(raw, _I32), ir.Constant(_I32, 0))


@intrinsic
def vrun_big(typingctx, x, st, words, p, pend, out, ebase, nsteps, big, Pu):
    sig = types.UniTuple(types.uint64, 2)(x, st, words, p, pend, out, ebase, nsteps, big, Pu)
    wide = out.dtype == types.float32

    def codegen(context, builder, sig, args):
        arr = [context.make_array(t)(context, builder, a) if isinstance(t, types.Array) else None
               for t, a in zip(sig.args, args)]
        p0, pend, ebase, nsteps, Pu = args[3], args[4], args[6], args[7], args[9]
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
        xr, sn, cnt, raw = _step(builder, xv, sv, p, ob, arr[2].data, arr[8].data, Pv, mask, wide)
        builder.cbranch(raw, done, cont)
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


@numba.njit(nogil=True)
def big_table(tos, tinfo, ttab, mode):
    big = np.empty(tos.size * _NS, np.uint64)
    for slot in range(tos.size):
        k = np.uint64(tos[slot])
        e = tinfo[k]
        f = e & np.uint64(0xFFFF)
        bias = np.uint64(slot) - ((e >> _U16) & np.uint64(0xFFFF))
        for s in range(_NS):
            te = ttab[k * np.uint64(_NS) + np.uint64(s)]
            bits = te & (np.uint64(0xFFFF) if mode == 1 else np.uint64(0xFFFFFFFF))
            raw = np.uint64(8) if te >> np.uint64(40) else np.uint64(0)
            hi = ((te >> _U32) & np.uint64(7)) | raw | ((f - np.uint64(1)) << np.uint64(4)) | (bias << np.uint64(18))
            big[slot * _NS + s] = bits | (hi << _U32)
    return big


@numba.njit(nogil=True)
def _group(gi, words, W, wstart, tos, tinfo, big, P, n_elems, lane_symbols, center, out, mode, step32, step64,
           status, has_hi, dq):
    gsize = LANES * lane_symbols
    mask = (np.uint64(1) << np.uint64(P)) - np.uint64(1)
    Pu = np.uint64(P)
    g = gi
    start = g * gsize
    ng = min(n_elems, start + gsize) - start
    A = min(LANES, ng)
    T = (ng + LANES - 1) // LANES
    w0 = np.uint64(wstart[g])
    wend = w0 + np.uint64(W[g])
    x = np.empty(LANES, np.uint64)
    ent = np.empty(LANES, np.uint64)
    low = np.empty(LANES, np.uint64)
    qs = np.empty(LANES, np.int32)
    st = np.zeros(LANES, np.int32)
    x32 = np.zeros(LANES, np.uint32)
    st32 = np.zeros(LANES, np.uint32)
    c32 = np.int32(center)
    for j in range(A):
        x32[j] = np.uint32(np.uint64(words[w0 + np.uint64(2 * j)]) | (np.uint64(words[w0 + np.uint64(2 * j + 1)]) << _U16))
    p = w0 + np.uint64(2 * A)
    last = wend - np.uint64(1)
    t = 0
    while t < T:
        lt = min(LANES, ng - LANES * t)
        ebase = np.uint64(start + LANES * t)
        if lt == LANES and p + np.uint64(2 * LANES) <= wend:
            k, p = vrun_big(x32, st32, words, p, wend - np.uint64(2 * LANES), out, ebase, np.uint64(ng // LANES - t),
                            big, Pu)
            if k:
                t += np.int64(k)
                continue
        for j in range(LANES):
            x[j] = np.uint64(x32[j])
            st[j] = np.int32(st32[j])
        p = _general_step(x, st, lt, ent, low, qs, tos, tinfo, words, p, last, mask, Pu, c32, has_hi, dq)
        _emit(out, ebase, qs, lt, mode, step32, step64)
        for j in range(LANES):
            x32[j] = np.uint32(x[j])
            st32[j] = np.uint32(st[j])
        t += 1
    status[gi] = 0 if p == wend else 4


@numba.njit(nogil=True)
def decode_big(words, W, wstart, tos, tinfo, P, n_elems, lane_symbols, center, out, mode, step32, step64, status,
               has_hi, dq):
    ttab = np.empty(tinfo.size * _NS, np.uint64)
    _fill_token_table(tinfo, center, mode, step32, step64, dq, ttab)
    big = big_table(tos, tinfo, ttab, mode)
    for gi in range(status.size):
        _group(gi, words, W, wstart, tos, tinfo, big, P, n_elems, lane_symbols, center, out, mode, step32, step64,
               status, has_hi, dq)


def main():
    import ml_dtypes

    import bslcodec
    from bslcodec.files.source import _Source
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    from bench_load import gg

    n = 1 << 24
    rng = np.random.default_rng(0)
    path = os.path.join(tempfile.mkdtemp(), "w.bsl")
    bslcodec.save_file({"w": gg(rng, n, 1.0).reshape(4096, -1).astype(ml_dtypes.bfloat16)}, path, bits=4)
    src = _Source(path=path)
    e = src.entry("w")
    pl = src.payload(e, verify=False)
    S, c, stp, dq = e.params["lane_symbols"], e.params["center"], e.params["step"], e.codec == "ans-dq"
    P, s_, m, freqs, W, wstart, words = rans.parse(pl, n, S)
    tos, tinfo, has_hi, _ = rans_dec.tables(P, s_, m, freqs)
    print(e.codec, "P", P, "tokens", tinfo.size)
    numba.set_num_threads(1)
    for mode, dt in (("BF16", np.uint16), ("F32", np.float32)):
        a, b = np.empty(n, dt), np.empty(n, dt)
        status = np.zeros(W.size, np.uint8)

        def new(b=b, mode=mode, status=status):
            decode_big(words, W, wstart, tos, tinfo, P, n, S, np.int64(c), b, rans_dec.MODES[mode], _step32(stp),
                       np.float64(stp), status, has_hi, dq)

        def cur(simd, a=a, mode=mode):
            rans_vec.SIMD = simd
            rans.decode_into(pl, n, S, c, stp, a, mode, dq=dq)
        new()
        cur(True)
        print(mode, "identical", a.tobytes() == b.tobytes(), int(status.max()))
        for name, fn in (("scalar", lambda: cur(False)), ("vrun", lambda: cur(True)), ("big", new)) * 2:
            ts = []
            for _ in range(5):
                t0 = time.process_time()
                fn()
                ts.append(time.process_time() - t0)
            print(f"{mode} {name}: {n / min(ts) / 1e6:.0f} M weights/s, load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
