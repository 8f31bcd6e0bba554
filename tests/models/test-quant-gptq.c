/* GPTQ on a layer with correlated inputs (X = A·Z): its output error is well below RTN's, with and
 * without activation order, for Q4_0/Q4_1/Q8_0; threads do not change the result; the output
 * decodes with ggml-types; with an identity Hessian it reduces to RTN exactly. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "ggml-types.h"
#include "quant.h"
#include "test-quant-common.h"

enum { ROWS = 32, COLS = 256, NS = 512 };

static float W[ROWS * COLS], X[NS * COLS];

static void make_layer(void) {
        Rng rng = { 11 };
        static float A[COLS * COLS], Z[NS * COLS], chs[COLS];
        fill_gauss(&rng, W, ROWS * COLS, 0.02f);
        fill_gauss(&rng, A, COLS * COLS, 1.0f / sqrtf(COLS));
        fill_gauss(&rng, Z, NS * COLS, 1.0f);
        for (size_t j = 0; j < COLS; j++)
                chs[j] = expf(0.7f * rng_gauss(&rng)); /* uneven channel magnitudes */
        for (size_t t = 0; t < NS; t++)
                for (size_t i = 0; i < COLS; i++) {
                        double s = 0.3 * Z[t * COLS + i];
                        for (size_t k = 0; k < COLS; k++)
                                s += (double) A[i * COLS + k] * Z[t * COLS + k];
                        X[t * COLS + i] = (float) s * chs[i];
                }
}

static int cancel_at_half(void *userdata, double f) {
        double *last = userdata;
        check(f >= *last && f <= 1.0);
        *last = f;
        return f >= 0.5;
}

static void test_hessian(void) {
        _cleanup_(qd_hessian_freep) QdHessian *h = NULL;
        float x[4] = { 1, 2, 3, 4 };
        check(qd_hessian_new(2, &h) == 0);
        check(qd_hessian_add(h, x, 1, 2) == 0);
        check(qd_hessian_add(h, x + 2, 1, 2) == 0);
        const double *H = qd_hessian_data(h);
        /* 2/2 · [[1+9, 2+12], [2+12, 4+16]] */
        check(H[0] == 10 && H[1] == 14 && H[2] == 14 && H[3] == 20);
        check(qd_hessian_samples(h) == 2);
}

static void test_identity_is_rtn(void) {
        _cleanup_(qd_hessian_freep) QdHessian *h = NULL;
        static float e[COLS * COLS];
        static uint8_t a[ROWS * COLS], b[ROWS * COLS];
        memset(e, 0, sizeof(e));
        for (size_t i = 0; i < COLS; i++)
                e[i * COLS + i] = 1.0f;
        check(qd_hessian_new(COLS, &h) == 0);
        check(qd_hessian_add(h, e, COLS, 2) == 0);
        QdQuantParams p = { .type = QD_QTYPE_Q4_0, .group_size = 32 };
        QdGptqOptions o = { .act_order = false };
        check(qd_gptq_quantize(&p, &o, W, ROWS, COLS, h, a, NULL) == 0);
        /* RTN with the nearest code for each stored scale (GPTQ's coding; ggml's MINMAX bytes
         * take codes from the unrounded scale and differ in rare near-ties). */
        size_t rs, bb = qd_quant_block_bytes(p.type, 32);
        check(qd_quant_row_size(p.type, 32, COLS, &rs) == 0);
        for (size_t r = 0; r < ROWS; r++)
                for (size_t k = 0; k < COLS / 32; k++) {
                        QdGroupScale s;
                        int8_t codes[32];
                        const float *x = W + r * COLS + k * 32;
                        check(qd_quant_group_scale(&p, x, NULL, 32, &s) == 0);
                        for (size_t j = 0; j < 32; j++)
                                codes[j] = (int8_t) qd_quant_code(p.type, &s, x[j]);
                        qd_quant_pack_block(p.type, 32, &s, codes, b + r * rs + k * bb);
                }
        check(memcmp(a, b, ROWS * rs) == 0);
}

static void test_vs_rtn(void) {
        _cleanup_(qd_hessian_freep) QdHessian *h = NULL;
        check(qd_hessian_new(COLS, &h) == 0);
        /* In two batches, as calibration streams. */
        check(qd_hessian_add(h, X, NS / 2, 2) == 0);
        check(qd_hessian_add(h, X + NS / 2 * COLS, NS / 2, 2) == 0);

        static float deq[ROWS * COLS], deq2[ROWS * COLS], dg[ROWS * COLS];
        static uint8_t q[ROWS * COLS * 2], q2[ROWS * COLS * 2];
        static const struct {
                QdQuantType t;
                unsigned g;
        } cases[] = { { QD_QTYPE_Q4_0, 32 }, { QD_QTYPE_Q4_1, 32 }, { QD_QTYPE_Q8_0, 32 },
                      { QD_QTYPE_Q4_0, 128 } };
        for (size_t ci = 0; ci < ELEMENTSOF(cases); ci++) {
                QdQuantParams p = { .type = cases[ci].t, .group_size = cases[ci].g };
                size_t rs;
                check(qd_quant_row_size(p.type, p.group_size, COLS, &rs) == 0);
                check(qd_quant_matrix(&p, W, NULL, ROWS, COLS, 1, q, deq) == 0);
                double e_rtn = output_error(X, NS, COLS, W, deq, ROWS), e_h;
                /* The Hessian gives the same error without the samples. */
                check(qd_hessian_output_error(h, W, deq, ROWS, &e_h) == 0);
                check(fabs(e_h * NS - e_rtn) <= 1e-6 * e_rtn);

                for (int ao = 0; ao < 2; ao++) {
                        QdGptqOptions o = { .act_order = ao, .block = 64, .n_threads = 1 };
                        check(qd_gptq_quantize(&p, &o, W, ROWS, COLS, h, q, deq) == 0);
                        double e = output_error(X, NS, COLS, W, deq, ROWS);
                        printf("%s g%u act_order=%d: GPTQ/RTN output error %.3f (RTN %.4g)\n",
                               qd_quant_type_to_string(p.type), p.group_size, ao, e / e_rtn, e_rtn);
                        check(e <= 0.8 * e_rtn);

                        /* Same bytes with 3 threads. Another lazy-update block size is the
                         * same algebra in another float summation order; a flipped rounding
                         * decision then propagates, so only the quality is compared. */
                        o.n_threads = 3;
                        check(qd_gptq_quantize(&p, &o, W, ROWS, COLS, h, q2, deq2) == 0);
                        check(memcmp(q, q2, ROWS * rs) == 0);
                        o.block = 0;
                        check(qd_gptq_quantize(&p, &o, W, ROWS, COLS, h, q2, deq2) == 0);
                        double e2 = output_error(X, NS, COLS, W, deq2, ROWS);
                        check(e2 <= 0.8 * e_rtn && fabs(e2 - e) <= 0.1 * e);

                        o.static_groups = true;
                        check(qd_gptq_quantize(&p, &o, W, ROWS, COLS, h, q2, deq2) == 0);
                        double e3 = output_error(X, NS, COLS, W, deq2, ROWS);
                        printf("%s g%u act_order=%d static groups: GPTQ/RTN output error %.3f\n",
                               qd_quant_type_to_string(p.type), p.group_size, ao, e3 / e_rtn);
                        check(e3 <= 0.8 * e_rtn);

                        if (p.group_size == 32) {
                                uint32_t gt = p.type == QD_QTYPE_Q4_0 ? GGML_TYPE_Q4_0
                                              : p.type == QD_QTYPE_Q4_1 ? GGML_TYPE_Q4_1
                                                                        : GGML_TYPE_Q8_0;
                                for (size_t r = 0; r < ROWS; r++)
                                        check(ggml_dequantize_row(gt, q + r * rs, dg + r * COLS, COLS) == 0);
                                check(memcmp(dg, deq, sizeof(dg)) == 0);
                        }
                }
        }

        /* GPTQ with the clip-search range (weighted by diag H) against RTN with the same range. */
        QdQuantParams pc = { .type = QD_QTYPE_Q4_0, .group_size = 32, .range = QD_RANGE_CLIP };
        check(qd_quant_matrix(&pc, W, NULL, ROWS, COLS, 2, q, deq) == 0);
        double e_rtn_clip = output_error(X, NS, COLS, W, deq, ROWS);
        QdGptqOptions oc = { .act_order = true, .n_threads = 2 };
        check(qd_gptq_quantize(&pc, &oc, W, ROWS, COLS, h, q, deq) == 0);
        double e_clip = output_error(X, NS, COLS, W, deq, ROWS);
        printf("q4_0 g32 clip range, act_order=1: GPTQ/RTN(clip) output error %.3f (RTN clip %.4g)\n",
               e_clip / e_rtn_clip, e_rtn_clip);
        check(e_clip <= 0.8 * e_rtn_clip);

        /* A dead input channel (never active): H_ii = 0, its weights are dropped, the rest works. */
        {
                static float xd[NS * COLS];
                memcpy(xd, X, sizeof(xd));
                for (size_t t = 0; t < NS; t++)
                        xd[t * COLS + 5] = 0.0f;
                _cleanup_(qd_hessian_freep) QdHessian *hd = NULL;
                check(qd_hessian_new(COLS, &hd) == 0);
                check(qd_hessian_add(hd, xd, NS, 2) == 0);
                QdQuantParams p4 = { .type = QD_QTYPE_Q4_0, .group_size = 32 };
                check(qd_quant_matrix(&p4, W, NULL, ROWS, COLS, 1, q, deq) == 0);
                double e_r = output_error(xd, NS, COLS, W, deq, ROWS);
                QdGptqOptions od = { .act_order = true };
                check(qd_gptq_quantize(&p4, &od, W, ROWS, COLS, hd, q, deq) == 0);
                for (size_t r = 0; r < ROWS; r++)
                        check(deq[r * COLS + 5] == 0.0f);
                check(output_error(xd, NS, COLS, W, deq, ROWS) <= 0.8 * e_r);
        }

        /* Cancellation through the progress callback. */
        QdQuantParams p = { .type = QD_QTYPE_Q4_0 };
        double last = 0;
        QdGptqOptions o = { .n_threads = 2, .progress = cancel_at_half, .userdata = &last };
        check(qd_gptq_quantize(&p, &o, W, ROWS, COLS, h, q, NULL) == -ECANCELED);
        check(last >= 0.5);

        /* A Hessian of the wrong size. */
        _cleanup_(qd_hessian_freep) QdHessian *h2 = NULL;
        check(qd_hessian_new(COLS / 2, &h2) == 0);
        check(qd_gptq_quantize(&p, NULL, W, ROWS, COLS, h2, q, NULL) == -EINVAL);
}

int main(void) {
        make_layer();
        test_hessian();
        test_identity_is_rtn();
        test_vs_rtn();
        printf("ok\n");
        return 0;
}
