/* Block-quantized weights as GGML stores them, and the row loops that multiply them.
 *
 * A quantized matrix w [N, K] is N rows of K/32 blocks; a block is 32 weights:
 *   Q8_0 (34 bytes): fp16 d, int8 q[32]                  w = d * q
 *   Q4_0 (18 bytes): fp16 d, uint8 qs[16]                w = d * (nibble - 8)
 *   Q4_1 (20 bytes): fp16 d, fp16 m, uint8 qs[16]        w = d * nibble + m
 * In Q4 blocks byte i holds weight i in its low nibble and weight i + 16 in its high one.
 * These are llama.cpp's bytes exactly, so a GGUF's tensors are carried over unchanged.
 *
 * Two kinds of row loops. The float loops (quant_x86.c's AVX2 and AVX-512, quant_neon.c,
 * quant.c's plain C) keep activations float32: each block's weights are widened to floats
 * in registers, so a product equals x @ dequantized(w) up to float summation order, the
 * numbers transformers gets from the dequantized model. The integer loops (quant_vnni.c,
 * x86 with AVX-512 VNNI) round x to int16 per block first (qquad16): 2^-16 of the block's
 * largest |x|, where llama.cpp's 8-bit rounding (256 times coarser) flips the default
 * model's near-tie first token of "What is the capital of France?" away from "Paris".
 * Widening every weight to a float cost the float loops ~1.5x llama.cpp's decode time.
 * A block's sum is d * sum(q x) + m * sum(x) (Q4_0: m = -8 d), so the per-block sums of
 * x are computed once per call.
 */
#ifndef TPI_QUANT_H
#define TPI_QUANT_H

#include <stddef.h>
#include <stdint.h>

#define QK 32 /* weights per block, every format */

enum { FMT_Q8_0 = 0, FMT_Q4_0 = 1, FMT_Q4_1 = 2, FMT_COUNT = 3 };

/* Bytes per block, indexed by format. */
static const int64_t QBLOCK_BYTES[FMT_COUNT] = {34, 18, 20};

/* The activations: M rows of K floats, and each 32-block's sum as pairs [0, sum] (a pair
 * lines up with a block header widened to [d, m], so one multiply gives m * sum); and, for
 * the integer loops (quant_vnni.c), x rounded to 16 bits per block (qquad16). */
typedef struct {
    const float *x;    /* [M, K] */
    const float *sums; /* [M, nb, 2] */
    int64_t nb;        /* blocks per row, K / 32 */
    const struct qquad16 *x16; /* [M, nq] */
    int64_t nq;        /* quads of blocks per row, (nb + 3) / 4 */
} qacts;

/* Four 32-blocks A..D of a row of x, as the integer loops take them. Each block is rounded
 * to int16 on its own scale s = max|x| / 32767 (x ~ s * q, an error of at most s / 2 per
 * value, 2^-16 of the block's largest) and q split as 256 * hi + lo (hi int8, lo uint8),
 * so 8-bit dot products (vpdpbusd) give sum(w q) exactly.
 * Bytes are in the order four weight blocks are unpacked to in two 512-bit registers:
 * [A 0..15 | B 0..15 | C 0..15 | D 0..15] (lo1, hi1), then weights 16..31 the same way
 * (lo2, hi2). 32-bit lane l sums bytes 4l..4l+3 of both, so lanes 4k..4k+3 are block k's
 * and the float patterns give each lane its block's value. A row whose blocks are not a
 * multiple of four ends on a quad whose last blocks are all zero. */
typedef struct qquad16 {
    uint8_t lo1[64], lo2[64];
    int8_t hi1[64], hi2[64];
    float s[16];      /* the block's scale s */
    float sum4[16];   /* the block's sum(x) / 4: a lane's share, 4 lanes per block */
    float nsum[16];   /* -2 sum(x): 4 lanes give Q4_0's -8 sum(x) */
    int32_t corr[16]; /* -128 * (the lane's eight hi): Q8_0's q + 128 is unsigned */
} qquad16;

/* y[m * ldy + n] = dot(w row n, x row m) for rows n0..n1 of w and all M rows of x. */
typedef void (*qrows_fn)(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,
                         int64_t n0, int64_t n1);

/* out[32 * (b1 - b0)] = the weights of blocks b0..b1 of w, as floats. */
typedef void (*qdeq_fn)(const uint8_t *w, float *out, int64_t b0, int64_t b1);

/* One loop per format (NULL: not available on this CPU), and the ISA's name for logs. */
typedef struct {
    const char *name;
    qrows_fn rows[FMT_COUNT];
    qdeq_fn dequant[FMT_COUNT]; /* NULL: the plain C one */
    int x16;                    /* 1: the rows loops read qacts.x16 */
} qisa;

/* Exact fp16 -> fp32 by integer ops (see matvec.c's f16_load for why). */
static inline float tpi_f16(const uint8_t *p) {
    const uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
    union { uint32_t u; float f; } c = {.u = (uint32_t)(h & 0x7fff) << 13};
    c.f *= 0x1p112f;
    c.u |= (uint32_t)(h & 0x8000) << 16;
    if ((h & 0x7c00) == 0x7c00) c.u |= 0x7f800000;
    return c.f;
}

/* A block's d and m (Q8_0: m = 0; Q4_0: m = -8 d). */
static inline void tpi_block_dm(int fmt, const uint8_t *blk, float *d, float *m) {
    *d = tpi_f16(blk);
    *m = fmt == FMT_Q4_1 ? tpi_f16(blk + 2) : fmt == FMT_Q4_0 ? -8.0f * *d : 0.0f;
}

/* The vector loops each CPU family offers; a family's file compiles to an empty table
 * elsewhere. Each returns NULL when this CPU lacks the instructions (or `cap` rules them
 * out). */
const qisa *tpi_quant_x86(const char *cap);
const qisa *tpi_quant_neon(const char *cap);
extern const qisa TPI_QUANT_PLAIN;

const qisa *tpi_quant_vnni(const char *cap);

/* quant.c: the loop chosen for this CPU; the floats of scratch tpi_acts needs for x
 * [M, K], and tpi_acts filling a qacts for x in that scratch (64-byte aligned inside). */
qrows_fn tpi_quant_rows(int fmt);
int64_t tpi_acts_floats(int64_t M, int64_t K);
void tpi_acts(const float *x, int64_t M, int64_t K, float *scratch, qacts *out);

#endif
