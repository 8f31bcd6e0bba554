/* The GPU layout of the per-row-scale formats (quant-rowscale.h): the codes and scales are
 * exactly those of qd_fp8_quantize_matrix() / qd_w8_quantize_matrix(), each row's scale sits in
 * its 16-byte header before its codes, dequantization matches, and bad arguments are refused. */
#include <errno.h>
#include <string.h>

#include "quant-rowscale.h"
#include "quant.h"
#include "test-quant-common.h"

enum { R = 13, C = 96 };

static void test_layout(QdRowScaleType t) {
        static float w[R * C], deq[R * C], ref[R * C], scales[R];
        static uint8_t codes[R * C], buf[R * (C + 16)];
        static const uint8_t zero[12];
        Rng rng = { 42 + t };

        fill_gauss(&rng, w, R * C, 0.02f);
        w[5 * C + 7] = 2.0f;  /* an outlier row */
        check(qd_rowscale_bytes(R, C) == sizeof(buf));
        check(qd_rowscale_quantize(t, w, R, C, buf) == 0);
        if (t == QD_ROWSCALE_FP8)
                check(qd_fp8_quantize_matrix(w, R, C, codes, scales) == 0);
        else
                check(qd_w8_quantize_matrix(w, R, C, (int8_t *) codes, scales) == 0);
        for (size_t i = 0; i < R; i++) {
                const uint8_t *row = buf + i * (C + 16);
                check(memcmp(row, &scales[i], 4) == 0);
                check(memcmp(row + 4, zero, 12) == 0);
                check(memcmp(row + 16, codes + i * C, C) == 0);
        }
        check(scales[5] > 10 * scales[4]);

        check(qd_rowscale_dequantize(t, buf, R, C, deq) == 0);
        for (size_t i = 0; i < R; i++)
                for (size_t j = 0; j < C; j++) {
                        uint8_t q = codes[i * C + j];
                        ref[i * C + j] = scales[i] * (t == QD_ROWSCALE_FP8 ? qd_e4m3_to_fp32(q) : (float) (int8_t) q);
                }
        check(memcmp(deq, ref, sizeof(ref)) == 0);
        /* Rows without the outlier: FP8 E4M3 keeps 3 mantissa bits (~31 dB on Gaussian rows),
         * int8 steps of absmax/127 (~40 dB). */
        double sqnr = qd_metric_sqnr_db(w, deq, 5 * C);
        printf("%s: SQNR %.2f dB\n", t == QD_ROWSCALE_FP8 ? "fp8" : "int8", sqnr);
        check(sqnr > (t == QD_ROWSCALE_FP8 ? 28.0 : 35.0));
}

static void test_errors(void) {
        static float w[2 * 40];
        static uint8_t buf[2 * (40 + 16)];

        check(qd_rowscale_bytes(2, 40) == 0);
        check(qd_rowscale_bytes(2, 0) == 0);
        check(qd_rowscale_quantize(QD_ROWSCALE_FP8, w, 2, 40, buf) == -EINVAL);
        check(qd_rowscale_quantize(_QD_ROWSCALE_MAX, w, 1, 32, buf) == -EINVAL);
        check(qd_rowscale_quantize(QD_ROWSCALE_INT8, NULL, 1, 32, buf) == -EINVAL);
        w[3] = NAN;
        check(qd_rowscale_quantize(QD_ROWSCALE_INT8, w, 1, 32, buf) == -EINVAL);
        check(qd_rowscale_dequantize(QD_ROWSCALE_FP8, buf, 1, 33, w) == -EINVAL);
}

int main(void) {
        test_layout(QD_ROWSCALE_FP8);
        test_layout(QD_ROWSCALE_INT8);
        test_errors();
        printf("quant-rowscale: ok\n");
        return 0;
}
