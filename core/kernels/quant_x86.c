/* x86 row loops for quant.h's formats: AVX-512 VNNI (two blocks per 512-bit register) and
 * AVX2 (one block per 256-bit register). Compiled for the baseline ISA with per-function
 * targets, so one binary runs on any x86-64; tpi_quant_x86 says which loops this CPU runs.
 *
 * Integer dot products of unsigned by signed bytes (vpdpbusd, vpmaddubsw) are what the CPU
 * offers, so signed weights (Q8_0, Q4_0 after its -8) take the sign trick: |w| times x
 * with x's sign flipped where w < 0. Q4_1's nibbles are unsigned as stored.
 */
#include <string.h>

#include "quant.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
#define AVX2 __attribute__((target("avx2,fma,f16c")))

/* Block headers (fp16 scale, Q4_1's fp16 min) convert with F16C, which AVX2 CPUs have. */

/* ---- AVX-512 VNNI -------------------------------------------------------------------- */

/* Two Q4 blocks' 16 bytes each -> 64 nibbles: [block0 0..31 | block1 0..31]. Each block's
 * bytes go to two 128-bit lanes; the second lane's copy is shifted to its high nibbles. */
AVX512 static inline __m512i unpack2_q4(const uint8_t *qs0, const uint8_t *qs1) {
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)qs0));
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)qs1), 1);  /* [q0 q1 . .] */
    v = _mm512_permutexvar_epi64(_mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0), v); /* [q0 q0 q1 q1] */
    v = _mm512_mask_srli_epi16(v, 0xFF00FF00, v, 4);
    return _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
}

/* The fp16 scale (and Q4_1's min) of two blocks -> [d0, m0, d1, m1] (m = 0 without one). */
AVX512 static inline __m128 two_headers(int fmt, const uint8_t *b0, const uint8_t *b1) {
    uint32_t h0, h1;
    memcpy(&h0, b0, 4);
    memcpy(&h1, b1, 4);
    if (fmt != FMT_Q4_1) h0 &= 0xffff, h1 &= 0xffff;  /* the next bytes are weights */
    return _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)h1, (int)h0));
}

/* Unsigned u times signed s, by 4-byte groups -> 16 int32 lanes (8 per block). */
AVX512 static inline __m512i dot512(__m512i u, __m512i s) {
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
}

/* Signed w times signed x: |w| times x negated where w < 0. */
AVX512 static inline __m512i dot512_signed(__m512i w, __m512i x) {
    const __mmask64 neg = _mm512_movepi8_mask(w);
    const __m512i sx = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
    return dot512(_mm512_abs_epi8(w), sx);
}

/* A last odd block goes through the plain C loop's formula, one block's worth. */
static float tail_block(int fmt, const uint8_t *blk, const int8_t *xq, float xd, float xs) {
    int8_t q[QK];
    if (fmt == FMT_Q8_0) {
        memcpy(q, blk + 2, QK);
    } else {
        const uint8_t *qs = blk + (fmt == FMT_Q4_1 ? 4 : 2);
        for (int i = 0; i < QK / 2; i++) {
            q[i] = (int8_t)((qs[i] & 0x0f) - (fmt == FMT_Q4_0 ? 8 : 0));
            q[i + QK / 2] = (int8_t)((qs[i] >> 4) - (fmt == FMT_Q4_0 ? 8 : 0));
        }
    }
    int32_t s = 0;
    for (int i = 0; i < QK; i++) s += (int32_t)q[i] * xq[i];
    float out = tpi_f16(blk) * xd * (float)s;
    if (fmt == FMT_Q4_1) out += tpi_f16(blk + 2) * xs;
    return out;
}

/* Blocks b, b + 1 of one row: acc += their products with xv (scaled per block); for Q4_1,
 * mins lanes 1 and 3 += m * sum(x). */
AVX512 static inline void step2(int fmt, const uint8_t *b0, int64_t bb, __m512i xv,
                                __m128 xds, __m512 *acc, __m128 *mins) {
    const uint8_t *b1 = b0 + bb;
    __m512i p;
    if (fmt == FMT_Q8_0) {
        const __m512i wv = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))),
            _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);
        p = dot512_signed(wv, xv);
    } else if (fmt == FMT_Q4_0) {  /* sum (q - 8) x = sum q x - sum 8 x */
        p = _mm512_sub_epi32(dot512(unpack2_q4(b0 + 2, b1 + 2), xv),
                             dot512(_mm512_set1_epi8(8), xv));
    } else {
        p = dot512(unpack2_q4(b0 + 4, b1 + 4), xv);
    }
    /* [d0 xd0, m0 xs0, d1 xd1, m1 xs1]; lanes 0 and 2 scale the two blocks */
    const __m128 prod = _mm_mul_ps(two_headers(fmt, b0, b1), xds);
    const __m512i pick02 = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512 sc = _mm512_permutexvar_ps(pick02, _mm512_castps128_ps512(prod));
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc, *acc);
    if (fmt == FMT_Q4_1) *mins = _mm_add_ps(*mins, prod);
}

/* A row's dot product from its accumulators, plus a last odd block. */
AVX512 static inline float finish(int fmt, __m512 acc, __m128 mins, const uint8_t *row,
                                  int64_t nb, int64_t bb, const int8_t *xq, const float *xds) {
    float t = _mm512_reduce_add_ps(acc);
    if (fmt == FMT_Q4_1) t += mins[1] + mins[3];
    if (nb & 1)
        t += tail_block(fmt, row + (nb - 1) * bb, xq + (nb - 1) * QK, xds[2 * (nb - 1)],
                        xds[2 * (nb - 1) + 1]);
    return t;
}

/* One loop for the three formats; `fmt` is a compile-time constant in each caller, so the
 * branches fold away. Rows go two at a time: two independent chains, one x load. */
AVX512 static inline void rows512(int fmt, const uint8_t *w, const qacts *x, float *y,
                                  int64_t ldy, int64_t M, int64_t n0, int64_t n1) {
    const int64_t nb = x->nb, bb = QBLOCK_BYTES[fmt], nb2 = nb & ~(int64_t)1, rb = nb * bb;
    int64_t n = n0;
    for (; n + 2 <= n1; n += 2) {
        const uint8_t *r0 = w + n * rb, *r1 = r0 + rb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *xq = x->q + m * nb * QK;
            const float *xds = x->ds + 2 * m * nb;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0;
            __m128 m0 = _mm_setzero_ps(), m1 = m0;
            for (int64_t b = 0; b < nb2; b += 2) {
                const __m512i xv = _mm512_loadu_si512((const void *)(xq + b * QK));
                const __m128 xd = _mm_loadu_ps(xds + 2 * b);
                step2(fmt, r0 + b * bb, bb, xv, xd, &a0, &m0);
                step2(fmt, r1 + b * bb, bb, xv, xd, &a1, &m1);
            }
            y[m * ldy + n] = finish(fmt, a0, m0, r0, nb, bb, xq, xds);
            y[m * ldy + n + 1] = finish(fmt, a1, m1, r1, nb, bb, xq, xds);
        }
    }
    for (; n < n1; n++) {
        const uint8_t *r0 = w + n * rb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *xq = x->q + m * nb * QK;
            const float *xds = x->ds + 2 * m * nb;
            __m512 a0 = _mm512_setzero_ps();
            __m128 m0 = _mm_setzero_ps();
            for (int64_t b = 0; b < nb2; b += 2)
                step2(fmt, r0 + b * bb, bb, _mm512_loadu_si512((const void *)(xq + b * QK)),
                      _mm_loadu_ps(xds + 2 * b), &a0, &m0);
            y[m * ldy + n] = finish(fmt, a0, m0, r0, nb, bb, xq, xds);
        }
    }
}

AVX512 static void q8_0_avx512(const uint8_t *w, const qacts *x, float *y, int64_t ldy,
                               int64_t M, int64_t n0, int64_t n1) {
    rows512(FMT_Q8_0, w, x, y, ldy, M, n0, n1);
}
AVX512 static void q4_0_avx512(const uint8_t *w, const qacts *x, float *y, int64_t ldy,
                               int64_t M, int64_t n0, int64_t n1) {
    rows512(FMT_Q4_0, w, x, y, ldy, M, n0, n1);
}
AVX512 static void q4_1_avx512(const uint8_t *w, const qacts *x, float *y, int64_t ldy,
                               int64_t M, int64_t n0, int64_t n1) {
    rows512(FMT_Q4_1, w, x, y, ldy, M, n0, n1);
}

static const qisa ISA_AVX512 = {"AVX-512 VNNI", {q8_0_avx512, q4_0_avx512, q4_1_avx512}};

/* ---- AVX2 ------------------------------------------------------------------------------ */

AVX2 static inline __m256i unpack_q4(const uint8_t *qs) {
    const __m128i v = _mm_loadu_si128((const __m128i *)qs), low = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), low), _mm_and_si128(v, low));
}

/* Unsigned u times signed s -> 8 float lanes of 4-byte group sums. vpmaddubsw saturates
 * pairs at 2^15; u = |w| <= 128 and |s| <= 127 keep a pair at most 32512. */
AVX2 static inline __m256 dot256(__m256i u, __m256i s) {
    const __m256i p16 = _mm256_maddubs_epi16(u, s);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

AVX2 static inline float hsum256(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

AVX2 static inline void rows256(int fmt, const uint8_t *w, const qacts *x, float *y,
                                int64_t ldy, int64_t M, int64_t n0, int64_t n1) {
    const int64_t nb = x->nb, bb = QBLOCK_BYTES[fmt];
    const __m256i eight = _mm256_set1_epi8(8);
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *row = w + n * nb * bb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *xq = x->q + m * nb * QK;
            const float *xds = x->ds + 2 * m * nb;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0;  /* two chains hide FMA latency */
            __m128 mins = _mm_setzero_ps();  /* lane 1: Q4_1's m * sum(x) */
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = row + b * bb;
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + b * QK));
                __m256 p;
                if (fmt == FMT_Q4_1) {
                    p = dot256(unpack_q4(blk + 4), xv);
                } else {
                    const __m256i wv = fmt == FMT_Q8_0
                        ? _mm256_loadu_si256((const __m256i *)(blk + 2))
                        : _mm256_sub_epi8(unpack_q4(blk + 2), eight);
                    p = dot256(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
                }
                uint32_t h;
                memcpy(&h, blk, 4);
                if (fmt != FMT_Q4_1) h &= 0xffff;
                /* [d xd, m xs, 0, 0] */
                const __m128 prod = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)h)),
                    _mm_castpd_ps(_mm_load_sd((const double *)(xds + 2 * b))));
                if (fmt == FMT_Q4_1) mins = _mm_add_ps(mins, prod);
                const __m256 sc = _mm256_broadcastss_ps(prod);
                if (b & 1) a1 = _mm256_fmadd_ps(p, sc, a1);
                else a0 = _mm256_fmadd_ps(p, sc, a0);
            }
            y[m * ldy + n] = hsum256(_mm256_add_ps(a0, a1)) + (fmt == FMT_Q4_1 ? mins[1] : 0.0f);
        }
    }
}

AVX2 static void q8_0_avx2(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,
                           int64_t n0, int64_t n1) {
    rows256(FMT_Q8_0, w, x, y, ldy, M, n0, n1);
}
AVX2 static void q4_0_avx2(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,
                           int64_t n0, int64_t n1) {
    rows256(FMT_Q4_0, w, x, y, ldy, M, n0, n1);
}
AVX2 static void q4_1_avx2(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,
                           int64_t n0, int64_t n1) {
    rows256(FMT_Q4_1, w, x, y, ldy, M, n0, n1);
}

static const qisa ISA_AVX2 = {"AVX2", {q8_0_avx2, q4_0_avx2, q4_1_avx2}};

const qisa *tpi_quant_x86(const char *cap) {
    if (cap && (!strcmp(cap, "plain") || !strncmp(cap, "neon", 4))) return NULL;
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!(cap && !strcmp(cap, "avx2")) && avx2 && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni"))
        return &ISA_AVX512;
    return avx2 ? &ISA_AVX2 : NULL;
}

#else

const qisa *tpi_quant_x86(const char *cap) {
    (void)cap;
    return NULL;
}

#endif
