/* FP8 E4M3 conversion (every code round-trips, ties to even, saturation, NaN) and per-channel FP8
 * weights; NF4 levels and blockwise NF4 quantization. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "quant.h"
#include "test-quant-common.h"

static void test_e4m3_codes(void) {
        for (int v = 0; v < 256; v++) {
                float f = qd_e4m3_to_fp32((uint8_t) v);
                if ((v & 0x7f) == 0x7f) {
                        check(isnan(f));
                        continue;
                }
                check(qd_fp32_to_e4m3(f) == v);
                /* Ascending codes give ascending magnitudes. */
                if ((v & 0x7f) > 0 && (v & 0x7f) < 0x7f)
                        check(fabsf(f) > fabsf(qd_e4m3_to_fp32((uint8_t) (v - 1))));
        }
        check(qd_e4m3_to_fp32(0x7e) == 448.0f);
        check(qd_e4m3_to_fp32(0x38) == 1.0f);
        check(qd_e4m3_to_fp32(0x01) == 0x1p-9f);
        check(qd_e4m3_to_fp32(0x08) == 0x1p-6f);
        check(qd_e4m3_to_fp32(0xb8) == -1.0f);
        check(qd_fp32_to_e4m3(1.0625f) == 0x38);  /* tie between 1 and 1.125 -> even (1) */
        check(qd_fp32_to_e4m3(1.1875f) == 0x3a);  /* tie between 1.125 and 1.25 -> even (1.25) */
        check(qd_fp32_to_e4m3(1.07f) == 0x39);
        check(qd_fp32_to_e4m3(0x1p-10f) == 0x00); /* half the smallest subnormal -> 0 */
        check(qd_fp32_to_e4m3(0x1.8p-9f) == 0x02);
        check(qd_fp32_to_e4m3(1000.0f) == 0x7e && qd_fp32_to_e4m3(-1e30f) == 0xfe);
        check(qd_fp32_to_e4m3(464.0f) == 0x7e);
        check(qd_fp32_to_e4m3(NAN) == 0x7f);
        check(qd_fp32_to_e4m3(-0.0f) == 0x80);
}

static void test_fp8_matrix(void) {
        enum { R = 16, C = 256 };
        static float w[R * C], d[R * C];
        static uint8_t q[R * C];
        float sc[R];
        Rng rng = { 41 };
        fill_gauss(&rng, w, R * C, 0.02f);
        for (size_t j = 0; j < C; j++)
                w[3 * C + j] = 0.0f;
        check(qd_fp8_quantize_matrix(w, R, C, q, sc) == 0);
        check(qd_fp8_dequantize_matrix(q, sc, R, C, d) == 0);
        check(sc[3] == 0.0f);
        double sq = qd_metric_sqnr_db(w, d, R * C);
        printf("FP8 E4M3 per-channel SQNR on Gaussian weights: %.2f dB\n", sq);
        /* 3 mantissa bits: relative error ≤ 2^-4 per value, so SQNR ≥ 24 dB; typically ~31. */
        check(sq > 28.0);
        for (size_t i = 0; i < R * C; i++)
                check(fabsf(w[i] - d[i]) <= fabsf(w[i]) * 0.0625f + sc[i / C] * 0x1p-9f);
        w[7] = INFINITY;
        check(qd_fp8_quantize_matrix(w, R, C, q, sc) == -EINVAL);
}

static void test_nf4(void) {
        check(qd_nf4_levels[0] == -1.0f && qd_nf4_levels[7] == 0.0f && qd_nf4_levels[15] == 1.0f);
        for (int i = 1; i < 16; i++)
                check(qd_nf4_levels[i] > qd_nf4_levels[i - 1]);
        /* Every level is reproduced exactly by its code. */
        QdGroupScale s = { 1.0f, 0.0f };
        for (int i = 0; i < 16; i++)
                check(qd_quant_code(QD_QTYPE_NF4, &s, qd_nf4_levels[i]) == i);

        enum { N = 1 << 14 };
        static float x[N], dq[N];
        static uint8_t buf[N];
        Rng rng = { 42 };
        fill_gauss(&rng, x, N, 1.0f);
        QdQuantParams p = { .type = QD_QTYPE_NF4, .group_size = 64 };
        check(qd_quant_row(&p, x, NULL, N, buf) == 0);
        check(qd_dequant_row(QD_QTYPE_NF4, 64, buf, dq, N) == 0);
        /* Each block's absmax is represented (up to fp16 rounding of the scale). */
        for (size_t k = 0; k < N / 64; k++) {
                size_t im = k * 64;
                for (size_t j = k * 64; j < k * 64 + 64; j++)
                        if (fabsf(x[j]) > fabsf(x[im]))
                                im = j;
                check(fabsf(dq[im] - x[im]) <= fabsf(x[im]) * 1e-3f);
        }
        double sq_nf4 = qd_metric_sqnr_db(x, dq, N);
        p.type = QD_QTYPE_Q4_0;
        check(qd_quant_row(&p, x, NULL, N, buf) == 0);
        check(qd_dequant_row(QD_QTYPE_Q4_0, 64, buf, dq, N) == 0);
        double sq_q4 = qd_metric_sqnr_db(x, dq, N);
        printf("Gaussian g64: NF4 %.2f dB, Q4_0 %.2f dB\n", sq_nf4, sq_q4);
        check(sq_nf4 > 19.0);
}

int main(void) {
        test_e4m3_codes();
        test_fp8_matrix();
        test_nf4();
        printf("ok\n");
        return 0;
}
