/* SmoothQuant: on activations with outlier channels, smoothing raises the per-tensor int8 SQNR of
 * the activations and lowers the W8A8 output error; the per-token quantizer's error bound. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "quant.h"
#include "test-quant-common.h"

enum { ROWS = 64, COLS = 128, NS = 256 };

static float X[NS * COLS], W[ROWS * COLS];

/* W8A8 output error: per-tensor int8 activations (threshold = absmax), per-row int8 weights. */
static double w8a8_error(const float *x, const float *w, double *ret_act_sqnr) {
        static float xq[NS * COLS], wq[ROWS * COLS];
        float amax = 0;
        for (size_t i = 0; i < NS * COLS; i++)
                amax = fmaxf(amax, fabsf(x[i]));
        qd_act_fake_quant_tensor(x, NS * COLS, amax, xq);
        for (size_t r = 0; r < ROWS; r++) {
                float wmax = 0;
                for (size_t j = 0; j < COLS; j++)
                        wmax = fmaxf(wmax, fabsf(w[r * COLS + j]));
                qd_act_fake_quant_tensor(w + r * COLS, COLS, wmax, wq + r * COLS);
        }
        /* Mean over channels of each channel's SQNR: a per-tensor scale set by outlier channels
         * leaves the ordinary channels only a few levels. */
        double sum = 0;
        for (size_t j = 0; j < COLS; j++) {
                double sg = 0, e = 0;
                for (size_t t = 0; t < NS; t++) {
                        double d = (double) x[t * COLS + j] - xq[t * COLS + j];
                        sg += (double) x[t * COLS + j] * x[t * COLS + j];
                        e += d * d;
                }
                sum += 10 * log10(sg / fmax(e, 1e-30));
        }
        *ret_act_sqnr = sum / COLS;
        double e = 0;
        for (size_t t = 0; t < NS; t++)
                for (size_t r = 0; r < ROWS; r++) {
                        double a = 0, b = 0;
                        for (size_t j = 0; j < COLS; j++) {
                                a += (double) x[t * COLS + j] * w[r * COLS + j];
                                b += (double) xq[t * COLS + j] * wq[r * COLS + j];
                        }
                        e += (a - b) * (a - b);
                }
        return e;
}

static void test_smoothing(void) {
        Rng rng = { 31 };
        for (size_t t = 0; t < NS; t++)
                for (size_t j = 0; j < COLS; j++)
                        X[t * COLS + j] = (j % 32 == 7 ? 40.0f : 1.0f) * rng_gauss(&rng);
        fill_gauss(&rng, W, ROWS * COLS, 0.05f);

        float xa[COLS] = {}, wa[COLS] = {}, s[COLS];
        qd_absmax_columns(X, NS, COLS, xa);
        qd_absmax_columns(W, ROWS, COLS, wa);
        check(qd_smooth_scales(xa, wa, COLS, 0.0f, s) == 0);
        for (size_t j = 0; j < COLS; j++)
                check(fabsf(s[j] - sqrtf(xa[j] / wa[j])) <= 1e-5f * s[j]);

        static float xs[NS * COLS], ws[ROWS * COLS];
        for (size_t i = 0; i < NS * COLS; i++)
                xs[i] = X[i] / s[i % COLS];
        for (size_t i = 0; i < ROWS * COLS; i++)
                ws[i] = W[i] * s[i % COLS];
        double sq0, sq1;
        double e0 = w8a8_error(X, W, &sq0), e1 = w8a8_error(xs, ws, &sq1);
        printf("W8A8 per-tensor: mean per-channel activation SQNR %.2f -> %.2f dB, "
               "output error ratio %.3f\n", sq0, sq1, e1 / e0);
        check(sq1 > sq0 + 6.0);
        check(e1 < 0.5 * e0);
}

static void test_formula(void) {
        float a[3] = { 4, 9, 0 }, w[3] = { 1, 4, 1 }, s[3];
        check(qd_smooth_scales(a, w, 3, 0.5f, s) == 0);
        check(s[0] == 2.0f && fabsf(s[1] - 1.5f) < 1e-6f && s[2] > 0.0f && isfinite(s[2]));
        check(qd_smooth_scales(a, w, 3, 1.0f, s) == 0);
        check(s[0] == 4.0f && s[1] == 9.0f);
        check(qd_smooth_scales(a, w, 3, 1.5f, s) == -EINVAL);
}

static void test_per_token(void) {
        Rng rng = { 32 };
        static int8_t q[NS * COLS];
        float sc[NS];
        fill_gauss(&rng, X, NS * COLS, 3.0f);
        memset(X + 5 * COLS, 0, COLS * sizeof(float)); /* an all-zero token */
        check(qd_act_quantize_per_token(X, NS, COLS, q, sc) == 0);
        check(sc[5] == 0.0f);
        for (size_t t = 0; t < NS; t++) {
                int qmax = 0;
                for (size_t j = 0; j < COLS; j++) {
                        check(fabsf(X[t * COLS + j] - sc[t] * q[t * COLS + j]) <= 0.5f * sc[t] * 1.0001f);
                        qmax = abs(q[t * COLS + j]) > qmax ? abs(q[t * COLS + j]) : qmax;
                }
                check(t == 5 ? qmax == 0 : qmax == 127);
        }
        /* Per-channel int8 weights: the same arithmetic, rows as output channels. */
        static int8_t q2[NS * COLS];
        float sc2[NS];
        check(qd_w8_quantize_matrix(X, NS, COLS, q2, sc2) == 0);
        check(memcmp(q, q2, sizeof(q2)) == 0 && memcmp(sc, sc2, sizeof(sc)) == 0);
        X[9] = NAN;
        check(qd_w8_quantize_matrix(X, NS, COLS, q2, sc2) == -EINVAL);
}

int main(void) {
        test_formula();
        test_smoothing();
        test_per_token();
        printf("ok\n");
        return 0;
}
