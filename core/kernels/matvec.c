/* Decode-step matrix-vector products for the weights a shard stores (core/shard/blocks.py).
 *
 * One token's decode reads every weight once, so it is bound by memory bandwidth; torch's
 * kernels for a single activation row reach ~23 GB/s (fp32) and ~10 GB/s (int8) on a
 * 2-core desktop CPU that streams ~34 GB/s. These loops get to that floor.
 *
 * Threads: OpenMP. Built with -fopenmp, this library needs libgomp.so.1, which the
 * dynamic linker resolves to the copy torch already loaded (same soname), so torch's ops
 * and these share one thread pool; a second pool would sleep/wake against torch's on
 * every op. The caller passes torch's thread count.
 *
 * CPU features: compiled for the baseline ISA; the hot loops carry x86 target clones or
 * intrinsics chosen at run time, so one binary runs on any x86-64 (and builds elsewhere
 * with the plain C loops).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

#define MAX_THREADS 64

/* ---- float32 / bfloat16 / float16, w [K, N] (the layout x @ w of core/engine/linear.py) */

/* out[N] = x[k0:k1] @ w[k0:k1, :]. Rows four at a time: out is touched once per four rows
 * of w, and each row is a contiguous stream, which the prefetchers follow. LOAD widens one
 * stored weight to float; the same loop serves float32, bfloat16 and float16 weights. */
#define ROWS_KERNEL(name, T, LOAD)                                                          \
    CLONES static void name(const float *restrict x, const T *restrict w,                  \
                            float *restrict out, int64_t N, int64_t k0, int64_t k1) {      \
        for (int64_t j = 0; j < N; j++) out[j] = 0.0f;                                     \
        int64_t k = k0;                                                                    \
        for (; k + 4 <= k1; k += 4) {                                                      \
            const float a = x[k], b = x[k + 1], c = x[k + 2], d = x[k + 3];                \
            const T *w0 = w + k * N, *w1 = w0 + N, *w2 = w1 + N, *w3 = w2 + N;             \
            for (int64_t j = 0; j < N; j++)                                                \
                out[j] += a * LOAD(w0[j]) + b * LOAD(w1[j]) + c * LOAD(w2[j]) +            \
                          d * LOAD(w3[j]);                                                 \
        }                                                                                  \
        for (; k < k1; k++) {                                                              \
            const float a = x[k];                                                          \
            const T *w0 = w + k * N;                                                       \
            for (int64_t j = 0; j < N; j++) out[j] += a * LOAD(w0[j]);                     \
        }                                                                                  \
    }

static inline float f32_load(float v) { return v; }

/* bfloat16 is the top half of a float32: widening is a shift, exact. */
static inline float bf16_load(uint16_t v) {
    union { uint32_t u; float f; } c = {.u = (uint32_t)v << 16};
    return c.f;
}

/* float16 by integer ops, which vectorize everywhere (GCC leaves _Float16 loops scalar):
 * the 15 magnitude bits shifted into place read as float32 at 2^-112 times the value, for
 * normal and subnormal halves alike; inf and NaN keep an all-ones exponent. Exact. */
static inline float f16_load(uint16_t h) {
    union { uint32_t u; float f; } c = {.u = (uint32_t)(h & 0x7fff) << 13};
    c.f *= 0x1p112f;
    c.u |= (uint32_t)(h & 0x8000) << 16;
    if ((h & 0x7c00) == 0x7c00) c.u |= 0x7f800000;
    return c.f;
}

ROWS_KERNEL(f32_rows, float, f32_load)
ROWS_KERNEL(bf16_rows, uint16_t, bf16_load)
ROWS_KERNEL(f16_rows, uint16_t, f16_load)

/* Per-thread partial sums; grown, never shrunk (at most N floats: 192 KB for a 49k vocab). */
static __thread float *scratch;
static __thread int64_t scratch_n;

static float *scratch_for(int64_t n) {
    if (scratch_n < n) {
        free(scratch);
        scratch = aligned_alloc(64, (size_t)((n * 4 + 63) / 64) * 64);
        scratch_n = scratch ? n : 0;
    }
    return scratch;
}

/* y[N] = x[K] @ w[K, N]. Threads split K (each streams a contiguous run of rows), then the
 * partial sums are added, the columns split between threads. Returns 0, or -1 when out of
 * memory (y is then undefined). */
#define MATVEC(name, T, rows)                                                               \
    int name(const float *x, const T *w, float *y, int64_t K, int64_t N, int nthreads) {   \
        float *parts[MAX_THREADS];                                                         \
        int failed = 0;                                                                    \
        if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;                                \
        if (nthreads < 1) nthreads = 1;                                                    \
        _Pragma("omp parallel num_threads(nthreads)")                                      \
        {                                                                                  \
            int t = omp_get_thread_num(), n = omp_get_num_threads();                       \
            float *out = t == 0 ? y : scratch_for(N);                                      \
            parts[t] = out;                                                                \
            if (out) rows(x, w, out, N, K * t / n, K * (t + 1) / n);                       \
            else failed = 1;                                                               \
            _Pragma("omp barrier")                                                         \
            if (!failed) {                                                                 \
                int64_t j0 = N * t / n, j1 = N * (t + 1) / n;                              \
                for (int s = 1; s < n; s++) {                                              \
                    const float *p = parts[s];                                             \
                    for (int64_t j = j0; j < j1; j++) y[j] += p[j];                        \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        return failed ? -1 : 0;                                                            \
    }

MATVEC(tpi_matvec_f32, float, f32_rows)
MATVEC(tpi_matvec_bf16, uint16_t, bf16_rows)
MATVEC(tpi_matvec_f16, uint16_t, f16_rows)

/* ---- int8, q [N, K] per-row scale s[N] (core/shard/quant.py) -------------------------- */

typedef void (*i8_rows_fn)(const float *, const int8_t *, const float *, float *,
                           int64_t, int64_t, int64_t, int64_t, int64_t);

/* y[m, n] = s[n] * dot(q[n, :], x[m, :]) for rows n0..n1 of q and all M rows of x. */
static void i8_rows_plain(const float *restrict x, const int8_t *restrict q,
                          const float *restrict s, float *restrict y, int64_t M, int64_t K,
                          int64_t N, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
        const int8_t *r = q + n * K;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * K;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += (float)r[k] * xm[k];
            y[m * N + n] = acc * s[n];
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* One row of q at a time, read front to back (a purely sequential stream per thread), with
 * four accumulators so the FMAs do not wait on each other's latency. Measured against
 * four rows interleaved with software prefetch: 14 -> 10 ms on one core and 8.3 -> 6 ms on
 * two for the default model's 135 MB of int8 weights; prefetching ahead made it slower. */
__attribute__((target("avx512f")))
static void i8_rows_avx512(const float *restrict x, const int8_t *restrict q,
                           const float *restrict s, float *restrict y, int64_t M, int64_t K,
                           int64_t N, int64_t n0, int64_t n1) {
    const int64_t K64 = K & ~(int64_t)63;
    for (int64_t n = n0; n < n1; n++) {
        const int8_t *r = q + n * K;
        for (int64_t m = 0; m < M; m++) {  /* M > 1: the row is in L1 after the first */
            const float *xm = x + m * K;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t k = 0; k < K64; k += 64) {
                const __m512i w = _mm512_loadu_si512((const void *)(r + k));
#define PART(j, a) a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(             \
                          _mm512_extracti32x4_epi32(w, j))), _mm512_loadu_ps(xm + k + 16 * (j)), a)
                PART(0, a0); PART(1, a1); PART(2, a2); PART(3, a3);
#undef PART
            }
            float t = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1),
                                                         _mm512_add_ps(a2, a3)));
            for (int64_t k = K64; k < K; k++) t += (float)r[k] * xm[k];
            y[m * N + n] = t * s[n];
        }
    }
}

__attribute__((target("avx2,fma")))
static float hsum256(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

__attribute__((target("avx2,fma")))
static void i8_rows_avx2(const float *restrict x, const int8_t *restrict q,
                         const float *restrict s, float *restrict y, int64_t M, int64_t K,
                         int64_t N, int64_t n0, int64_t n1) {
    const int64_t K32 = K & ~(int64_t)31;
    for (int64_t n = n0; n < n1; n++) {
        const int8_t *r = q + n * K;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * K;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t k = 0; k < K32; k += 32) {
#define PART(j, a) a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(             \
                          _mm_loadl_epi64((const __m128i *)(r + k + 8 * (j))))),             \
                          _mm256_loadu_ps(xm + k + 8 * (j)), a)
                PART(0, a0); PART(1, a1); PART(2, a2); PART(3, a3);
#undef PART
            }
            float t = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
            for (int64_t k = K32; k < K; k++) t += (float)r[k] * xm[k];
            y[m * N + n] = t * s[n];
        }
    }
}
#endif

/* TPI_CHAT_KERNEL_ISA=avx2 or =plain caps the loop chosen (so tests can run every loop). */
static i8_rows_fn pick_i8(void) {
    const char *cap = getenv("TPI_CHAT_KERNEL_ISA");
    const int plain = cap && !strcmp(cap, "plain"), avx2 = cap && !strcmp(cap, "avx2");
    (void)avx2;
    if (plain) return i8_rows_plain;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!avx2 && __builtin_cpu_supports("avx512f")) return i8_rows_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return i8_rows_avx2;
#endif
    return i8_rows_plain;
}

/* y[M, N] = (x[M, K] @ q[N, K].T) * s[N]. Threads split the rows of q, so each weight byte
 * is read once per call, whatever M. */
void tpi_matmul_i8(const float *x, const int8_t *q, const float *s, float *y, int64_t M,
                   int64_t K, int64_t N, int nthreads) {
    static i8_rows_fn rows;
    if (!rows) rows = pick_i8();
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if (nthreads < 1) nthreads = 1;
    #pragma omp parallel num_threads(nthreads)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        rows(x, q, s, y, M, K, N, N * t / n, N * (t + 1) / n);
    }
}

/* Which int8 loop this CPU runs: 2 avx512, 1 avx2, 0 plain C (for logs and tests). */
int tpi_i8_level(void) {
    i8_rows_fn f = pick_i8();
#if defined(__x86_64__) && defined(__GNUC__)
    if (f == i8_rows_avx512) return 2;
    if (f == i8_rows_avx2) return 1;
#endif
    return f == i8_rows_plain ? 0 : -1;
}
