/* Helpers shared by the quantization sources, not part of the API. */
#pragma once

#include <stddef.h>

#include "quant.h"

/* Calls fn(userdata, i) for i in [0, n) on up to n_threads threads (the caller's included),
 * indices handed out one at a time. Returns the first negative value fn returned (the remaining
 * indices are skipped), -ENOMEM/-EAGAIN if no thread could run, or 0. */
int qd_parallel_for(size_t n, unsigned n_threads, int (*fn)(void *userdata, size_t i),
                    void *userdata);

/* quant-linalg.c: OpenBLAS limited to one thread per call (once per process); call before any
 * BLAS use. Parallel work splits into tiles on qd_parallel_for() instead. */
void qd_blas_init(void);
/* In place: the lower Cholesky factor L (a = L·Lᵀ) of the row-major n × n a from its lower
 * triangle, blocked, tiles on n_threads; the strict upper triangle is left undefined. -EDOM if a
 * is not positive definite. */
int qd_chol_lower(double *a, size_t n, unsigned n_threads);
/* U, upper triangular with B⁻¹ = Uᵀ·U, into ret_u (floats, zeros below the diagonal) from the
 * index-reversed B: b[i][j] = B[n−1−i][n−1−j] (lower triangle read, b destroyed). With
 * b = L·Lᵀ, B = R·Rᵀ for R = P·L·P upper (P reverses the indices), so B⁻¹ = R⁻ᵀ·R⁻¹ and
 * U = R⁻¹ = P·L⁻¹·P: one factorisation and one triangular inverse, never B⁻¹ itself. */
int qd_hinv_upper(double *b, size_t n, unsigned n_threads, float *ret_u);

/* quant-rtn.c: qd_quant_group_scale() by the straightforward search (every candidate scored in
 * full by itself, the generic least-squares polish), for the tests: the fast one must return
 * exactly the same scale. */
int qd_quant_group_scale_ref(const QdQuantParams *p, const float *x, const float *w, size_t n,
                             QdGroupScale *ret);
