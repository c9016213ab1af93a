/* Products of float32 activations with block-quantized weights (quant.h), and dequantizing.
 *
 * tpi_qmatmul sums x per 32-block once per call, then threads split the rows of w, so each
 * weight byte is read once per call, whatever M. The loops are chosen once per process: the
 * best this CPU runs among quant_vnni.c (AVX-512 VNNI, integer), quant_x86.c (AVX-512,
 * AVX2), quant_neon.c (NEON) and the plain C below; TPI_CHAT_KERNEL_ISA=plain|avx2|avx512|
 * neon caps the choice so tests can run every loop.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "quant.h"

#define MAX_THREADS 64

/* ---- plain C loops: the reference the vector loops are tested against ---------------- */

/* A block's 32 weights without the scale: q, or the nibbles (Q4_0's -8 is in its m). */
static void block_q(int fmt, const uint8_t *blk, float *q) {
    if (fmt == FMT_Q8_0) {
        for (int i = 0; i < QK; i++) q[i] = (float)((const int8_t *)(blk + 2))[i];
        return;
    }
    const uint8_t *qs = blk + (fmt == FMT_Q4_1 ? 4 : 2);
    for (int i = 0; i < QK / 2; i++) {
        q[i] = (float)(qs[i] & 0x0f);
        q[i + QK / 2] = (float)(qs[i] >> 4);
    }
}

static void rows_plain(int fmt, const uint8_t *w, const qacts *x, float *y, int64_t ldy,
                       int64_t M, int64_t n0, int64_t n1) {
    const int64_t nb = x->nb, bb = QBLOCK_BYTES[fmt];
    float q[QK];
    for (int64_t n = n0; n < n1; n++) {
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x->x + m * nb * QK, *sums = x->sums + 2 * m * nb;
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = w + (n * nb + b) * bb;
                float d, mn, dot = 0.0f;
                tpi_block_dm(fmt, blk, &d, &mn);
                block_q(fmt, blk, q);
                for (int i = 0; i < QK; i++) dot += q[i] * xm[b * QK + i];
                acc += d * dot + mn * sums[2 * b + 1];
            }
            y[m * ldy + n] = acc;
        }
    }
}

#define PLAIN(name, fmt)                                                                     \
    static void name(const uint8_t *w, const qacts *x, float *y, int64_t ldy, int64_t M,   \
                     int64_t n0, int64_t n1) {                                             \
        rows_plain(fmt, w, x, y, ldy, M, n0, n1);                                          \
    }
PLAIN(q8_0_plain, FMT_Q8_0)
PLAIN(q4_0_plain, FMT_Q4_0)
PLAIN(q4_1_plain, FMT_Q4_1)

static void deq_plain(int fmt, const uint8_t *w, float *out, int64_t b0, int64_t b1) {
    const int64_t bb = QBLOCK_BYTES[fmt];
    for (int64_t b = b0; b < b1; b++) {
        float q[QK], d, m;
        tpi_block_dm(fmt, w + b * bb, &d, &m);
        block_q(fmt, w + b * bb, q);
        /* gguf's own order: d * q (Q4_0: d * (q - 8)), plus m only for Q4_1, so a zero
         * weight under a negative scale stays -0.0 as there */
        for (int j = 0; j < QK; j++)
            out[(b - b0) * QK + j] = fmt == FMT_Q4_1 ? d * q[j] + m
                                   : fmt == FMT_Q4_0 ? d * (q[j] - 8.0f) : d * q[j];
    }
}

#define DEQ_PLAIN(name, fmt)                                                                 \
    static void name(const uint8_t *w, float *out, int64_t b0, int64_t b1) {               \
        deq_plain(fmt, w, out, b0, b1);                                                    \
    }
DEQ_PLAIN(q8_0_deq, FMT_Q8_0)
DEQ_PLAIN(q4_0_deq, FMT_Q4_0)
DEQ_PLAIN(q4_1_deq, FMT_Q4_1)

const qisa TPI_QUANT_PLAIN = {"plain C", {q8_0_plain, q4_0_plain, q4_1_plain},
                              {q8_0_deq, q4_0_deq, q4_1_deq}};

/* ---- activations ------------------------------------------------------------------- */

/* Per thread (the engine may run ranks as threads); grown, never shrunk. */
static __thread float *sbuf;
static __thread int64_t sbuf_n;

/* The [0, sum] pair of each of `nblocks` consecutive 32-blocks of x -> pairs. */
static void block_sums(const float *x, int64_t nblocks, float *pairs) {
    for (int64_t i = 0; i < nblocks; i++) {
        float s = 0.0f;
        for (int j = 0; j < QK; j++) s += x[i * QK + j];
        pairs[2 * i] = 0.0f;
        pairs[2 * i + 1] = s;
    }
}

static const qisa *chosen(void);

/* One block of x (32 floats, their sum) rounded to int16 into quad slot k (0..3). */
static void round_block(const float *x, float sum, qquad16 *p, int k) {
    float amax = 0.0f;
    for (int i = 0; i < QK; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
    /* a NaN or infinity in the block shows in its sum: keep it in the product */
    const float s = isfinite(sum) ? amax / 32767.0f : NAN;
    for (int i = 0; i < QK; i++) {
        long q = lrintf(x[i] * inv);
        q = q > 32767 ? 32767 : q < -32767 ? -32767 : q;
        const int at = 16 * k + i % 16;
        const uint8_t lo = (uint8_t)(q & 0xff);
        const int8_t hi = (int8_t)((q - lo) / 256); /* floor(q / 256), in -128..127 */
        if (i < 16) p->lo1[at] = lo, p->hi1[at] = hi;
        else p->lo2[at] = lo, p->hi2[at] = hi;
    }
    for (int l = 4 * k; l < 4 * k + 4; l++) {
        p->s[l] = s;
        p->sum4[l] = sum / 4.0f;
        p->nsum[l] = -2.0f * sum;
    }
}

/* qquad16s of x [M, K] (sums: its block sums as pairs) into out [M, nq]. */
static void round_quads(const float *x, const float *sums, int64_t M, int64_t nb,
                        qquad16 *out) {
    const int64_t nq = (nb + 3) / 4;
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < nq; j++) {
            qquad16 *p = out + m * nq + j;
            memset(p, 0, sizeof *p);
            for (int k = 0; k < 4 && 4 * j + k < nb; k++) {
                const int64_t b = m * nb + 4 * j + k;
                round_block(x + b * QK, sums[2 * b + 1], p, k);
            }
            for (int l = 0; l < 16; l++) {
                int32_t hs = 0;
                for (int i = 0; i < 4; i++) hs += p->hi1[4 * l + i] + p->hi2[4 * l + i];
                p->corr[l] = -128 * hs;
            }
        }
}

#define QUAD_FLOATS ((int64_t)(sizeof(qquad16) / sizeof(float)))

int64_t tpi_acts_floats(int64_t M, int64_t K) {
    const int64_t nb = K / QK;
    return 2 * M * nb + 1 + 16 + M * ((nb + 3) / 4) * QUAD_FLOATS;
}

void tpi_acts(const float *x, int64_t M, int64_t K, float *scratch, qacts *out) {
    const int64_t nb = K / QK, nq = (nb + 3) / 4;
    block_sums(x, M * nb, scratch);
    qquad16 *x16 = NULL;
    if (chosen()->x16) {
        const uintptr_t end = (uintptr_t)(scratch + 2 * M * nb);
        x16 = (qquad16 *)((end + 63) & ~(uintptr_t)63);
        round_quads(x, scratch, M, nb, x16);
    }
    *out = (qacts){x, scratch, nb, x16, nq};
}

/* Activations of x [M, K] in this thread's buffer. 0, or -1 when out of memory. */
static int thread_acts(const float *x, int64_t M, int64_t K, qacts *out) {
    const int64_t need = tpi_acts_floats(M, K);
    if (sbuf_n < need) {
        free(sbuf);
        sbuf = malloc((size_t)need * sizeof(float));
        sbuf_n = sbuf ? need : 0;
        if (!sbuf) return -1;
    }
    tpi_acts(x, M, K, sbuf, out);
    return 0;
}

/* ---- dispatch ---------------------------------------------------------------------- */

static const qisa *pick(void) {
    const char *cap = getenv("TPI_CHAT_KERNEL_ISA");
    if (cap && !strcmp(cap, "plain")) return &TPI_QUANT_PLAIN;
    const qisa *isa = tpi_quant_vnni(cap);
    if (!isa) isa = tpi_quant_x86(cap);
    if (!isa) isa = tpi_quant_neon(cap);
    return isa ? isa : &TPI_QUANT_PLAIN;
}

static const qisa *chosen(void) {
    static const qisa *isa;
    if (!isa) isa = pick();
    return isa;
}

/* The row loop this process runs for `fmt` (a valid format). */
qrows_fn tpi_quant_rows(int fmt) {
    qrows_fn rows = chosen()->rows[fmt];
    return rows ? rows : TPI_QUANT_PLAIN.rows[fmt];
}

/* The name of the loops this process runs ("AVX-512 VNNI", "plain C", ...). */
const char *tpi_quant_isa(void) { return chosen()->name; }

/* y[m * ldy + n] = x[m, :] . w[n, :] for w [N, K] in format `fmt`, x [M, K] float32.
 * K must be a multiple of 32. Returns 0; -1 when out of memory, -2 for a bad format. */
int tpi_qmatmul(int fmt, const float *x, const uint8_t *w, float *y, int64_t ldy, int64_t M,
                int64_t K, int64_t N, int nthreads) {
    if (fmt < 0 || fmt >= FMT_COUNT || K % QK) return -2;
    qacts xa;
    if (thread_acts(x, M, K, &xa)) return -1;
    qrows_fn rows = tpi_quant_rows(fmt);
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
    qdeq_fn deq = chosen()->dequant[fmt];
    if (!deq) deq = TPI_QUANT_PLAIN.dequant[fmt];
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if (nthreads < 1 || nblocks < 4096) nthreads = 1;
    #pragma omp parallel num_threads(nthreads)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        const int64_t b0 = nblocks * t / n, b1 = nblocks * (t + 1) / n;
        deq(w, out + b0 * QK, b0, b1);
    }
    return 0;
}
