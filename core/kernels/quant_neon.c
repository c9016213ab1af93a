/* ARM row loops for quant.h's formats: baseline ARMv8 NEON (any aarch64), float32
 * activations as quant_x86.c's loops take them. Compiled for the baseline ISA;
 * tpi_quant_neon asks the kernel (AT_HWCAP) whether this CPU has Advanced SIMD.
 *
 * Per block the 32 weights are widened to eight float32x4_t registers and multiplied with
 * x's block in two chains, whose sum is scaled by d into the row's accumulator. The m term
 * comes from quant.h's [0, sum] pair, loaded as [0, sum, 0, 0]: Q4_1 adds m * that to the
 * accumulator; Q4_0 starts a chain from -8 * that (exact), so d scales it with the block,
 * d * (sum(q x) - 8 sum(x)). A row's result is the sum of its accumulator's lanes.
 *
 * Widening: a table lookup (tbl; index 255 gives 0) moves each weight byte into the top
 * byte of a 32-bit lane, and a fixed-point convert (scvtf/ucvtf #n divides by 2^n) gives
 * the integer exactly: Q8_0's int8 q there is the int32 q << 24 (#24); Q4's low nibbles,
 * first shifted to a byte's top, are q << 28 (#28), its high nibbles, shifted down, q << 24
 * (#24). That is a tbl and a convert per four weights: 16 instructions a block (Q4: 18,
 * with the two shifts). Widening by moves (sxtl/uxtl twice, then the convert) takes 4 more,
 * and the moves are shifts, which Cortex-A72 and A76 issue on one of their two SIMD pipes.
 * Executed per block and row for M == 1 (qemu; tests/core/kernels/quant_arm.py): 35-38
 * instructions; 39-41 with the moves; 113-127 for quant.c's C loop.
 *
 * Rows go two at a time for M == 1 (one load of x for both; two rows of two chains each);
 * for M > 1 each block's widened weights serve MT rows of x. Dequantizing (for prefill's
 * GEMM) widens the same way.
 */
#include <string.h>

#include "quant.h"

#if defined(__aarch64__) && defined(__linux__) && defined(__GNUC__)

#include <arm_neon.h>
#include <asm/hwcap.h>
#include <sys/auxv.h>

#define MT 4 /* rows of x per pass over a row of w */
#define INLINE static inline __attribute__((always_inline))

/* tbl indices that put bytes 4k..4k+3 of a register into the top bytes of four lanes. */
typedef struct {
    uint8x16_t k[4];
} spread;

INLINE spread spread_init(void) {
    static const uint8_t idx[64] = {
        255, 255, 255, 0,  255, 255, 255, 1,  255, 255, 255, 2,  255, 255, 255, 3,
        255, 255, 255, 4,  255, 255, 255, 5,  255, 255, 255, 6,  255, 255, 255, 7,
        255, 255, 255, 8,  255, 255, 255, 9,  255, 255, 255, 10, 255, 255, 255, 11,
        255, 255, 255, 12, 255, 255, 255, 13, 255, 255, 255, 14, 255, 255, 255, 15};
    const uint8x16x4_t v = vld1q_u8_x4(idx);
    return (spread){{v.val[0], v.val[1], v.val[2], v.val[3]}};
}

/* A block's weights without the scale: w[0..3] = weights 0..15, w[4..7] = 16..31. Each
 * byte goes to the top of a lane (Q4's nibbles first moved to a byte's top or bottom by a
 * shift), so the convert's #24 or #28 gives the integer. Shifts, not masks: no register
 * held for a mask. */
INLINE void widen(int fmt, const uint8_t *blk, const spread *s, float32x4_t w[8]) {
    if (fmt == FMT_Q8_0) {
        const uint8x16_t lo = vld1q_u8(blk + 2), hi = vld1q_u8(blk + 18);
        for (int k = 0; k < 4; k++) {
            w[k] = vcvtq_n_f32_s32(vreinterpretq_s32_u8(vqtbl1q_u8(lo, s->k[k])), 24);
            w[k + 4] = vcvtq_n_f32_s32(vreinterpretq_s32_u8(vqtbl1q_u8(hi, s->k[k])), 24);
        }
        return;
    }
    const uint8x16_t v = vld1q_u8(blk + (fmt == FMT_Q4_1 ? 4 : 2));
    const uint8x16_t lo = vshlq_n_u8(v, 4), hi = vshrq_n_u8(v, 4); /* lo << 4, hi */
    for (int k = 0; k < 4; k++) {
        w[k] = vcvtq_n_f32_u32(vreinterpretq_u32_u8(vqtbl1q_u8(lo, s->k[k])), 28);
        w[k + 4] = vcvtq_n_f32_u32(vreinterpretq_u32_u8(vqtbl1q_u8(hi, s->k[k])), 24);
    }
}

/* A block's fp16 header widened (fcvtl is exact, as tpi_f16 is): lane 0 d, lane 1 Q4_1's m
 * (the other formats' lane 1 is weight bytes, never used). */
INLINE float32x4_t header(const uint8_t *blk) {
    return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(blk)));
}

/* x's block as eight registers. */
INLINE void load_x(const float *xb, float32x4_t xv[8]) {
    const float32x4x4_t lo = vld1q_f32_x4(xb), hi = vld1q_f32_x4(xb + 16);
    for (int k = 0; k < 4; k++) xv[k] = lo.val[k], xv[k + 4] = hi.val[k];
}

/* The m term's operand from x's [0, sum] pair: Q4_0 [0, -8 sum, 0, 0] (added before the
 * scale by d), Q4_1 [0, sum, 0, 0] (scaled by m); Q8_0 none. */
INLINE float32x4_t pair_of(int fmt, const float *pair) {
    if (fmt == FMT_Q8_0) return vdupq_n_f32(0.0f);
    const float32x4_t p = vcombine_f32(vld1_f32(pair), vdup_n_f32(0.0f));
    return fmt == FMT_Q4_0 ? vmulq_n_f32(p, -8.0f) : p;
}

/* acc + d * (w . x's block) + the m term (p from pair_of, dm from header). */
INLINE float32x4_t block_step(int fmt, float32x4_t acc, const float32x4_t w[8],
                              float32x4_t dm, const float32x4_t xv[8], float32x4_t p) {
    float32x4_t t0 = fmt == FMT_Q4_0 ? vfmaq_f32(p, w[0], xv[0]) : vmulq_f32(w[0], xv[0]);
    float32x4_t t1 = vmulq_f32(w[1], xv[1]);
    for (int k = 2; k < 8; k += 2) {
        t0 = vfmaq_f32(t0, w[k], xv[k]);
        t1 = vfmaq_f32(t1, w[k + 1], xv[k + 1]);
    }
    acc = vfmaq_laneq_f32(acc, vaddq_f32(t0, t1), dm, 0);
    return fmt == FMT_Q4_1 ? vfmaq_laneq_f32(acc, p, dm, 1) : acc;
}

/* Row n of w against rows m0..m0 + mt - 1 of x (y points at row m0's column n); mt is a
 * constant in each call, so acc[] stays in registers. */
INLINE void tile(int fmt, const uint8_t *row, const qacts *x, float *y, int64_t ldy,
                 int64_t m0, int mt, const spread *s) {
    const int64_t nb = x->nb, bb = QBLOCK_BYTES[fmt];
    float32x4_t acc[MT];
    for (int j = 0; j < mt; j++) acc[j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        float32x4_t w[8], xv[8];
        widen(fmt, row + b * bb, s, w);
        const float32x4_t dm = header(row + b * bb);
        for (int j = 0; j < mt; j++) {
            const int64_t i = (m0 + j) * nb + b;
            load_x(x->x + i * QK, xv);
            acc[j] = block_step(fmt, acc[j], w, dm, xv, pair_of(fmt, x->sums + 2 * i));
        }
    }
    for (int j = 0; j < mt; j++) y[(m0 + j) * ldy] = vaddvq_f32(acc[j]);
}

/* Rows r0 and r1 of w (blocks b0, b1) against x's block b, loaded once for both. */
INLINE void pair_step(int fmt, const uint8_t *b0, const uint8_t *b1, const qacts *x,
                      int64_t b, const spread *s, float32x4_t *a0, float32x4_t *a1) {
    float32x4_t xv[8], w0[8], w1[8];
    load_x(x->x + b * QK, xv);
    const float32x4_t p = pair_of(fmt, x->sums + 2 * b);
    widen(fmt, b0, s, w0);
    *a0 = block_step(fmt, *a0, w0, header(b0), xv, p);
    widen(fmt, b1, s, w1);
    *a1 = block_step(fmt, *a1, w1, header(b1), xv, p);
}

/* One loop for the three formats; `fmt` is a compile-time constant in each caller, so the
 * branches fold away. */
INLINE void rows_neon(int fmt, const uint8_t *w, const qacts *x, float *y, int64_t ldy,
                      int64_t M, int64_t n0, int64_t n1) {
    const int64_t nb = x->nb, bb = QBLOCK_BYTES[fmt], rb = nb * bb;
    const spread s = spread_init();
    int64_t n = n0;
    if (M == 1) { /* decode: two rows at a time, one load of x for both */
        for (; n + 2 <= n1; n += 2) {
            const uint8_t *r0 = w + n * rb, *r1 = r0 + rb;
            float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
            for (int64_t b = 0; b < nb; b++)
                pair_step(fmt, r0 + b * bb, r1 + b * bb, x, b, &s, &a0, &a1);
            y[n] = vaddvq_f32(a0);
            y[n + 1] = vaddvq_f32(a1);
        }
    }
    for (; n < n1; n++) { /* a row at a time, MT rows of x per pass over its blocks */
        const uint8_t *row = w + n * rb;
        int64_t m0 = 0;
        for (; m0 + MT <= M; m0 += MT) tile(fmt, row, x, y + n, ldy, m0, MT, &s);
        switch (M - m0) {
        case 3: tile(fmt, row, x, y + n, ldy, m0, 3, &s); break;
        case 2: tile(fmt, row, x, y + n, ldy, m0, 2, &s); break;
        case 1: tile(fmt, row, x, y + n, ldy, m0, 1, &s); break;
        default: break;
        }
    }
}

#define LOOP(name, fmt)                                                                      \
    static void name(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,    \
                     int64_t n0, int64_t n1) {                                             \
        rows_neon(fmt, w, x, y, ldy, M, n0, n1);                                           \
    }
LOOP(q8_0_neon, FMT_Q8_0)
LOOP(q4_0_neon, FMT_Q4_0)
LOOP(q4_1_neon, FMT_Q4_1)

/* out = the blocks' weights, as gguf's dequantize gives them bit for bit: Q8_0 d * q,
 * Q4_0 d * (q - 8), Q4_1 d * q + m in one rounding (d * q is exact in fp32). d * (q - 8)
 * rather than d * q - 8 d keeps gguf's -0.0 for q = 8 under a negative d. */
INLINE void deq_neon(int fmt, const uint8_t *w, float *out, int64_t b0, int64_t b1) {
    const int64_t bb = QBLOCK_BYTES[fmt];
    const spread s = spread_init();
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *blk = w + b * bb;
        float32x4_t q[8];
        widen(fmt, blk, &s, q);
        const float32x4_t dm = header(blk);
        float *o = out + (b - b0) * QK;
        for (int k = 0; k < 8; k++) {
            float32x4_t v;
            if (fmt == FMT_Q8_0)
                v = vmulq_laneq_f32(q[k], dm, 0);
            else if (fmt == FMT_Q4_0)
                v = vmulq_laneq_f32(vsubq_f32(q[k], vdupq_n_f32(8.0f)), dm, 0);
            else
                v = vfmaq_laneq_f32(vdupq_laneq_f32(dm, 1), q[k], dm, 0);
            vst1q_f32(o + 4 * k, v);
        }
    }
}

#define DEQ(name, fmt)                                                                       \
    static void name(const uint8_t *w, float *out, int64_t b0, int64_t b1) {               \
        deq_neon(fmt, w, out, b0, b1);                                                     \
    }
DEQ(q8_0_deq_neon, FMT_Q8_0)
DEQ(q4_0_deq_neon, FMT_Q4_0)
DEQ(q4_1_deq_neon, FMT_Q4_1)

static const qisa ISA_NEON = {"NEON", {q8_0_neon, q4_0_neon, q4_1_neon},
                              {q8_0_deq_neon, q4_0_deq_neon, q4_1_deq_neon}};

/* cap "plain" keeps to quant.c's C loops; any other cap ("neon", or an x86 one, which does
 * not apply here) leaves this loop. */
const qisa *tpi_quant_neon(const char *cap) {
    if (cap && !strcmp(cap, "plain")) return NULL;
    if (!(getauxval(AT_HWCAP) & HWCAP_ASIMD)) return NULL;
    return &ISA_NEON;
}

#else

const qisa *tpi_quant_neon(const char *cap) {
    (void)cap;
    return NULL;
}

#endif
