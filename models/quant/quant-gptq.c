/* GPTQ (Frantar et al. 2022): Hessian from calibration inputs, dampened Cholesky factor of its
 * inverse, column-by-column quantization with error compensation, lazy block updates and
 * optional activation order; rows run on worker threads. */
#include <cblas.h>
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
        /* Σ x xᵀ (unscaled), upper triangle: in doubles when summed here (qd_hessian_add), or as
         * the f32 Gram matrices arrive from the Vulkan calibration (a quarter of the memory and
         * of the copying; they were summed in f32 on the device). */
        double *h;
        float *gram;
        double *scaled;         /* 2/N of it, both triangles, made when qd_hessian_data() asks */
        bool scaled_ok;
        /* The last factorization (U of qd_gptq_quantize) and what it was made with: q/k/v and
         * gate/up read the same H, so it is made once for them. Changed by qd_gptq_quantize()
         * though h is const there: not for concurrent calls on one h. */
        float *u;
        float u_damp;
        bool u_act_order;
};

int qd_hessian_new(size_t cols, QdHessian **ret) {
        size_t nn;
        if (cols == 0 || size_mul_overflow(cols, cols, &nn) || nn > SIZE_MAX / sizeof(double))
                return -EINVAL;
        QdHessian *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->cols = cols;
        *ret = h;
        return 0;
}

QdHessian *qd_hessian_free(QdHessian *h) {
        if (!h)
                return NULL;
        free(h->h);
        free(h->gram);
        free(h->scaled);
        free(h->u);
        free(h);
        return NULL;
}

/* Σ x xᵀ at (i, j), i ≤ j. */
static inline double hval(const QdHessian *h, size_t i, size_t j) {
        return h->h ? h->h[i * h->cols + j] : h->gram ? (double) h->gram[i * h->cols + j] : 0.0;
}

static void hessian_changed(QdHessian *h, size_t n_samples) {
        h->n += n_samples;
        h->scaled_ok = false;
        h->u = mfree(h->u);
}

/* The double accumulator, holding what came as f32 so far. */
static int hessian_to_double(QdHessian *h) {
        size_t c = h->cols;
        if (h->h)
                return 0;
        h->h = calloc(c * c, sizeof(double));
        if (!h->h)
                return -ENOMEM;
        if (h->gram)
                for (size_t i = 0; i < c; i++)
                        for (size_t k = i; k < c; k++)
                                h->h[i * c + k] = h->gram[i * c + k];
        h->gram = mfree(h->gram);
        return 0;
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
        int r = hessian_to_double(h);
        if (r < 0)
                return r;
        HessianJob j = { .h = h, .x = x, .n_samples = n_samples };
        r = qd_parallel_for(DIV_ROUND_UP(h->cols, HESSIAN_TILE), n_threads, hessian_tile, &j);
        if (r < 0)
                return r;
        hessian_changed(h, n_samples);
        return 0;
}

int qd_hessian_add_gram(QdHessian *h, const float *gram, size_t n_samples, unsigned n_threads) {
        if (!h || !gram)
                return -EINVAL;
        size_t c = h->cols;
        if (h->h) {
                for (size_t i = 0; i < c; i++)
                        for (size_t k = i; k < c; k++)
                                h->h[i * c + k] += gram[i * c + k];
        } else if (h->gram) {
                for (size_t i = 0; i < c; i++)
                        for (size_t k = i; k < c; k++)
                                h->gram[i * c + k] += gram[i * c + k];
        } else {
                h->gram = malloc(c * c * sizeof(float));
                if (!h->gram)
                        return -ENOMEM;
                memcpy(h->gram, gram, c * c * sizeof(float));
        }
        hessian_changed(h, n_samples);
        return 0;
}

const double *qd_hessian_data(const QdHessian *h) {
        if (!h)
                return NULL;
        QdHessian *m = (QdHessian *) h; /* made on demand, as u */
        size_t c = h->cols;
        if (!m->scaled_ok) {
                if (!m->scaled && !(m->scaled = malloc(c * c * sizeof(double))))
                        return NULL;
                double f = h->n ? 2.0 / (double) h->n : 0.0;
                for (size_t i = 0; i < c; i++)
                        for (size_t k = i; k < c; k++)
                                m->scaled[i * c + k] = m->scaled[k * c + i] = f * hval(h, i, k);
                m->scaled_ok = true;
        }
        return h->scaled;
}

int qd_hessian_output_error(const QdHessian *h, const float *w, const float *deq, size_t rows,
                            double *ret) {
        if (!h || !w || !deq || !ret)
                return -EINVAL;
        size_t c = h->cols;
        const double *H = qd_hessian_data(h);
        _cleanup_free_ double *e = malloc(c * sizeof(double));
        if (!e || !H)
                return -ENOMEM;
        double total = 0.0;
        for (size_t r = 0; r < rows; r++) {
                for (size_t j = 0; j < c; j++)
                        e[j] = (double) w[r * c + j] - deq[r * c + j];
                for (size_t i = 0; i < c; i++) {
                        const double *hi = H + i * c;
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

#define CLONES __attribute__((target_clones("avx2", "default")))

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

/* Rows per task: the lazy update of a block is a (64 × block) · (block × rest) product, whose
 * reads of U serve 64 rows. Fixed, so that the bytes do not depend on the thread count. */
#define GPTQ_TILE 64

/* The column loop inside a block is element-wise, without FMA contraction, so the AVX2 clone and
 * the baseline build give the same bits there. */
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
                /* Lazy batch update of the columns after this block: W[:, i2:] −= Err · U[i1:i2, i2:]. */
                if (i2 < n)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) nr, (int) (n - i2), (int) bs,
                                    -1.0f, err, (int) j->block, u + i1 * n + i2, (int) n, 1.0f, wt + i2, (int) n);
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

typedef struct FactorJob {
        const QdHessian *h;
        const size_t *perm;
        const bool *dead;
        double f, add;           /* scale 2/N, dampening */
        double *b;
} FactorJob;

/* Rows [64·t, 64·t + 64) of the lower triangle of b[i][j] = H'[n−1−i][n−1−j], H' the scaled,
 * dampened H in the processing order: the input of qd_hinv_upper(). */
static int factor_rows(void *userdata, size_t t) {
        FactorJob *j = userdata;
        size_t n = j->h->cols;
        for (size_t i = t * 64; i < MIN(n, (t + 1) * 64); i++) {
                size_t pi = j->perm[n - 1 - i];
                double *bi = j->b + i * n;
                for (size_t k = 0; k < i; k++) {
                        size_t pk = j->perm[n - 1 - k];
                        bi[k] = j->f * hval(j->h, MIN(pi, pk), MAX(pi, pk));
                }
                bi[i] = (j->dead[pi] ? 1.0 : j->f * hval(j->h, pi, pi)) + j->add;
        }
        return 0;
}

/* U of the dampened H in the processing order perm; if rounding leaves H indefinite, dampen
 * ten times more. */
static int factor(const QdHessian *h, const size_t *perm, const bool *dead, double mean, float damp,
                  unsigned n_threads, float **ret_u) {
        size_t n = h->cols;
        _cleanup_free_ double *b = malloc(n * n * sizeof(double));
        _cleanup_free_ float *u = malloc(n * n * sizeof(float));
        int r;

        if (!b || !u)
                return -ENOMEM;
        for (int attempt = 0;; attempt++) {
                FactorJob fj = { .h = h, .perm = perm, .dead = dead, .f = h->n ? 2.0 / (double) h->n : 0.0,
                                 .add = damp * mean, .b = b };
                r = qd_parallel_for(DIV_ROUND_UP(n, (size_t) 64), n_threads, factor_rows, &fj);
                if (r < 0)
                        return r;
                r = qd_hinv_upper(b, n, n_threads, u);
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

        double f = 2.0 / (double) h->n;
        _cleanup_free_ size_t *perm = malloc(n * sizeof(size_t));
        _cleanup_free_ size_t *iperm = malloc(n * sizeof(size_t));
        _cleanup_free_ bool *dead = calloc(n, sizeof(bool));
        _cleanup_free_ double *diag = malloc(n * sizeof(double));
        _cleanup_free_ float *hdiag = malloc(n * sizeof(float));
        if (!perm || !iperm || !dead || !diag || !hdiag)
                return -ENOMEM;

        double mean = 0.0;
        for (size_t i = 0; i < n; i++) {
                diag[i] = f * hval(h, i, i);
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
                r = factor(h, perm, dead, mean, damp, n_threads, &hm->u);
                if (r < 0)
                        return r;
                hm->u_damp = damp;
                hm->u_act_order = act_order;
        }
        const float *u = hm->u;

        qd_blas_init();
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
