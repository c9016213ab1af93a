/* Products of float32 activations with block-quantized weights (quant.h), and dequantizing.
 *
 * tpi_qmatmul quantizes x once per call (per 32-block: int8, a scale and the block's float
 * sum), then threads split the rows of w, so each weight byte is read once per call,
 * whatever M. The row loops are chosen once per process: the best this CPU runs among
 * quant_x86.c (AVX-512 VNNI, AVX2), quant_neon.c (dotprod, NEON) and the plain C below;
 * TPI_CHAT_KERNEL_ISA=plain|avx2|neon caps the choice so tests can run every loop.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "quant.h"

#define MAX_THREADS 64

/* ---- plain C loops: the reference the vector loops are tested against ---------------- */

static int32_t dot_i8(const int8_t *a, const int8_t *b) {
    int32_t s = 0;
    for (int i = 0; i < QK; i++) s += (int32_t)a[i] * b[i];
    return s;
}

/* Unpack a Q4 block's 16 bytes into its 32 weights' nibbles (0..15), minus `bias`. */
static void unpack_q4(const uint8_t *qs, int bias, int8_t *out) {
    for (int i = 0; i < QK / 2; i++) {
        out[i] = (int8_t)((qs[i] & 0x0f) - bias);
        out[i + QK / 2] = (int8_t)((qs[i] >> 4) - bias);
    }
}

static void q8_0_plain(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,
                       int64_t n0, int64_t n1) {
    const int64_t nb = x->nb, rb = nb * 34;
    for (int64_t n = n0; n < n1; n++) {
        for (int64_t m = 0; m < M; m++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = w + n * rb + b * 34;
                const int32_t s = dot_i8((const int8_t *)(blk + 2), x->q + (m * nb + b) * QK);
                acc += tpi_f16(blk) * x->ds[2 * (m * nb + b)] * (float)s;
            }
            y[m * ldy + n] = acc;
        }
    }
}

static void q4_plain(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,
                     int64_t n0, int64_t n1, int has_min) {
    const int64_t nb = x->nb, bb = has_min ? 20 : 18, rb = nb * bb;
    int8_t q[QK];
    for (int64_t n = n0; n < n1; n++) {
        for (int64_t m = 0; m < M; m++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = w + n * rb + b * bb;
                const int64_t i = m * nb + b;
                unpack_q4(blk + (has_min ? 4 : 2), has_min ? 0 : 8, q);
                acc += tpi_f16(blk) * x->ds[2 * i] * (float)dot_i8(q, x->q + i * QK);
                if (has_min) acc += tpi_f16(blk + 2) * x->ds[2 * i + 1];
            }
            y[m * ldy + n] = acc;
        }
    }
}

static void q4_0_plain(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,
                       int64_t n0, int64_t n1) {
    q4_plain(w, x, y, ldy, M, n0, n1, 0);
}

static void q4_1_plain(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,
                       int64_t n0, int64_t n1) {
    q4_plain(w, x, y, ldy, M, n0, n1, 1);
}

const qisa TPI_QUANT_PLAIN = {"plain C", {q8_0_plain, q4_0_plain, q4_1_plain}};

/* ---- activations ------------------------------------------------------------------- */

/* Per thread (the engine may run ranks as threads); grown, never shrunk. */
static __thread uint8_t *xbuf;
static __thread int64_t xbuf_n;

/* x [M, K] float -> int8 blocks with scale max|x|/127 (round to nearest, as llama.cpp's
 * q8_0) and each block's sum as quantized, scale * sum(q) (llama.cpp's q8_1 `s`). Q4_1's
 * m term then sees the same rounded x as its d term: with the float sum instead, the two
 * terms (which nearly cancel, nibbles being all positive) carried different errors, 3x
 * the output error on random weights. Returns 0, or -1 when out of memory. */
static int quantize_acts(const float *x, int64_t M, int64_t K, qacts *out) {
    const int64_t nb = K / QK, need = M * K + 2 * M * nb * (int64_t)sizeof(float) + 64;
    if (xbuf_n < need) {
        free(xbuf);
        xbuf = malloc((size_t)need);
        xbuf_n = xbuf ? need : 0;
        if (!xbuf) return -1;
    }
    float *ds = (float *)xbuf;
    int8_t *q = (int8_t *)(ds + 2 * M * nb);
    for (int64_t i = 0; i < M * nb; i++) {
        const float *v = x + i * QK;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(v[j]));
        const float scale = amax / 127.0f, inv = scale ? 1.0f / scale : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < QK; j++) {
            q[i * QK + j] = (int8_t)lrintf(v[j] * inv);
            sum += q[i * QK + j];
        }
        ds[2 * i] = scale;
        ds[2 * i + 1] = scale * (float)sum;
    }
    *out = (qacts){q, ds, nb};
    return 0;
}

/* ---- dispatch ---------------------------------------------------------------------- */

static const qisa *pick(void) {
    const char *cap = getenv("TPI_CHAT_KERNEL_ISA");
    if (cap && !strcmp(cap, "plain")) return &TPI_QUANT_PLAIN;
    const qisa *isa = tpi_quant_x86(cap);
    if (!isa) isa = tpi_quant_neon(cap);
    return isa ? isa : &TPI_QUANT_PLAIN;
}

static const qisa *chosen(void) {
    static const qisa *isa;
    if (!isa) isa = pick();
    return isa;
}

/* The name of the loops this process runs ("AVX-512 VNNI", "plain C", ...). */
const char *tpi_quant_isa(void) { return chosen()->name; }

/* y[m * ldy + n] = x[m, :] . w[n, :] for w [N, K] in format `fmt`, x [M, K] float32.
 * K must be a multiple of 32. Returns 0; -1 when out of memory, -2 for a bad format. */
int tpi_qmatmul(int fmt, const float *x, const uint8_t *w, float *y, int64_t ldy, int64_t M,
                int64_t K, int64_t N, int nthreads) {
    if (fmt < 0 || fmt >= FMT_COUNT || K % QK) return -2;
    qacts xa;
    if (quantize_acts(x, M, K, &xa)) return -1;
    qrows_fn rows = chosen()->rows[fmt];
    if (!rows) rows = TPI_QUANT_PLAIN.rows[fmt];
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if (nthreads < 1 || N * K < 65536) nthreads = 1; /* tiny products: threads cost more */
    #pragma omp parallel num_threads(nthreads)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        rows(w, &xa, y, ldy, M, N * t / n, N * (t + 1) / n);
    }
    return 0;
}

/* out[nblocks * 32] = the weights of `nblocks` consecutive blocks of format `fmt`.
 * Threaded: prefill dequantizes whole matrices before a GEMM (core/engine/qweight.py). */
int tpi_dequant(int fmt, const uint8_t *w, float *out, int64_t nblocks, int nthreads) {
    if (fmt < 0 || fmt >= FMT_COUNT) return -2;
    const int64_t bb = QBLOCK_BYTES[fmt];
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if (nthreads < 1 || nblocks < 1024) nthreads = 1;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t b = 0; b < nblocks; b++) {
        int8_t q[QK];
        const uint8_t *blk = w + b * bb;
        const float d = tpi_f16(blk);
        float *o = out + b * QK;
        if (fmt == FMT_Q8_0) {
            for (int j = 0; j < QK; j++) o[j] = d * (float)((const int8_t *)(blk + 2))[j];
        } else if (fmt == FMT_Q4_0) {
            unpack_q4(blk + 2, 8, q);
            for (int j = 0; j < QK; j++) o[j] = d * (float)q[j];
        } else {
            const float m = tpi_f16(blk + 2);
            unpack_q4(blk + 4, 0, q);
            for (int j = 0; j < QK; j++) o[j] = d * (float)q[j] + m;
        }
    }
    return 0;
}
