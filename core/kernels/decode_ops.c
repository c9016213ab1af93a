/* The small per-layer steps of a one-token decode, fused: RMSNorm, SiLU-gate, and
 * RoPE + KV-cache write + attention for one query position.
 *
 * In torch each is several aten ops at 1-25 us apiece (F.rms_norm alone decomposes into
 * six on CPU); ~60 of them a layer cost a decode step more than its weight products once
 * those run at memory speed (matvec.c). Formulas follow Hugging Face's Llama so results
 * match transformers up to float rounding (core/engine/layers.py has the torch versions).
 */
#include <math.h>
#include <stdint.h>
#include <omp.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* out[t] = w * x[t] / sqrt(mean(x[t]^2) + eps), for T rows of D (fp32, like HF). */
CLONES void tpi_rms_norm(const float *restrict x, const float *restrict w, float *restrict out,
                         int64_t T, int64_t D, float eps) {
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * D;
        float ss = 0.0f;
        #pragma omp simd reduction(+:ss)
        for (int64_t j = 0; j < D; j++) ss += xt[j] * xt[j];
        const float r = 1.0f / sqrtf(ss / (float)D + eps);
        float *o = out + t * D;
        for (int64_t j = 0; j < D; j++) o[j] = w[j] * (xt[j] * r);
    }
}

/* gu [T, 2C] = (gate | up) -> out [T, C] = silu(gate) * up. */
CLONES void tpi_silu_mul(const float *restrict gu, float *restrict out, int64_t T, int64_t C) {
    for (int64_t t = 0; t < T; t++) {
        const float *g = gu + t * 2 * C, *u = g + C;
        float *o = out + t * C;
        for (int64_t j = 0; j < C; j++) o[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
    }
}

/* x [hd] rotated in place: x*cos + rotate_half(x)*sin, with sin's first half negated
 * already (core/engine/rope.py's signed_sin). */
static void rope(float *x, const float *cos, const float *ssin, int64_t hd) {
    const int64_t h = hd / 2;
    for (int64_t j = 0; j < h; j++) {
        const float a = x[j], b = x[j + h];
        x[j] = a * cos[j] + b * ssin[j];
        x[j + h] = b * cos[j + h] + a * ssin[j + h];
    }
}

/* One decode position. qkv [(n_q + 2 n_kv) hd] (query heads, key heads, value heads, bias
 * added) is rotated in place (q and k); k and v are written into the caches
 * kc, vc [n_kv, max_seq, hd] at `pos`; out [n_q hd] gets softmax(q k^T / sqrt(hd)) v over
 * positions 0..pos. Query head i reads KV head i / group (grouped-query attention).
 * scores is caller scratch of n_q * (pos + 1) floats. */
void tpi_attend_one(float *restrict qkv, const float *restrict cos, const float *restrict ssin,
                    float *restrict kc, float *restrict vc, float *restrict out,
                    float *restrict scores, int64_t n_q, int64_t n_kv, int64_t hd,
                    int64_t max_seq, int64_t pos, int nthreads) {
    const int64_t S = pos + 1, group = n_q / n_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int64_t h = 0; h < n_q + n_kv; h++) rope(qkv + h * hd, cos, ssin, hd);
    for (int64_t h = 0; h < n_kv; h++) {
        const float *k = qkv + (n_q + h) * hd, *v = qkv + (n_q + n_kv + h) * hd;
        float *kd = kc + (h * max_seq + pos) * hd, *vd = vc + (h * max_seq + pos) * hd;
        for (int64_t j = 0; j < hd; j++) { kd[j] = k[j]; vd[j] = v[j]; }
    }
    /* threads only pay off once the context is long (a region costs a few us) */
    #pragma omp parallel for num_threads(nthreads) if (S * n_q * hd > (1 << 16))
    for (int64_t i = 0; i < n_q; i++) {
        const float *q = qkv + i * hd;
        const float *K = kc + (i / group) * max_seq * hd, *V = vc + (i / group) * max_seq * hd;
        float *sc = scores + i * S, *o = out + i * hd, mx = -INFINITY, sum = 0.0f;
        for (int64_t s = 0; s < S; s++) {
            float d = 0.0f;
            #pragma omp simd reduction(+:d)
            for (int64_t j = 0; j < hd; j++) d += q[j] * K[s * hd + j];
            sc[s] = d * scale;
            mx = sc[s] > mx ? sc[s] : mx;
        }
        for (int64_t s = 0; s < S; s++) { sc[s] = expf(sc[s] - mx); sum += sc[s]; }
        for (int64_t j = 0; j < hd; j++) o[j] = 0.0f;
        for (int64_t s = 0; s < S; s++) {
            const float p = sc[s] / sum;
            for (int64_t j = 0; j < hd; j++) o[j] += p * V[s * hd + j];
        }
    }
}
