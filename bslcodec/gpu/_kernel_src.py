"""CUDA C source of the ``eg`` GPU decoder (spec 4.3), compiled at run time through NVRTC (CuPy).

Kept as a Python string so that it ships inside the wheel with no package-data rules. The same text
also compiles as plain C++ with ``-DBSL_HOST_EMU`` (``g++``): the tests run the kernels' per-thread
functions on the CPU that way, so the decoding logic is checked where there is no GPU.

Layout of the work: one thread per lane (``tid = 32 g + j``), so a warp is one group and at step ``t``
its 32 threads write the 32 adjacent elements ``g*32S + 32t + 0..31`` (a coalesced store). Each thread
reads its own lane bits from a three-word (3 x 32-bit) window; a code word is at most 51 bits and the
window offset stays below 32, so two funnel shifts give the 64 bits after the read position.
Errors are not branches in the hot loop: they are OR-ed into two flags and reported once per lane.
"""

SOURCE = r"""
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#ifdef BSL_HOST_EMU
/* ---- plain C++ stand-ins for the CUDA built-ins used below (CPU emulation for tests) ---- */
#include <stdint.h>
#include <string.h>
#define BSL_DEV static inline
#define BSL_RESTRICT __restrict__
static inline int bsl_ffs(u32 x) { return __builtin_ffs((int)x); }
static inline u32 bsl_fshr(u32 lo, u32 hi, u32 s) { return (u32)((((u64)hi << 32) | lo) >> (s & 31)); }
static inline float bsl_fmul_rn(float a, float b) { volatile float p = a * b; return p; }
static inline u32 bsl_shl(u32 x, u32 s) { return s >= 32 ? 0u : x << s; }
static inline unsigned short bsl_to_bf16(float y) {
    u32 b; memcpy(&b, &y, 4);                    /* inputs are never NaN (q and step are finite) */
    return (unsigned short)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}
static inline unsigned short bsl_to_f16(float y) {
    _Float16 h = (_Float16)y; unsigned short r; memcpy(&r, &h, 2); return r;
}
static inline void bsl_atomic_or(int* p, int v) { *p |= v; }
#else
#define BSL_DEV __device__ __forceinline__
#define BSL_RESTRICT __restrict__
BSL_DEV int bsl_ffs(u32 x) { return __ffs((int)x); }
BSL_DEV u32 bsl_fshr(u32 lo, u32 hi, u32 s) { return __funnelshift_r(lo, hi, s); }
BSL_DEV float bsl_fmul_rn(float a, float b) { return __fmul_rn(a, b); }
BSL_DEV u32 bsl_shl(u32 x, u32 s) { return x << s; }  /* shl.b32 clamps: s >= 32 gives 0 */
BSL_DEV unsigned short bsl_to_bf16(float y) {
    unsigned short r; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(y)); return r;
}
BSL_DEV unsigned short bsl_to_f16(float y) {
    unsigned short r; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(y)); return r;
}
BSL_DEV void bsl_atomic_or(int* p, int v) { atomicOr(p, v); }
#endif

#define BSL_ERR_CODE 1      /* a zero run longer than 25 - k, or k > 24 */
#define BSL_ERR_LANE_END 2  /* code words do not end at the lane's declared length */
#define BSL_ERR_RANGE 4     /* |q| >= 2^24 */
#define BSL_ERR_TOTAL 8     /* the lane table's word count differs from the payload's */

/* Words per group: offs[g + 1] = ceil(sum_j L[g][j] / 64); offs[0] = 0. A cumulative sum of offs
   then gives each group's first 64-bit word (and the total at offs[G]). */
BSL_DEV void eg_group_words_thread(i64 g, const unsigned char* BSL_RESTRICT payload, i64 G,
                                   i64* BSL_RESTRICT offs)
{
    if (g == 0) offs[0] = 0;
    if (g >= G) return;
    const u32* p = (const u32*)(payload + 64 * g);
    u32 s = 0;
    for (int i = 0; i < 16; ++i) { u32 v = p[i]; s += (v & 0xFFFFu) + (v >> 16); }
    offs[g + 1] = (i64)((s + 63u) >> 6);
}

/* MODE: 0 = float32, 1 = float16, 2 = bfloat16 output. */
template <int MODE>
BSL_DEV void eg_decode_thread(i64 tid, const unsigned char* BSL_RESTRICT payload, i64 n_elems,
                              int log2s, i64 G, const i64* BSL_RESTRICT offs, i64 head_padded,
                              i64 n_words, float step, int center, void* BSL_RESTRICT out,
                              int* BSL_RESTRICT err)
{
    const i64 g = tid >> 5;
    const int j = (int)(tid & 31);
    if (g >= G) return;
    if (tid == 0 && offs[G] != n_words) bsl_atomic_or(err, BSL_ERR_TOTAL);

    /* lane start inside the group: sum of the lengths of lanes 0..j-1 (same 64 bytes for the whole
       warp, so these loads are broadcasts) */
    const u32* lens = (const u32*)(payload + 64 * g);
    u32 before = 0, mine = 0;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        const u32 v = lens[i];
        const u32 a = v & 0xFFFFu, b = v >> 16;
        before += (2 * i < j ? a : 0u) + (2 * i + 1 < j ? b : 0u);
        mine += (2 * i == j ? a : 0u) + (2 * i + 1 == j ? b : 0u);
    }
    const u32 k = payload[64 * G + g];
    const i64 lane_start = 64 * offs[g] + before;
    const i64 lane_end = lane_start + mine;

    const i64 gsize = (i64)32 << log2s;
    const i64 base = g * gsize;
    i64 ng = n_elems - base;
    if (ng > gsize) ng = gsize;
    const int count = (j < ng) ? (int)((ng - 1 - j) >> 5) + 1 : 0;

    /* the stream as 32-bit words; reads are clamped to the last one (the trailing zero word), so a
       corrupted table can make a lane decode garbage (and be rejected) but never read out of bounds */
    const u32* words = (const u32*)(payload + head_padded);
    const i64 last = 2 * n_words + 1;
    i64 wi = lane_start >> 5;
    u32 off = (u32)(lane_start & 31);
    u32 w0 = words[wi < last ? wi : last]; ++wi;
    u32 w1 = words[wi < last ? wi : last]; ++wi;
    u32 w2 = words[wi < last ? wi : last]; ++wi;

    bool bad = k > 24u;
    bool range_bad = false;
    const u32 zmax = 25u - k;            /* wraps (huge) when k > 24: already flagged */
    const u32 pk = bsl_shl(1u, k);

    /* output pointer of this lane's first element */
    unsigned short* o16 = (unsigned short*)out + base + j;
    float* o32 = (float*)out + base + j;

#pragma unroll 2
    for (int t = 0; t < count; ++t) {
        const u32 lo = bsl_fshr(w0, w1, off);    /* stream bits off .. off+31 */
        const u32 hi = bsl_fshr(w1, w2, off);    /* stream bits off+32 .. off+63 */
        const u32 z = (u32)(bsl_ffs(lo) - 1);    /* zero run; 0xFFFFFFFF when lo == 0 */
        bad |= z > zmax;
        const u32 n = z + k;
        const u32 pn = bsl_shl(1u, n);
        const u32 r = bsl_fshr(lo, hi, z + 1) & (pn - 1u);  /* n <= 25 bits after the marker */
        const u32 u = r + pn - pk;
        off += z + 1 + n;
        if (off >= 32) { w0 = w1; w1 = w2; w2 = words[wi < last ? wi : last]; ++wi; off -= 32; }
        if (off >= 32) { w0 = w1; w1 = w2; w2 = words[wi < last ? wi : last]; ++wi; off -= 32; }
        const int q = center + (int)((u >> 1) ^ (0u - (u & 1u)));   /* zigzag inverse */
        range_bad |= (u32)(q + 0xFFFFFF) > 0x1FFFFFEu;             /* |q| >= 2^24 */
        const float y = bsl_fmul_rn((float)q, step);                /* one RNE rounding */
        if (MODE == 0) { *o32 = y; o32 += 32; }
        else if (MODE == 1) { *o16 = bsl_to_f16(y); o16 += 32; }
        else { *o16 = bsl_to_bf16(y); o16 += 32; }
    }
    const i64 pos = 32 * (wi - 3) + off;
    int e = (bad ? BSL_ERR_CODE : 0) | (range_bad ? BSL_ERR_RANGE : 0) |
            (pos != lane_end ? BSL_ERR_LANE_END : 0);
    if (e) bsl_atomic_or(err, e);
}

#ifdef BSL_HOST_EMU
/* CPU emulation entry points: run every thread of one launch in order. */
extern "C" void emu_group_words(const unsigned char* payload, i64 G, i64* offs) {
    for (i64 g = 0; g <= G; ++g) eg_group_words_thread(g, payload, G, offs);
}
extern "C" void emu_decode(int mode, const unsigned char* payload, i64 n_elems, int log2s, i64 G,
                           const i64* offs, i64 head_padded, i64 n_words, float step, int center,
                           void* out, int* err) {
    for (i64 t = 0; t < 32 * G; ++t) {
        if (mode == 0) eg_decode_thread<0>(t, payload, n_elems, log2s, G, offs, head_padded, n_words, step, center, out, err);
        else if (mode == 1) eg_decode_thread<1>(t, payload, n_elems, log2s, G, offs, head_padded, n_words, step, center, out, err);
        else eg_decode_thread<2>(t, payload, n_elems, log2s, G, offs, head_padded, n_words, step, center, out, err);
    }
}
#else
/* grid-stride loops: the grid is capped, so any G fits in one launch */
extern "C" __global__ void eg_group_words(const unsigned char* __restrict__ payload, i64 G,
                                          i64* __restrict__ offs) {
    for (i64 g = blockIdx.x * (i64)blockDim.x + threadIdx.x; g <= G; g += (i64)gridDim.x * blockDim.x)
        eg_group_words_thread(g, payload, G, offs);
}
#define BSL_DECODE_KERNEL(NAME, MODE)                                                              \
extern "C" __global__ void __launch_bounds__(256) NAME(                                            \
        const unsigned char* __restrict__ payload, i64 n_elems, int log2s, i64 G,                  \
        const i64* __restrict__ offs, i64 head_padded, i64 n_words, float step, int center,        \
        void* __restrict__ out, int* __restrict__ err) {                                          \
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < 32 * G; t += (i64)gridDim.x * blockDim.x) \
        eg_decode_thread<MODE>(t, payload, n_elems, log2s, G, offs, head_padded, n_words, step,   \
                               center, out, err);                                                  \
}
BSL_DECODE_KERNEL(eg_decode_f32, 0)
BSL_DECODE_KERNEL(eg_decode_f16, 1)
BSL_DECODE_KERNEL(eg_decode_bf16, 2)
#endif
"""
