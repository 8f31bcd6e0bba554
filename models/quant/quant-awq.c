/* AWQ (Lin et al. 2023): per-input-channel scales s = mean|x|^α chosen by a grid search on the
 * output error of the quantized, scaled weights, then an output-aware clipping search per group. */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "quant-internal.h"
#include "quant.h"

/* Eight floats at once: 256-bit operations in the AVX2 clones, two 128-bit ones in the baseline
 * build; without FMA contraction both give the same bits. Loads need only 4-byte alignment. */
typedef float v8f __attribute__((vector_size(32), aligned(4)));
#define CLONES __attribute__((target_clones("avx2", "default")))

/* e_gᵀ G e_g for one group, G the group's g × g Gram matrix of the scaled inputs (symmetric, so
 * G·e is a sum of its rows: no reordered sums); g is a multiple of 8. */
static inline __attribute__((always_inline)) double group_quad(const float *G, const float *e, size_t g) {
        v8f y[16] = {};
        for (size_t b = 0; b < g; b++) {
                const float *gb = G + b * g;
                for (size_t a = 0; a < g / 8; a++)
                        y[a] += e[b] * *(const v8f *) (gb + 8 * a);
        }
        double t = 0.0;
        for (size_t a = 0; a < g / 8; a++)
                for (int l = 0; l < 8; l++)
                        t += (double) e[8 * a + l] * y[a][l];
        return t;
}

/* AWQ's auto_clip: per row and group clamp to ±T·absmax, T from a shrinking grid, keeping the T
 * with least output error on the scaled inputs. Writes the clamped weights into ws and, if dst,
 * their blocks: the scale and codes of the winning T are what qd_quant_row() would compute
 * again (not for MINMAX, whose rows take ggml's codes). */
CLONES static int clip_search(const QdQuantParams *p, const QdAwqOptions *o, const float *gram,
                              float *ws, size_t cols, uint8_t *dst) {
        size_t g = p->group_size;
        unsigned grid = o->clip_grid ? o->clip_grid : 20;
        float shrink = o->clip_max_shrink > 0 ? o->clip_max_shrink : 0.5f;
        unsigned steps = (unsigned) (shrink * (float) grid);
        QdQuantParams mp = *p;
        float cand[128], deq[128], e[128], best[128];
        int8_t codes[128], best_codes[128];
        size_t bb = qd_quant_block_bytes(p->type, (unsigned) g);

        for (size_t k = 0; k < cols / g; k++) {
                float *wg = ws + k * g;
                const float *G = gram + k * g * g;
                float amax = 0.0f;
                for (size_t j = 0; j < g; j++)
                        amax = MAX(amax, fabsf(wg[j]));
                if (amax == 0.0f) {
                        if (dst) {
                                QdGroupScale s;
                                int r = qd_quant_group_scale(&mp, wg, NULL, g, &s);
                                if (r < 0)
                                        return r;
                                for (size_t j = 0; j < g; j++)
                                        codes[j] = (int8_t) qd_quant_code(p->type, &s, wg[j]);
                                qd_quant_pack_block(p->type, (unsigned) g, &s, codes, dst + k * bb);
                        }
                        continue;
                }
                double best_err = INFINITY;
                QdGroupScale best_s = {};
                for (unsigned i = 0; i <= steps; i++) {
                        float T = amax * (1.0f - (float) i / (float) grid);
                        for (size_t j = 0; j < g; j++)
                                cand[j] = CLAMP(wg[j], -T, T);
                        QdGroupScale s;
                        int r = qd_quant_group_scale(&mp, cand, NULL, g, &s);
                        if (r < 0)
                                return r;
                        for (size_t j = 0; j < g; j++) {
                                codes[j] = (int8_t) qd_quant_code(p->type, &s, cand[j]);
                                deq[j] = qd_quant_code_value(p->type, &s, codes[j]);
                                e[j] = wg[j] - deq[j];
                        }
                        double err = group_quad(G, e, g);
                        if (i == 0 || err < best_err) { /* T = absmax first: never a stale best */
                                best_err = err;
                                best_s = s;
                                memcpy(best, cand, g * sizeof(float));
                                memcpy(best_codes, codes, g);
                        }
                }
                memcpy(wg, best, g * sizeof(float));
                if (dst)
                        qd_quant_pack_block(p->type, (unsigned) g, &best_s, best_codes, dst + k * bb);
        }
        return 0;
}

typedef struct AwqCtx {
        const QdQuantParams *p;
        const QdAwqOptions *o;
        /* The output error of a row e is Σ_t (x_t·e)² = eᵀ(XᵀX)e: from x (T × cols) as
         * ‖e·Xᵀ‖² when T ≤ cols, else from xx = XᵀX (cols × cols, NULL when not used). */
        const float *x;
        const float *xx;
        size_t n_samples, cols, row_bytes;
        const QdAwqLinear *lin;
        size_t n_lin;
        const size_t *row_start;  /* first global row of each linear, n_lin + 1 entries */
        const float *s;
        const float *gram;        /* per-group Gram matrices of X/s; NULL: no clipping */
        bool write;               /* store dst / ret_w */
        double *row_err;
} AwqCtx;

/* One output row: scale by s, clip (if gram), quantize, optionally store; its error against the
 * original weights, w − deq/s, into ed. */
static int awq_quant_row(AwqCtx *c, size_t gr, float *ws, float *e, uint8_t *q, float *ed) {
        size_t l = 0, cols = c->cols;
        while (gr >= c->row_start[l + 1])
                l++;
        size_t i = gr - c->row_start[l];
        const float *w = c->lin[l].w + i * cols;
        for (size_t j = 0; j < cols; j++)
                ws[j] = w[j] * c->s[j];
        int r;
        /* the clip search's blocks are the row's, except for MINMAX (ggml's codes) */
        bool blocks = c->gram && c->p->range != QD_RANGE_MINMAX;
        if (c->gram) {
                r = clip_search(c->p, c->o, c->gram, ws, cols, blocks ? q : NULL);
                if (r < 0)
                        return r;
        }
        if (!blocks && (r = qd_quant_row(c->p, ws, NULL, cols, q)) < 0)
                return r;
        if (c->write && c->lin[l].dst)
                memcpy((uint8_t *) c->lin[l].dst + i * c->row_bytes, q, c->row_bytes);
        if (c->write && c->lin[l].ret_w)
                memcpy(c->lin[l].ret_w + i * cols, ws, cols * sizeof(float));
        r = qd_dequant_row(c->p->type, c->p->group_size, q, e, cols);
        if (r < 0)
                return r;
        for (size_t j = 0; j < cols; j++)
                ed[j] = w[j] - e[j] / c->s[j];
        return 0;
}

/* Rows per task: their errors E (rows × cols) meet the tokens in one matrix product, which packs
 * all the tokens again for every task (at 32 rows the packing took 40% of the product's time);
 * 64 still gives 16 threads 40 tasks on q/k/v's 2560 rows, 176 on gate/up's, 32 on ffn_down's.
 * Fixed, so that the result does not depend on the thread count. */
#define AWQ_ROWS 64

/* Rows [32·task, 32·task + 32): quantized, then their output errors from E·Xᵀ or E·XᵀX. */
static int awq_rows(void *userdata, size_t task) {
        AwqCtx *c = userdata;
        size_t cols = c->cols, r0 = task * AWQ_ROWS, nr = MIN((size_t) AWQ_ROWS, c->row_start[c->n_lin] - r0);
        size_t np = c->xx ? cols : c->n_samples;
        _cleanup_free_ float *ws = malloc(cols * sizeof(float));
        _cleanup_free_ float *e = malloc(cols * sizeof(float));
        _cleanup_free_ float *ed = malloc(AWQ_ROWS * cols * sizeof(float));
        _cleanup_free_ float *pr = malloc(AWQ_ROWS * np * sizeof(float));
        _cleanup_free_ uint8_t *q = malloc(c->row_bytes);
        int r;

        if (!ws || !e || !ed || !pr || !q)
                return -ENOMEM;
        for (size_t k = 0; k < nr; k++)
                if ((r = awq_quant_row(c, r0 + k, ws, e, q, ed + k * cols)) < 0)
                        return r;
        if (c->xx)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) nr, (int) cols, (int) cols, 1.0f, ed,
                            (int) cols, c->xx, (int) cols, 0.0f, pr, (int) cols);
        else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) nr, (int) np, (int) cols, 1.0f, ed,
                            (int) cols, c->x, (int) cols, 0.0f, pr, (int) np);
        for (size_t k = 0; k < nr; k++) {
                const float *pk = pr + k * np, *ek = c->xx ? ed + k * cols : pk;
                double t = 0.0;
                for (size_t j = 0; j < np; j++)
                        t += (double) pk[j] * ek[j];
                c->row_err[r0 + k] = t;
        }
        return 0;
}

/* Runs awq_rows over every row of every linear; the sum is taken in row order, so the result does
 * not depend on the thread count. */
static int awq_pass(AwqCtx *c, unsigned n_threads, double *ret) {
        size_t n_rows = c->row_start[c->n_lin];
        int r = qd_parallel_for(DIV_ROUND_UP(n_rows, (size_t) AWQ_ROWS), n_threads, awq_rows, c);
        if (r < 0)
                return r;
        double total = 0.0;
        for (size_t i = 0; i < n_rows; i++)
                total += c->row_err[i];
        *ret = total;
        return 0;
}

typedef struct GramJob {
        const float *x;          /* T × cols */
        size_t n, cols, g;
        float *ret;
} GramJob;

/* Rows [64·t, 64·t + 64) of XᵀX. */
static int xx_rows(void *userdata, size_t t) {
        GramJob *j = userdata;
        size_t c = j->cols, i0 = t * 64, nr = MIN((size_t) 64, c - i0);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int) nr, (int) c, (int) j->n, 1.0f, j->x + i0,
                    (int) c, j->x, (int) c, 0.0f, j->ret + i0 * c, (int) c);
        return 0;
}

/* Group k's g × g Gram matrix X_kᵀX_k of the columns [k·g, k·g + g). */
static int group_gram(void *userdata, size_t k) {
        GramJob *j = userdata;
        size_t g = j->g;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int) g, (int) g, (int) j->n, 1.0f, j->x + k * g,
                    (int) j->cols, j->x + k * g, (int) j->cols, 0.0f, j->ret + k * g * g, (int) g);
        return 0;
}

/* Points c at the tokens x (n × cols) for the error sums: XᵀX into *xx when that is cheaper. */
static int set_tokens(AwqCtx *c, const float *x, size_t n, unsigned n_threads, float **xx) {
        c->x = x;
        c->n_samples = n;
        c->xx = NULL;
        if (n <= c->cols)
                return 0;
        if (!*xx && !(*xx = malloc(c->cols * c->cols * sizeof(float))))
                return -ENOMEM;
        GramJob j = { .x = x, .n = n, .cols = c->cols, .ret = *xx };
        int r = qd_parallel_for(DIV_ROUND_UP(c->cols, (size_t) 64), n_threads, xx_rows, &j);
        if (r < 0)
                return r;
        c->xx = *xx;
        return 0;
}

/* s = mean|x|^α for grid point i, normalised by sqrt(max·min) as AWQ does so the scales centre
 * on 1. */
static void awq_grid_scales(const double *xmean, size_t cols, unsigned i, unsigned n_grid, float *s) {
        float alpha = n_grid > 1 ? (float) i / (float) (n_grid - 1) : 0.0f;
        double lo = INFINITY, hi = 0.0;
        for (size_t j = 0; j < cols; j++) {
                s[j] = (float) pow(xmean[j], alpha);
                lo = MIN(lo, (double) s[j]);
                hi = MAX(hi, (double) s[j]);
        }
        float norm = (float) sqrt(lo * hi);
        for (size_t j = 0; j < cols; j++)
                s[j] /= norm;
}

int qd_awq_quantize(const QdQuantParams *p, const QdAwqOptions *o, const float *x,
                    size_t n_samples, size_t cols, QdAwqLinear *lin, size_t n_lin,
                    float *ret_scales, QdAwqResult *ret) {
        static const QdAwqOptions defaults = { .clip = true };
        if (!p || !x || !lin || n_lin == 0 || n_samples == 0 || cols == 0)
                return -EINVAL;
        if (!o)
                o = &defaults;
        QdQuantParams qp = *p;
        qp.group_size = p->group_size ? p->group_size : 32;
        if (qp.type == QD_QTYPE_NF4 || !qd_quant_group_size_valid(qp.type, qp.group_size) ||
            cols % qp.group_size != 0)
                return -EINVAL;
        for (size_t l = 0; l < n_lin; l++)
                if (!lin[l].w || lin[l].rows == 0)
                        return -EINVAL;
        unsigned n_grid = o->n_grid ? o->n_grid : 20;
        size_t g = qp.group_size;

        _cleanup_free_ double *xmean = calloc(cols, sizeof(double));
        _cleanup_free_ float *s = malloc(cols * sizeof(float));
        _cleanup_free_ float *best_s = malloc(cols * sizeof(float));
        if (!xmean || !s || !best_s)
                return -ENOMEM;
        for (size_t t = 0; t < n_samples; t++)
                for (size_t j = 0; j < cols; j++)
                        xmean[j] += fabsf(x[t * cols + j]);
        for (size_t j = 0; j < cols; j++)
                xmean[j] = MAX(xmean[j] / (double) n_samples, 1e-4);

        size_t rs;
        int r0 = qd_quant_row_size(qp.type, qp.group_size, cols, &rs);
        if (r0 < 0)
                return r0;
        _cleanup_free_ size_t *row_start = malloc((n_lin + 1) * sizeof(size_t));
        if (!row_start)
                return -ENOMEM;
        row_start[0] = 0;
        for (size_t l = 0; l < n_lin; l++)
                row_start[l + 1] = row_start[l] + lin[l].rows;
        _cleanup_free_ double *row_err = malloc(row_start[n_lin] * sizeof(double));
        if (!row_err)
                return -ENOMEM;
        unsigned n_threads = o->n_threads ? o->n_threads : 1;
        AwqCtx ctx = {
                .p = &qp,
                .o = o,
                .x = x,
                .n_samples = n_samples,
                .cols = cols,
                .row_bytes = rs,
                .lin = lin,
                .n_lin = n_lin,
                .row_start = row_start,
                .row_err = row_err,
        };

        /* The searches run on an evenly spaced subset of the tokens when asked to. */
        _cleanup_free_ float *xsub = NULL;
        const float *xs = x;
        size_t ns = n_samples;
        if (o->max_tokens > 0 && o->max_tokens < n_samples) {
                ns = o->max_tokens;
                xsub = malloc(ns * cols * sizeof(float));
                if (!xsub)
                        return -ENOMEM;
                for (size_t t = 0; t < ns; t++)
                        memcpy(xsub + t * cols, x + (t * n_samples / ns) * cols, cols * sizeof(float));
                xs = xsub;
        }
        qd_blas_init();
        _cleanup_free_ float *xx = NULL;
        int r = set_tokens(&ctx, xs, ns, n_threads, &xx);
        if (r < 0)
                return r;

        /* Grid over α in [0, 1]; α = 0 gives s = 1, plain RTN, so the result never loses to it.
         * Scored with p's range search (its clipping search: the final quantizer) at every point,
         * or with fast_search where min-max RTN of every point (AWQ's own search, a quarter of
         * the cost) puts the minimum: there, at its neighbours, further along while the best
         * scored point lies at the edge, and at α = 0. */
        _cleanup_free_ double *err_x = malloc(n_grid * sizeof(double));
        if (!err_x)
                return -ENOMEM;
        for (unsigned i = 0; i < n_grid; i++)
                err_x[i] = NAN;
        unsigned start = 0, total_steps = !o->fast_search ? n_grid + 1 : n_grid + 8, steps = 0;
        if (o->fast_search) {
                QdQuantParams mp = qp;
                mp.range = QD_RANGE_MINMAX;
                ctx.p = &mp;
                double best_mm = INFINITY;
                for (unsigned i = 0; i < n_grid; i++) {
                        double err;
                        awq_grid_scales(xmean, cols, i, n_grid, s);
                        ctx.s = s;
                        if ((r = awq_pass(&ctx, n_threads, &err)) < 0)
                                return r;
                        if (err < best_mm) {
                                best_mm = err;
                                start = i;
                        }
                        if (o->progress && o->progress(o->userdata, (double) ++steps / total_steps) != 0)
                                return -ECANCELED;
                }
                ctx.p = &qp;
        }
        for (;;) {
                /* the next point to score: all in order, or around the best scored so far */
                unsigned next = n_grid, best = n_grid;
                for (unsigned i = 0; i < n_grid; i++)
                        if (!isnan(err_x[i]) && (best == n_grid || err_x[i] < err_x[best]))
                                best = i;
                if (!o->fast_search) {
                        for (unsigned i = 0; i < n_grid && next == n_grid; i++)
                                if (isnan(err_x[i]))
                                        next = i;
                } else if (best == n_grid)
                        next = start;
                else if (best > 0 && isnan(err_x[best - 1]))
                        next = best - 1;
                else if (best + 1 < n_grid && isnan(err_x[best + 1]))
                        next = best + 1;
                else if (isnan(err_x[0]))
                        next = 0;
                if (next == n_grid)
                        break;
                awq_grid_scales(xmean, cols, next, n_grid, s);
                ctx.s = s;
                if ((r = awq_pass(&ctx, n_threads, &err_x[next])) < 0)
                        return r;
                if (o->progress && o->progress(o->userdata, MIN((double) ++steps / total_steps, 0.95)) != 0)
                        return -ECANCELED;
        }
        double err_rtn = err_x[0], best_err = INFINITY;
        float best_alpha = 0.0f;
        for (unsigned i = 0; i < n_grid; i++)
                if (err_x[i] < best_err) { /* NaN: not scored */
                        best_err = err_x[i];
                        best_alpha = n_grid > 1 ? (float) i / (float) (n_grid - 1) : 0.0f;
                        awq_grid_scales(xmean, cols, i, n_grid, best_s);
                }

        /* Scaled weights W·diag(s), clipped against the scaled inputs X/s: the Gram matrix of
         * each group's columns of X/s. */
        _cleanup_free_ float *gram = NULL;
        if (o->clip) {
                _cleanup_free_ float *xsc = malloc(ns * cols * sizeof(float));
                gram = malloc(cols * g * sizeof(float));
                if (!xsc || !gram)
                        return -ENOMEM;
                for (size_t t = 0; t < ns; t++)
                        for (size_t j = 0; j < cols; j++)
                                xsc[t * cols + j] = xs[t * cols + j] / best_s[j];
                GramJob gj = { .x = xsc, .n = ns, .cols = cols, .g = g, .ret = gram };
                r = qd_parallel_for(cols / g, n_threads, group_gram, &gj);
                if (r < 0)
                        return r;
        }

        double err_final;
        if (ns != n_samples && (r = set_tokens(&ctx, x, n_samples, n_threads, &xx)) < 0)
                return r;
        ctx.s = best_s;
        ctx.gram = gram;
        ctx.write = true;
        r = awq_pass(&ctx, n_threads, &err_final);
        if (r < 0)
                return r;
        if (o->progress && o->progress(o->userdata, 1.0) != 0)
                return -ECANCELED;

        if (ret_scales)
                memcpy(ret_scales, best_s, cols * sizeof(float));
        if (ret)
                *ret = (QdAwqResult) {
                        .alpha = best_alpha,
                        .err_rtn = err_rtn,
                        .err_best = best_err,
                        .err_final = err_final,
                };
        return 0;
}

int qd_fold_scales_into_norm(float *norm_w, const float *s, size_t cols) {
        if (!norm_w || !s)
                return -EINVAL;
        for (size_t j = 0; j < cols; j++)
                if (!(s[j] > 0.0f) || !isfinite(s[j]))
                        return -EINVAL;
        for (size_t j = 0; j < cols; j++)
                norm_w[j] /= s[j];
        return 0;
}
