/* Quality metrics: MSE, SQNR, KL divergence and top-1 agreement of logits, and perplexity with
 * llama.cpp's protocol (non-overlapping windows, second half scored). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "quant.h"

double qd_metric_mse(const float *ref, const float *x, size_t n) {
        if (n == 0)
                return 0.0;
        double e = 0.0;
        for (size_t i = 0; i < n; i++) {
                double d = (double) ref[i] - x[i];
                e += d * d;
        }
        return e / (double) n;
}

double qd_metric_sqnr_db(const float *ref, const float *x, size_t n) {
        double s = 0.0, e = 0.0;
        for (size_t i = 0; i < n; i++) {
                double d = (double) ref[i] - x[i];
                s += (double) ref[i] * ref[i];
                e += d * d;
        }
        if (s == 0.0)
                return -INFINITY;
        if (e == 0.0)
                return INFINITY;
        return 10.0 * log10(s / e);
}

double qd_metric_sqnr_ideal_db(double bits) {
        return 6.02 * bits + 1.76;
}

/* log Σ exp(x_i) in double, stable. */
static double log_sum_exp(const float *x, size_t n, double *ret_max) {
        double mx = -INFINITY;
        for (size_t i = 0; i < n; i++)
                mx = MAX(mx, (double) x[i]);
        double s = 0.0;
        for (size_t i = 0; i < n; i++)
                s += exp((double) x[i] - mx);
        if (ret_max)
                *ret_max = mx;
        return mx + log(s);
}

double qd_metric_kl_logits(const float *ref_logits, const float *logits, size_t n_vocab) {
        double lp = log_sum_exp(ref_logits, n_vocab, NULL);
        double lq = log_sum_exp(logits, n_vocab, NULL);
        double kl = 0.0;
        for (size_t i = 0; i < n_vocab; i++) {
                double logp = ref_logits[i] - lp, logq = logits[i] - lq;
                double p = exp(logp);
                if (p > 0.0)
                        kl += p * (logp - logq);
        }
        return MAX(kl, 0.0);
}

size_t qd_metric_argmax(const float *x, size_t n) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
                if (x[i] > x[best])
                        best = i;
        return best;
}

double qd_metric_nll(const float *logits, size_t n_vocab, uint32_t token) {
        if (token >= n_vocab)
                return NAN;
        return log_sum_exp(logits, n_vocab, NULL) - (double) logits[token];
}

struct QdDistStats {
        double *kl;
        size_t n, allocated;
        size_t top1;
        double kl_sum;
};

int qd_dist_stats_new(QdDistStats **ret) {
        QdDistStats *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

QdDistStats *qd_dist_stats_free(QdDistStats *s) {
        if (!s)
                return NULL;
        free(s->kl);
        free(s);
        return NULL;
}

int qd_dist_stats_add(QdDistStats *s, const float *ref_logits, const float *logits, size_t n_vocab) {
        if (!s || !ref_logits || !logits || n_vocab == 0)
                return -EINVAL;
        if (s->n == s->allocated) {
                size_t na = MAX((size_t) 256, s->allocated * 2);
                double *k = realloc(s->kl, na * sizeof(double));
                if (!k)
                        return -ENOMEM;
                s->kl = k;
                s->allocated = na;
        }
        double kl = qd_metric_kl_logits(ref_logits, logits, n_vocab);
        s->kl[s->n++] = kl;
        s->kl_sum += kl;
        if (qd_metric_argmax(ref_logits, n_vocab) == qd_metric_argmax(logits, n_vocab))
                s->top1++;
        return 0;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return (x > y) - (x < y);
}

int qd_dist_stats_summary(const QdDistStats *s, QdDistSummary *ret) {
        if (!s || !ret)
                return -EINVAL;
        if (s->n == 0)
                return -ENODATA;
        _cleanup_free_ double *v = malloc(s->n * sizeof(double));
        if (!v)
                return -ENOMEM;
        memcpy(v, s->kl, s->n * sizeof(double));
        qsort(v, s->n, sizeof(double), cmp_double);
        /* Nearest rank: the smallest value with at least 99% of the values at or below it. */
        size_t rank = (size_t) ceil(0.99 * (double) s->n);
        *ret = (QdDistSummary) {
                .n = s->n,
                .kl_mean = s->kl_sum / (double) s->n,
                .kl_p99 = v[MAX(rank, (size_t) 1) - 1],
                .kl_max = v[s->n - 1],
                .top1 = (double) s->top1 / (double) s->n,
        };
        return 0;
}

typedef struct PplAcc {
        double sum, sum2;
        size_t n, windows;
} PplAcc;

static void ppl_result(const PplAcc *a, QdPplResult *ret) {
        double mean = a->sum / (double) a->n;
        double var = a->sum2 / (double) a->n - mean * mean;
        double ppl = exp(mean);
        *ret = (QdPplResult) {
                .n_windows = a->windows,
                .n_scored = a->n,
                .nll_mean = mean,
                .ppl = ppl,
                .ppl_err = a->n > 1 ? ppl * sqrt(MAX(var, 0.0) / (double) (a->n - 1)) : 0.0,
        };
}

static int ppl_run(const uint32_t *tokens, size_t n_tokens, size_t n_vocab, const QdPplOptions *o,
                   QdLogitsFn ref_fn, void *ref_userdata, QdLogitsFn fn, void *userdata,
                   QdPplResult *ret_ref, QdPplResult *ret, QdDistSummary *ret_dist) {
        size_t n_ctx = o && o->n_ctx ? o->n_ctx : 512;
        int64_t bos = o ? o->bos : -1;
        if (!tokens || n_vocab == 0 || !fn || n_ctx < 4)
                return -EINVAL;
        size_t n_windows = n_tokens / n_ctx;
        if (o && o->max_windows)
                n_windows = MIN(n_windows, o->max_windows);
        if (n_windows == 0)
                return -ENODATA;
        for (size_t i = 0; i < n_tokens; i++)
                if (tokens[i] >= n_vocab)
                        return -EINVAL;
        if (bos >= (int64_t) n_vocab)
                return -EINVAL;

        size_t nl;
        if (size_mul_overflow(n_ctx, n_vocab, &nl))
                return -EOVERFLOW;
        _cleanup_free_ uint32_t *win = malloc(n_ctx * sizeof(uint32_t));
        _cleanup_free_ float *logits = malloc(nl * sizeof(float));
        _cleanup_free_ float *ref_logits = ref_fn ? malloc(nl * sizeof(float)) : NULL;
        if (!win || !logits || (ref_fn && !ref_logits))
                return -ENOMEM;
        _cleanup_(qd_dist_stats_freep) QdDistStats *dist = NULL;
        if (ref_fn) {
                int r = qd_dist_stats_new(&dist);
                if (r < 0)
                        return r;
        }

        PplAcc acc = {}, ref_acc = {};
        size_t first = n_ctx / 2;
        for (size_t w = 0; w < n_windows; w++) {
                memcpy(win, tokens + w * n_ctx, n_ctx * sizeof(uint32_t));
                if (bos >= 0)
                        win[0] = (uint32_t) bos;
                int r = fn(userdata, win, n_ctx, logits);
                if (r < 0)
                        return r;
                if (ref_fn) {
                        r = ref_fn(ref_userdata, win, n_ctx, ref_logits);
                        if (r < 0)
                                return r;
                }
                /* Position j predicts the original token j+1 (never the replaced BOS). */
                for (size_t j = first; j + 1 < n_ctx; j++) {
                        uint32_t next = tokens[w * n_ctx + j + 1];
                        double nll = qd_metric_nll(logits + j * n_vocab, n_vocab, next);
                        acc.sum += nll;
                        acc.sum2 += nll * nll;
                        acc.n++;
                        if (ref_fn) {
                                nll = qd_metric_nll(ref_logits + j * n_vocab, n_vocab, next);
                                ref_acc.sum += nll;
                                ref_acc.sum2 += nll * nll;
                                ref_acc.n++;
                                r = qd_dist_stats_add(dist, ref_logits + j * n_vocab,
                                                      logits + j * n_vocab, n_vocab);
                                if (r < 0)
                                        return r;
                        }
                }
                acc.windows++;
                ref_acc.windows++;
        }

        if (ref_fn) {
                QdDistSummary ds;
                int r = qd_dist_stats_summary(dist, &ds);
                if (r < 0)
                        return r;
                if (ret_ref)
                        ppl_result(&ref_acc, ret_ref);
                if (ret_dist)
                        *ret_dist = ds;
        }
        if (ret)
                ppl_result(&acc, ret);
        return 0;
}

int qd_ppl_eval(const uint32_t *tokens, size_t n_tokens, size_t n_vocab, const QdPplOptions *o,
                QdLogitsFn fn, void *userdata, QdPplResult *ret) {
        return ppl_run(tokens, n_tokens, n_vocab, o, NULL, NULL, fn, userdata, NULL, ret, NULL);
}

int qd_ppl_compare(const uint32_t *tokens, size_t n_tokens, size_t n_vocab, const QdPplOptions *o,
                   QdLogitsFn ref_fn, void *ref_userdata, QdLogitsFn fn, void *userdata,
                   QdPplResult *ret_ref, QdPplResult *ret, QdDistSummary *ret_dist) {
        if (!ref_fn)
                return -EINVAL;
        return ppl_run(tokens, n_tokens, n_vocab, o, ref_fn, ref_userdata, fn, userdata, ret_ref,
                       ret, ret_dist);
}
