"""CUDA C source of the ``eg`` GPU decoder (spec 4.3), compiled at run time through NVRTC (CuPy).

``PRELUDE`` (types, RNE conversions, ``bsl_store``) is shared with the ``ans`` decoder (``_ans_src.py``).

Kept as a Python string so that it ships inside the wheel with no package-data rules. The same text
also compiles as plain C++ with ``-DBSL_HOST_EMU`` (``g++``): the tests run the kernels' per-thread
functions on the CPU that way, so the decoding logic is checked where there is no GPU.

Layout of the work: one thread per lane (``tid = 32 g + j``), so a warp is one group and at step ``t``
its 32 threads write the 32 adjacent elements ``g*32S + 32t + 0..31`` (a coalesced store). Each thread
reads its own lane bits through a 128-bit window of two 64-bit stream words; a code word is at most 51
bits, so one step moves the window by at most one word. Errors are not branches in the hot loop: they
fold into running maxima and are reported once per lane. Lanes whose worst-case reach (51 bits a
symbol) stays inside the payload read without bounds checks; the others (the payload's last lanes, or
a corrupted table) take the same loop with every read clamped. Design notes and measurements:
results/gpu_decode.md.
"""

PRELUDE = r"""
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
static inline unsigned short bsl_to_bf16(float y) {
    u32 b; memcpy(&b, &y, 4);                    /* inputs are never NaN (q and step are finite) */
    return (unsigned short)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}
static inline unsigned short bsl_to_f16(float y) {
    _Float16 h = (_Float16)y; unsigned short r; memcpy(&r, &h, 2); return r;
}
static inline void bsl_atomic_or(int* p, int v) { *p |= v; }
static inline u32 bsl_sgxt1(u32 u) { return 0u - (u & 1u); }
#else
#define BSL_DEV __device__ __forceinline__
#define BSL_RESTRICT __restrict__
BSL_DEV int bsl_ffs(u32 x) { return __ffs((int)x); }
BSL_DEV u32 bsl_fshr(u32 lo, u32 hi, u32 s) { return __funnelshift_r(lo, hi, s); }
/* inline PTX: mul.rn.f32 without .ftz keeps subnormals whatever -ftz the compiler was given */
BSL_DEV float bsl_fmul_rn(float a, float b) { float p; asm("mul.rn.f32 %0, %1, %2;" : "=f"(p) : "f"(a), "f"(b)); return p; }
/* RNE conversions; the x2 forms write a 32-bit register whose low half is the converted y */
BSL_DEV unsigned short bsl_to_bf16(float y) {
    u32 r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(0.0f), "f"(y)); return (unsigned short)r;
}
BSL_DEV unsigned short bsl_to_f16(float y) {
    u32 r; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(0.0f), "f"(y)); return (unsigned short)r;
}
BSL_DEV u32 bsl_sgxt1(u32 u) { int m; asm("bfe.s32 %0, %1, 0, 1;" : "=r"(m) : "r"(u)); return (u32)m; }
BSL_DEV void bsl_atomic_or(int* p, int v) { atomicOr(p, v); }

#endif

/* Output of one element: MODE 0 = float32, 1 = float16, 2 = bfloat16. */
template <int MODE>
BSL_DEV void bsl_store(void* o, float y) {
    if (MODE == 0) *(float*)o = y;
    else if (MODE == 1) *(unsigned short*)o = bsl_to_f16(y);
    else *(unsigned short*)o = bsl_to_bf16(y);
}

"""

SOURCE = PRELUDE + r"""
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

/* One 64-bit stream word: CLAMP reads are kept inside the payload (lanes near its end or lanes of a
   corrupted table); other lanes were shown to stay inside it before their loop started. */
template <bool CLAMP>
BSL_DEV u64 bsl_word(const u64* BSL_RESTRICT q, const u64* BSL_RESTRICT last) {
    return CLAMP ? *(q < last ? q : last) : *q;
}

/* The hot loop: decode `count` symbols of one lane starting at bit `off` (< 64) of p[0], write them
   32 elements apart. State: a 128-bit window W0:W1 of 64-bit stream words (+ W2 read one word ahead
   with PREFETCH, so a load is used several symbols after it was issued) and the bit offset off < 64
   into it. A zero run is clamped to zmax, so one step consumes at most 51 < 64 bits: at most one word
   advance per symbol, and a lane reads at most off + 51 * count bits. Checks are folded into two
   running maxima (zero run, symbol); EXACTQ re-checks |q| < 2^24 symbol by symbol.
   Returns the bit position after the last code word, relative to p. */
template <int MODE, bool CLAMP, bool PREFETCH, bool EXACTQ>
BSL_DEV i64 bsl_decode_run(const u64* BSL_RESTRICT p, u32 off, const u64* BSL_RESTRICT plast, int count, u32 k,
                           float step, int center, char* BSL_RESTRICT o, u32& zacc, u32& uacc,
                           bool& qbad)
{
    const int esize = MODE == 0 ? 4 : 2;
    const u32 zmax = 25u - k;
    const u32 pk = 1u << k;
    u64 W0 = bsl_word<CLAMP>(p, plast);
    u64 W1 = bsl_word<CLAMP>(p + 1, plast);
    u64 W2 = PREFETCH ? bsl_word<CLAMP>(p + 2, plast) : 0ull;
    const u64* q = p + (PREFETCH ? 3 : 2);   /* next word to load */
    u32 za = 0, ua = 0;
    bool qb = false;
#pragma unroll 2
    for (int t = 0; t < count; ++t) {
        /* the three 32-bit words that hold stream bits off .. off+63 */
        const bool h = off >= 32u;
        const u32 x0 = h ? (u32)(W0 >> 32) : (u32)W0;
        const u32 x1 = h ? (u32)W1 : (u32)(W0 >> 32);
        const u32 x2 = h ? (u32)(W1 >> 32) : (u32)W1;
        const u32 lo = bsl_fshr(x0, x1, off);        /* stream bits off .. off+31 (shift off & 31) */
        const u32 hi = bsl_fshr(x1, x2, off);        /* stream bits off+32 .. off+63 */
        u32 z = (u32)(bsl_ffs(lo) - 1);              /* zero run; 0xFFFFFFFF when lo == 0 */
        za = za > z ? za : z;
        z = z < zmax ? z : zmax;
        const u32 n = z + k;
        const u32 pn = 1u << n;
        const u32 r = bsl_fshr(lo, hi, z + 1) & (pn - 1u);   /* the n bits after the marker */
        const u32 u = r + pn - pk;
        ua = ua > u ? ua : u;
        off += z + 1 + n;
        if (off >= 64) {
            W0 = W1;
            if (PREFETCH) { W1 = W2; W2 = bsl_word<CLAMP>(q, plast); }
            else W1 = bsl_word<CLAMP>(q, plast);
            ++q; off -= 64;
        }
        const int qv = center + (int)((u >> 1) ^ bsl_sgxt1(u));  /* zigzag inverse */
        if (EXACTQ) qb |= (u32)(qv + 0xFFFFFF) > 0x1FFFFFEu;      /* |q| >= 2^24 */
        bsl_store<MODE>(o, bsl_fmul_rn((float)qv, step));        /* one RNE rounding, then RNE */
        o += 32 * esize;
    }
    zacc = za;
    uacc = ua;
    qbad = qb;
    return 64 * (i64)(q - p - (PREFETCH ? 3 : 2)) + off;
}

/* VARIANT: 0 = default, 1 = with the one-word prefetch, 2 = every lane on the clamped path. */
template <int MODE, int VARIANT>
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

    /* the stream as 64-bit words, the last one (index n_words) being the trailing zero word */
    const u64* words = (const u64*)(payload + head_padded);
    const i64 last = n_words;
    const i64 wi = lane_start >> 6;
    const u32 off = (u32)(lane_start & 63);
    const u32 kk = k > 24u ? 24u : k;  /* decode garbage, safely, when the order is bad */
    const int esize = MODE == 0 ? 4 : 2;
    char* o = (char*)out + (base + j) * esize;
    /* furthest word this lane can touch: 51 bits a step, the window and the prefetch */
    const i64 reach = wi + 3 + (((i64)off + 51 * (i64)count) >> 6);
    const bool fast = VARIANT != 2 && reach <= last;
    const i64 wc = wi < last ? wi : last;
    const u64* p = words + wc;
    const u64* plast = words + last;
    u32 zacc, uacc;
    bool qbad;
    i64 pos;
    if (fast)
        pos = bsl_decode_run<MODE, false, VARIANT == 1, false>(p, off, plast, count, kk, step, center,
                                                               o, zacc, uacc, qbad);
    else
        pos = bsl_decode_run<MODE, true, VARIANT == 1, false>(p, off, plast, count, kk, step, center,
                                                              o, zacc, uacc, qbad);
    /* |q| <= |center| + (uacc + 1) / 2: when that bound reaches 2^24, check each symbol again */
    if ((i64)(center < 0 ? -center : center) + (i64)(uacc >> 1) + 1 >= (1 << 24))
        bsl_decode_run<MODE, true, false, true>(p, off, plast, count, kk, step, center, o, zacc,
                                                uacc, qbad);
    const bool bad = k > 24u || zacc > 25u - kk;
    const int e = (bad ? BSL_ERR_CODE : 0) | (qbad ? BSL_ERR_RANGE : 0) |
                  (wi > last || 64 * wi + pos != lane_end ? BSL_ERR_LANE_END : 0);
    if (e) bsl_atomic_or(err, e);
}

#ifdef BSL_HOST_EMU
/* CPU emulation entry points: run every thread of one launch in order. */
extern "C" void emu_group_words(const unsigned char* payload, i64 G, i64* offs) {
    for (i64 g = 0; g <= G; ++g) eg_group_words_thread(g, payload, G, offs);
}
extern "C" void emu_decode(int mode, int variant, const unsigned char* payload, i64 n_elems, int log2s, i64 G,
                           const i64* offs, i64 head_padded, i64 n_words, float step, int center,
                           void* out, int* err) {
#define BSL_EMU_ARGS t, payload, n_elems, log2s, G, offs, head_padded, n_words, step, center, out, err
    for (i64 t = 0; t < 32 * G; ++t) {
        if (variant == 1) {
            if (mode == 0) eg_decode_thread<0, 1>(BSL_EMU_ARGS);
            else if (mode == 1) eg_decode_thread<1, 1>(BSL_EMU_ARGS);
            else eg_decode_thread<2, 1>(BSL_EMU_ARGS);
        } else if (variant == 2) {
            if (mode == 0) eg_decode_thread<0, 2>(BSL_EMU_ARGS);
            else if (mode == 1) eg_decode_thread<1, 2>(BSL_EMU_ARGS);
            else eg_decode_thread<2, 2>(BSL_EMU_ARGS);
        } else {
            if (mode == 0) eg_decode_thread<0, 0>(BSL_EMU_ARGS);
            else if (mode == 1) eg_decode_thread<1, 0>(BSL_EMU_ARGS);
            else eg_decode_thread<2, 0>(BSL_EMU_ARGS);
        }
    }
}
#else
/* grid-stride loops: the grid is capped, so any G fits in one launch */
extern "C" __global__ void eg_group_words(const unsigned char* __restrict__ payload, i64 G,
                                          i64* __restrict__ offs) {
    for (i64 g = blockIdx.x * (i64)blockDim.x + threadIdx.x; g <= G; g += (i64)gridDim.x * blockDim.x)
        eg_group_words_thread(g, payload, G, offs);
}
#define BSL_DECODE_KERNEL(NAME, MODE, VARIANT, MINB)                                                        \
extern "C" __global__ void __launch_bounds__(256, MINB) NAME(                                            \
        const unsigned char* __restrict__ payload, i64 n_elems, int log2s, i64 G,                  \
        const i64* __restrict__ offs, i64 head_padded, i64 n_words, float step, int center,        \
        void* __restrict__ out, int* __restrict__ err) {                                          \
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < 32 * G; t += (i64)gridDim.x * blockDim.x) \
        eg_decode_thread<MODE, VARIANT>(t, payload, n_elems, log2s, G, offs, head_padded, n_words, step,   \
                               center, out, err);                                                  \
}
BSL_DECODE_KERNEL(eg_decode_f32, 0, 0, 6)
BSL_DECODE_KERNEL(eg_decode_f16, 1, 0, 6)
BSL_DECODE_KERNEL(eg_decode_bf16, 2, 0, 6)
/* for tools/bench/bench_gpu.py: other choices, measured against the default */
BSL_DECODE_KERNEL(eg_decode_bf16_prefetch, 2, 1, 6)
BSL_DECODE_KERNEL(eg_decode_bf16_clamped, 2, 2, 6)
BSL_DECODE_KERNEL(eg_decode_bf16_occ8, 2, 0, 8)
BSL_DECODE_KERNEL(eg_decode_bf16_occ4, 2, 0, 4)
#endif
"""

# A multi-tensor entry point over the per-thread decoder above: one launch decodes several payloads (a
# transformer block's weights for bslcodec.torch.compressed, a staging chunk for bslcodec.gpu.load), thread t
# belonging to the job whose first thread is the largest one <= t. Jobs start at multiples of 32 threads, so
# a warp is still one group of one payload. Job fields (int64): 0 payload, 1 n_elems, 2 log2(S), 3 G, 4 offs
# (G + 1 int64 word offsets), 5 head_padded, 6 n_words, 7 step (binary32 bits), 8 center, 9 out, 10 first
# thread, 11 unused. Compiled after SOURCE (``SOURCE + MULTI_SOURCE``).
JOB_FIELDS = 12
MULTI_SOURCE = r"""
#define BSL_JOB_FIELDS 12
template <int MODE>
BSL_DEV void bsl_multi_thread(i64 t, const i64* BSL_RESTRICT jobs, int n_jobs, int* BSL_RESTRICT err)
{
    int lo = 0, hi = n_jobs - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (jobs[mid * BSL_JOB_FIELDS + 10] <= t) lo = mid; else hi = mid - 1;
    }
    const i64* J = jobs + lo * BSL_JOB_FIELDS;
    union { u32 u; float f; } cv;
    cv.u = (u32)J[7];
    eg_decode_thread<MODE, 0>(t - J[10], (const unsigned char*)J[0], J[1], (int)J[2], J[3], (const i64*)J[4],
                              J[5], J[6], cv.f, (int)J[8], (void*)J[9], err);
}
#ifdef BSL_HOST_EMU
extern "C" void emu_multi(int mode, const i64* jobs, int n_jobs, i64 total, int* err) {
    for (i64 t = 0; t < total; ++t) {
        if (mode == 0) bsl_multi_thread<0>(t, jobs, n_jobs, err);
        else if (mode == 1) bsl_multi_thread<1>(t, jobs, n_jobs, err);
        else bsl_multi_thread<2>(t, jobs, n_jobs, err);
    }
}
#else
#define BSL_MULTI_KERNEL(NAME, MODE)                                                                        \
extern "C" __global__ void __launch_bounds__(256, 6) NAME(const i64* __restrict__ jobs, int n_jobs,      \
                                                           i64 total, int* __restrict__ err) {             \
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x)  \
        bsl_multi_thread<MODE>(t, jobs, n_jobs, err);                                                      \
}
BSL_MULTI_KERNEL(bsl_multi_f32, 0)
BSL_MULTI_KERNEL(bsl_multi_f16, 1)
BSL_MULTI_KERNEL(bsl_multi_bf16, 2)
#endif
"""
