/* decode_ops.c's steps, for the fused half-layers of decode_layer.c. */
#ifndef TPI_DECODE_OPS_H
#define TPI_DECODE_OPS_H

#include <stdint.h>

void tpi_rms_norm(const float *x, const float *w, float *out, int64_t T, int64_t D, float eps);
void tpi_rope_store(float *qkv, const float *cos, const float *ssin, float *kc, float *vc,
                    int64_t n_q, int64_t n_kv, int64_t hd, int64_t max_seq, int64_t pos);
void tpi_attend_heads(const float *qkv, const float *kc, const float *vc, float *out,
                      float *scores, int64_t n_q, int64_t n_kv, int64_t hd, int64_t max_seq,
                      int64_t pos, int64_t i0, int64_t i1);

/* silu(g[j]) * u[j] for j in j0..j1 (gate and up halves of one position). */
void tpi_silu_range(const float *g, const float *u, float *out, int64_t j0, int64_t j1);

#endif
