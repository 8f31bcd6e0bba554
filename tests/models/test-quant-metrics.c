/* Metrics on hand-computable cases: SQNR, KL divergence of logits, top-1, the 99th percentile,
 * and the perplexity protocol (window count, BOS, only the second half of each window scored). */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "quant.h"
#include "test-quant-common.h"

#define close_to(a, b, tol) (fabs((double) (a) - (double) (b)) <= (tol))

static void test_basic(void) {
        float ref[4] = { 1, 2, 3, 4 }, x[4] = { 1.1f, 1.9f, 3.1f, 3.9f };
        /* Σref² = 30, Σe² = 4·0.01 = 0.04 */
        check(close_to(qd_metric_sqnr_db(ref, x, 4), 10 * log10(30 / 0.04), 1e-4));
        check(close_to(qd_metric_mse(ref, x, 4), 0.01, 1e-7));
        check(isinf(qd_metric_sqnr_db(ref, ref, 4)) && qd_metric_sqnr_db(ref, ref, 4) > 0);
        check(close_to(qd_metric_sqnr_ideal_db(8), 49.92, 1e-9));
        check(close_to(qd_metric_sqnr_ideal_db(4), 25.84, 1e-9));

        /* P = softmax(0, ln 3) = (1/4, 3/4), Q = (1/2, 1/2). */
        float lp[2] = { 0, logf(3) }, lq[2] = { 5, 5 };
        double kl = 0.25 * log(0.25 / 0.5) + 0.75 * log(0.75 / 0.5);
        check(close_to(qd_metric_kl_logits(lp, lq, 2), kl, 1e-6));
        float lp_shift[2] = { 1000, 1000 + logf(3) };
        check(close_to(qd_metric_kl_logits(lp_shift, lq, 2), kl, 1e-4));
        check(qd_metric_kl_logits(lp, lp, 2) == 0.0);
        check(close_to(qd_metric_nll(lp, 2, 1), -log(0.75), 1e-6));
        check(isnan(qd_metric_nll(lp, 2, 2)));
        check(qd_metric_argmax(lp, 2) == 1);
}

static void test_dist_stats(void) {
        _cleanup_(qd_dist_stats_freep) QdDistStats *s = NULL;
        QdDistSummary sum;
        check(qd_dist_stats_new(&s) == 0);
        check(qd_dist_stats_summary(s, &sum) == -ENODATA);
        /* 200 positions; position i has P = (1/2, 1/2), Q = softmax(0, t_i), so KL grows with t_i,
         * and the argmax differs whenever t_i > 0 (ties resolve to index 0 for both). */
        double kls[200];
        size_t agree = 0;
        for (int i = 0; i < 200; i++) {
                float t = (float) (i - 50) / 50.0f;
                float p[2] = { 0, 0 }, q[2] = { 0, t };
                check(qd_dist_stats_add(s, p, q, 2) == 0);
                double q1 = 1 / (1 + exp(-(double) t)), q0 = 1 - q1;
                kls[i] = 0.5 * log(0.5 / q0) + 0.5 * log(0.5 / q1);
                agree += t <= 0;
        }
        check(qd_dist_stats_summary(s, &sum) == 0);
        check(sum.n == 200);
        check(close_to(sum.top1, agree / 200.0, 1e-12));
        double mean = 0, mx = 0;
        for (int i = 0; i < 200; i++)
                mean += kls[i] / 200, mx = fmax(mx, kls[i]);
        check(close_to(sum.kl_mean, mean, 1e-6));
        check(close_to(sum.kl_max, mx, 1e-6));
        /* KL is increasing in |t|; t ranges over [-1, 2.98], so the largest 2 values are the last 2
         * and the 99th percentile by nearest rank (rank 198) is the 198th smallest: index 197. */
        check(close_to(sum.kl_p99, kls[197], 1e-6));
}

/* A model over a vocabulary of V whose text follows next = (7·cur + 3) mod V: it gives the true
 * next token probability p_hi in the second half of a window and p_lo in the first half. */
#define V 16
typedef struct Oracle {
        double p_hi, p_lo;
        size_t calls, n_ctx;
        int64_t bos;
        bool bos_ok;
} Oracle;

static uint32_t next_of(uint32_t t) {
        return (7 * t + 3) % V;
}

static int oracle_logits(void *userdata, const uint32_t *tokens, size_t n, float *logits) {
        Oracle *o = userdata;
        o->calls++;
        if (n != o->n_ctx)
                return -EBADMSG;
        if (o->bos >= 0 && tokens[0] != (uint32_t) o->bos)
                o->bos_ok = false;
        for (size_t i = 0; i < n; i++) {
                double p = i >= n / 2 ? o->p_hi : o->p_lo;
                for (uint32_t v = 0; v < V; v++)
                        logits[i * V + v] = (float) log((1 - p) / (V - 1));
                logits[i * V + next_of(tokens[i])] = (float) log(p);
        }
        return 0;
}

static void test_ppl(void) {
        enum { N = 5 * 64 + 17 };
        uint32_t tok[N];
        tok[0] = 1;
        for (int i = 1; i < N; i++)
                tok[i] = next_of(tok[i - 1]);

        Oracle o = { .p_hi = 0.5, .p_lo = 0.01, .n_ctx = 64, .bos = 0, .bos_ok = true };
        QdPplOptions opt = { .n_ctx = 64, .bos = 0 };
        QdPplResult res;
        check(qd_ppl_eval(tok, N, V, &opt, oracle_logits, &o, &res) == 0);
        /* 5 full windows (the 17 left over dropped), 64/2 - 1 = 31 scored tokens each, and only
         * p_hi in play: ppl = 1/0.5 exactly, with zero spread. */
        check(o.calls == 5 && res.n_windows == 5);
        check(res.n_scored == 5 * 31);
        check(close_to(res.ppl, 2.0, 1e-5));
        check(close_to(res.ppl_err, 0.0, 1e-5));
        check(o.bos_ok);

        opt.max_windows = 2;
        o.calls = 0;
        check(qd_ppl_eval(tok, N, V, &opt, oracle_logits, &o, &res) == 0);
        check(o.calls == 2 && res.n_scored == 62);

        /* Reference p = 0.5, test p = 0.25 on the true token. */
        Oracle ref = o, test = o;
        test.p_hi = 0.25;
        QdPplResult rr, rt;
        QdDistSummary ds;
        opt.max_windows = 0;
        check(qd_ppl_compare(tok, N, V, &opt, oracle_logits, &ref, oracle_logits, &test, &rr, &rt,
                             &ds) == 0);
        check(close_to(rr.ppl, 2.0, 1e-5) && close_to(rt.ppl, 4.0, 1e-5));
        double kl = 0.5 * log(0.5 / 0.25) + 0.5 * log(0.5 / 0.75);
        check(ds.n == 5 * 31);
        check(close_to(ds.kl_mean, kl, 1e-6) && close_to(ds.kl_p99, kl, 1e-6));
        check(ds.top1 == 1.0);

        /* Errors: a callback failure is passed on, too few tokens, a token outside the vocabulary. */
        o.n_ctx = 32;
        check(qd_ppl_eval(tok, N, V, &opt, oracle_logits, &o, &res) == -EBADMSG);
        check(qd_ppl_eval(tok, 63, V, &opt, oracle_logits, &o, &res) == -ENODATA);
        tok[3] = V;
        check(qd_ppl_eval(tok, N, V, &opt, oracle_logits, &o, &res) == -EINVAL);
}

int main(void) {
        test_basic();
        test_dist_stats();
        test_ppl();
        printf("ok\n");
        return 0;
}
