/* Block-quantized weights as GGML stores them, and the row loops that multiply them.
 *
 * A quantized matrix w [N, K] is N rows of K/32 blocks; a block is 32 weights:
 *   Q8_0 (34 bytes): fp16 d, int8 q[32]                  w = d * q
 *   Q4_0 (18 bytes): fp16 d, uint8 qs[16]                w = d * (nibble - 8)
 *   Q4_1 (20 bytes): fp16 d, fp16 m, uint8 qs[16]        w = d * nibble + m
 * In Q4 blocks byte i holds weight i in its low nibble and weight i + 16 in its high one.
 * These are llama.cpp's bytes exactly, so a GGUF's tensors are carried over unchanged.
 *
 * Activations stay float32: each block's weights are widened to floats in registers and
 * multiplied there, so a product equals x @ dequantized(w) up to float summation order,
 * the same numbers transformers gets from the dequantized model. (llama.cpp rounds the
 * activations to int8 per block for integer dot products; on the default model that flips
 * the near-tie first token of "What is the capital of France?" away from "Paris".) The
 * nibble-to-float widening costs a few more instructions per weight than an integer dot;
 * decode is bound by reading the weights, so it mostly hides behind memory.
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
 * lines up with a block header widened to [d, m], so one multiply gives m * sum). */
typedef struct {
    const float *x;    /* [M, K] */
    const float *sums; /* [M, nb, 2] */
    int64_t nb;        /* blocks per row, K / 32 */
} qacts;

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
 * elsewhere. Each returns NULL when this CPU lacks the instructions. */
const qisa *tpi_quant_x86(const char *cap);
const qisa *tpi_quant_neon(const char *cap);
extern const qisa TPI_QUANT_PLAIN;

/* quant.c: the loop chosen for this CPU; the floats of scratch tpi_acts needs for x
 * [M, K], and tpi_acts filling a qacts for x in that scratch. */
qrows_fn tpi_quant_rows(int fmt);
int64_t tpi_acts_floats(int64_t M, int64_t K);
void tpi_acts(const float *x, int64_t M, int64_t K, float *scratch, qacts *out);

#endif
