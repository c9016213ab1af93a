/* ARM row loops for quant.h's formats: NEON with the dot-product extension (sdot, ARMv8.2+:
 * Cortex-A55/A76 and later) and baseline ARMv8 NEON (widening multiplies, any aarch64).
 * Compiled for the baseline ISA, the dotprod loop with a per-function target, so one binary
 * runs on any aarch64 Linux; tpi_quant_neon asks the kernel (AT_HWCAP) which loop runs here.
 *
 * NEON multiplies signed bytes by signed bytes, so Q8_0 and Q4_0 (after its -8) need no
 * sign trick; Q4_1's nibbles (0..15) are non-negative int8 as they are.
 *
 * The row loop below is written once and compiled twice, as rows_neon and rows_sdot: this
 * file includes itself with NEON_ROWS defined (gcc will not inline the dotprod intrinsic
 * into a function compiled for baseline ARMv8, even one only ever inlined into dotprod code,
 * so the loop cannot be a single inline function taking the dot product as a parameter).
 */
#include <string.h>

#include "quant.h"

#if defined(__aarch64__) && defined(__linux__) && defined(__GNUC__)
#ifndef NEON_ROWS /* ---- the first pass: helpers, the two loops, dispatch -------------- */

#include <arm_neon.h>
#include <asm/hwcap.h>
#include <sys/auxv.h>

/* gcc 12 wants the architecture level too: "+dotprod" alone does not enable vdotq_s32. */
#define DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))

/* A block's 32 weights as int8: lo = weights 0..15, hi = 16..31. */
static inline void load_block(int fmt, const uint8_t *blk, int8x16_t *lo, int8x16_t *hi) {
    if (fmt == FMT_Q8_0) {
        *lo = vld1q_s8((const int8_t *)blk + 2);
        *hi = vld1q_s8((const int8_t *)blk + 18);
        return;
    }
    const uint8x16_t v = vld1q_u8(blk + (fmt == FMT_Q4_1 ? 4 : 2));
    int8x16_t l = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f)));
    int8x16_t h = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
    if (fmt == FMT_Q4_0) {
        l = vsubq_s8(l, vdupq_n_s8(8));
        h = vsubq_s8(h, vdupq_n_s8(8));
    }
    *lo = l;
    *hi = h;
}

/* A block's fp16 scale (and Q4_1's min) times x's pair (quant.h's ds): [d xd, m xs].
 * fcvtl is exact, as tpi_f16 is; m = 0 without a min. */
static inline float32x2_t block_scales(int fmt, const uint8_t *blk, const float *xds) {
    uint32_t h;
    memcpy(&h, blk, 4);
    if (fmt != FMT_Q4_1) h &= 0xffff; /* the next bytes are weights */
    const float32x2_t dm = vget_low_f32(vcvt_f32_f16(vreinterpret_f16_u32(vdup_n_u32(h))));
    return vmul_f32(dm, vld1_f32(xds));
}

/* The integer dot of 32 weights with 32 activations -> 4 int32 lanes to be summed. */
static inline int32x4_t dot_neon(int8x16_t wl, int8x16_t wh, int8x16_t xl, int8x16_t xh) {
    /* int16 pairs: |w| <= 128 and |x| <= 127 keep two products at most 32512 */
    int16x8_t p0 = vmull_s8(vget_low_s8(wl), vget_low_s8(xl));
    p0 = vmlal_high_s8(p0, wl, xl);
    int16x8_t p1 = vmull_s8(vget_low_s8(wh), vget_low_s8(xh));
    p1 = vmlal_high_s8(p1, wh, xh);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

DOTPROD static inline int32x4_t dot_sdot(int8x16_t wl, int8x16_t wh, int8x16_t xl,
                                         int8x16_t xh) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), wl, xl), wh, xh);
}

/* A row's dot product from its accumulators. */
static inline float row_sum(int fmt, float32x4_t even, float32x4_t odd, float32x2_t mins) {
    const float t = vaddvq_f32(vaddq_f32(even, odd));
    return fmt == FMT_Q4_1 ? t + vget_lane_f32(mins, 1) : t;
}

/* The loops: see the second pass at the end of this file. */
#define NEON_ROWS rows_neon
#define NEON_DOT dot_neon
#define NEON_TARGET
#include "quant_neon.c"
#undef NEON_ROWS
#undef NEON_DOT
#undef NEON_TARGET

#define NEON_ROWS rows_sdot
#define NEON_DOT dot_sdot
#define NEON_TARGET DOTPROD
#include "quant_neon.c"
#undef NEON_ROWS
#undef NEON_DOT
#undef NEON_TARGET

static void q8_0_neon(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,
                      int64_t n0, int64_t n1) {
    rows_neon(FMT_Q8_0, w, x, y, ldy, M, n0, n1);
}
static void q4_0_neon(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,
                      int64_t n0, int64_t n1) {
    rows_neon(FMT_Q4_0, w, x, y, ldy, M, n0, n1);
}
static void q4_1_neon(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,
                      int64_t n0, int64_t n1) {
    rows_neon(FMT_Q4_1, w, x, y, ldy, M, n0, n1);
}

DOTPROD static void q8_0_sdot(const uint8_t *w, const qacts *x, float *y, int64_t ldy,
                              int64_t M, int64_t n0, int64_t n1) {
    rows_sdot(FMT_Q8_0, w, x, y, ldy, M, n0, n1);
}
DOTPROD static void q4_0_sdot(const uint8_t *w, const qacts *x, float *y, int64_t ldy,
                              int64_t M, int64_t n0, int64_t n1) {
    rows_sdot(FMT_Q4_0, w, x, y, ldy, M, n0, n1);
}
DOTPROD static void q4_1_sdot(const uint8_t *w, const qacts *x, float *y, int64_t ldy,
                              int64_t M, int64_t n0, int64_t n1) {
    rows_sdot(FMT_Q4_1, w, x, y, ldy, M, n0, n1);
}

static const qisa ISA_SDOT = {"NEON dotprod", {q8_0_sdot, q4_0_sdot, q4_1_sdot}};
static const qisa ISA_NEON = {"NEON", {q8_0_neon, q4_0_neon, q4_1_neon}};

/* cap "neon" keeps to the baseline loop; "plain" to none (quant.c); others do not apply. */
const qisa *tpi_quant_neon(const char *cap) {
    if (cap && !strcmp(cap, "plain")) return NULL;
    const unsigned long hw = getauxval(AT_HWCAP);
    if (!(hw & HWCAP_ASIMD)) return NULL;
    if (!(cap && !strcmp(cap, "neon")) && (hw & HWCAP_ASIMDDP)) return &ISA_SDOT;
    return &ISA_NEON;
}

#else /* ---- the second pass (twice): the row loop for NEON_DOT ----------------------- */

#define NEON_CAT_(a, b) a##b
#define NEON_CAT(a, b) NEON_CAT_(a, b)
#define NEON_STEP NEON_CAT(NEON_ROWS, _step)

/* acc += one block's product with x's block (xl, xh); Q4_1's mins lane 1 += m xs. */
NEON_TARGET static inline __attribute__((always_inline)) void NEON_STEP(
    int fmt, const uint8_t *blk, int8x16_t xl, int8x16_t xh, const float *xds,
    float32x4_t *acc, float32x2_t *mins) {
    int8x16_t wl, wh;
    load_block(fmt, blk, &wl, &wh);
    const float32x2_t s = block_scales(fmt, blk, xds);
    *acc = vfmaq_lane_f32(*acc, vcvtq_f32_s32(NEON_DOT(wl, wh, xl, xh)), s, 0);
    if (fmt == FMT_Q4_1) *mins = vadd_f32(*mins, s);
}

/* One loop for the three formats; `fmt` is a compile-time constant in each caller, so the
 * branches fold away. Rows go two at a time (one x load for both), and each row keeps two
 * accumulators (even and odd blocks), so four multiply-add chains run side by side. */
NEON_TARGET static inline void NEON_ROWS(int fmt, const uint8_t *w, const qacts *x, float *y,
                                         int64_t ldy, int64_t M, int64_t n0, int64_t n1) {
    const int64_t nb = x->nb, bb = QBLOCK_BYTES[fmt], nb2 = nb & ~(int64_t)1, rb = nb * bb;
    const float32x4_t z4 = vdupq_n_f32(0.0f);
    const float32x2_t z2 = vdup_n_f32(0.0f);
    int64_t n = n0;
    for (; n + 2 <= n1; n += 2) {
        const uint8_t *r0 = w + n * rb, *r1 = r0 + rb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *xq = x->q + m * nb * QK;
            const float *xds = x->ds + 2 * m * nb;
            float32x4_t e0 = z4, o0 = z4, e1 = z4, o1 = z4;
            float32x2_t mins0 = z2, mins1 = z2;
            for (int64_t b = 0; b < nb2; b += 2) {
                const int8_t *xb = xq + b * QK;
                const int8x16_t xl = vld1q_s8(xb), xh = vld1q_s8(xb + 16);
                const int8x16_t xl2 = vld1q_s8(xb + 32), xh2 = vld1q_s8(xb + 48);
                NEON_STEP(fmt, r0 + b * bb, xl, xh, xds + 2 * b, &e0, &mins0);
                NEON_STEP(fmt, r1 + b * bb, xl, xh, xds + 2 * b, &e1, &mins1);
                NEON_STEP(fmt, r0 + (b + 1) * bb, xl2, xh2, xds + 2 * b + 2, &o0, &mins0);
                NEON_STEP(fmt, r1 + (b + 1) * bb, xl2, xh2, xds + 2 * b + 2, &o1, &mins1);
            }
            if (nb & 1) {
                const int8_t *xb = xq + nb2 * QK;
                const int8x16_t xl = vld1q_s8(xb), xh = vld1q_s8(xb + 16);
                NEON_STEP(fmt, r0 + nb2 * bb, xl, xh, xds + 2 * nb2, &e0, &mins0);
                NEON_STEP(fmt, r1 + nb2 * bb, xl, xh, xds + 2 * nb2, &e1, &mins1);
            }
            y[m * ldy + n] = row_sum(fmt, e0, o0, mins0);
            y[m * ldy + n + 1] = row_sum(fmt, e1, o1, mins1);
        }
    }
    for (; n < n1; n++) {
        const uint8_t *r0 = w + n * rb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *xq = x->q + m * nb * QK;
            const float *xds = x->ds + 2 * m * nb;
            float32x4_t e0 = z4; /* a last row (of an odd count): one chain will do */
            float32x2_t mins0 = z2;
            for (int64_t b = 0; b < nb; b++) {
                const int8_t *xb = xq + b * QK;
                NEON_STEP(fmt, r0 + b * bb, vld1q_s8(xb), vld1q_s8(xb + 16), xds + 2 * b,
                          &e0, &mins0);
            }
            y[m * ldy + n] = row_sum(fmt, e0, z4, mins0);
        }
    }
}

#undef NEON_STEP
#endif /* NEON_ROWS */
#else

const qisa *tpi_quant_neon(const char *cap) {
    (void)cap;
    return NULL;
}

#endif
