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

#include "decode_ops.h"

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

/* e^x within 2 ulp of expf for x in [-87, 88] (clamped there), as plain float arithmetic
 * that the compiler vectorizes (glibc's expf is a call per value, without -ffast-math):
 * Cody-Waite reduction to r in [-ln2/2, ln2/2], Cephes' degree-6 polynomial, times 2^n.
 * A decode step's softmax (one query over the whole context) takes one per cached
 * position and head. */
static inline float exp_approx(float x) {
    x = fminf(fmaxf(x, -87.0f), 88.0f);
    const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest */
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale = {.i = ((int32_t)n + 127) << 23};
    return y * scale.f;
}

/* SiLU keeps glibc's expf: prefill runs it too, and the approximation moved the default
 * model's prefill logits to 1.04e-4 of transformers' (the contract's bound is 1e-4). */
CLONES void tpi_silu_range(const float *restrict g, const float *restrict u,
                           float *restrict out, int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; j++) out[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
}

/* gu [T, 2C] = (gate | up) -> out [T, C] = silu(gate) * up. */
CLONES void tpi_silu_mul(const float *restrict gu, float *restrict out, int64_t T, int64_t C) {
    for (int64_t t = 0; t < T; t++) {
        const float *g = gu + t * 2 * C, *u = g + C;
        float *o = out + t * C;
        tpi_silu_range(g, u, o, 0, C);
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

/* One decode position's q and k rotated in place in qkv [(n_q + 2 n_kv) hd] (query heads,
 * key heads, value heads, bias added), then its k and v written into the caches
 * kc, vc [n_kv, max_seq, hd] at `pos`. */
void tpi_rope_store(float *restrict qkv, const float *restrict cos, const float *restrict ssin,
                    float *restrict kc, float *restrict vc, int64_t n_q, int64_t n_kv,
                    int64_t hd, int64_t max_seq, int64_t pos) {
    for (int64_t h = 0; h < n_q + n_kv; h++) rope(qkv + h * hd, cos, ssin, hd);
    for (int64_t h = 0; h < n_kv; h++) {
        const float *k = qkv + (n_q + h) * hd, *v = qkv + (n_q + n_kv + h) * hd;
        float *kd = kc + (h * max_seq + pos) * hd, *vd = vc + (h * max_seq + pos) * hd;
        for (int64_t j = 0; j < hd; j++) { kd[j] = k[j]; vd[j] = v[j]; }
    }
}

/* Query heads i0..i1 of one position: out [n_q hd] gets softmax(q k^T / sqrt(hd)) v over
 * positions 0..pos. Query head i reads KV head i / group (grouped-query attention).
 * scores is scratch of n_q * (pos + 1) floats. */
CLONES void tpi_attend_heads(const float *restrict qkv, const float *restrict kc,
                      const float *restrict vc, float *restrict out, float *restrict scores,
                      int64_t n_q, int64_t n_kv, int64_t hd, int64_t max_seq, int64_t pos,
                      int64_t i0, int64_t i1) {
    const int64_t S = pos + 1, group = n_q / n_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int64_t i = i0; i < i1; i++) {
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
        #pragma omp simd reduction(+:sum)
        for (int64_t s = 0; s < S; s++) { sc[s] = exp_approx(sc[s] - mx); sum += sc[s]; }
        for (int64_t j = 0; j < hd; j++) o[j] = 0.0f;
        for (int64_t s = 0; s < S; s++) {
            const float p = sc[s] / sum;
            for (int64_t j = 0; j < hd; j++) o[j] += p * V[s * hd + j];
        }
    }
}

/* One decode position: tpi_rope_store, then every query head's attention (see above). */
void tpi_attend_one(float *restrict qkv, const float *restrict cos, const float *restrict ssin,
                    float *restrict kc, float *restrict vc, float *restrict out,
                    float *restrict scores, int64_t n_q, int64_t n_kv, int64_t hd,
                    int64_t max_seq, int64_t pos, int nthreads) {
    tpi_rope_store(qkv, cos, ssin, kc, vc, n_q, n_kv, hd, max_seq, pos);
    /* threads only pay off once the context is long (a region costs a few us) */
    #pragma omp parallel num_threads(nthreads) if ((pos + 1) * n_q * hd > (1 << 16))
    {
        const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
        tpi_attend_heads(qkv, kc, vc, out, scores, n_q, n_kv, hd, max_seq, pos,
                         n_q * t / n, n_q * (t + 1) / n);
    }
}
