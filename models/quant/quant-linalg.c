/* Dense linear algebra for GPTQ and AWQ over OpenBLAS: every BLAS/LAPACK call is single-threaded
 * and the tiles of one operation run on qd_parallel_for(), so a job never uses more cores than
 * its n_threads (the daemon gives its jobs half the machine) and the results do not depend on
 * the thread count: the tiles are fixed, only who computes them changes. */
#include <cblas.h>
#include <errno.h>
#include <lapacke.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "macro.h"
#include "quant-internal.h"
#include "quant.h"

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_single(void) {
        /* OpenBLAS's own pool would add its threads to ours. */
        openblas_set_num_threads(1);
}

void qd_blas_init(void) {
        pthread_once(&blas_once, blas_single);
}

const char *qd_blas_better_coretype(void) {
        /* What OpenBLAS's DYNAMIC_ARCH build picks for a CPU it does not know (0.3.21 takes an
         * Emerald Rapids Xeon, family 6 model 207, for a Prescott: SSE3 kernels at a third of
         * the AVX-512 speed). */
        static const char *const generic[] = { "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                                "Atom", "Sandybridge", "Barcelona", "Opteron", "Bobcat" };
        const char *core = openblas_get_corename();
        bool slow = false;
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
                return NULL;
        for (size_t i = 0; core && i < ELEMENTSOF(generic); i++)
                slow = slow || strcasecmp(core, generic[i]) == 0;
        if (!slow)
                return NULL;
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") ?
                       "SkylakeX" :
                       "Haswell";
}

void qd_blas_tune_process(char **argv) {
        const char *ct = qd_blas_better_coretype();
        if (!ct || getenv("OPENBLAS_CORETYPE"))
                return;
        /* OpenBLAS reads both when it is loaded: start again with them. One thread per call is
         * what qd_blas_init() sets anyway; here it also spares OpenBLAS's idle pool. */
        if (setenv("OPENBLAS_CORETYPE", ct, 1) < 0 || setenv("OPENBLAS_NUM_THREADS", "1", 0) < 0)
                return;
        execv("/proc/self/exe", argv);
        unsetenv("OPENBLAS_CORETYPE"); /* could not: go on with the slow kernels */
}

#define NB 128 /* tile edge of the blocked factorisation and inverse */

typedef struct TileJob {
        double *a;         /* row-major n × n, the factor L in its lower triangle */
        double *x;         /* row-major n × n, L⁻¹ in its lower triangle */
        float *u;
        size_t n, k;       /* the current tile step */
} TileJob;

static size_t tile_len(size_t n, size_t t) {
        return MIN((size_t) NB, n - t * NB);
}

/* Panel: A_ik ← A_ik · L_kk⁻ᵀ for row tile i = k + 1 + task. */
static int chol_panel(void *userdata, size_t task) {
        TileJob *j = userdata;
        size_t n = j->n, k0 = j->k * NB, kb = tile_len(n, j->k), i = j->k + 1 + task, i0 = i * NB;
        cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, (int) tile_len(n, i),
                    (int) kb, 1.0, j->a + k0 * n + k0, (int) n, j->a + i0 * n + k0, (int) n);
        return 0;
}

/* Trailing update of tile (i, c), k < c ≤ i: A_ic −= A_ik · A_ckᵀ. The diagonal tiles get their
 * strict upper part written too; nothing reads it. */
static int chol_trail(void *userdata, size_t task) {
        TileJob *j = userdata;
        size_t n = j->n, k0 = j->k * NB, kb = tile_len(n, j->k);
        /* task → (i, c) over the lower triangle of the trailing tiles, row by row */
        size_t i = 0;
        while ((i + 1) * (i + 2) / 2 <= task)
                i++;
        size_t c = task - i * (i + 1) / 2;
        i += j->k + 1;
        c += j->k + 1;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) tile_len(n, i), (int) tile_len(n, c), (int) kb,
                    -1.0, j->a + i * NB * n + k0, (int) n, j->a + c * NB * n + k0, (int) n, 1.0,
                    j->a + i * NB * n + c * NB, (int) n);
        return 0;
}

/* Row tile k of X = L⁻¹, tile (k, c) for c = task ≤ k: X_kk = L_kk⁻¹, and for c < k
 * X_kc = −L_kk⁻¹ · L_k[c..k) · X_[c..k)c, whose rows above k are done. */
static int inv_tile(void *userdata, size_t c) {
        TileJob *j = userdata;
        size_t n = j->n, k = j->k, k0 = k * NB, kb = tile_len(n, k), c0 = c * NB, cb = tile_len(n, c);
        double *xkc = j->x + k0 * n + c0;
        if (c == k) {
                for (size_t r = 0; r < kb; r++)
                        for (size_t q = 0; q < kb; q++)
                                xkc[r * n + q] = q <= r ? j->a[(k0 + r) * n + k0 + q] : 0.0;
                /* row-major lower = column-major upper */
                lapack_int info = LAPACKE_dtrtri_work(LAPACK_COL_MAJOR, 'U', 'N', (lapack_int) kb, xkc,
                                                      (lapack_int) n);
                return info == 0 ? 0 : -EDOM;
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) kb, (int) cb, (int) (k0 - c0), 1.0,
                    j->a + k0 * n + c0, (int) n, j->x + c0 * n + c0, (int) n, 0.0, xkc, (int) n);
        cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, (int) kb, (int) cb, -1.0,
                    j->a + k0 * n + k0, (int) n, xkc, (int) n);
        return 0;
}

/* Row tile t of U = P·X·P (P reverses the indices), as floats, zeros below the diagonal. */
static int reverse_rows(void *userdata, size_t t) {
        TileJob *j = userdata;
        size_t n = j->n;
        for (size_t i = t * NB; i < MIN(n, (t + 1) * NB); i++) {
                const double *xr = j->x + (n - 1 - i) * n + (n - 1);
                float *ur = j->u + i * n;
                for (size_t q = 0; q < i; q++)
                        ur[q] = 0.0f;
                for (size_t q = i; q < n; q++)
                        ur[q] = (float) xr[-(ptrdiff_t) q];
        }
        return 0;
}

int qd_chol_lower(double *a, size_t n, unsigned n_threads) {
        size_t nt = DIV_ROUND_UP(n, (size_t) NB);
        TileJob j = { .a = a, .n = n };
        qd_blas_init();
        for (size_t k = 0; k < nt; k++) {
                size_t k0 = k * NB, kb = tile_len(n, k);
                lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'U', (lapack_int) kb, a + k0 * n + k0,
                                                      (lapack_int) n);
                if (info != 0)
                        return info > 0 ? -EDOM : -EINVAL;
                for (size_t r = 0; r < kb; r++)
                        if (!isfinite(a[(k0 + r) * n + k0 + r]))
                                return -EDOM;
                if (k + 1 == nt)
                        break;
                size_t rest = nt - k - 1;
                j.k = k;
                int r = qd_parallel_for(rest, n_threads, chol_panel, &j);
                if (r >= 0)
                        r = qd_parallel_for(rest * (rest + 1) / 2, n_threads, chol_trail, &j);
                if (r < 0)
                        return r;
        }
        return 0;
}

int qd_hinv_upper(double *b, size_t n, unsigned n_threads, float *ret_u) {
        size_t nt = DIV_ROUND_UP(n, (size_t) NB), nn;
        if (size_mul_overflow(n, n, &nn) || nn > SIZE_MAX / sizeof(double))
                return -E2BIG;
        int r = qd_chol_lower(b, n, n_threads);
        if (r < 0)
                return r;
        _cleanup_free_ double *x = malloc(nn * sizeof(double));
        if (!x)
                return -ENOMEM;
        TileJob j = { .a = b, .x = x, .u = ret_u, .n = n };
        for (size_t k = 0; k < nt; k++) {
                j.k = k;
                r = qd_parallel_for(k + 1, n_threads, inv_tile, &j);
                if (r < 0)
                        return r;
        }
        return qd_parallel_for(nt, n_threads, reverse_rows, &j);
}
