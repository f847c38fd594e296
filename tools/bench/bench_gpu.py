"""Benchmark of the GPU ``eg`` decoder (bslcodec.gpu) against plain copies, on synthetic weights.

    PYTHONPATH=. python tools/bench/bench_gpu.py --n 1000000000 --md results/gpu_decode.md

Weights: generalized Gaussian (shape 0.8), drawn on the GPU; quantized with step = std / step_div
(center 0) into zigzag symbols; encoded on the CPU by the Numba encoder below (bit-identical to
``bslcodec.codecs.golomb_ref.encode_payload``, checked by tests/test_gpu.py and again here on a small input).
Timings: CUDA events, median of --reps runs after a warm-up. Every decode is compared bit for bit
with ``fl32(float32(q) * step)`` rounded to bf16 by torch on the GPU.
Also in the same run: (a) pinned host->device copy of the bf16 weights, (b) device->device copy.
"""

import argparse
import math
import os
import sys
import time

import numba
import numpy as np
from llvmlite import ir
from numba import cuda, prange
from numba.core import types
from numba.extending import intrinsic

LANES = 32


# ---------------------------------------------------------------- fast CPU encoder (Numba)
@intrinsic
def _ctlz64(typingctx, x):
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))
    return sig, codegen


@numba.njit(inline="always")
def _floor_log2(v):
    return 63 - _ctlz64(np.int64(v))  # v >= 1


@numba.njit(inline="always")
def _code_len(u, k):
    return 2 * _floor_log2(np.int64(u) + (np.int64(1) << k)) - k + 1


@numba.njit(parallel=True, cache=True)
def choose_orders(u, lane_symbols):
    """Per group, the order near log2(mean u) (5 candidates) giving the fewest bits on every 4th symbol."""
    n = u.size
    gsize = LANES * lane_symbols
    g_count = (n + gsize - 1) // gsize
    ks = np.zeros(g_count, np.uint8)
    for g in prange(g_count):
        start = g * gsize
        end = min(n, start + gsize)
        mean = 0.0
        for e in range(start, end):
            mean += u[e]
        mean /= end - start
        k0 = _floor_log2(np.int64(mean) + 1)
        best_k, best = 0, np.int64(1) << 62
        for k in range(max(0, k0 - 2), min(24, k0 + 2) + 1):
            bits = np.int64(0)
            for e in range(start, end, 4):
                bits += _code_len(u[e], k)
            if bits < best:
                best, best_k = bits, k
        ks[g] = best_k
    return ks


@numba.njit(parallel=True, cache=True)
def _lane_lengths(u, lane_symbols, ks):
    n = u.size
    gsize = LANES * lane_symbols
    g_count = ks.size
    lens = np.zeros(g_count * LANES, np.int64)
    for g in prange(g_count):
        k = np.int64(ks[g])
        start = g * gsize
        end = min(n, start + gsize)
        for j in range(LANES):
            s = np.int64(0)
            for e in range(start + j, end, LANES):
                s += _code_len(u[e], k)
            lens[g * LANES + j] = s
    return lens


@numba.njit(parallel=True, cache=True)
def _write_words(u, lane_symbols, ks, word0, words):
    n = u.size
    gsize = LANES * lane_symbols
    for g in prange(ks.size):
        k = np.int64(ks[g])
        start = g * gsize
        end = min(n, start + gsize)
        pos = word0[g] * 64
        for j in range(LANES):
            for e in range(start + j, end, LANES):
                v = np.int64(u[e]) + (np.int64(1) << k)
                nb = _floor_log2(v)
                z = nb - k
                # stream order, LSB first: z zeros, a one, then the nb low bits of v
                val = np.uint64((np.int64(1) << z) | ((v - (np.int64(1) << nb)) << (z + 1)))
                length = 2 * nb - k + 1
                w = pos >> 6
                b = np.uint64(pos & 63)
                words[w] |= val << b
                if (pos & 63) + length > 64:
                    words[w + 1] |= val >> (np.uint64(64) - b)
                pos += length


def encode_fast(u, lane_symbols, ks=None):
    """(payload bytes as a uint8 array, orders) of symbols ``u`` (non-negative ints < 2^25)."""
    u = np.ascontiguousarray(u, dtype=np.uint32)
    if ks is None:
        ks = choose_orders(u, lane_symbols)
    ks = np.ascontiguousarray(ks, dtype=np.uint8)
    g_count = ks.size
    lens = _lane_lengths(u, lane_symbols, ks)
    if lens.size and lens.max() >= 1 << 16:
        raise ValueError("a lane is longer than 65535 bits")
    wpg = (lens.reshape(g_count, LANES).sum(axis=1) + 63) // 64
    word0 = np.zeros(g_count + 1, np.int64)
    np.cumsum(wpg, out=word0[1:])
    head = 65 * g_count
    head_padded = head + (-head % 8)
    out = np.zeros(head_padded + 8 * (int(word0[-1]) + 1), np.uint8)
    out[:64 * g_count] = lens.astype("<u2").view(np.uint8)
    out[64 * g_count:head] = ks
    _write_words(u, lane_symbols, ks, word0, out[head_padded:].view("<u8"))
    return out, ks


# ---------------------------------------------------------------- numba-cuda variant (for comparison)
def _f32_bits(y):  # CUDA simulator stand-in; numba_cuda_decoder swaps in libdevice.float_as_int
    return np.float32(y).view(np.int32)


def _numba_dec(lens16, ks8, words32, n_elems, log2s, G, offs, n_words, step, center, out16, err):
    """numba-cuda kernel body (jitted in numba_cuda_decoder): same thread-per-lane algorithm."""
    tid = cuda.grid(1)
    g = tid >> 5
    j = tid & 31
    if g >= G:
        return
    before = 0
    for i in range(j):
        before += np.int64(lens16[32 * g + i]) & 0xFFFF
    mine = np.int64(lens16[32 * g + j]) & 0xFFFF
    k = np.int64(ks8[g])
    lane_start = 64 * offs[g] + before
    lane_end = lane_start + mine
    gsize = 32 << log2s
    base = g * gsize
    ng = min(n_elems - base, gsize)
    count = ((ng - 1 - j) >> 5) + 1 if j < ng else 0
    last = 2 * n_words + 1
    wi = lane_start >> 5
    off = np.uint64(lane_start & 31)
    m32 = np.uint64(0xFFFFFFFF)
    w0 = np.uint64(np.int64(words32[min(wi, last)]) & 0xFFFFFFFF)
    w1 = np.uint64(np.int64(words32[min(wi + 1, last)]) & 0xFFFFFFFF)
    w2 = np.uint64(np.int64(words32[min(wi + 2, last)]) & 0xFFFFFFFF)
    wi += 3
    bad = k > 24
    one = np.uint64(1)
    for t in range(count):
        win = (w0 | (w1 << np.uint64(32))) >> off
        if off != np.uint64(0):
            win |= w2 << (np.uint64(64) - off)
        z = cuda.ffs(np.uint32(win & m32)) - 1
        if z < 0 or z > 25 - k:
            bad = True
            break
        nb = z + k
        r = np.int64((win >> np.uint64(z + 1)) & ((one << np.uint64(nb)) - one))
        u = r + (1 << nb) - (1 << k)
        off += np.uint64(z + 1 + nb)
        while off >= np.uint64(32):
            w0 = w1
            w1 = w2
            w2 = np.uint64(np.int64(words32[min(wi, last)]) & 0xFFFFFFFF)
            wi += 1
            off -= np.uint64(32)
        q = center + ((u >> 1) ^ -(u & 1))
        if q >= (1 << 24) or q <= -(1 << 24):
            bad = True
        y = np.float32(np.float32(q) * step)
        b = np.int64(_f32_bits(y)) & 0xFFFFFFFF
        out16[base + j + 32 * t] = np.int16(((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF)
    if bad or 32 * (wi - 3) + np.int64(off) != lane_end:
        cuda.atomic.or_(err, 0, 1)


def numba_cuda_decoder():
    """The same thread-per-lane algorithm written with numba-cuda (bf16 output only)."""
    global _f32_bits
    if not cuda.is_available() or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pass
    else:
        from numba.cuda import libdevice
        _f32_bits = libdevice.float_as_int
    dec = cuda.jit(_numba_dec)

    def run(buf, n_elems, lane_symbols, step, center, out, offs, err, G, head_padded, n_words):
        import torch
        lens16 = cuda.as_cuda_array(buf[:64 * G].view(torch.int16))
        ks8 = cuda.as_cuda_array(buf[64 * G:65 * G])
        words32 = cuda.as_cuda_array(buf[head_padded:].view(torch.int32))
        o16 = cuda.as_cuda_array(out.view(torch.int16))
        threads = 32 * G
        dec[(threads + 255) // 256, 256](lens16, ks8, words32, n_elems, lane_symbols.bit_length() - 1, G,
                                         cuda.as_cuda_array(offs), n_words, np.float32(step), center,
                                         o16, cuda.as_cuda_array(err))
    run.kernel = dec
    return run


# ---------------------------------------------------------------- benchmark
def _median_ms(fn, reps, torch):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(2_000_000)  # keep the GPU busy while Python enqueues: time GPU work only
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times)), float(np.min(times)), float(np.max(times))


def _bench_numba(buf, payload, n, s, step, out, ref, reps, torch):
    """Time the numba-cuda variant on the same payload: (median, min, max ms, bit-exact)."""
    from bslcodec.gpu._eg import eg_layout
    run = numba_cuda_decoder()
    g_count, head_padded, n_words = eg_layout(payload.size, n, s)
    lens = torch.from_numpy(payload[:64 * g_count].view("<u2").astype(np.int64)).cuda()
    offs = torch.zeros(g_count + 1, dtype=torch.int64, device="cuda")
    offs[1:] = torch.cumsum((lens.view(g_count, 32).sum(1) + 63) // 64, 0)
    err = torch.zeros(1, dtype=torch.int32, device="cuda")
    out.fill_(float("nan"))

    def go():
        run(buf, n, s, step, 0, out, offs, err, g_count, head_padded, n_words)
    go()
    torch.cuda.synchronize()
    exact = torch.equal(out.view(torch.int16), ref.view(torch.int16)) and int(err.item()) == 0
    return (*_median_ms(go, reps, torch), exact)


def make_symbols(n, step_div, torch, seed=0, device="cuda"):
    """GG(shape 0.8) weights on the GPU -> (u int32 on GPU, step float32, bf16 reference on GPU)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    beta = 0.8
    std = math.sqrt(math.gamma(3 / beta) / math.gamma(1 / beta))  # std of the unit-scale GG
    step = float(np.float32(std / step_div))
    u = torch.empty(n, dtype=torch.int32, device=device)
    ref = torch.empty(n, dtype=torch.bfloat16, device=device)
    step_t = torch.tensor(step, dtype=torch.float32, device=device)
    chunk = 1 << 27
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        a = torch.full((m,), 1 / beta, device=device)
        mag = torch._standard_gamma(a, generator=gen) ** (1 / beta)
        sign = torch.rand(m, device=device, generator=gen) < 0.5
        q = torch.round(torch.where(sign, -mag, mag) / step_t).to(torch.int32)
        u[s:s + m] = torch.where(q >= 0, 2 * q, -2 * q - 1)
        ref[s:s + m] = (q.to(torch.float32) * step_t).to(torch.bfloat16)  # one rounding, then RNE
    return u, step, ref


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000_000)
    ap.add_argument("--lane-symbols", default="512,256,1024")
    ap.add_argument("--step-div", type=float, default=8.0)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--numba", action="store_true", help="also time the numba-cuda variant (first S)")
    ap.add_argument("--variants", default="prefetch,occ4,occ8,clamped",
                    help="also time these kernel variants (eg_decode_bf16_<name>, first S)")
    ap.add_argument("--md", default=None, help="write the markdown table here")
    ap.add_argument("--profile", action="store_true", help="one decode per S, no baselines (for ncu)")
    args = ap.parse_args(argv)

    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
    from bslcodec.codecs import golomb_ref
    from bslcodec.gpu import decode_eg

    # the fast encoder must agree with the reference, byte for byte
    rng = np.random.default_rng(1)
    small = rng.geometric(0.2, 16 * 32 * 3 + 77).astype(np.uint32)
    p_fast, ks = encode_fast(small, 16)
    assert p_fast.tobytes() == golomb_ref.encode_payload(small, 16, ks), "encoder differs from golomb_ref"

    dev = torch.cuda.get_device_name()
    n = args.n
    t0 = time.time()
    u_gpu, step, ref = make_symbols(n, args.step_div, torch)
    torch.cuda.synchronize()
    u = u_gpu.cpu().numpy().view(np.uint32)
    del u_gpu
    print(f"{dev}: {n} symbols drawn in {time.time() - t0:.1f} s, step {step:.6g}", flush=True)
    out_bytes = 2 * n
    rows = []
    for si, s in enumerate(int(x) for x in args.lane_symbols.split(",")):
        t0 = time.time()
        payload, ks = encode_fast(u, s)
        t_enc = time.time() - t0
        bpw = 8 * payload.size / n
        pinned = torch.from_numpy(payload).pin_memory()
        buf = torch.empty(payload.size, dtype=torch.uint8, device="cuda")
        h2d_ms = _median_ms(lambda: buf.copy_(pinned, non_blocking=True), 3, torch)[0] if not args.profile else 0
        buf.copy_(pinned)
        out = torch.full((n,), float("nan"), dtype=torch.bfloat16, device="cuda")
        decode_eg(buf, n, s, step, 0, torch.bfloat16, out=out)  # compiles, checks the error flag
        exact = torch.equal(out.view(torch.int16), ref.view(torch.int16))
        if args.profile:
            print(f"S={s}: exact={exact}", flush=True)
            continue
        med, lo, hi = _median_ms(lambda: decode_eg(buf, n, s, step, 0, torch.bfloat16, out=out, check=False),
                                 args.reps, torch)
        exact = exact and torch.equal(out.view(torch.int16), ref.view(torch.int16))  # after the timed runs too
        row = dict(impl="NVRTC CUDA C", S=s, bpw=bpw, ms=med, lo=lo, hi=hi, exact=exact,
                   enc=t_enc, h2d=h2d_ms)
        rows.append(row)
        print(f"S={s}: {bpw:.3f} bits/weight, encode {t_enc:.1f} s, decode {med:.3f} ms "
              f"({out_bytes / med / 1e6:.0f} GB/s bf16), exact={exact}", flush=True)
        if args.variants and si == 0:
            import bslcodec.gpu._eg as eg
            default = eg._KERNEL_OF_DTYPE[torch.bfloat16]
            for name in args.variants.split(","):
                eg._KERNEL_OF_DTYPE[torch.bfloat16] = f"eg_decode_bf16_{name}"
                out.fill_(float("nan"))
                m = _median_ms(lambda: decode_eg(buf, n, s, step, 0, torch.bfloat16, out=out, check=False),
                               args.reps, torch)
                ex = torch.equal(out.view(torch.int16), ref.view(torch.int16))
                print(f"  variant {name}: {m[0]:.3f} ms ({out_bytes / m[0] / 1e6:.0f} GB/s), exact={ex}", flush=True)
                rows.append(dict(row, impl=f"NVRTC CUDA C, variant {name}", ms=m[0], lo=m[1], hi=m[2], exact=ex))
            eg._KERNEL_OF_DTYPE[torch.bfloat16] = default
        if args.numba and si == 0:
            try:
                r = _bench_numba(buf, payload, n, s, step, out, ref, args.reps, torch)
                rows.append(dict(row, impl="numba-cuda (same algorithm)", ms=r[0], lo=r[1], hi=r[2], exact=r[3]))
                print(f"numba-cuda S={s}: {r[0]:.3f} ms ({out_bytes / r[0] / 1e6:.0f} GB/s), exact={r[3]}",
                      flush=True)
            except Exception as e:  # the comparison must not sink the run
                print(f"numba-cuda variant failed: {type(e).__name__}: {e}", flush=True)
        del buf, pinned, out
    if args.profile:
        return

    # baselines: (a) pinned host->device of the bf16 weights, (b) device->device copy of them
    host = torch.empty(n, dtype=torch.bfloat16, pin_memory=True)
    dst = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    h2d = _median_ms(lambda: dst.copy_(host, non_blocking=True), 3, torch)
    d2d = _median_ms(lambda: dst.copy_(ref), args.reps, torch)
    gbs = lambda ms: out_bytes / ms / 1e6  # noqa: E731
    lines = [
        f"Device: {dev}; torch {torch.__version__}; n = {n:,} GG(shape 0.8) weights, step = std/{args.step_div:g}, "
        f"center 0; bf16 output ({out_bytes / 1e9:.2f} GB). Median of {args.reps} runs (CUDA events).",
        "",
        "| what | S | bits/weight | time ms (median; min-max) | GB/s of bf16 output | vs D2D copy | bit-exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| decode_eg, {r['impl']} | {r['S']} | {r['bpw']:.3f} | {r['ms']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}) "
                     f"| {gbs(r['ms']):.0f} | {d2d[0] / r['ms']:.2f} | {'yes' if r['exact'] else 'NO'} |")
    lines.append(f"| (a) pinned H2D copy of the bf16 weights | | 16 | {h2d[0]:.3f} | {gbs(h2d[0]):.0f} | "
                 f"{d2d[0] / h2d[0]:.2f} | |")
    lines.append(f"| (b) D2D copy of the bf16 weights | | 16 | {d2d[0]:.3f} | {gbs(d2d[0]):.0f} | 1.00 | |")
    for r in rows:
        if r["impl"] == "NVRTC CUDA C":
            lines.append(f"| pinned H2D of the S={r['S']} payload (compressed) | {r['S']} | {r['bpw']:.3f} | "
                         f"{r['h2d']:.3f} | {gbs(r['h2d']):.0f} (output-equivalent) | | |")
    lines.append("")
    lines.append("CPU encode time (Numba, this machine): " +
                 ", ".join(f"S={r['S']} {r['enc']:.1f} s" for r in rows if r["impl"] == "NVRTC CUDA C"))
    text = "\n".join(lines)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
