"""Prototype GPU decoder of ``ans`` payloads (spec 4.4): one warp per group, lane j = thread j.

Not part of the library (that is issue 12 part 2): it checks that the format decodes 32 lanes of a group
in a warp bit-exactly against the CPU decoder, and gives a first throughput number. Needs CuPy + an
NVIDIA GPU. Run: ``python tools/experiments/proto_gpu_ans.py [--n 67108864] [--shape 1.0] [--rel-step 0.0625]``.

Per step the warp does, for each phase, one shared-memory table lookup per lane, one ``__ballot_sync``
for "needs a word", a ``__popc`` prefix for each lane's word index, and coalesced 16-bit loads from the
group's word stream; outputs are bf16, 32 adjacent elements per warp store.
"""

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent.parent))

KERNEL = r"""
extern "C" __global__ void ans_decode_bf16(
    const unsigned short* __restrict__ words, const long long* __restrict__ wstart,
    const long long* __restrict__ wcount, const unsigned long long* __restrict__ table, int P,
    long long n_elems, int S, long long center, float step, int n_groups,
    unsigned short* __restrict__ out, int* __restrict__ status)
{
    extern __shared__ unsigned long long tab[];
    const int M = 1 << P;
    for (int i = threadIdx.x; i < M; i += blockDim.x) tab[i] = table[i];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int g = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (g >= n_groups) return;
    const long long gsize = 32LL * S, start = g * gsize;
    const long long ng = min(n_elems - start, gsize);
    const int A = (int)min(32LL, ng);
    const int T = (int)((ng + 31) / 32);
    const unsigned short* wp = words + wstart[g];
    const long long W = wcount[g];
    const unsigned lt_mask = (1u << lane) - 1u;
    const unsigned mask = (unsigned)M - 1u;
    int bad = W < 2 * A;
    unsigned x = 65536u;
    if (!bad && lane < A) {
        x = (unsigned)wp[2 * lane] | ((unsigned)wp[2 * lane + 1] << 16);
        bad |= x < 65536u;
    }
    long long p = 2 * A;
    for (int t = 0; t < T && !__any_sync(0xffffffffu, bad); ++t) {
        const bool active = lane < min(32LL, ng - 32LL * t);
        unsigned long long e = 0;
        // phase 1: token
        if (active) {
            e = tab[x & mask];
            x = (unsigned)(e & 0x7FFF) * (x >> P) + (unsigned)((e >> 15) & 0x3FFF);
        }
        bool need = active && x < 65536u;
        unsigned b = __ballot_sync(0xffffffffu, need);
        if (need) { long long i = p + __popc(b & lt_mask); x = (x << 16) | (i < W ? wp[i] : 0); }
        p += __popc(b);
        // phase 2: low raw bits
        const int nb = (int)((e >> 29) & 31);
        const int n1 = nb < 16 ? nb : 16;
        unsigned raw = x & ((1u << n1) - 1u);
        x >>= n1;
        need = active && x < 65536u;
        b = __ballot_sync(0xffffffffu, need);
        if (need) { long long i = p + __popc(b & lt_mask); x = (x << 16) | (i < W ? wp[i] : 0); }
        p += __popc(b);
        // phase 3: raw bits above 16 (rare: only for symbols >= 2^(17+m))
        if (__any_sync(0xffffffffu, nb > 16)) {
            const int n2 = nb > 16 ? nb - 16 : 0;
            raw |= (x & ((1u << n2) - 1u)) << 16;
            x >>= n2;
            need = active && x < 65536u;
            b = __ballot_sync(0xffffffffu, need);
            if (need) { long long i = p + __popc(b & lt_mask); x = (x << 16) | (i < W ? wp[i] : 0); }
            p += __popc(b);
        }
        if (active) {
            const long long uu = (long long)(e >> 34) + raw;
            const long long q = center + ((uu >> 1) ^ -(uu & 1));
            bad |= (q >= (1LL << 24)) || (q <= -(1LL << 24));
            float y = (float)q * step;  // binary32 product, then round to nearest even bf16
            unsigned yb = __float_as_uint(y);
            yb += 0x7FFFu + ((yb >> 16) & 1u);
            out[start + 32LL * t + lane] = (unsigned short)(yb >> 16);
        }
    }
    bad |= (p != W) || (lane < A && x != 65536u);
    bad = __any_sync(0xffffffffu, bad);
    if (lane == 0) status[g] = bad;
}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1 << 26)
    ap.add_argument("--shape", type=float, default=1.0)
    ap.add_argument("--rel-step", type=float, default=1 / 16)
    ap.add_argument("--warps", type=int, default=4, help="warps (groups) per block")
    args = ap.parse_args()
    import cupy as cp
    from scipy import stats

    from bslcodec.codecs import golomb, rans
    from bslcodec.pipeline import codec

    x = stats.gennorm.rvs(args.shape, scale=0.02, size=args.n, random_state=7).astype(np.float32)
    lt = codec.LossyTensor("w", x, "BF16")
    step = lt.step_for(codec.Settings(rel_step=args.rel_step))
    params, ks, lens, u = lt.code(step)
    model, _ = rans.build_model(u)
    payload = rans.encode(u, codec.ANS_LANE_SYMBOLS, model)
    S = codec.ANS_LANE_SYMBOLS
    P, s, m, table, W, wstart, words = rans.parse(payload, u.size, S)
    ref = np.empty(u.size, np.uint16)
    rans.decode_into(payload, u.size, S, params["center"], step, ref, "BF16")
    G = W.size
    d_words, d_ws, d_w = cp.asarray(np.ascontiguousarray(words)), cp.asarray(wstart[:-1]), cp.asarray(W)
    d_tab = cp.asarray(table.view(np.uint64))
    out = cp.empty(u.size, cp.uint16)
    status = cp.zeros(G, cp.int32)
    kern = cp.RawKernel(KERNEL, "ans_decode_bf16")
    shmem = 8 << P
    kern.max_dynamic_shared_size_bytes = shmem
    block = 32 * args.warps
    grid = (G + args.warps - 1) // args.warps
    fargs = (d_words, d_ws, d_w, d_tab, np.int32(P), np.int64(u.size), np.int32(S), np.int64(params["center"]),
             np.float32(step), np.int32(G), out, status)
    kern((grid,), (block,), fargs, shared_mem=shmem)
    cp.cuda.Device().synchronize()
    same = bool((out.get() == ref).all())
    ok = int(status.sum().get()) == 0
    # a corrupted word must flag its group
    bad_words = d_words.copy()
    bad_words[int(wstart[G // 2]) + 70] ^= 0x0100
    st2 = cp.zeros(G, cp.int32)
    kern((grid,), (block,), (bad_words,) + fargs[1:11] + (out, st2), shared_mem=shmem)
    flagged = int(st2.sum().get())
    kern((grid,), (block,), fargs, shared_mem=shmem)
    ev0, ev1 = cp.cuda.Event(), cp.cuda.Event()
    reps = 20
    ev0.record()
    for _ in range(reps):
        kern((grid,), (block,), fargs, shared_mem=shmem)
    ev1.record()
    ev1.synchronize()
    ms = cp.cuda.get_elapsed_time(ev0, ev1) / reps
    bpw = 8 * len(payload) / u.size
    eg_bpw = 8 * golomb.payload_size(codec.LANE_SYMBOLS, lens) / u.size
    print(f"{cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}: n={u.size:,} GG {args.shape} rel_step "
          f"{args.rel_step}: ans {bpw:.3f} b/w (eg {eg_bpw:.3f}), P={P} s={s} m={m}, {G} groups, "
          f"{args.warps} warps/block, shared {shmem // 1024} KiB")
    print(f"bit-exact vs CPU: {same}; status clean: {ok}; corrupted word flagged groups: {flagged}")
    print(f"decode {ms:.3f} ms = {u.size / ms / 1e6:.1f} Gsym/s = {2 * u.size / ms / 1e6:.0f} GB/s of bf16 output "
          f"(payload read {len(payload) / ms / 1e6:.0f} GB/s)")
    try:  # baseline on the same card: the library's eg decoder, same symbols
        import torch

        from bslcodec.gpu import decode_eg

        egp = torch.frombuffer(bytearray(golomb.encode(u, codec.LANE_SYMBOLS, ks, lens)), dtype=torch.uint8).cuda()
        o = decode_eg(egp, u.size, codec.LANE_SYMBOLS, step, params["center"], torch.bfloat16)
        torch.cuda.synchronize()
        assert (o.view(torch.int16).cpu().numpy().view(np.uint16) == ref).all()
        t0 = time.perf_counter()
        for _ in range(reps):
            decode_eg(egp, u.size, codec.LANE_SYMBOLS, step, params["center"], torch.bfloat16, out=o, check=False)
        torch.cuda.synchronize()
        ems = (time.perf_counter() - t0) / reps * 1e3
        print(f"eg GPU decoder (bslcodec.gpu.decode_eg, payload on the GPU, check=False): {ems:.3f} ms = "
              f"{2 * u.size / ems / 1e6:.0f} GB/s bf16")
    except Exception as exc:  # noqa: BLE001 - a baseline only
        print(f"eg GPU baseline skipped: {type(exc).__name__}: {exc}")
    t = time.perf_counter()
    rans.decode_into(payload, u.size, S, params["center"], step, ref, "BF16")
    print(f"CPU (numba, all cores of this host) decode: {2 * u.size / (time.perf_counter() - t) / 1e9:.2f} GB/s bf16")


if __name__ == "__main__":
    main()
