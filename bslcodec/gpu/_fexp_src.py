"""CUDA C source of the ``fexp`` GPU decoder (spec 4.5), compiled at run time through NVRTC (CuPy).

The same text compiles as plain C++ with ``-DBSL_HOST_EMU`` (g++), so tests run the kernels' per-thread
functions on the CPU where there is no GPU (as for ``eg``, see ``_kernel_src.py``).

One thread per lane (``tid = 32 g + j``): a warp is a group, and at step ``t`` its 32 threads write the
32 adjacent elements ``g*32S + 32t + 0..31``. Each thread keeps a 64-bit bit buffer of its lane (refilled
with one 32-bit word whenever fewer than 32 bits are left, i.e. once per two symbols at most); a symbol is
one lookup of the low 12 buffer bits in a 4096-entry table (symbol | length << 12) held in shared memory.
The raw rest bits of element ``e`` sit at bit ``B*e`` of the rest region: a funnel shift of two 32-bit
words (64-bit words for F64). Errors fold into a running minimum of code lengths (0 = no code word) and one
comparison of the lane's end with its declared length; every stream read is clamped into the payload, so a
corrupted payload never reads outside it.
"""

SOURCE = r"""
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
typedef unsigned short u16;

#ifdef BSL_HOST_EMU
#include <stdint.h>
#define BSL_DEV static inline
#define BSL_RESTRICT __restrict__
static inline u32 bsl_fshr(u32 lo, u32 hi, u32 s) { return (u32)((((u64)hi << 32) | lo) >> (s & 31)); }
static inline void bsl_atomic_or(int* p, int v) { *p |= v; }
#else
#define BSL_DEV __device__ __forceinline__
#define BSL_RESTRICT __restrict__
BSL_DEV u32 bsl_fshr(u32 lo, u32 hi, u32 s) { return __funnelshift_r(lo, hi, s); }
BSL_DEV void bsl_atomic_or(int* p, int v) { atomicOr(p, v); }
#endif

#define FEXP_ERR_CODE 1      /* bits that begin no code word */
#define FEXP_ERR_LANE_END 2  /* code words do not end at a lane's declared length */
#define FEXP_ERR_TOTAL 8     /* the lane table's word count differs from the payload's */

/* Words per group: offs[g + 1] = ceil(sum_j L[g][j] / 64); offs[0] = 0. */
BSL_DEV void fexp_group_words_thread(i64 g, const u32* BSL_RESTRICT lanes, i64 G, i64* BSL_RESTRICT offs)
{
    if (g == 0) offs[0] = 0;
    if (g >= G) return;
    const u32* p = lanes + 16 * g;
    u32 s = 0;
    for (int i = 0; i < 16; ++i) { u32 v = p[i]; s += (v & 0xFFFFu) + (v >> 16); }
    offs[g + 1] = (i64)((s + 63u) >> 6);
}

/* rest bits of element e: B (< 32 for IS 2 and 4, < 64 for IS 8) bits at bit B*e of the rest region */
template <int IS>
BSL_DEV u64 fexp_rest(const u32* BSL_RESTRICT rest, u32 B, i64 e)
{
    const u64 bp = (u64)B * (u64)e;
    if (IS == 8) {
        const u64* r = (const u64*)rest + (bp >> 6);
        const u32 s = (u32)(bp & 63);
        const u64 v = (r[0] >> s) | ((r[1] << 1) << (63 - s));
        return B >= 64 ? v : v & ((1ull << B) - 1ull);
    } else {
        const u32* r = rest + (bp >> 5);
        return (u64)(bsl_fshr(r[0], r[1], (u32)(bp & 31)) & ((1u << B) - 1u));
    }
}

template <int IS>
BSL_DEV void fexp_store(void* BSL_RESTRICT out, i64 e, u64 r)
{
    const int W = 8 * IS;
    const u64 v = (r >> 1) | ((r & 1ull) << (W - 1));
    if (IS == 2) ((u16*)out)[e] = (u16)v;
    else if (IS == 4) ((u32*)out)[e] = (u32)v;
    else ((u64*)out)[e] = v;
}

/* One lane. lut: 4096 entries (symbol | length << 12; 0 = no code word), in shared memory on the GPU.
   words: the code stream as u32 (n_words64 64-bit words + the zero word). */
template <int IS>
BSL_DEV void fexp_decode_thread(i64 t, const u16* BSL_RESTRICT lut, const u32* BSL_RESTRICT lanes,
                                const u32* BSL_RESTRICT words, i64 n_words64, const u32* BSL_RESTRICT rest,
                                u32 B, i64 n, int log2s, i64 G, const i64* BSL_RESTRICT offs,
                                void* BSL_RESTRICT out, int* BSL_RESTRICT err)
{
    const i64 g = t >> 5;
    const int j = (int)(t & 31);
    if (g >= G) return;
    if (t == 0 && offs[G] != n_words64) bsl_atomic_or(err, FEXP_ERR_TOTAL);
    const i64 gstart = g << (5 + log2s);
    const i64 rem = n - gstart;
    const i64 ng = rem < ((i64)32 << log2s) ? rem : ((i64)32 << log2s);
    const int cnt = ng > j ? (int)((ng - j + 31) >> 5) : 0;
    /* this lane's start: the group's first word, plus the lengths of the lanes before it */
    const u32* p = lanes + 16 * g;
    u32 pre = 0, len = 0;
    for (int i = 0; i < 16; ++i) {
        const u32 v = p[i], lo = v & 0xFFFFu, hi = v >> 16;
        pre += (2 * i < j ? lo : 0u) + (2 * i + 1 < j ? hi : 0u);
        len = 2 * i == j ? lo : (2 * i + 1 == j ? hi : len);
    }
    const i64 start = 64 * offs[g] + pre;
    const i64 last = 2 * n_words64 + 1;  /* the last u32 of the payload's stream (the zero word) */
    i64 wi = start >> 5;
    const u32 sh = (u32)(start & 31);
    #define FEXP_W(i) words[(i) < last ? (i) : last]
    u64 buf = ((u64)FEXP_W(wi) | ((u64)FEXP_W(wi + 1) << 32)) >> sh;
    int nb = 64 - (int)sh;
    i64 nx = wi + 2;
    u32 minent = 0xFFFFu;
    char* o = (char*)out;
    i64 e = gstart + j;
    int k = 0;
    for (; k + 1 < cnt; k += 2) {
        if (nb < 32) { buf |= (u64)FEXP_W(nx) << nb; nb += 32; ++nx; }
        const u32 a = lut[buf & 4095u];
        buf >>= (a >> 12); nb -= (int)(a >> 12);
        const u32 c = lut[buf & 4095u];
        buf >>= (c >> 12); nb -= (int)(c >> 12);
        minent = minent < a ? minent : a;
        minent = minent < c ? minent : c;
        fexp_store<IS>(o, e, ((u64)(a & 4095u) << B) | fexp_rest<IS>(rest, B, e));
        fexp_store<IS>(o, e + 32, ((u64)(c & 4095u) << B) | fexp_rest<IS>(rest, B, e + 32));
        e += 64;
    }
    if (k < cnt) {
        if (nb < 32) { buf |= (u64)FEXP_W(nx) << nb; nb += 32; ++nx; }
        const u32 a = lut[buf & 4095u];
        nb -= (int)(a >> 12);
        minent = minent < a ? minent : a;
        fexp_store<IS>(o, e, ((u64)(a & 4095u) << B) | fexp_rest<IS>(rest, B, e));
    }
    #undef FEXP_W
    const int bad = (minent < 4096u ? FEXP_ERR_CODE : 0) | (32 * nx - nb != start + len ? FEXP_ERR_LANE_END : 0);
    if (bad) bsl_atomic_or(err, bad);
}

#ifdef BSL_HOST_EMU
extern "C" void emu_group_words(const u32* lanes, i64 G, i64* offs) {
    for (i64 g = 0; g <= G; ++g) fexp_group_words_thread(g, lanes, G, offs);
}
extern "C" void emu_decode(int is, const u16* lut, const u32* lanes, const u32* words, i64 n_words64,
                           const u32* rest, u32 B, i64 n, int log2s, i64 G, const i64* offs, void* out, int* err) {
    for (i64 t = 0; t < 32 * G; ++t) {
        if (is == 2) fexp_decode_thread<2>(t, lut, lanes, words, n_words64, rest, B, n, log2s, G, offs, out, err);
        else if (is == 4) fexp_decode_thread<4>(t, lut, lanes, words, n_words64, rest, B, n, log2s, G, offs, out, err);
        else fexp_decode_thread<8>(t, lut, lanes, words, n_words64, rest, B, n, log2s, G, offs, out, err);
    }
}
#else
extern "C" __global__ void fexp_group_words(const u32* __restrict__ lanes, i64 G, i64* __restrict__ offs) {
    for (i64 g = blockIdx.x * (i64)blockDim.x + threadIdx.x; g <= G; g += (i64)gridDim.x * blockDim.x)
        fexp_group_words_thread(g, lanes, G, offs);
}
/* block = 256 threads (8 groups); the grid is capped and loops (grid-stride) */
#define FEXP_KERNEL(NAME, IS, MINB)                                                                        \
extern "C" __global__ void __launch_bounds__(256, MINB) NAME(                                              \
        const u16* __restrict__ glut, const u32* __restrict__ lanes, const u32* __restrict__ words,        \
        i64 n_words64, const u32* __restrict__ rest, u32 B, i64 n, int log2s, i64 G,                        \
        const i64* __restrict__ offs, void* __restrict__ out, int* __restrict__ err) {                     \
    __shared__ __align__(16) u16 lut[4096];                                                                \
    const uint4* src = (const uint4*)glut;                                                                 \
    for (int i = threadIdx.x; i < 512; i += blockDim.x) ((uint4*)lut)[i] = src[i];                          \
    __syncthreads();                                                                                       \
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < 32 * G; t += (i64)gridDim.x * blockDim.x) \
        fexp_decode_thread<IS>(t, lut, lanes, words, n_words64, rest, B, n, log2s, G, offs, out, err);     \
}
FEXP_KERNEL(fexp_decode_2, 2, 6)
FEXP_KERNEL(fexp_decode_4, 4, 6)
FEXP_KERNEL(fexp_decode_8, 8, 4)
/* Many tensors of one item size in one launch. desc: 16 int64 per job (0 lut, 1 lanes, 2 words,
   3 n_words64, 4 rest, 5 B, 6 n, 7 log2s, 8 G, 9 offs); blk0[i]: the first block of job i, a block being
   256 threads = 8 groups of one job, so each block loads its job's table once. Job i flags err[i]. */
#define FEXP_MANY_KERNEL(NAME, IS, MINB)                                                                   \
extern "C" __global__ void __launch_bounds__(256, MINB) NAME(                                              \
        const i64* __restrict__ desc, const i64* __restrict__ blk0, int n_jobs, int* __restrict__ err) {   \
    int lo = 0, hi = n_jobs - 1;                                                                           \
    const i64 b = blockIdx.x;                                                                              \
    while (lo < hi) {                                                                                      \
        const int mid = (lo + hi + 1) >> 1;                                                                \
        if (blk0[mid] <= b) lo = mid; else hi = mid - 1;                                                   \
    }                                                                                                      \
    const i64* d = desc + 16 * lo;                                                                         \
    __shared__ __align__(16) u16 lut[4096];                                                                \
    const uint4* src = (const uint4*)d[0];                                                                 \
    for (int i = threadIdx.x; i < 512; i += blockDim.x) ((uint4*)lut)[i] = src[i];                          \
    __syncthreads();                                                                                       \
    fexp_decode_thread<IS>((b - blk0[lo]) * blockDim.x + threadIdx.x, lut, (const u32*)d[1],              \
                           (const u32*)d[2], d[3], (const u32*)d[4], (u32)d[5], d[6], (int)d[7], d[8],     \
                           (const i64*)d[9], (void*)d[10], err + lo);                                     \
}
FEXP_MANY_KERNEL(fexp_decode_many_2, 2, 6)
FEXP_MANY_KERNEL(fexp_decode_many_4, 4, 6)
FEXP_MANY_KERNEL(fexp_decode_many_8, 8, 4)
/* for the benchmark: other occupancies */
FEXP_KERNEL(fexp_decode_2_occ4, 2, 4)
FEXP_KERNEL(fexp_decode_2_occ8, 2, 8)
#endif
"""
