/* One decode position's half-layers over block-quantized weights (quant.h), each in one
 * call and one thread team:
 *   tpi_attn_decode: RMSNorm -> wqkv (+ bias) -> RoPE, KV-cache write, attention -> wo
 *   tpi_mlp_decode:  RMSNorm -> w_gate_up -> SiLU-gate -> w_down
 * Each returns this rank's partial output; the caller allreduces and adds the residual.
 *
 * Why: done step by step from Python a decode layer was ~10 calls through ctypes and torch
 * (norm, one product per matrix part, attention, SiLU, allocations) and ~5 thread-team
 * start-ups; on a small model that was a quarter of a token's time, more than the gap to
 * llama.cpp. The numbers are the step-by-step path's exactly: the same row loops, block
 * sums, norm and attention code, each output row computed whole by one thread.
 *
 * A matrix is a list of parts (qpart), stacked row-wise, each in its own format, as
 * core/engine/qweight.py's QWeight holds them.
 */
#include <stdlib.h>
#include <omp.h>

#include "decode_ops.h"
#include "quant.h"

#define MAX_THREADS 64

typedef struct {
    int32_t fmt;
    const uint8_t *w;  /* [rows, K / 32 blocks] */
    int64_t rows;
} qpart;

/* Per calling thread (ranks may be threads of one process); grown, never shrunk. */
static __thread float *scratch;
static __thread int64_t scratch_n;

static float *take(int64_t n) {
    if (scratch_n < n) {
        free(scratch);
        scratch = malloc((size_t)n * sizeof(float));
        scratch_n = scratch ? n : 0;
    }
    return scratch;
}

/* Parts of known formats whose rows add up to N, over K (a multiple of 32) columns. */
static int valid(const qpart *p, int n_parts, int64_t N, int64_t K) {
    int64_t rows = 0;
    if (K % QK || n_parts < 1) return 0;
    for (int i = 0; i < n_parts; i++) {
        if (p[i].fmt < 0 || p[i].fmt >= FMT_COUNT || p[i].rows < 0) return 0;
        rows += p[i].rows;
    }
    return rows == N;
}

/* y[0..N) = x . rows of the stacked parts; thread t of n takes its share of each part. */
static void product(const qpart *p, int n_parts, const qacts *xa, float *y, int t, int n) {
    int64_t r = 0;
    for (int i = 0; i < n_parts; i++) {
        const int64_t R = p[i].rows;
        tpi_quant_rows(p[i].fmt)(p[i].w, xa, y + r, 0, 1, R * t / n, R * (t + 1) / n);
        r += R;
    }
}

static int team(int nthreads, int64_t weights) {
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    return nthreads < 1 || weights < 65536 ? 1 : nthreads; /* tiny: threads cost more */
}

/* out [D] = this rank's heads of attention for one position, before the allreduce.
 * x [D] residual stream; wqkv [(n_q + 2 n_kv) hd, D] (bias [same] or NULL); caches
 * kc, vc [n_kv, max_seq, hd] get this position's k and v; cos, ssin [hd] (rope.py's
 * tables at pos); wo [D, n_q hd]. Returns 0; -1 out of memory; -2 bad formats or widths. */
int tpi_attn_decode(const float *x, const float *norm_w, float eps, const qpart *wqkv,
                    int n_qkv, const float *bias, const float *cos, const float *ssin,
                    float *kc, float *vc, int64_t n_q, int64_t n_kv, int64_t hd,
                    int64_t max_seq, int64_t pos, const qpart *wo, int n_wo, float *out,
                    int64_t D, int nthreads) {
    const int64_t A = n_q * hd, Q = (n_q + 2 * n_kv) * hd;
    if (!valid(wqkv, n_qkv, Q, D) || !valid(wo, n_wo, D, A) || n_kv < 1 || n_q % n_kv) return -2;
    const int64_t hn = tpi_acts_floats(1, D), an = tpi_acts_floats(1, A);
    float *h = take(D + hn + Q + A + an + n_q * (pos + 1));
    if (!h) return -1;
    float *hs = h + D, *qkv = hs + hn, *att = qkv + Q, *as = att + A, *scores = as + an;
    qacts ha, aa;
    tpi_quant_rows(0); /* the CPU's loops chosen before threads race to choose them */
    #pragma omp parallel num_threads(team(nthreads, Q * D))
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        #pragma omp single
        {
            tpi_rms_norm(x, norm_w, h, 1, D, eps);
            tpi_acts(h, 1, D, hs, &ha);
        }
        product(wqkv, n_qkv, &ha, qkv, t, n);
        #pragma omp barrier
        #pragma omp single
        {
            if (bias)
                for (int64_t j = 0; j < Q; j++) qkv[j] += bias[j];
            tpi_rope_store(qkv, cos, ssin, kc, vc, n_q, n_kv, hd, max_seq, pos);
        }
        tpi_attend_heads(qkv, kc, vc, att, scores, n_q, n_kv, hd, max_seq, pos,
                         n_q * t / n, n_q * (t + 1) / n);
        #pragma omp barrier
        #pragma omp single
        tpi_acts(att, 1, A, as, &aa);
        product(wo, n_wo, &aa, out, t, n);
    }
    return 0;
}

/* out [D] = this rank's columns of the SwiGLU MLP for one position, before the allreduce.
 * w_gate_up [2C, D] (gate rows, then up rows), w_down [D, C]. Returns as tpi_attn_decode. */
int tpi_mlp_decode(const float *x, const float *norm_w, float eps, const qpart *w_gate_up,
                   int n_gu, const qpart *w_down, int n_down, float *out, int64_t D,
                   int64_t C, int nthreads) {
    if (!valid(w_gate_up, n_gu, 2 * C, D) || !valid(w_down, n_down, D, C)) return -2;
    const int64_t hn = tpi_acts_floats(1, D);
    float *h = take(D + hn + 3 * C + tpi_acts_floats(1, C));
    if (!h) return -1;
    float *hs = h + D, *gu = hs + hn, *act = gu + 2 * C, *acts = act + C;
    qacts ha, aa;
    tpi_quant_rows(0);
    #pragma omp parallel num_threads(team(nthreads, 2 * C * D))
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        #pragma omp single
        {
            tpi_rms_norm(x, norm_w, h, 1, D, eps);
            tpi_acts(h, 1, D, hs, &ha);
        }
        product(w_gate_up, n_gu, &ha, gu, t, n);
        #pragma omp barrier
        tpi_silu_range(gu, gu + C, act, C * t / n, C * (t + 1) / n);
        #pragma omp barrier
        #pragma omp single
        tpi_acts(act, 1, C, acts, &aa);
        product(w_down, n_down, &aa, out, t, n);
    }
    return 0;
}

/* One layer's weights and caches as tpi_stack_decode takes them (all resident). */
typedef struct {
    const float *attn_norm;
    const qpart *wqkv;
    int32_t n_qkv;
    const float *bqkv; /* or NULL */
    float *kc, *vc;    /* [n_kv, max_seq, hd] */
    const qpart *wo;
    int32_t n_wo;
    const float *mlp_norm;
    const qpart *w_gate_up;
    int32_t n_gu;
    const qpart *w_down;
    int32_t n_down;
} qlayer;

/* x [D] += every layer's attention and MLP for one position, when this rank is the whole
 * model (no allreduce between half-layers): one call per token instead of two per layer
 * from Python, whose argument building and checks cost ~2.5 ms a token on the default
 * model (30 layers), a quarter of it. The numbers are the per-layer path's: the same two
 * calls per layer, the residual added in float32 as torch adds it. Returns as
 * tpi_attn_decode, after the layer that failed. */
int tpi_stack_decode(float *x, const qlayer *layers, int n_layers, float eps,
                     const float *cos, const float *ssin, int64_t n_q, int64_t n_kv,
                     int64_t hd, int64_t max_seq, int64_t pos, int64_t D, int64_t C,
                     int nthreads) {
    float *h = malloc((size_t)D * sizeof(float));
    if (!h) return -1;
    int rc = 0;
    for (int i = 0; i < n_layers && !rc; i++) {
        const qlayer *L = layers + i;
        rc = tpi_attn_decode(x, L->attn_norm, eps, L->wqkv, L->n_qkv, L->bqkv, cos, ssin,
                             L->kc, L->vc, n_q, n_kv, hd, max_seq, pos, L->wo, L->n_wo, h, D,
                             nthreads);
        for (int64_t j = 0; !rc && j < D; j++) x[j] += h[j];
        if (!rc)
            rc = tpi_mlp_decode(x, L->mlp_norm, eps, L->w_gate_up, L->n_gu, L->w_down,
                                L->n_down, h, D, C, nthreads);
        for (int64_t j = 0; !rc && j < D; j++) x[j] += h[j];
    }
    free(h);
    return rc;
}
