/* GPTQ (Frantar et al. 2022): Hessian from calibration inputs, dampened Cholesky factor of its
 * inverse, column-by-column quantization with error compensation, lazy block updates and
 * optional activation order; rows run on worker threads. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "quant-internal.h"
#include "quant.h"

struct QdHessian {
        size_t cols;
        size_t n;
        double *h;              /* Σ x xᵀ (unscaled); qd_hessian_data() returns 2/N of it */
        double *scaled;
        /* The last factorization (U of qd_gptq_quantize) and what it was made with: q/k/v and
         * gate/up read the same H, so it is made once for them. Changed by qd_gptq_quantize()
         * though h is const there: not for concurrent calls on one h. */
        float *u;
        float u_damp;
        bool u_act_order;
};

int qd_hessian_new(size_t cols, QdHessian **ret) {
        size_t nn;
        if (cols == 0 || size_mul_overflow(cols, cols, &nn))
                return -EINVAL;
        QdHessian *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->cols = cols;
        h->h = calloc(nn, sizeof(double));
        h->scaled = calloc(nn, sizeof(double));
        if (!h->h || !h->scaled)
                return qd_hessian_free(h), -ENOMEM;
        *ret = h;
        return 0;
}

QdHessian *qd_hessian_free(QdHessian *h) {
        if (!h)
                return NULL;
        free(h->h);
        free(h->scaled);
        free(h->u);
        free(h);
        return NULL;
}

#define SCALE_TILE 64

typedef struct ScaleJob {
        QdHessian *h;
        const float *gram; /* added to h first when not NULL */
} ScaleJob;

/* Tile row t of the upper triangle: h += gram, scaled = 2/N · h in both triangles, tile by tile
 * so that the mirrored writes stay in cache. */
static int scale_rows(void *userdata, size_t t) {
        ScaleJob *j = userdata;
        QdHessian *h = j->h;
        size_t c = h->cols, i0 = t * SCALE_TILE, i1 = MIN(c, i0 + SCALE_TILE);
        double f = h->n ? 2.0 / (double) h->n : 0.0;
        for (size_t k0 = i0; k0 < c; k0 += SCALE_TILE) {
                size_t k1 = MIN(c, k0 + SCALE_TILE);
                for (size_t i = i0; i < i1; i++)
                        for (size_t k = MAX(i, k0); k < k1; k++) {
                                if (j->gram)
                                        h->h[i * c + k] += j->gram[i * c + k];
                                h->scaled[i * c + k] = h->scaled[k * c + i] = f * h->h[i * c + k];
                        }
        }
        return 0;
}

static int hessian_scale(QdHessian *h, const float *gram, unsigned n_threads) {
        ScaleJob j = { .h = h, .gram = gram };
        return qd_parallel_for(DIV_ROUND_UP(h->cols, (size_t) SCALE_TILE), n_threads, scale_rows, &j);
}

typedef struct HessianJob {
        QdHessian *h;
        const float *x;
        size_t n_samples;
} HessianJob;

#define HESSIAN_TILE 8

/* Rows [8·tile, 8·tile + 8) of the upper triangle, over all samples. */
static int hessian_tile(void *userdata, size_t tile) {
        HessianJob *j = userdata;
        size_t c = j->h->cols, end = MIN((tile + 1) * HESSIAN_TILE, c);
        for (size_t s = 0; s < j->n_samples; s++) {
                const float *v = j->x + s * c;
                for (size_t i = tile * HESSIAN_TILE; i < end; i++) {
                        double vi = v[i];
                        if (vi == 0.0)
                                continue;
                        double *row = j->h->h + i * c;
                        for (size_t k = i; k < c; k++)
                                row[k] += vi * v[k];
                }
        }
        return 0;
}

int qd_hessian_add(QdHessian *h, const float *x, size_t n_samples, unsigned n_threads) {
        if (!h || (!x && n_samples))
                return -EINVAL;
        size_t c = h->cols;
        HessianJob j = { .h = h, .x = x, .n_samples = n_samples };
        int r = qd_parallel_for(DIV_ROUND_UP(c, HESSIAN_TILE), n_threads, hessian_tile, &j);
        if (r < 0)
                return r;
        h->n += n_samples;
        h->u = mfree(h->u);
        return hessian_scale(h, NULL, n_threads);
}

int qd_hessian_add_gram(QdHessian *h, const float *gram, size_t n_samples, unsigned n_threads) {
        if (!h || !gram)
                return -EINVAL;
        h->n += n_samples;
        h->u = mfree(h->u);
        return hessian_scale(h, gram, n_threads);
}

const double *qd_hessian_data(const QdHessian *h) {
        return h ? h->scaled : NULL;
}

int qd_hessian_output_error(const QdHessian *h, const float *w, const float *deq, size_t rows,
                            double *ret) {
        if (!h || !w || !deq || !ret)
                return -EINVAL;
        size_t c = h->cols;
        _cleanup_free_ double *e = malloc(c * sizeof(double));
        if (!e)
                return -ENOMEM;
        double total = 0.0;
        for (size_t r = 0; r < rows; r++) {
                for (size_t j = 0; j < c; j++)
                        e[j] = (double) w[r * c + j] - deq[r * c + j];
                for (size_t i = 0; i < c; i++) {
                        const double *hi = h->scaled + i * c;
                        double t = 0.0;
                        for (size_t j = 0; j < c; j++)
                                t += hi[j] * e[j];
                        total += e[i] * t;
                }
        }
        *ret = 0.5 * total;
        return 0;
}

size_t qd_hessian_samples(const QdHessian *h) {
        return h ? h->n : 0;
}

/* Four doubles at once: 256-bit operations in the AVX2 clones of the callers, two 128-bit ones
 * in the baseline build; the lanes fix the order of the sums, so both give the same bits. Loads
 * need only 8-byte alignment. */
typedef double v4d __attribute__((vector_size(32), aligned(8)));
#define CLONES __attribute__((target_clones("avx2", "default")))

/* a · b over n doubles with four vector sums. */
static inline __attribute__((always_inline)) double dot_d(const double *a, const double *b, size_t n) {
        v4d s0 = {}, s1 = {}, s2 = {}, s3 = {};
        size_t k = 0;
        for (; k + 16 <= n; k += 16) {
                s0 += *(const v4d *) (a + k) * *(const v4d *) (b + k);
                s1 += *(const v4d *) (a + k + 4) * *(const v4d *) (b + k + 4);
                s2 += *(const v4d *) (a + k + 8) * *(const v4d *) (b + k + 8);
                s3 += *(const v4d *) (a + k + 12) * *(const v4d *) (b + k + 12);
        }
        v4d s = (s0 + s1) + (s2 + s3);
        double t = (s[0] + s[1]) + (s[2] + s[3]);
        for (; k < n; k++)
                t += a[k] * b[k];
        return t;
}

#define CHOL_NB 64   /* columns per block step */
#define CHOL_ROWS 8  /* rows per parallel task */

/* One block step [k0, k1) of the right-looking lower Cholesky of the row-major n × n l. */
typedef struct CholJob {
        double *l;
        size_t n, k0, k1;
} CholJob;

/* Rows of the panel below the diagonal block: L[i][k0..k1) = B[i][k0..k1)·L_kk⁻ᵀ. */
CLONES static int chol_panel(void *userdata, size_t task) {
        CholJob *j = userdata;
        size_t n = j->n, k0 = j->k0, k1 = j->k1;
        for (size_t i = k1 + task * CHOL_ROWS; i < MIN(n, k1 + (task + 1) * CHOL_ROWS); i++) {
                double *li = j->l + i * n;
                for (size_t c = k0; c < k1; c++) {
                        const double *lc = j->l + c * n;
                        li[c] = (li[c] - dot_d(li + k0, lc + k0, c - k0)) / lc[c];
                }
        }
        return 0;
}

/* The trailing rows: B[i][k1..i] -= L[i][k0..k1)·L[j][k0..k1). */
CLONES static int chol_trail(void *userdata, size_t task) {
        CholJob *j = userdata;
        size_t n = j->n, k0 = j->k0, k1 = j->k1, nb = k1 - k0;
        for (size_t i = k1 + task * CHOL_ROWS; i < MIN(n, k1 + (task + 1) * CHOL_ROWS); i++) {
                double *li = j->l + i * n;
                for (size_t c = k1; c <= i; c++)
                        li[c] -= dot_d(li + k0, j->l + c * n + k0, nb);
        }
        return 0;
}

/* In place: the lower L with b = L·Lᵀ from the lower triangle of the row-major n × n b, in blocks
 * of CHOL_NB columns whose panel and trailing update run on n_threads. -EDOM if b is not positive
 * definite. */
CLONES static int cholesky_lower(double *b, size_t n, unsigned n_threads) {
        for (size_t k0 = 0; k0 < n; k0 += CHOL_NB) {
                size_t k1 = MIN(n, k0 + CHOL_NB);
                for (size_t c = k0; c < k1; c++) {
                        double *lc = b + c * n;
                        double s = lc[c] - dot_d(lc + k0, lc + k0, c - k0);
                        if (!(s > 0.0))
                                return -EDOM;
                        lc[c] = sqrt(s);
                        for (size_t r = c + 1; r < k1; r++) {
                                double *lr = b + r * n;
                                lr[c] = (lr[c] - dot_d(lr + k0, lc + k0, c - k0)) / lc[c];
                        }
                }
                if (k1 == n)
                        break;
                CholJob job = { .l = b, .n = n, .k0 = k0, .k1 = k1 };
                size_t tasks = DIV_ROUND_UP(n - k1, (size_t) CHOL_ROWS);
                int r = qd_parallel_for(tasks, n_threads, chol_panel, &job);
                if (r >= 0)
                        r = qd_parallel_for(tasks, n_threads, chol_trail, &job);
                if (r < 0)
                        return r;
        }
        return 0;
}

#define INV_COLS 8 /* columns of U per task: they share the reads of R's rows */

typedef struct InvJob {
        const double *r;
        float *u;
        size_t n;
} InvJob;

/* Columns [8·task, 8·task + 8) of U = R⁻¹ (upper): R·u_c = e_c by back substitution. */
CLONES static int inverse_cols(void *userdata, size_t task) {
        InvJob *j = userdata;
        size_t n = j->n, c0 = task * INV_COLS, c1 = MIN(n, c0 + INV_COLS);
        _cleanup_free_ double *x = malloc(INV_COLS * n * sizeof(double)); /* x[c - c0][i] */
        if (!x)
                return -ENOMEM;
        for (size_t i = c1; i-- > 0;) {
                const double *ri = j->r + i * n;
                for (size_t c = MAX(c0, i); c < c1; c++) {
                        double *xc = x + (c - c0) * n;
                        xc[i] = c == i ? 1.0 / ri[i] : -dot_d(ri + i + 1, xc + i + 1, c - i) / ri[i];
                }
        }
        for (size_t c = c0; c < c1; c++)
                for (size_t i = 0; i <= c; i++)
                        j->u[i * n + c] = (float) x[(c - c0) * n + i];
        return 0;
}

/* U, upper triangular with H⁻¹ = Uᵀ·U, from the dampened H (n × n, upper triangle read; a is
 * destroyed): with H = R·Rᵀ, R upper, H⁻¹ = R⁻ᵀ·R⁻¹, so U = R⁻¹ — one factorisation and one
 * triangular inverse, without forming H⁻¹. R = P·L·P for the lower Cholesky factor L of
 * P·H·P, P reversing the order of the indices. */
static int hinv_upper_cholesky(double *a, size_t n, unsigned n_threads, float *ret_u) {
        _cleanup_free_ double *b = malloc(n * n * sizeof(double));
        int r;

        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j <= i; j++)
                        b[i * n + j] = a[(n - 1 - i) * n + (n - 1 - j)]; /* j ≤ i: upper of a */
        r = cholesky_lower(b, n, n_threads);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                for (size_t j = i; j < n; j++)
                        a[i * n + j] = b[(n - 1 - i) * n + (n - 1 - j)];
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < i; j++)
                        ret_u[i * n + j] = 0.0f;
        InvJob job = { .r = a, .u = ret_u, .n = n };
        return qd_parallel_for(DIV_ROUND_UP(n, (size_t) INV_COLS), n_threads, inverse_cols, &job);
}

typedef struct GptqJob {
        const QdQuantParams *p;
        unsigned g, block;
        size_t rows, cols, row_bytes;
        const float *w;
        const float *u;          /* n × n, permuted order */
        const size_t *perm;      /* processing position → original column */
        const size_t *iperm;
        const bool *dead;
        bool static_groups;
        const float *hdiag;      /* original order, importance for the clip search */
        uint8_t *dst;
        atomic_size_t next_tile;
        atomic_int error;
        size_t rows_done;
        pthread_mutex_t lock;
        QdProgressFn progress;
        void *userdata;
} GptqJob;

#define GPTQ_TILE 8

/* Also built for AVX2 (chosen at load time): its loops are element-wise, without FMA contraction,
 * so both builds give the same bits. */
CLONES static int gptq_tile(GptqJob *j, size_t r0, size_t nr, float *wt, float *err, int8_t *codes,
                     QdGroupScale *scales, bool *have, float *gv) {
        size_t n = j->cols, g = j->g, ng = n / g;
        const float *u = j->u;

        for (size_t r = 0; r < nr; r++)
                for (size_t i = 0; i < n; i++) {
                        size_t c = j->perm[i];
                        wt[r * n + i] = j->dead[c] ? 0.0f : j->w[(r0 + r) * j->cols + c];
                }
        memset(have, 0, nr * ng * sizeof(bool));
        if (j->static_groups)
                /* GPTQ's static_groups: every scale from the weights before any update. */
                for (size_t r = 0; r < nr; r++)
                        for (size_t gi = 0; gi < ng; gi++) {
                                for (size_t k = 0; k < g; k++)
                                        gv[k] = wt[r * n + j->iperm[gi * g + k]];
                                int q = qd_quant_group_scale(j->p, gv, j->hdiag ? j->hdiag + gi * g : NULL,
                                                             g, scales + r * ng + gi);
                                if (q < 0)
                                        return q;
                                have[r * ng + gi] = true;
                        }

        for (size_t i1 = 0; i1 < n; i1 += j->block) {
                size_t i2 = MIN(i1 + j->block, n), bs = i2 - i1;
                for (size_t i = i1; i < i2; i++) {
                        size_t c = j->perm[i], gi = c / g;
                        float dinv = 1.0f / u[i * n + i];
                        for (size_t r = 0; r < nr; r++) {
                                float *wr = wt + r * n;
                                QdGroupScale *s = scales + r * ng + gi;
                                if (!have[r * ng + gi]) {
                                        /* The group's scale from its current (compensated)
                                         * values; none of them is quantized yet. */
                                        for (size_t k = 0; k < g; k++)
                                                gv[k] = wr[j->iperm[gi * g + k]];
                                        int q = qd_quant_group_scale(j->p, gv,
                                                                     j->hdiag ? j->hdiag + gi * g : NULL,
                                                                     g, s);
                                        if (q < 0)
                                                return q;
                                        have[r * ng + gi] = true;
                                }
                                int code = qd_quant_code(j->p->type, s, wr[i]);
                                codes[r * n + c] = (int8_t) code;
                                float e = (wr[i] - qd_quant_code_value(j->p->type, s, code)) * dinv;
                                const float *ui = u + i * n;
                                for (size_t k = i + 1; k < i2; k++)
                                        wr[k] -= e * ui[k];
                                err[r * j->block + (i - i1)] = e;
                        }
                }
                /* Lazy batch update of the columns after this block; each row of u once for
                 * all rows of the tile (u is the largest array: read it the fewest times). */
                for (size_t k = 0; k < bs; k++) {
                        const float *uk = u + (i1 + k) * n;
                        for (size_t r = 0; r < nr; r++) {
                                float *wr = wt + r * n;
                                float e = err[r * j->block + k];
                                for (size_t c = i2; c < n; c++)
                                        wr[c] -= e * uk[c];
                        }
                }
        }

        for (size_t r = 0; r < nr; r++) {
                uint8_t *row = j->dst + (r0 + r) * j->row_bytes;
                size_t bb = j->row_bytes / ng;
                for (size_t gi = 0; gi < ng; gi++)
                        qd_quant_pack_block(j->p->type, (unsigned) g, scales + r * ng + gi,
                                            codes + r * n + gi * g, row + gi * bb);
        }
        return 0;
}

static void *gptq_worker(void *userdata) {
        GptqJob *j = userdata;
        size_t n = j->cols, ng = n / j->g;
        _cleanup_free_ float *wt = malloc(GPTQ_TILE * n * sizeof(float));
        _cleanup_free_ float *err = malloc(GPTQ_TILE * j->block * sizeof(float));
        _cleanup_free_ int8_t *codes = malloc(GPTQ_TILE * n);
        _cleanup_free_ QdGroupScale *scales = malloc(GPTQ_TILE * ng * sizeof(QdGroupScale));
        _cleanup_free_ bool *have = malloc(GPTQ_TILE * ng * sizeof(bool));
        _cleanup_free_ float *gv = malloc(j->g * sizeof(float));
        if (!wt || !err || !codes || !scales || !have || !gv) {
                atomic_store(&j->error, -ENOMEM);
                return NULL;
        }
        for (;;) {
                if (atomic_load(&j->error) < 0)
                        return NULL;
                size_t r0 = atomic_fetch_add(&j->next_tile, 1) * GPTQ_TILE;
                if (r0 >= j->rows)
                        return NULL;
                size_t nr = MIN((size_t) GPTQ_TILE, j->rows - r0);
                int r = gptq_tile(j, r0, nr, wt, err, codes, scales, have, gv);
                if (r < 0) {
                        atomic_store(&j->error, r);
                        return NULL;
                }
                if (j->progress) {
                        pthread_mutex_lock(&j->lock);
                        j->rows_done += nr;
                        if (j->progress(j->userdata, (double) j->rows_done / (double) j->rows) != 0)
                                atomic_store(&j->error, -ECANCELED);
                        pthread_mutex_unlock(&j->lock);
                }
        }
}

/* U of the dampened H in the processing order perm; if rounding leaves H indefinite, dampen
 * ten times more. */
static int factor(const double *H, size_t n, const size_t *perm, const bool *dead, double mean, float damp,
                  unsigned n_threads, float **ret_u) {
        _cleanup_free_ double *a = malloc(n * n * sizeof(double));
        _cleanup_free_ float *u = malloc(n * n * sizeof(float));
        int r;

        if (!a || !u)
                return -ENOMEM;
        for (int attempt = 0;; attempt++) {
                for (size_t i = 0; i < n; i++)
                        for (size_t j = 0; j < n; j++) {
                                size_t pi = perm[i], pj = perm[j];
                                a[i * n + j] = H[pi * n + pj];
                        }
                for (size_t i = 0; i < n; i++) {
                        if (dead[perm[i]])
                                a[i * n + i] = 1.0;
                        a[i * n + i] += damp * mean;
                }
                r = hinv_upper_cholesky(a, n, n_threads, u);
                if (r != -EDOM || attempt == 3)
                        break;
                damp *= 10.0f;
        }
        if (r < 0)
                return r;
        *ret_u = TAKE_PTR(u);
        return 0;
}

static int cmp_desc(const void *a, const void *b, void *userdata) {
        const double *key = userdata;
        size_t i = *(const size_t *) a, j = *(const size_t *) b;
        if (key[i] != key[j])
                return (key[i] < key[j]) - (key[i] > key[j]);
        return (i > j) - (i < j);
}

int qd_gptq_quantize(const QdQuantParams *p, const QdGptqOptions *o, const float *w,
                     size_t rows, size_t cols, const QdHessian *h, void *dst, float *ret_deq) {
        if (!p || !w || !h || !dst || h->cols != cols || rows == 0)
                return -EINVAL;
        QdQuantParams qp = *p;
        qp.group_size = p->group_size ? p->group_size : 32;
        size_t row_bytes;
        int r = qd_quant_row_size(qp.type, qp.group_size, cols, &row_bytes);
        if (r < 0)
                return r;
        if (h->n == 0)
                return -ENODATA;
        size_t nn;
        if (size_mul_overflow(cols, cols, &nn) || size_mul_overflow(nn, sizeof(double), &nn))
                return -E2BIG;
        float damp = o && o->damp > 0 ? o->damp : 0.01f;
        unsigned block = o && o->block ? o->block : 128;
        unsigned n_threads = o && o->n_threads ? o->n_threads : 1;
        size_t n = cols;

        const double *H = h->scaled;
        _cleanup_free_ size_t *perm = malloc(n * sizeof(size_t));
        _cleanup_free_ size_t *iperm = malloc(n * sizeof(size_t));
        _cleanup_free_ bool *dead = calloc(n, sizeof(bool));
        _cleanup_free_ double *diag = malloc(n * sizeof(double));
        _cleanup_free_ float *hdiag = malloc(n * sizeof(float));
        if (!perm || !iperm || !dead || !diag || !hdiag)
                return -ENOMEM;

        double mean = 0.0;
        for (size_t i = 0; i < n; i++) {
                diag[i] = H[i * n + i];
                dead[i] = diag[i] == 0.0;
                hdiag[i] = (float) diag[i];
                mean += dead[i] ? 1.0 : diag[i];
                perm[i] = i;
        }
        mean /= (double) n;
        if (o && o->act_order) {
                qsort_r(perm, n, sizeof(size_t), cmp_desc, diag);
        }
        for (size_t i = 0; i < n; i++)
                iperm[perm[i]] = i;

        QdHessian *hm = (QdHessian *) h; /* the cache */
        bool act_order = o && o->act_order;
        if (!hm->u || hm->u_damp != damp || hm->u_act_order != act_order) {
                hm->u = mfree(hm->u);
                r = factor(H, n, perm, dead, mean, damp, n_threads, &hm->u);
                if (r < 0)
                        return r;
                hm->u_damp = damp;
                hm->u_act_order = act_order;
        }
        const float *u = hm->u;

        GptqJob job = {
                .p = &qp,
                .g = qp.group_size,
                .block = block,
                .rows = rows,
                .cols = cols,
                .row_bytes = row_bytes,
                .w = w,
                .u = u,
                .perm = perm,
                .iperm = iperm,
                .dead = dead,
                .static_groups = o && o->static_groups,
                .hdiag = qp.range == QD_RANGE_CLIP ? hdiag : NULL,
                .dst = dst,
                .progress = o ? o->progress : NULL,
                .userdata = o ? o->userdata : NULL,
        };
        atomic_init(&job.next_tile, 0);
        atomic_init(&job.error, 0);
        pthread_mutex_init(&job.lock, NULL);

        n_threads = (unsigned) MIN((size_t) n_threads, DIV_ROUND_UP(rows, GPTQ_TILE));
        pthread_t tids[64];
        n_threads = MIN(n_threads, (unsigned) ELEMENTSOF(tids));
        unsigned started = 0;
        for (unsigned t = 1; t < n_threads; t++) {
                if (pthread_create(&tids[started], NULL, gptq_worker, &job) != 0)
                        break;
                started++;
        }
        gptq_worker(&job);
        for (unsigned t = 0; t < started; t++)
                pthread_join(tids[t], NULL);
        pthread_mutex_destroy(&job.lock);
        r = atomic_load(&job.error);
        if (r < 0)
                return r;

        if (ret_deq)
                for (size_t i = 0; i < rows; i++) {
                        r = qd_dequant_row(qp.type, qp.group_size, (uint8_t *) dst + i * row_bytes,
                                           ret_deq + i * cols, cols);
                        if (r < 0)
                                return r;
                }
        return 0;
}
