/* AWQ on q/k/v-like linears sharing an input with a few large channels: the scaled (and clipped)
 * quantization has lower output error than RTN, the reported errors match an independent
 * computation from the returned blocks and scales, and the scales fold exactly. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "quant.h"
#include "test-quant-common.h"

enum { ROWS = 16, COLS = 256, NS = 128, NLIN = 3 };

static float W[NLIN][ROWS * COLS], X[NS * COLS];

static void make_data(void) {
        Rng rng = { 21 };
        float sig[COLS];
        for (size_t j = 0; j < COLS; j++)
                sig[j] = j % 37 == 5 ? 25.0f : 0.5f + (float) rng_uniform(&rng);
        for (size_t t = 0; t < NS; t++)
                for (size_t j = 0; j < COLS; j++)
                        X[t * COLS + j] = sig[j] * rng_gauss(&rng);
        for (size_t l = 0; l < NLIN; l++)
                fill_gauss(&rng, W[l], ROWS * COLS, 0.02f);
}

/* Output error of blocks of W·diag(s) applied to X/s, i.e. of deq(q)/s against W. */
static double error_from_blocks(const QdQuantParams *p, const uint8_t *q, const float *w,
                                const float *s) {
        static float deq[ROWS * COLS];
        size_t rs;
        check(qd_quant_row_size(p->type, p->group_size, COLS, &rs) == 0);
        for (size_t r = 0; r < ROWS; r++) {
                check(qd_dequant_row(p->type, p->group_size, q + r * rs, deq + r * COLS, COLS) == 0);
                for (size_t j = 0; j < COLS; j++)
                        deq[r * COLS + j] /= s[j];
        }
        return output_error(X, NS, COLS, w, deq, ROWS);
}

static void run_case(QdQuantType t, unsigned g) {
        static uint8_t q[NLIN][ROWS * COLS * 2];
        static float sw[NLIN][ROWS * COLS], deq[ROWS * COLS];
        float s[COLS];
        QdQuantParams p = { .type = t, .group_size = g };

        /* Plain RTN for reference. */
        double e_rtn = 0;
        for (size_t l = 0; l < NLIN; l++) {
                check(qd_quant_matrix(&p, W[l], NULL, ROWS, COLS, 1, q[l], deq) == 0);
                e_rtn += output_error(X, NS, COLS, W[l], deq, ROWS);
        }

        QdAwqLinear lin[NLIN];
        for (size_t l = 0; l < NLIN; l++)
                lin[l] = (QdAwqLinear) { .w = W[l], .rows = ROWS, .dst = q[l], .ret_w = sw[l] };
        QdAwqOptions o = { .clip = true };
        QdAwqResult res;
        check(qd_awq_quantize(&p, &o, X, NS, COLS, lin, NLIN, s, &res) == 0);
        double e_check = 0;
        for (size_t l = 0; l < NLIN; l++)
                e_check += error_from_blocks(&p, q[l], W[l], s);
        printf("%s g%u: alpha %.3f, AWQ/RTN output error: scaled %.3f, scaled+clip %.3f (RTN %.4g)\n",
               qd_quant_type_to_string(t), g, res.alpha, res.err_best / e_rtn, res.err_final / e_rtn,
               e_rtn);
        check(fabs(res.err_rtn - e_rtn) <= 1e-6 * e_rtn);
        check(fabs(res.err_final - e_check) <= 1e-6 * e_check);
        check(res.alpha > 0.0f);
        check(res.err_best < 0.9 * res.err_rtn);
        check(res.err_final <= res.err_best * 1.001);

        /* Scoring every α with p's range search (the default) finds the global minimum of the
         * grid; fast_search (min-max RTN over the grid, p's search from its minimum on) a local
         * one, here the same. Both score α = 0 with p's search. */
        QdAwqResult rf;
        float sf[COLS];
        o.fast_search = true;
        check(qd_awq_quantize(&p, &o, X, NS, COLS, lin, NLIN, sf, &rf) == 0);
        o.fast_search = false;
        printf("  fast search: alpha %.3f, scaled %.3f\n", rf.alpha, rf.err_best / e_rtn);
        check(rf.err_rtn == res.err_rtn && res.err_best <= rf.err_best);
        check(rf.alpha == res.alpha && rf.err_final == res.err_final);

        /* Threads change nothing: per-row errors are summed in row order. */
        static uint8_t q3[ROWS * COLS * 2];
        static float sw3[ROWS * COLS];
        QdAwqLinear one = { .w = W[1], .rows = ROWS, .dst = q3, .ret_w = sw3 };
        QdAwqResult res1, res3;
        float s1[COLS], s3[COLS];
        o.n_threads = 1;
        check(qd_awq_quantize(&p, &o, X, NS, COLS, &one, 1, s1, &res1) == 0);
        static uint8_t q1[ROWS * COLS * 2];
        memcpy(q1, q3, sizeof(q1));
        o.n_threads = 3;
        check(qd_awq_quantize(&p, &o, X, NS, COLS, &one, 1, s3, &res3) == 0);
        check(memcmp(q1, q3, sizeof(q1)) == 0 && memcmp(s1, s3, sizeof(s1)) == 0);
        check(res1.err_final == res3.err_final && res1.alpha == res3.alpha);

        /* Searching on half the tokens still beats RTN on all of them. */
        o.max_tokens = NS / 2;
        check(qd_awq_quantize(&p, &o, X, NS, COLS, lin, NLIN, s, &res) == 0);
        printf("  searched on %d of %d tokens: AWQ/RTN %.3f\n", NS / 2, NS, res.err_final / e_rtn);
        check(res.err_final < 0.9 * e_rtn);
        o.max_tokens = 0;

        /* Without clipping the returned weights are exactly W·diag(s): folding 1/s into the
         * previous RMSNorm leaves the float model unchanged. */
        o.clip = false;
        check(qd_awq_quantize(&p, &o, X, NS, COLS, lin, NLIN, s, &res) == 0);
        for (size_t l = 0; l < NLIN; l++)
                for (size_t i = 0; i < ROWS * COLS; i++)
                        check(sw[l][i] == W[l][i] * s[i % COLS]);
        check(fabs(res.err_final - res.err_best) <= 1e-9 * res.err_best);
}

/* Folding into an RMSNorm weight: norm(x)⊙(g/s) · (W·diag(s))ᵀ = norm(x)⊙g · Wᵀ. */
static void test_fold(void) {
        float g[COLS], s[COLS], gs[COLS];
        Rng rng = { 22 };
        for (size_t j = 0; j < COLS; j++) {
                g[j] = 1.0f + 0.1f * rng_gauss(&rng);
                s[j] = expf(rng_gauss(&rng));
                gs[j] = g[j];
        }
        check(qd_fold_scales_into_norm(gs, s, COLS) == 0);
        const float *xn = X; /* any normalised token */
        for (size_t r = 0; r < 4; r++) {
                double a = 0, b = 0;
                for (size_t j = 0; j < COLS; j++) {
                        a += (double) xn[j] * g[j] * W[0][r * COLS + j];
                        b += (double) xn[j] * gs[j] * (W[0][r * COLS + j] * s[j]);
                }
                check(fabs(a - b) <= 1e-5 * (fabs(a) + 1e-3));
        }
        s[3] = 0.0f;
        check(qd_fold_scales_into_norm(gs, s, COLS) == -EINVAL);
}

int main(void) {
        make_data();
        run_case(QD_QTYPE_Q4_0, 32);
        run_case(QD_QTYPE_Q4_1, 128);
        run_case(QD_QTYPE_Q8_0, 32);
        test_fold();

        QdQuantParams p = { .type = QD_QTYPE_NF4 };
        QdAwqLinear lin = { .w = W[0], .rows = ROWS };
        check(qd_awq_quantize(&p, NULL, X, NS, COLS, &lin, 1, NULL, NULL) == -EINVAL);
        p.type = QD_QTYPE_Q4_0;
        check(qd_awq_quantize(&p, NULL, X, NS, COLS - 16, &lin, 1, NULL, NULL) == -EINVAL);
        printf("ok\n");
        return 0;
}
