/* Runs core/kernels/quant.c's entry points on cases read from a file, for tests that cannot
 * load the library in-process (test_quant_arm.py runs this under qemu-aarch64).
 *
 *   quant_driver IN OUT
 *
 * IN is a sequence of cases, little-endian, until its end:
 *   int32 fmt, int32 nthreads, int64 M, K, N, ldy, reps; float32 x[M * K];
 *   uint8 w[N * K / 32 * block bytes of fmt]
 * OUT gets per case: int32 tpi_qmatmul's result, int32 tpi_dequant's; float32 y[M * ldy]
 * (NaN where the product is not written); float32 w dequantized [N * K].
 * stdout: "isa NAME", then per case "case I seconds S" (the best of `reps` products).
 * quant_arm.py builds and runs it; it also counts the instructions the row loops execute
 * here, from qemu's log.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "quant.h"

int tpi_qmatmul(int fmt, const float *x, const uint8_t *w, float *y, int64_t ldy, int64_t M,
                int64_t K, int64_t N, int nthreads);
int tpi_dequant(int fmt, const uint8_t *w, float *out, int64_t nblocks, int nthreads);
const char *tpi_quant_isa(void);

static void *read_n(FILE *f, size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p || fread(p, 1, n, f) != n) {
        fprintf(stderr, "quant_driver: short input\n");
        exit(2);
    }
    return p;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: quant_driver IN OUT\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out) {
        perror("quant_driver");
        return 2;
    }
    printf("isa %s\n", tpi_quant_isa());
    for (int c = 0;; c++) {
        int32_t head[2];
        int64_t dims[5];
        if (fread(head, sizeof head, 1, in) != 1) break;
        if (fread(dims, sizeof dims, 1, in) != 1) {
            fprintf(stderr, "quant_driver: short input\n");
            return 2;
        }
        const int fmt = head[0], nthreads = head[1];
        const int64_t M = dims[0], K = dims[1], N = dims[2], ldy = dims[3], reps = dims[4];
        if (fmt < 0 || fmt >= FMT_COUNT || K % QK || ldy < N) {
            fprintf(stderr, "quant_driver: bad case %d\n", c);
            return 2;
        }
        const int64_t nblocks = N * (K / QK);
        float *x = read_n(in, (size_t)(M * K) * sizeof(float));
        uint8_t *w = read_n(in, (size_t)(nblocks * QBLOCK_BYTES[fmt]));
        float *y = malloc((size_t)(M * ldy) * sizeof(float));
        float *deq = malloc((size_t)(N * K) * sizeof(float));
        if (!y || !deq) return 2;
        for (int64_t i = 0; i < M * ldy; i++) y[i] = NAN;
        int32_t rc[2] = {0, 0};
        double best = INFINITY;
        for (int64_t r = 0; r < (reps > 0 ? reps : 1); r++) {
            const double t0 = now();
            rc[0] = tpi_qmatmul(fmt, x, w, y, ldy, M, K, N, nthreads);
            const double dt = now() - t0;
            if (dt < best) best = dt;
        }
        rc[1] = tpi_dequant(fmt, w, deq, nblocks, nthreads);
        fwrite(rc, sizeof rc, 1, out);
        fwrite(y, sizeof(float), (size_t)(M * ldy), out);
        fwrite(deq, sizeof(float), (size_t)(N * K), out);
        printf("case %d seconds %.6f\n", c, best);
        free(x), free(w), free(y), free(deq);
    }
    return fclose(out) ? 2 : 0;
}
