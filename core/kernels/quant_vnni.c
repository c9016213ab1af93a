/* Integer row loops for quant.h's formats on x86 CPUs with AVX-512 VNNI (vpdpbusd).
 *
 * Why: the float loops (quant_x86.c) widen every weight to a float (two conversions per 16
 * weights, on the ports the multiplies need too), which made Q4_0 decode ~1.5x llama.cpp's
 * time on the same file. Here four weight blocks (128 weights) are two 512-bit registers
 * of bytes, multiplied with x rounded to int16 per block (qquad16 in quant.h) by two
 * vpdpbusd: sum(w q) = 256 * sum(w hi) + sum(w lo), exact in int32. Four blocks go at a
 * time, so the scales and the int-to-float work are shared by 128 weights.
 *
 * Numbers: x is rounded to 16 bits on each block's own scale, an error of at most 2^-16 of
 * the block's largest |x| per value (llama.cpp rounds to 8 bits, 256 times coarser; that
 * flips the default model's near-tie first token, this does not). Then each lane's exact
 * integer sum is scaled in float32: lane * s * d, plus m * sum(x) from the float sums.
 * A row's result does not depend on M or on how rows are split between threads, so a
 * speculative check of k tokens gets the numbers of k single decodes.
 */
#include <string.h>

#include "quant.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
#define MT 4 /* rows of x per pass over a row of w */

/* Blocks A..D of a row (k[0..3]) as two registers of bytes in qquad16's order (weights
 * 0..15 of each block, then 16..31). Q4: the nibbles (0..15) in both u and s; Q8_0: q + 128
 * (unsigned; qquad16.corr takes the 128 back) in u, q in s. */
VNNI static inline void unpack(int fmt, const uint8_t *const k[4], __m512i u[2], __m512i s[2]) {
    if (fmt == FMT_Q8_0) {
        const __m512i ab = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(k[0] + 2))),
            _mm256_loadu_si256((const __m256i *)(k[1] + 2)), 1);
        const __m512i cd = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(k[2] + 2))),
            _mm256_loadu_si256((const __m256i *)(k[3] + 2)), 1);
        /* ab = [A 0..15 | A 16..31 | B 0..15 | B 16..31]: pick the 16-byte halves */
        s[0] = _mm512_permutex2var_epi64(ab, _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13), cd);
        s[1] = _mm512_permutex2var_epi64(ab, _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15), cd);
        const __m512i flip = _mm512_set1_epi8((char)0x80);
        u[0] = _mm512_xor_si512(s[0], flip);
        u[1] = _mm512_xor_si512(s[1], flip);
        return;
    }
    const int off = fmt == FMT_Q4_1 ? 4 : 2;
    __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(k[0] + off)));
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(k[1] + off)), 1);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(k[2] + off)), 2);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(k[3] + off)), 3);
    const __m512i low = _mm512_set1_epi8(0x0f);
    u[0] = s[0] = _mm512_and_si512(z, low);               /* 0..15 is a uint8 and an int8 */
    u[1] = s[1] = _mm512_and_si512(_mm512_srli_epi16(z, 4), low);
}

/* The blocks of quad q of a row: past the row's end, its last block (whose x is zero). */
static inline void quad_blocks(const uint8_t *row, int64_t q, int64_t nb, int64_t bb,
                               const uint8_t *k[4]) {
    for (int i = 0; i < 4; i++) k[i] = row + (4 * q + i < nb ? 4 * q + i : nb - 1) * bb;
}

/* The blocks' scales per lane, [dA x4, dB x4, dC x4, dD x4], and Q4_1's mins likewise. */
VNNI static inline void scales(int fmt, const uint8_t *const k[4], __m512 *d, __m512 *m) {
    uint32_t h[4];
    for (int i = 0; i < 4; i++) memcpy(&h[i], k[i], 4);
    if (fmt == FMT_Q4_1) {  /* [dA, mA, dB, mB, dC, mC, dD, mD] */
        const __m128i hh = _mm_set_epi64x((long long)(h[2] | (uint64_t)h[3] << 32),
                                          (long long)(h[0] | (uint64_t)h[1] << 32));
        const __m512 dm = _mm512_castps256_ps512(_mm256_cvtph_ps(hh));
        *d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6,
                                                     6, 6), dm);
        *m = _mm512_permutexvar_ps(_mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 7, 7,
                                                     7, 7), dm);
        return;
    }
    const uint64_t hd = (h[0] & 0xffff) | (uint64_t)(h[1] & 0xffff) << 16 |
                        (uint64_t)(h[2] & 0xffff) << 32 | (uint64_t)(h[3] & 0xffff) << 48;
    const __m512 dd = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi64_si128((long long)hd)));
    *d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                               dd);
    *m = _mm512_setzero_ps();
}

/* acc += d * (s * sum(w q) [+ Q4_0's -8 sum(x)]); macc += Q4_1's m * sum(x), per lane. */
VNNI static inline void step(int fmt, const __m512i u[2], const __m512i s[2], __m512 d,
                             __m512 m, const qquad16 *p, __m512 *acc, __m512 *macc) {
    __m512i t = fmt == FMT_Q8_0 ? _mm512_load_si512((const void *)p->corr)
                                : _mm512_setzero_si512();
    t = _mm512_dpbusd_epi32(t, u[0], _mm512_load_si512((const void *)p->hi1));
    t = _mm512_dpbusd_epi32(t, u[1], _mm512_load_si512((const void *)p->hi2));
    t = _mm512_slli_epi32(t, 8);
    t = _mm512_dpbusd_epi32(t, _mm512_load_si512((const void *)p->lo1), s[0]);
    t = _mm512_dpbusd_epi32(t, _mm512_load_si512((const void *)p->lo2), s[1]);
    const __m512 sc = _mm512_load_ps(p->s);
    const __m512 f = fmt == FMT_Q4_0
        ? _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), sc, _mm512_load_ps(p->nsum))
        : _mm512_mul_ps(_mm512_cvtepi32_ps(t), sc);
    *acc = _mm512_fmadd_ps(f, d, *acc);
    if (fmt == FMT_Q4_1) *macc = _mm512_fmadd_ps(m, _mm512_load_ps(p->sum4), *macc);
}

/* M = 1 (decode): rows n0..n1 of w one after another, each row's bytes PF rows ahead
 * prefetched. Measured from memory on this project's AMD EPYC (Zen 4), 1 thread: Q8_0
 * 7.5 -> 13-15 GB/s of weights against four rows interleaved per load of x (which read w
 * as four streams 1 row apart and defeated the hardware prefetcher; in cache it had been
 * ~1.4x faster), Q4_0 and Q4_1 within noise. */
#define PF 4
VNNI static inline void rows_m1(int fmt, const uint8_t *w, const qacts *x, float *y,
                                int64_t n0, int64_t n1) {
    const int64_t nb = x->nb, nq = x->nq, bb = QBLOCK_BYTES[fmt], rb = nb * bb;
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *row = w + n * rb;
        __m512 acc = _mm512_setzero_ps(), macc = _mm512_setzero_ps();
        for (int64_t q = 0; q < nq; q++) {
            const uint8_t *k[4];
            quad_blocks(row, q, nb, bb, k);
            for (int64_t at = 0; at < 4 * bb; at += 64)
                _mm_prefetch((const char *)k[0] + PF * rb + at, _MM_HINT_T0);
            __m512i u[2], s[2];
            __m512 d, m;
            unpack(fmt, k, u, s);
            scales(fmt, k, &d, &m);
            step(fmt, u, s, d, m, x->x16 + q, &acc, &macc);
        }
        y[n] = _mm512_reduce_add_ps(_mm512_add_ps(acc, macc));
    }
}

/* Rows n0..n1 of w against all M rows of x: weights unpacked once per quad, MT rows of x. */
VNNI static inline void rows_vnni(int fmt, const uint8_t *w, const qacts *x, float *y,
                                  int64_t ldy, int64_t M, int64_t n0, int64_t n1) {
    const int64_t nb = x->nb, nq = x->nq, bb = QBLOCK_BYTES[fmt], rb = nb * bb;
    if (M == 1) {
        rows_m1(fmt, w, x, y, n0, n1);
        return;
    }
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *row = w + n * rb;
        for (int64_t m0 = 0; m0 < M; m0 += MT) {
            const int64_t mt = M - m0 < MT ? M - m0 : MT;
            __m512 acc[MT], macc[MT];
            for (int j = 0; j < MT; j++) acc[j] = macc[j] = _mm512_setzero_ps();
            for (int64_t q = 0; q < nq; q++) {
                const uint8_t *k[4];
                quad_blocks(row, q, nb, bb, k);
                __m512i u[2], s[2];
                __m512 d, m;
                unpack(fmt, k, u, s);
                scales(fmt, k, &d, &m);
                for (int j = 0; j < mt; j++)
                    step(fmt, u, s, d, m, x->x16 + (m0 + j) * nq + q, &acc[j], &macc[j]);
            }
            for (int j = 0; j < mt; j++)
                y[(m0 + j) * ldy + n] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j], macc[j]));
        }
    }
}

#define LOOP(name, fmt)                                                                      \
    VNNI static void name(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,\
                          int64_t n0, int64_t n1) {                                         \
        rows_vnni(fmt, w, x, y, ldy, M, n0, n1);                                            \
    }
LOOP(q8_0_vnni, FMT_Q8_0)
LOOP(q4_0_vnni, FMT_Q4_0)
LOOP(q4_1_vnni, FMT_Q4_1)

/* Dequantizing is quant_x86.c's (NULL: the plain C one is used only where that is NULL). */
static qisa ISA_VNNI = {"AVX-512 VNNI", {q8_0_vnni, q4_0_vnni, q4_1_vnni}, {0}, 1};

/* cap "avx512" or "avx2" (or "plain", "neon"): the float loops instead. */
const qisa *tpi_quant_vnni(const char *cap) {
    if (cap && strcmp(cap, "vnni")) return NULL;
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
          __builtin_cpu_supports("fma")))
        return NULL;
    const qisa *f = tpi_quant_x86(NULL); /* the AVX-512 float table: its dequant loops */
    if (f)
        for (int i = 0; i < FMT_COUNT; i++) ISA_VNNI.dequant[i] = f->dequant[i];
    return &ISA_VNNI;
}

#else

const qisa *tpi_quant_vnni(const char *cap) {
    (void)cap;
    return NULL;
}

#endif
