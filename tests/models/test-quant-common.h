/* Shared helpers of the quantization tests: a seeded Gaussian generator, checks that always run,
 * and matrix products for output errors. */
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define check(x)                                                                              \
        do {                                                                                  \
                if (!(x)) {                                                                   \
                        fflush(stdout);                                                       \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x); \
                        abort();                                                              \
                }                                                                             \
        } while (0)

typedef struct Rng {
        uint64_t s;
} Rng;

static inline uint64_t rng_u64(Rng *r) {
        /* splitmix64 */
        uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

static inline double rng_uniform(Rng *r) {
        return ((double) (rng_u64(r) >> 11) + 0.5) * 0x1p-53;
}

static inline float rng_gauss(Rng *r) {
        double u = rng_uniform(r), v = rng_uniform(r);
        return (float) (sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v));
}

static inline void fill_gauss(Rng *r, float *x, size_t n, float sigma) {
        for (size_t i = 0; i < n; i++)
                x[i] = sigma * rng_gauss(r);
}

/* Σ over samples and rows of (x_t · (a_r - b_r))²: the output error of using B instead of A. */
static inline double output_error(const float *x, size_t n, size_t cols, const float *a,
                                  const float *b, size_t rows) {
        double e = 0.0;
        for (size_t r = 0; r < rows; r++)
                for (size_t t = 0; t < n; t++) {
                        double d = 0.0;
                        for (size_t j = 0; j < cols; j++)
                                d += (double) x[t * cols + j] * ((double) a[r * cols + j] - b[r * cols + j]);
                        e += d * d;
                }
        return e;
}
