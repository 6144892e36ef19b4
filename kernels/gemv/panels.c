/* y[M, N] = x[M, K] @ W for a few rows (decoding), W packed as panels [N / 32][K][32].
 *
 * Decoding reads every weight once per step, so this product is a stream over W. A panel
 * holds 32 output columns for every k, contiguous: each thread walks its panels front to
 * back (one sequential stream, which the prefetchers follow), and the 32 sums of up to 8
 * rows stay in registers for the whole of K, so W is read once however many rows there
 * are. Rows beyond 8 are taken 8 at a time. Built with -O3 -march=native: the vector type
 * below is one AVX-512 register, or two AVX2 ones. */
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
#define PANEL 32
#define ROWS 8

static inline __attribute__((always_inline)) void panel(const int rows, const float *x, long K, const float *p,
                                                        float *y, long ldy) {
    v16 acc[ROWS][2];
    for (int r = 0; r < rows; ++r) acc[r][0] = acc[r][1] = (v16){0};
    for (long k = 0; k < K; ++k) {
        v16 w0, w1;
        memcpy(&w0, p + k * PANEL, sizeof w0);
        memcpy(&w1, p + k * PANEL + 16, sizeof w1);
        for (int r = 0; r < rows; ++r) {
            const float xv = x[r * K + k];
            acc[r][0] += xv * w0;
            acc[r][1] += xv * w1;
        }
    }
    for (int r = 0; r < rows; ++r) {
        memcpy(y + r * ldy, &acc[r][0], sizeof acc[r][0]);
        memcpy(y + r * ldy + 16, &acc[r][1], sizeof acc[r][1]);
    }
}

/* x [M, K] and y [M, N] row-major; N a multiple of PANEL. */
void gemv_panels(const float *x, const float *panels, float *y, long M, long K, long N, int threads) {
    const long n_panels = N / PANEL;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long t = 0; t < n_panels; ++t) {
        const float *p = panels + t * K * PANEL;
        for (long r0 = 0; r0 < M; r0 += ROWS) {
            const float *xr = x + r0 * K;
            float *yr = y + r0 * N + t * PANEL;
            switch (M - r0 < ROWS ? M - r0 : ROWS) {  /* a constant row count per case: the loops unroll */
            case 1: panel(1, xr, K, p, yr, N); break;
            case 2: panel(2, xr, K, p, yr, N); break;
            case 3: panel(3, xr, K, p, yr, N); break;
            case 4: panel(4, xr, K, p, yr, N); break;
            case 5: panel(5, xr, K, p, yr, N); break;
            case 6: panel(6, xr, K, p, yr, N); break;
            case 7: panel(7, xr, K, p, yr, N); break;
            default: panel(8, xr, K, p, yr, N); break;
            }
        }
    }
}
