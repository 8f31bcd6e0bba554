/* ggml type tests: fp16/bf16 conversions, RTN quantization bytes and dequantization of
 * hand-built blocks, with expected values worked out from ggml's formulas by hand. */
#include <math.h>

#include "formats-fixtures.h"
#include "ggml-types.h"

static void test_table(void) {
        size_t sz;

        CHECK(streq(ggml_type_name(GGML_TYPE_Q4_K), "q4_K"));
        CHECK(streq(ggml_type_name(16), "iq2_xxs") && !ggml_type_supported(16));
        CHECK(streq(ggml_type_name(1000), "unknown") && !ggml_type_info(1000));
        CHECK(ggml_row_size(GGML_TYPE_Q4_0, 64, &sz) == 0 && sz == 36);
        CHECK(ggml_row_size(GGML_TYPE_Q6_K, 512, &sz) == 0 && sz == 420);
        CHECK(ggml_row_size(GGML_TYPE_BF16, 3, &sz) == 0 && sz == 6);
        CHECK(ggml_row_size(GGML_TYPE_Q8_0, 33, &sz) == -EINVAL);
        CHECK(ggml_row_size(GGML_TYPE_F32, UINT64_MAX / 2, &sz) == -EOVERFLOW);
        CHECK(ggml_row_size(GGML_TYPE_Q5_0, 64, &sz) == 0 && sz == 44);
        CHECK(ggml_row_size(GGML_TYPE_Q5_K, 256, &sz) == 0 && sz == 176);
        CHECK(ggml_row_size(GGML_TYPE_Q3_K, 256, &sz) == -EINVAL);
}

static void test_fp16(void) {
        CHECK(qd_fp32_to_fp16(1.0f) == 0x3C00);
        CHECK(qd_fp32_to_fp16(-2.0f) == 0xC000);
        CHECK(qd_fp32_to_fp16(0.1f) == 0x2E66);
        CHECK(qd_fp32_to_fp16(1.0f / 3) == 0x3555);
        CHECK(qd_fp32_to_fp16(65504.0f) == 0x7BFF);
        CHECK(qd_fp32_to_fp16(65520.0f) == 0x7C00);   /* rounds to infinity */
        CHECK(qd_fp32_to_fp16(0x1.0p-24f) == 0x0001); /* smallest subnormal */
        CHECK(qd_fp32_to_fp16(0x1.0p-26f) == 0x0000); /* below half of it */
        CHECK(qd_fp32_to_fp16(NAN) == 0x7E00);
        CHECK(qd_fp32_to_fp16(1.0f + 0x1.0p-11f) == 0x3C00); /* tie to even */
        CHECK(qd_fp32_to_fp16(1.0f + 0x1.8p-10f) == 0x3C02); /* tie to even (up) */
        CHECK(qd_fp16_to_fp32(0x3C00) == 1.0f);
        CHECK(qd_fp16_to_fp32(0x0001) == 0x1.0p-24f);
        CHECK(qd_fp16_to_fp32(0x7BFF) == 65504.0f);
        CHECK(isinf(qd_fp16_to_fp32(0xFC00)) && qd_fp16_to_fp32(0xFC00) < 0);
        CHECK(isnan(qd_fp16_to_fp32(0x7E00)));
        CHECK(signbit(qd_fp16_to_fp32(0x8000)));
        /* every finite half converts back to itself */
        for (uint32_t h = 0; h < 0x10000; h++)
                if ((h & 0x7C00) != 0x7C00)
                        CHECK(qd_fp32_to_fp16(qd_fp16_to_fp32((uint16_t)h)) == h);

        CHECK(qd_fp32_to_bf16(1.0f) == 0x3F80);
        CHECK(qd_fp32_to_bf16(1.0f + 0x1.0p-8f) == 0x3F80); /* tie to even */
        CHECK(qd_fp32_to_bf16(1.0f + 0x1.8p-7f) == 0x3F82); /* tie to even (up) */
        CHECK(qd_bf16_to_fp32(0xC040) == -3.0f);
        CHECK(isnan(qd_bf16_to_fp32(qd_fp32_to_bf16(NAN))));
}

static void test_quantize(void) {
        float x[32], y[32];

        /* Q4_0, x = j - 16: max |x| at x = -16, d = -16 / -8 = 2, q = min(15, (int)(x / 2 + 8.5)) */
        for (int j = 0; j < 32; j++)
                x[j] = (float)(j - 16);
        GgmlBlockQ4_0 b4;
        CHECK_OK(ggml_quantize_row(GGML_TYPE_Q4_0, x, &b4, 32));
        CHECK(b4.d == 0x4000);
        CHECK(b4.qs[0] == 0x80);  /* x=-16 → 0, x=0 → 8 */
        CHECK(b4.qs[1] == 0x91);  /* x=-15 → 1, x=1 → 9 */
        CHECK(b4.qs[15] == 0xF8); /* x=-1 → 8, x=15 → 16 clamped to 15 */
        CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q4_0, &b4, y, 32));
        CHECK(y[0] == -16 && y[16] == 0 && y[17] == 2 && y[31] == 14);

        /* Q8_0: d = 16/127, q = round(x * 127/16) */
        GgmlBlockQ8_0 b8;
        CHECK_OK(ggml_quantize_row(GGML_TYPE_Q8_0, x, &b8, 32));
        CHECK(b8.d == qd_fp32_to_fp16(16.0f / 127));
        CHECK(b8.qs[0] == -127 && b8.qs[16] == 0 && b8.qs[17] == 8 && b8.qs[18] == 16 && b8.qs[31] == 119);
        CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q8_0, &b8, y, 32));
        for (int j = 0; j < 32; j++)
                CHECK(fabsf(y[j] - x[j]) <= 16.0f / 127 / 2 + 0.01f);

        /* Q4_1, x = j: min 0, d = 31/15, q = (int)(x * 15/31 + 0.5) */
        for (int j = 0; j < 32; j++)
                x[j] = (float)j;
        GgmlBlockQ4_1 b41;
        CHECK_OK(ggml_quantize_row(GGML_TYPE_Q4_1, x, &b41, 32));
        CHECK(b41.d == qd_fp32_to_fp16(31.0f / 15) && b41.m == 0);
        CHECK(b41.qs[0] == 0x80);  /* x=0 → 0, x=16 → 8 */
        CHECK(b41.qs[1] == 0x80);  /* x=1 → 0, x=17 → 8 */
        CHECK(b41.qs[2] == 0x91);  /* x=2 → 1, x=18 → 9 */
        CHECK(b41.qs[15] == 0xF7); /* x=15 → 7, x=31 → 15 */
        CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q4_1, &b41, y, 32));
        for (int j = 0; j < 32; j++)
                CHECK(fabsf(y[j] - x[j]) <= 31.0f / 15 / 2 + 0.01f);

        /* zero block */
        memset(x, 0, sizeof(x));
        CHECK_OK(ggml_quantize_row(GGML_TYPE_Q4_0, x, &b4, 32));
        CHECK(b4.d == 0x8000 && b4.qs[0] == 0x88); /* d = 0 / -8 = -0, as in ggml */

        /* F16 / BF16 rows */
        uint16_t h[32];
        for (int j = 0; j < 32; j++)
                x[j] = j * 0.25f - 3;
        CHECK_OK(ggml_quantize_row(GGML_TYPE_F16, x, h, 32));
        CHECK_OK(ggml_dequantize_row(GGML_TYPE_F16, h, y, 32));
        CHECK(memcmp(x, y, sizeof(x)) == 0);
        CHECK_OK(ggml_quantize_row(GGML_TYPE_BF16, x, h, 32));
        CHECK_OK(ggml_dequantize_row(GGML_TYPE_BF16, h, y, 32));
        CHECK(memcmp(x, y, sizeof(x)) == 0);
        CHECK(ggml_quantize_row(GGML_TYPE_Q4_K, x, h, 32) == -EINVAL);
        CHECK(ggml_quantize_row(GGML_TYPE_Q4_0, x, h, 31) == -EINVAL);
}

static void test_kquants(void) {
        float y[QK_K];

        /* Q4_K: d = 1, dmin = 0.5; 6-bit scales/mins of the 8 sub-blocks: scales[0..3] = 1..4
         * (scales of 0-3), scales[4..7] = 0,1,0,1 (mins of 0-3), scales[8..11] = 0x25 (sub-blocks
         * 4-7: scale 5, min 2); all quants 0x31 (low nibble 1, high nibble 3). Sub-block 2k uses
         * the low nibbles of qs[32k..32k+31], sub-block 2k+1 the high nibbles. */
        GgmlBlockQ4_K k4 = {
                .d = 0x3C00, .dmin = 0x3800, .scales = {1, 2, 3, 4, 0, 1, 0, 1, 0x25, 0x25, 0x25, 0x25}};
        memset(k4.qs, 0x31, sizeof(k4.qs));
        CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q4_K, &k4, y, QK_K));
        static const float expect4[8] = {1, 5.5f, 3, 11.5f, 4, 14, 4, 14};
        for (int i = 0; i < QK_K; i++)
                CHECK(y[i] == expect4[i / 32]);

        /* Q6_K: d = 0.5, scales 1..16, ql = 0x21, qh = 0xE4 (2-bit groups 0,1,2,3):
         * q1 = 1-32 = -31, q2 = (1|16)-32 = -15, q3 = (2|32)-32 = 2, q4 = (2|48)-32 = 18 */
        GgmlBlockQ6_K k6 = {.d = 0x3800};
        memset(k6.ql, 0x21, sizeof(k6.ql));
        memset(k6.qh, 0xE4, sizeof(k6.qh));
        for (int i = 0; i < 16; i++)
                k6.scales[i] = (int8_t)(i + 1);
        CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q6_K, &k6, y, QK_K));
        CHECK(y[0] == -15.5f);    /* 0.5 * 1 * -31 */
        CHECK(y[16] == -31.0f);   /* 0.5 * 2 * -31 */
        CHECK(y[32] == -22.5f);   /* 0.5 * 3 * -15 */
        CHECK(y[64] == 5.0f);     /* 0.5 * 5 * 2 */
        CHECK(y[96] == 63.0f);    /* 0.5 * 7 * 18 */
        CHECK(y[128] == -139.5f); /* 0.5 * 9 * -31 */
        CHECK(y[255] == 144.0f);  /* 0.5 * 16 * 18 */
}

static void test_q5(void) {
        float y[QK_K];

        /* Q5_0: d = 1, qh = 0x0000FFFF (5th bit set for elements 0-15, clear for 16-31),
         * qs = 0x21: element j < 16 → (1 | 16) - 16 = 1, element j + 16 → 2 - 16 = -14 */
        GgmlBlockQ5_0 b0 = {.d = 0x3C00, .qh = {0xFF, 0xFF, 0, 0}};
        memset(b0.qs, 0x21, sizeof(b0.qs));
        CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q5_0, &b0, y, 32));
        for (int j = 0; j < 16; j++)
                CHECK(y[j] == 1.0f && y[j + 16] == -14.0f);

        /* Q5_1: d = 0.5, m = -1, qh = 0xFFFF0000: j < 16 → 1 * 0.5 - 1, j + 16 → 18 * 0.5 - 1 */
        GgmlBlockQ5_1 b1 = {.d = 0x3800, .m = 0xBC00, .qh = {0, 0, 0xFF, 0xFF}};
        memset(b1.qs, 0x21, sizeof(b1.qs));
        CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q5_1, &b1, y, 32));
        for (int j = 0; j < 16; j++)
                CHECK(y[j] == -0.5f && y[j + 16] == 8.0f);

        /* Q5_K: scales as the Q4_K test, quants 0x31, qh = 0x55: the 5th bit (+16) for the
         * low-nibble sub-blocks (bits 0, 2, 4, 6), not for the high-nibble ones */
        GgmlBlockQ5_K k5 = {.d = 0x3C00, .dmin = 0x3800, .scales = {1, 2, 3, 4, 0, 1, 0, 1, 0x25, 0x25, 0x25, 0x25}};
        memset(k5.qs, 0x31, sizeof(k5.qs));
        memset(k5.qh, 0x55, sizeof(k5.qh));
        CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q5_K, &k5, y, QK_K));
        static const float expect5[8] = {17, 5.5f, 51, 11.5f, 84, 14, 84, 14};
        for (int i = 0; i < QK_K; i++)
                CHECK(y[i] == expect5[i / 32]);
        /* quantizing those values again stays within a code step of the largest sub-block (84/31;
         * the 6-bit sub-scales move the small ones' grids; the quantizer: test-quant-kquants),
         * where a wrong fifth bit costs 16 steps */
        GgmlBlockQ5_K k5q;
        CHECK_OK(ggml_quantize_row(GGML_TYPE_Q5_K, y, &k5q, QK_K));
        float y2[QK_K];
        CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q5_K, &k5q, y2, QK_K));
        for (int i = 0; i < QK_K; i++)
                CHECK(fabsf(y2[i] - y[i]) <= 84.0f / 31);
}

int main(void) {
        test_table();
        test_q5();
        test_fp16();
        test_quantize();
        test_kquants();
        printf("ggml type tests passed\n");
        return 0;
}
