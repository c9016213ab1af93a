/* x86 row loops for quant.h's formats: AVX-512 (a block's 32 weights as two 16-float
 * registers) and AVX2 (four 8-float registers). Compiled for the baseline ISA with
 * per-function targets, so one binary runs on any x86-64; tpi_quant_x86 says which loops
 * this CPU runs.
 *
 * Per block: the int8 or nibble weights are widened to floats (vpmovsxbd / vpmovzxbd, then
 * vcvtdq2ps), multiplied with x and summed in a block accumulator, which is scaled by d
 * into the row's; m * sum(x) is added per block from quant.h's pairs. Two rows go at a
 * time (one load of x for both, two independent chains); rows of x (M > 1) reuse a block's
 * widened weights.
 */
#include <string.h>

#include "quant.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define MT 4 /* rows of x per pass over a row of w */

/* A block's header widened: [d, m, 0, 0] (Q8_0: m = 0; Q4_0: m = -8 d). */
static inline __attribute__((always_inline, target("avx2,f16c"))) __m128
header(int fmt, const uint8_t *blk) {
    uint32_t h;
    memcpy(&h, blk, 4);
    if (fmt != FMT_Q4_1) h = (h & 0xffff) | (h << 16);  /* [d, d]: the next bytes are weights */
    const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)h));
    if (fmt == FMT_Q4_0) return _mm_mul_ps(dm, _mm_setr_ps(1.0f, -8.0f, 0.0f, 0.0f));
    if (fmt == FMT_Q8_0) return _mm_mul_ps(dm, _mm_setr_ps(1.0f, 0.0f, 0.0f, 0.0f));
    return dm;
}

/* ---- AVX-512 ------------------------------------------------------------------------- */

/* A block's weights without the scale: lo = weights 0..15, hi = 16..31, as floats. */
AVX512 static inline void widen512(int fmt, const uint8_t *blk, __m512 *lo, __m512 *hi) {
    if (fmt == FMT_Q8_0) {
        *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2))));
        *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18))));
        return;
    }
    const __m128i v = _mm_loadu_si128((const __m128i *)(blk + (fmt == FMT_Q4_1 ? 4 : 2)));
    const __m128i low = _mm_set1_epi8(0x0f);
    *lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(v, low)));
    *hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(v, 4), low)));
}

/* acc += d * (lo . x[0:16] + hi . x[16:32]); mins += [d, m] * [0, sum] (lane 1: m sum). */
AVX512 static inline void step512(__m512 lo, __m512 hi, __m128 dm, const float *xb,
                                  const float *pair, __m512 *acc, __m128 *mins, int has_m) {
    const __m512 t = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb + 16),
                                     _mm512_mul_ps(lo, _mm512_loadu_ps(xb)));
    *acc = _mm512_fmadd_ps(t, _mm512_broadcastss_ps(dm), *acc);
    if (has_m)
        *mins = _mm_fmadd_ps(dm, _mm_castpd_ps(_mm_load_sd((const double *)pair)), *mins);
}

static inline float lane1(__m128 v) {
    return _mm_cvtss_f32(_mm_shuffle_ps(v, v, 1));
}

/* One loop for the three formats; `fmt` is a compile-time constant in each caller, so the
 * branches fold away. */
AVX512 static inline void rows512(int fmt, const uint8_t *w, const qacts *x, float *y,
                                  int64_t ldy, int64_t M, int64_t n0, int64_t n1) {
    const int64_t nb = x->nb, bb = QBLOCK_BYTES[fmt], rb = nb * bb;
    const int has_m = fmt != FMT_Q8_0;
    int64_t n = n0;
    if (M == 1) {  /* decode: two rows at a time, two independent chains */
        const float *xm = x->x, *sums = x->sums;
        for (; n + 2 <= n1; n += 2) {
            const uint8_t *r0 = w + n * rb, *r1 = r0 + rb;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0;
            __m128 m0 = _mm_setzero_ps(), m1 = m0;
            for (int64_t b = 0; b < nb; b++) {
                __m512 lo, hi;
                widen512(fmt, r0 + b * bb, &lo, &hi);
                step512(lo, hi, header(fmt, r0 + b * bb), xm + b * QK, sums + 2 * b, &a0, &m0,
                        has_m);
                widen512(fmt, r1 + b * bb, &lo, &hi);
                step512(lo, hi, header(fmt, r1 + b * bb), xm + b * QK, sums + 2 * b, &a1, &m1,
                        has_m);
            }
            y[n] = _mm512_reduce_add_ps(a0) + lane1(m0);
            y[n + 1] = _mm512_reduce_add_ps(a1) + lane1(m1);
        }
    }
    for (; n < n1; n++) {  /* a row at a time, MT rows of x per pass over its blocks */
        const uint8_t *row = w + n * rb;
        for (int64_t m0 = 0; m0 < M; m0 += MT) {
            const int64_t mt = M - m0 < MT ? M - m0 : MT;
            __m512 acc[MT];
            __m128 mins[MT];
            for (int j = 0; j < MT; j++) acc[j] = _mm512_setzero_ps(), mins[j] = _mm_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                __m512 lo, hi;
                widen512(fmt, row + b * bb, &lo, &hi);
                const __m128 dm = header(fmt, row + b * bb);
                for (int j = 0; j < mt; j++)
                    step512(lo, hi, dm, x->x + ((m0 + j) * nb + b) * QK,
                            x->sums + 2 * ((m0 + j) * nb + b), &acc[j], &mins[j], has_m);
            }
            for (int j = 0; j < mt; j++)
                y[(m0 + j) * ldy + n] = _mm512_reduce_add_ps(acc[j]) + lane1(mins[j]);
        }
    }
}

#define LOOP(name, isa, rows, fmt)                                                           \
    isa static void name(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,\
                         int64_t n0, int64_t n1) {                                          \
        rows(fmt, w, x, y, ldy, M, n0, n1);                                                 \
    }
LOOP(q8_0_avx512, AVX512, rows512, FMT_Q8_0)
LOOP(q4_0_avx512, AVX512, rows512, FMT_Q4_0)
LOOP(q4_1_avx512, AVX512, rows512, FMT_Q4_1)

/* out = d * q + m, a block at a time (prefill dequantizes whole matrices before a GEMM). */
AVX512 static inline void deq512(int fmt, const uint8_t *w, float *out, int64_t b0,
                                 int64_t b1) {
    const int64_t bb = QBLOCK_BYTES[fmt];
    for (int64_t b = b0; b < b1; b++) {
        __m512 lo, hi;
        widen512(fmt, w + b * bb, &lo, &hi);
        const __m128 dm = header(fmt, w + b * bb);
        const __m512 d = _mm512_broadcastss_ps(dm);
        float *o = out + (b - b0) * QK;
        if (fmt == FMT_Q4_1) {  /* as gguf: d * q + m; Q4_0 d * (q - 8); Q8_0 d * q */
            const __m512 m = _mm512_broadcastss_ps(_mm_shuffle_ps(dm, dm, 1));
            lo = _mm512_fmadd_ps(lo, d, m);
            hi = _mm512_fmadd_ps(hi, d, m);
        } else {
            const __m512 off = _mm512_set1_ps(fmt == FMT_Q4_0 ? 8.0f : 0.0f);
            lo = _mm512_mul_ps(_mm512_sub_ps(lo, off), d);
            hi = _mm512_mul_ps(_mm512_sub_ps(hi, off), d);
        }
        _mm512_storeu_ps(o, lo);
        _mm512_storeu_ps(o + 16, hi);
    }
}

#define DEQ(name, isa, deq, fmt)                                                             \
    isa static void name(const uint8_t *w, float *out, int64_t b0, int64_t b1) {           \
        deq(fmt, w, out, b0, b1);                                                           \
    }
DEQ(q8_0_deq512, AVX512, deq512, FMT_Q8_0)
DEQ(q4_0_deq512, AVX512, deq512, FMT_Q4_0)
DEQ(q4_1_deq512, AVX512, deq512, FMT_Q4_1)

static const qisa ISA_AVX512 = {"AVX-512", {q8_0_avx512, q4_0_avx512, q4_1_avx512},
                                {q8_0_deq512, q4_0_deq512, q4_1_deq512}};

/* ---- AVX2 ------------------------------------------------------------------------------ */

/* A block's weights without the scale as four 8-float registers (weights 0..7, ..., 24..31). */
AVX2 static inline void widen256(int fmt, const uint8_t *blk, __m256 w[4]) {
    if (fmt == FMT_Q8_0) {
        for (int i = 0; i < 4; i++)
            w[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                _mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * i))));
        return;
    }
    const __m128i v = _mm_loadu_si128((const __m128i *)(blk + (fmt == FMT_Q4_1 ? 4 : 2)));
    const __m128i low = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(v, low), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
    w[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    w[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    w[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    w[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}

AVX2 static inline void step256(const __m256 w[4], __m128 dm, const float *xb,
                                const float *pair, __m256 *acc, __m128 *mins, int has_m) {
    __m256 t = _mm256_mul_ps(w[0], _mm256_loadu_ps(xb));
    t = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xb + 8), t);
    t = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xb + 16), t);
    t = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xb + 24), t);
    *acc = _mm256_fmadd_ps(t, _mm256_broadcastss_ps(dm), *acc);
    if (has_m)
        *mins = _mm_fmadd_ps(dm, _mm_castpd_ps(_mm_load_sd((const double *)pair)), *mins);
}

AVX2 static inline float hsum256(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

AVX2 static inline void rows256(int fmt, const uint8_t *w, const qacts *x, float *y,
                                int64_t ldy, int64_t M, int64_t n0, int64_t n1) {
    const int64_t nb = x->nb, bb = QBLOCK_BYTES[fmt], rb = nb * bb;
    const int has_m = fmt != FMT_Q8_0;
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *row = w + n * rb;
        for (int64_t m0 = 0; m0 < M; m0 += MT) {
            const int64_t mt = M - m0 < MT ? M - m0 : MT;
            __m256 acc[MT];
            __m128 mins[MT];
            for (int j = 0; j < MT; j++) acc[j] = _mm256_setzero_ps(), mins[j] = _mm_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                __m256 wv[4];
                widen256(fmt, row + b * bb, wv);
                const __m128 dm = header(fmt, row + b * bb);
                for (int j = 0; j < mt; j++)
                    step256(wv, dm, x->x + ((m0 + j) * nb + b) * QK,
                            x->sums + 2 * ((m0 + j) * nb + b), &acc[j], &mins[j], has_m);
            }
            for (int j = 0; j < mt; j++)
                y[(m0 + j) * ldy + n] = hsum256(acc[j]) + lane1(mins[j]);
        }
    }
}

LOOP(q8_0_avx2, AVX2, rows256, FMT_Q8_0)
LOOP(q4_0_avx2, AVX2, rows256, FMT_Q4_0)
LOOP(q4_1_avx2, AVX2, rows256, FMT_Q4_1)

AVX2 static inline void deq256(int fmt, const uint8_t *w, float *out, int64_t b0, int64_t b1) {
    const int64_t bb = QBLOCK_BYTES[fmt];
    for (int64_t b = b0; b < b1; b++) {
        __m256 wv[4];
        widen256(fmt, w + b * bb, wv);
        const __m128 dm = header(fmt, w + b * bb);
        const __m256 d = _mm256_broadcastss_ps(dm);
        const __m256 m = _mm256_broadcastss_ps(_mm_shuffle_ps(dm, dm, 1));
        const __m256 off = _mm256_set1_ps(fmt == FMT_Q4_0 ? 8.0f : 0.0f);
        for (int i = 0; i < 4; i++)  /* gguf's order, as deq512 */
            _mm256_storeu_ps(out + (b - b0) * QK + 8 * i,
                             fmt == FMT_Q4_1 ? _mm256_fmadd_ps(wv[i], d, m)
                                             : _mm256_mul_ps(_mm256_sub_ps(wv[i], off), d));
    }
}

DEQ(q8_0_deq256, AVX2, deq256, FMT_Q8_0)
DEQ(q4_0_deq256, AVX2, deq256, FMT_Q4_0)
DEQ(q4_1_deq256, AVX2, deq256, FMT_Q4_1)

static const qisa ISA_AVX2 = {"AVX2", {q8_0_avx2, q4_0_avx2, q4_1_avx2},
                              {q8_0_deq256, q4_0_deq256, q4_1_deq256}};

const qisa *tpi_quant_x86(const char *cap) {
    if (cap && (!strcmp(cap, "plain") || !strncmp(cap, "neon", 4))) return NULL;
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!(cap && !strcmp(cap, "avx2")) && avx2 && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return &ISA_AVX512;
    return avx2 ? &ISA_AVX2 : NULL;
}

#else

const qisa *tpi_quant_x86(const char *cap) {
    (void)cap;
    return NULL;
}

#endif
