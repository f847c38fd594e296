"""CUDA C source of the ``ans`` GPU decoder (spec 4.4), compiled at run time through NVRTC (CuPy).

One warp decodes one group: lane ``j`` is rANS coder ``j`` of the group, so at step ``t`` the warp writes
the 32 adjacent elements ``g*32S + 32t + 0..31``. Every phase of the spec's decoding loop is one
``__ballot_sync`` ("which lanes renormalise") and a ``__popc`` prefix for each lane's word index, in the
exact order of the spec (lanes in order, phase after phase), so the words are consumed exactly as the
CPU decoder consumes them.

One launch decodes any number of tensors (``ans_decode``): a descriptor per tensor, each block works on
up to ``blockDim.x / 32`` groups of one tensor and first copies that tensor's slot table (``2^P`` packed
64-bit entries, ``rans.slot_table``) into shared memory.

Word supply: each word is read from global memory at the moment a lane needs it; the reads of a warp are
adjacent 16-bit words, so they are served by L1 lines that neighbouring reads already brought in.

``ans-dq`` payloads (spec 4.6) use the same kernel with the descriptor's dq field set: each lane keeps
its dependent-quantization state in a register (the lane is the state machine's chain), two extra
instructions a symbol; the v1 and ring variants do not read that field (ans only).

Kernels: ``ans_decode`` (v2, the default) and, for ``tools/bench/bench_gpu_ans.py``, ``ans_decode_v1`` (the first
version: 64-bit table fields, runtime output type, predicates on every step; ncu found it issue-bound at
~100 instructions a step) and ``ans_decode_ring`` (v1 with a 256-word ring per warp in shared memory,
refilled from registers loaded ~10 steps ahead: slower, 443 against 554 GB/s for v1 on an H100).

Checks (flags per tensor, or-ed into ``err[tensor]``): a group with fewer words than its lane states,
an initial state below 2^16, a group that does not end with ``p == W`` and every lane in state 2^16,
and ``|q| >= 2^24``. Reads never leave the group's words: the host checked every group's extent, and
a word index at or past ``W`` (a payload whose states ask for more words than it declares: up to 3 a symbol,
which ran up to ~200 KB past a group's end, past the buffer for the last one) reads 0 instead; such a
group cannot end with ``p == W`` and is flagged.
"""

from ._kernel_src import PRELUDE

ERR_SHORT, ERR_STATE, ERR_END, ERR_RANGE = 1, 2, 4, 8
DESC_FIELDS = 16  # int64 fields per tensor descriptor (see the kernel's D_* indices)
D_WORDS, D_WCOUNT, D_WSTART, D_TABLE, D_P, D_N, D_LOG2S, D_G, D_CENTER, D_STEP, D_OUT, D_MODE, D_DQ = range(13)

SOURCE = PRELUDE + r"""
#define ANS_ERR_SHORT 1
#define ANS_ERR_STATE 2
#define ANS_ERR_END 4
#define ANS_ERR_RANGE 8
#define ANS_FULL 0xFFFFFFFFu

template <bool RING>
__device__ __forceinline__ void ans_decode_block(const i64* __restrict__ d, int* __restrict__ err, i64 bi,
                                                 unsigned long long* smem)
{
    const u32* __restrict__ gwords = (const u32*)d[0];     /* the payload's word area (4-byte aligned) */
    const u32* __restrict__ wcount = (const u32*)d[1];     /* W[g] */
    const i64* __restrict__ wstart = (const i64*)d[2];     /* first word of group g (even) */
    const u64* __restrict__ table = (const u64*)d[3];
    const int P = (int)d[4];
    const i64 n_elems = d[5];
    const int log2s = (int)d[6];
    const i64 G = d[7];
    const int center = (int)d[8];
    const float step = __int_as_float((int)d[9]);
    char* __restrict__ out = (char*)d[10];
    const int mode = (int)d[11];

    const int M = 1 << P;
    for (int i = threadIdx.x; i < M; i += blockDim.x) smem[i] = table[i];
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const i64 g = bi * (blockDim.x >> 5) + warp;
    if (g >= G) return;

    u32* ring32 = (u32*)(smem + M) + warp * 128;
    const unsigned short* ring16 = (const unsigned short*)ring32;
    const u32 lt = (1u << lane) - 1u;
    const u32 mask = (u32)M - 1u;
    const i64 gsize = (i64)32 << log2s;
    const i64 start = g * gsize;
    const i64 ng = min(n_elems - start, gsize);
    const int A = (int)min((i64)32, ng);
    const int T = (int)((ng + 31) >> 5);
    const i64 W64 = (i64)wcount[g];
    const int W = (int)min(W64, (i64)1 << 30);
    const int n32 = (W + 1) >> 1;             /* 32-bit words of the group, its pad word included */
    const u32* __restrict__ gw = gwords + (wstart[g] >> 1);
    const unsigned short* __restrict__ gw16 = (const unsigned short*)gw;
    int errs = 0;
    if (W64 < 2 * A) {                        /* warp-uniform */
        if (lane == 0) atomicOr(err, ANS_ERR_SHORT);
        return;
    }
    if (W64 > 2 * A + 3 * ng) {               /* more words than 3 a symbol: cannot end at W */
        if (lane == 0) atomicOr(err, ANS_ERR_END);
        return;
    }
    u32 x = 65536u;
    if (lane < A) {
        x = gw[lane];                         /* w[2j] + 2^16 w[2j+1] */
        if (x < 65536u) errs |= ANS_ERR_STATE;
    }
    int p = 2 * A;                            /* next word to consume (each symbol reads <= 3 words) */
    int loaded = 2 * A;                       /* RING: words before this one are in the ring */
    u32 pre0 = 0, pre1 = 0;
    if (RING) {
        const int i0 = (loaded >> 1) + lane;
        pre0 = i0 < n32 ? gw[i0] : 0u;
        pre1 = i0 + 32 < n32 ? gw[i0 + 32] : 0u;
    }
#define ANS_WORD(i) (RING ? (u32)ring16[(i) & 255] : ((i) < W ? (u32)gw16[(i)] : 0u))
#define ANS_RENORM()                                                        \
    {                                                                       \
        const bool need = active && x < 65536u;                             \
        const u32 b = __ballot_sync(ANS_FULL, need);                        \
        if (need) x = (x << 16) | ANS_WORD(p + __popc(b & lt));             \
        p += __popc(b);                                                     \
    }
    for (int t = 0; t < T; ++t) {
        if (RING) {
            bool filled = false;
            while (loaded - p < 96 && loaded < W) {   /* warp-uniform */
                ring32[((loaded >> 1) + lane) & 127] = pre0;
                pre0 = pre1;
                const int nx = (loaded >> 1) + 64 + lane;
                pre1 = nx < n32 ? gw[nx] : 0u;
                loaded += 64;
                filled = true;
            }
            if (filled) __syncwarp();
        }
        const bool active = (i64)lane < ng - 32 * (i64)t;
        u64 e = 0;
        if (active) {                                  /* phase 1: token */
            e = smem[x & mask];
            x = (u32)(e & 0x7FFFu) * (x >> P) + (u32)((e >> 15) & 0x3FFFu);
        }
        ANS_RENORM()
        const u32 nb = (u32)(e >> 29) & 31u;           /* phase 2: low raw bits */
        const u32 n1 = nb < 16u ? nb : 16u;
        u32 raw = x & ((1u << n1) - 1u);
        x >>= n1;
        ANS_RENORM()
        if (__any_sync(ANS_FULL, nb > 16u)) {          /* phase 3: raw bits above 16 (rare) */
            const u32 n2 = nb > 16u ? nb - 16u : 0u;
            raw |= (x & ((1u << n2) - 1u)) << 16;
            x >>= n2;
            ANS_RENORM()
        }
        if (active) {
            const u32 uu = (u32)(e >> 34) + raw;
            const int q = center + (int)((uu >> 1) ^ (0u - (uu & 1u)));
            if (q >= (1 << 24) || q <= -(1 << 24)) errs |= ANS_ERR_RANGE;
            const float y = bsl_fmul_rn((float)q, step);
            const i64 k = start + 32 * (i64)t + lane;
            if (mode == 0) bsl_store<0>(out + 4 * k, y);
            else if (mode == 1) bsl_store<1>(out + 2 * k, y);
            else bsl_store<2>(out + 2 * k, y);
        }
    }
#undef ANS_RENORM
#undef ANS_WORD
    if (p != W || (lane < A && x != 65536u)) errs |= ANS_ERR_END;
    errs = __reduce_or_sync(ANS_FULL, errs);
    if (lane == 0 && errs) atomicOr(err, errs);
}

/* blk0[i]: first block of tensor i (blk0[n] = grid size); desc: 16 int64 per tensor; tensor i or-s its
   error flags into err[err_stride * i]. */
template <bool RING>
__device__ __forceinline__ void ans_decode_many(const i64* __restrict__ desc, const i64* __restrict__ blk0,
                                                int n, int* __restrict__ err, int err_stride)
{
    extern __shared__ unsigned long long smem[];
    int lo = 0, hi = n - 1;
    const i64 b = blockIdx.x;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (blk0[mid] <= b) lo = mid; else hi = mid - 1;
    }
    ans_decode_block<RING>(desc + 16 * lo, err + err_stride * lo, b - blk0[lo], smem);
}

/* ---- the default kernel (v2): fewer instructions per step than ans_decode_block (v1).
   GPU table entry (Prepared.gpu_table): low word f | (slot - c) << 15, high word nb | base << 5, so each
   field is one shift or mask; the output type is a template parameter; full steps (all 32 lanes active:
   every step but the last of the last group) run without predicates; |q| is checked once per lane from
   a running min / max; the output pointer advances by 32 elements a step. */
#define ANS2_RENORM(ACT)                                                    \
    {                                                                       \
        const bool need = (ACT) && x < 65536u;                              \
        const u32 b = __ballot_sync(ANS_FULL, need);                        \
        const int wi = p + __popc(b & lt);    /* past W: a lying payload */ \
        if (need) x = (x << 16) | (wi < W ? (u32)gw16[wi] : 0u);            \
        p += __popc(b);                                                     \
    }
#define ANS2_STEP(ACT)                                                      \
    {                                                                       \
        u32 lo = 0, hi = 0;                                                 \
        if (ACT) {                                                          \
            const uint2 en = tab[x & mask];                                 \
            lo = en.x; hi = en.y;                                           \
            x = (lo & 0x7FFFu) * (x >> P) + (lo >> 15);                     \
        }                                                                   \
        ANS2_RENORM(ACT)                                                    \
        const u32 nb = hi & 31u;                                            \
        const u32 n1 = nb < 16u ? nb : 16u;                                 \
        u32 raw = x & ((1u << n1) - 1u);                                    \
        x >>= n1;                                                           \
        ANS2_RENORM(ACT)                                                    \
        if (__any_sync(ANS_FULL, nb > 16u)) {                               \
            const u32 n2 = nb > 16u ? nb - 16u : 0u;                        \
            raw |= (x & ((1u << n2) - 1u)) << 16;                           \
            x >>= n2;                                                       \
            ANS2_RENORM(ACT)                                                \
        }                                                                   \
        if (ACT) {                                                          \
            const u32 uu = (hi >> 5) + raw;                                 \
            const int kk = (int)((uu >> 1) ^ (0u - (uu & 1u)));             \
            int q = center + kk;                                            \
            if (DQ) {                  /* spec 4.6: level from the state */ \
                q += kk - (dqs & 1) * ((kk > 0) - (kk < 0));                \
                dqs = (int)((0xD0BF42999BD0ull >> (3 * (2 * dqs + (kk & 1)))) & 7ull); \
            }                                                               \
            qmin = min(qmin, q);                                            \
            qmax = max(qmax, q);                                            \
            const float y = bsl_fmul_rn((float)q, step);                    \
            if (MODE == 0) *(float*)o = y;                                  \
            else if (MODE == 1) *(unsigned short*)o = bsl_to_f16(y);        \
            else *(unsigned short*)o = bsl_to_bf16(y);                      \
        }                                                                   \
    }

template <int MODE, bool DQ>
__device__ __forceinline__ int ans_group_v2(const uint2* __restrict__ tab, const int P,
                                            const u32* __restrict__ gw, const int W, const int A, const i64 ng,
                                            const int center, const float step, char* __restrict__ o,
                                            const int lane)
{
    const unsigned short* __restrict__ gw16 = (const unsigned short*)gw;
    const u32 lt = (1u << lane) - 1u;
    const u32 mask = (1u << P) - 1u;
    int errs = 0;
    u32 x = 65536u;
    if (lane < A) {
        x = gw[lane];
        if (x < 65536u) errs |= ANS_ERR_STATE;
    }
    int p = 2 * A;
    int qmin = center, qmax = center;
    int dqs = 0;                                   /* dependent-quantization state of this lane (DQ) */
    const int full = (int)(ng >> 5);
    const int step_bytes = MODE == 0 ? 128 : 64;   /* 32 elements of the output type */
    for (int t = 0; t < full; ++t) {
        ANS2_STEP(true)
        o += step_bytes;
    }
    if (ng & 31) {
        const bool active = lane < (int)(ng & 31);
        ANS2_STEP(active)
    }
    if (p != W || (lane < A && x != 65536u)) errs |= ANS_ERR_END;
    if (qmin <= -(1 << 24) || qmax >= (1 << 24)) errs |= ANS_ERR_RANGE;
    return errs;
}

__device__ __forceinline__ void ans_decode_block_v2(const i64* __restrict__ d, int* __restrict__ err, i64 bi,
                                                    uint2* smem)
{
    const u32* __restrict__ gwords = (const u32*)d[0];
    const u32* __restrict__ wcount = (const u32*)d[1];
    const i64* __restrict__ wstart = (const i64*)d[2];
    const uint2* __restrict__ table = (const uint2*)d[3];
    const int P = (int)d[4];
    const i64 n_elems = d[5];
    const int log2s = (int)d[6];
    const i64 G = d[7];
    const int center = (int)d[8];
    const float step = __int_as_float((int)d[9]);
    char* __restrict__ out = (char*)d[10];
    const int mode = (int)d[11];
    const bool dq = d[12] != 0;                    /* ans-dq (spec 4.6): dependent-quantization levels */
    const int M = 1 << P;
    for (int i = threadIdx.x; i < M; i += blockDim.x) smem[i] = table[i];
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const i64 g = bi * (blockDim.x >> 5) + warp;
    if (g >= G) return;
    const i64 gsize = (i64)32 << log2s;
    const i64 start = g * gsize;
    const i64 ng = min(n_elems - start, gsize);
    const int A = (int)min((i64)32, ng);
    const i64 W64 = (i64)wcount[g];
    int errs;
    if (W64 < 2 * A) errs = ANS_ERR_SHORT;
    else if (W64 > 2 * A + 3 * ng) errs = ANS_ERR_END;   /* more words than 3 a symbol: cannot end at W */
    else {
        const u32* __restrict__ gw = gwords + (wstart[g] >> 1);
        const int W = (int)W64;
#define ANS2_GROUP(MODE, DQ, ISZ) \
        ans_group_v2<MODE, DQ>(smem, P, gw, W, A, ng, center, step, out + ISZ * (start + lane), lane)
        if (!dq) {
            if (mode == 0) errs = ANS2_GROUP(0, false, 4);
            else if (mode == 1) errs = ANS2_GROUP(1, false, 2);
            else errs = ANS2_GROUP(2, false, 2);
        } else {
            if (mode == 0) errs = ANS2_GROUP(0, true, 4);
            else if (mode == 1) errs = ANS2_GROUP(1, true, 2);
            else errs = ANS2_GROUP(2, true, 2);
        }
#undef ANS2_GROUP
    }
    errs = __reduce_or_sync(ANS_FULL, errs);
    if (lane == 0 && errs) atomicOr(err, errs);
}

extern "C" __global__ void __launch_bounds__(512)
ans_decode(const i64* __restrict__ desc, const i64* __restrict__ blk0, int n, int* __restrict__ err, int err_stride)
{
    extern __shared__ uint2 smem2[];
    int lo = 0, hi = n - 1;
    const i64 b = blockIdx.x;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (blk0[mid] <= b) lo = mid; else hi = mid - 1;
    }
    ans_decode_block_v2(desc + 16 * lo, err + err_stride * lo, b - blk0[lo], smem2);
}

/* variants for tools/bench/bench_gpu_ans.py (they read Prepared.table, the CPU decoder's packing):
   v1, the first version, words read where needed; v1 with the shared-memory word ring */
extern "C" __global__ void __launch_bounds__(512)
ans_decode_v1(const i64* __restrict__ desc, const i64* __restrict__ blk0, int n, int* __restrict__ err, int err_stride)
{ ans_decode_many<false>(desc, blk0, n, err, err_stride); }

extern "C" __global__ void __launch_bounds__(512)
ans_decode_ring(const i64* __restrict__ desc, const i64* __restrict__ blk0, int n, int* __restrict__ err,
                int err_stride)
{ ans_decode_many<true>(desc, blk0, n, err, err_stride); }
"""
