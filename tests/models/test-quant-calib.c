/* Activation range calibration on Gaussian data with a few outliers: min-max returns the absmax,
 * percentile and entropy (KL) choose thresholds well below it that quantize the bulk better. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "quant.h"
#include "test-quant-common.h"

enum { N = 200000 };

/* Int8 fake-quantization MSE over the Gaussian bulk (|x| < 10), outliers left out. */
static double int8_mse_bulk(const float *x, size_t n, float threshold) {
        static float y[N];
        qd_act_fake_quant_tensor(x, n, threshold, y);
        double e = 0;
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
                if (fabsf(x[i]) < 10.0f) {
                        e += ((double) x[i] - y[i]) * ((double) x[i] - y[i]);
                        m++;
                }
        return e / (double) m;
}

static void test_outliers(void) {
        static float x[N];
        Rng rng = { 7 };
        fill_gauss(&rng, x, N, 1.0f);
        /* 4 outliers out of 200000 (0.002%): beyond the 99.99th percentile. */
        x[10] = 40.0f;
        x[5000] = -35.0f;
        x[70000] = 30.0f;
        x[150000] = -38.0f;

        _cleanup_(qd_calib_freep) QdCalib *c = NULL;
        check(qd_calib_new(&c) == 0);
        float t;
        check(qd_calib_threshold(c, QD_CALIB_MINMAX, 0, 0, &t) == -ENODATA);
        /* Stream: a first chunk without the outliers, then the rest, so the histogram has to widen. */
        check(qd_calib_add(c, x + 20000, 40000) == 0);
        check(qd_calib_add(c, x, 20000) == 0);
        check(qd_calib_add(c, x + 60000, N - 60000) == 0);
        check(qd_calib_absmax(c) == 40.0f);

        float t_mm, t_pc, t_kl, t_kl16;
        check(qd_calib_threshold(c, QD_CALIB_MINMAX, 0, 0, &t_mm) == 0);
        check(qd_calib_threshold(c, QD_CALIB_PERCENTILE, 99.99, 0, &t_pc) == 0);
        check(qd_calib_threshold(c, QD_CALIB_ENTROPY, 0, 0, &t_kl) == 0);
        check(qd_calib_threshold(c, QD_CALIB_ENTROPY, 0, 16, &t_kl16) == 0);
        double e_mm = int8_mse_bulk(x, N, t_mm), e_pc = int8_mse_bulk(x, N, t_pc),
               e_kl = int8_mse_bulk(x, N, t_kl);
        printf("thresholds: minmax %.3f, p99.99 %.3f, entropy(128) %.3f, entropy(16) %.3f\n", t_mm,
               t_pc, t_kl, t_kl16);
        printf("int8 MSE of the bulk: minmax %.3g, p99.99 %.3g, entropy %.3g\n", e_mm, e_pc, e_kl);
        check(t_mm == 40.0f);
        /* The 99.99th percentile of |N(0,1)| is 3.89; bins are 40·2/2048 wide after widening. */
        check(t_pc > 3.5f && t_pc < 4.5f);
        /* Entropy calibration keeps the Gaussian bulk (beyond 3σ) and drops the outliers. */
        check(t_kl > 3.0f && t_kl < 20.0f);
        /* Fewer levels clip harder. */
        check(t_kl16 <= t_kl);
        check(e_pc < e_mm / 10 && e_kl < e_mm / 10);
}

static void test_clean_gaussian(void) {
        static float x[N];
        Rng rng = { 8 };
        fill_gauss(&rng, x, N, 2.0f);
        _cleanup_(qd_calib_freep) QdCalib *c = NULL;
        check(qd_calib_new(&c) == 0);
        check(qd_calib_add(c, x, N) == 0);
        float t_pc100, t_kl, amax = qd_calib_absmax(c);
        check(qd_calib_threshold(c, QD_CALIB_PERCENTILE, 100.0, 0, &t_pc100) == 0);
        check(t_pc100 == amax);
        check(qd_calib_threshold(c, QD_CALIB_ENTROPY, 0, 128, &t_kl) == 0);
        printf("clean N(0,2): absmax %.3f, entropy threshold %.3f\n", amax, t_kl);
        check(t_kl > 2.0f * 2.5f && t_kl <= amax);
        check(qd_calib_threshold(c, QD_CALIB_PERCENTILE, 101.0, 0, &t_kl) == -EINVAL);
        check(qd_calib_threshold(c, QD_CALIB_ENTROPY, 0, 1, &t_kl) == -EINVAL);
}

static void test_degenerate(void) {
        _cleanup_(qd_calib_freep) QdCalib *c = NULL;
        float z[64] = {}, t = 1;
        check(qd_calib_new(&c) == 0);
        check(qd_calib_add(c, z, 64) == 0);
        check(qd_calib_threshold(c, QD_CALIB_ENTROPY, 0, 0, &t) == 0 && t == 0.0f);
        z[3] = INFINITY;
        check(qd_calib_add(c, z, 64) == -EINVAL);
        z[3] = 1.0f;
        check(qd_calib_add(c, z, 64) == 0);
        check(qd_calib_threshold(c, QD_CALIB_MINMAX, 0, 0, &t) == 0 && t == 1.0f);
        check(qd_calib_threshold(c, QD_CALIB_PERCENTILE, 50, 0, &t) == 0 && t < 1.0f / 2048 + 1e-7f);
}

int main(void) {
        test_outliers();
        test_clean_gaussian();
        test_degenerate();
        printf("ok\n");
        return 0;
}
