/* The Q5_0 / Q4_K / Q6_K quantizers (models/ggml-kquants.c):
 * - exact layout round trips: a random block whose fields the scale search must find again
 *   (every sub-block spans its full code range, power-of-two super-scales) is dequantized with
 *   the hand-checked dequantizers, quantized back, and must come out byte for byte the same;
 * - on random rows (Gaussian, heavy-tailed, tiny/huge magnitudes, zero and constant blocks): the
 *   quantize→dequantize error against bounds, each code the nearest for the stored scales unless
 *   clamped at the end of the grid, and the SQNR against the analytic level of each type;
 * - llama.cpp's Q4_K_M mix (qd_kmix_tensor_type) and the threaded matrix quantizer. */
#include <errno.h>
#include <math.h>

#include "formats-fixtures.h"
#include "ggml-kquants.h"
#include "ggml-types.h"
#include "quant.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return (uint32_t) (rng >> 16);
}

static double uniform(void) {
        return (rnd() + 0.5) / 4294967296.0;
}

static float gauss(void) {
        return (float) (sqrt(-2 * log(uniform())) * cos(2 * M_PI * uniform()));
}

/* ---- exact round trips ---- */

static void roundtrip_q4_k(void) {
        for (int it = 0; it < 200; it++) {
                GgmlBlockQ4_K b = { .d = qd_fp32_to_fp16(0x1p-6f), .dmin = qd_fp32_to_fp16(0x1p-7f) };
                uint8_t sc[8], mn[8], L[QK_K];
                for (int j = 0; j < 8; j++) {
                        sc[j] = (uint8_t) (1 + rnd() % 63);
                        mn[j] = (uint8_t) (rnd() % 64);
                        for (int l = 0; l < 32; l++)
                                L[32 * j + l] = (uint8_t) (rnd() % 16);
                        /* both ends of the code range in every sub-block */
                        L[32 * j + rnd() % 16] = 0;
                        L[32 * j + 16 + rnd() % 16] = 15;
                }
                sc[rnd() % 8] = 63; /* super-scales d = 63·2^-6/63, dmin = 63·2^-7/63 */
                mn[rnd() % 8] = 63;
                for (int j = 0; j < 8; j++) {
                        if (j < 4) {
                                b.scales[j] = sc[j];
                                b.scales[j + 4] = mn[j];
                        } else {
                                b.scales[j + 4] = (uint8_t) ((sc[j] & 0xF) | ((mn[j] & 0xF) << 4));
                                b.scales[j - 4] |= (uint8_t) ((sc[j] >> 4) << 6);
                                b.scales[j] |= (uint8_t) ((mn[j] >> 4) << 6);
                        }
                }
                for (int j = 0; j < QK_K; j += 64)
                        for (int l = 0; l < 32; l++)
                                b.qs[j / 2 + l] = (uint8_t) (L[j + l] | (L[j + 32 + l] << 4));
                float x[QK_K];
                GgmlBlockQ4_K q;
                CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q4_K, &b, x, QK_K));
                CHECK_OK(ggml_quantize_row(GGML_TYPE_Q4_K, x, &q, QK_K));
                CHECK(memcmp(&b, &q, sizeof(b)) == 0);
        }
}

static void roundtrip_q6_k(void) {
        for (int it = 0; it < 200; it++) {
                GgmlBlockQ6_K b = { .d = qd_fp32_to_fp16(it % 2 ? 0x1p-9f : 0x1p+3f) };
                uint8_t L[QK_K];
                for (int s = 0; s < 16; s++) {
                        b.scales[s] = (int8_t) -(int) (1 + rnd() % 128);
                        for (int l = 0; l < 16; l++)
                                L[16 * s + l] = (uint8_t) (1 + rnd() % 63);
                        L[16 * s + rnd() % 16] = 0; /* code −32: the sub-block's extreme */
                }
                b.scales[rnd() % 16] = -128;
                for (int j = 0; j < QK_K; j += 128)
                        for (int l = 0; l < 32; l++) {
                                const uint8_t *u = L + j + l;
                                b.ql[j / 2 + l] = (uint8_t) ((u[0] & 0xF) | ((u[64] & 0xF) << 4));
                                b.ql[j / 2 + l + 32] = (uint8_t) ((u[32] & 0xF) | ((u[96] & 0xF) << 4));
                                b.qh[j / 4 + l] = (uint8_t) ((u[0] >> 4) | ((u[32] >> 4) << 2) |
                                                             ((u[64] >> 4) << 4) | ((u[96] >> 4) << 6));
                        }
                float x[QK_K];
                GgmlBlockQ6_K q;
                CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q6_K, &b, x, QK_K));
                CHECK_OK(ggml_quantize_row(GGML_TYPE_Q6_K, x, &q, QK_K));
                CHECK(memcmp(&b, &q, sizeof(b)) == 0);
        }
}

static void roundtrip_q5_0(void) {
        for (int it = 0; it < 200; it++) {
                GgmlBlockQ5_0 b[2];
                for (int k = 0; k < 2; k++) {
                        uint8_t L[32];
                        uint32_t qh = 0;
                        b[k].d = qd_fp32_to_fp16((rnd() % 2 ? -1.0f : 1.0f) * ldexpf(1.0f, (int) (rnd() % 20) - 14));
                        for (int l = 0; l < 32; l++)
                                L[l] = (uint8_t) (1 + rnd() % 31);
                        L[rnd() % 32] = 0;
                        for (int l = 0; l < 16; l++) {
                                b[k].qs[l] = (uint8_t) ((L[l] & 0xF) | ((L[l + 16] & 0xF) << 4));
                                qh |= (uint32_t) (L[l] >> 4) << l | (uint32_t) (L[l + 16] >> 4) << (l + 16);
                        }
                        memcpy(b[k].qh, &qh, 4);
                }
                float x[64];
                GgmlBlockQ5_0 q[2];
                CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q5_0, b, x, 64));
                CHECK_OK(ggml_quantize_row(GGML_TYPE_Q5_0, x, q, 64));
                CHECK(memcmp(b, q, sizeof(b)) == 0);
        }
}

/* ---- random rows ---- */

#define ROWS 64
#define COLS 1024

/* Row r: Gaussian with a magnitude from 1e-6 to 1e4, every 4th row heavy-tailed (a few 20σ
 * outliers), row 5 all zero, row 6 one block of a constant. */
static void make_rows(float *x) {
        for (int r = 0; r < ROWS; r++) {
                float mag = powf(10.0f, -6.0f + 10.0f * r / (ROWS - 1));
                for (int c = 0; c < COLS; c++)
                        x[r * COLS + c] = mag * gauss();
                if (r % 4 == 0)
                        for (int k = 0; k < 8; k++)
                                x[r * COLS + rnd() % COLS] = 20 * mag * (rnd() % 2 ? 1 : -1);
        }
        memset(x + 5 * COLS, 0, COLS * sizeof(float));
        for (int c = 0; c < QK_K; c++)
                x[6 * COLS + c] = 0.75f;
}

static double sqnr_db(const float *x, const float *y, size_t n) {
        double s = 0, e = 0;
        for (size_t i = 0; i < n; i++) {
                s += (double) x[i] * x[i];
                e += ((double) x[i] - y[i]) * ((double) x[i] - y[i]);
        }
        return e > 0 ? 10 * log10(s / e) : INFINITY;
}

/* |x − y| within half a step (+ slack steps) of the sub-block's grid, or y at the grid's end and x
 * beyond it. */
static void check_nearest(float x, float y, float step, float lo, float hi, float slack) {
        float tol = (0.5f + slack) * fabsf(step) + 1e-30f;
        if (fabsf(x - y) <= tol)
                return;
        CHECK((y == lo && x < lo) || (y == hi && x > hi));
}

static void random_rows(void) {
        static float x[ROWS * COLS], y[ROWS * COLS];
        static uint8_t q[ROWS * COLS * 2];
        const uint32_t types[] = { GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, GGML_TYPE_Q5_0, GGML_TYPE_Q4_0 };
        double sq[4];

        make_rows(x);
        for (size_t t = 0; t < ELEMENTSOF(types); t++) {
                size_t rb;
                CHECK_OK(ggml_row_size(types[t], COLS, &rb));
                CHECK_OK(qd_ggml_quantize_matrix(types[t], x, ROWS, COLS, 3, q));
                for (int r = 0; r < ROWS; r++)
                        CHECK_OK(ggml_dequantize_row(types[t], q + r * rb, y + r * COLS, COLS));
                for (size_t i = 0; i < (size_t) ROWS * COLS; i++)
                        CHECK(isfinite(y[i]));
                for (int c = 0; c < COLS; c++)
                        CHECK(y[5 * COLS + c] == 0.0f);
                /* The constant block: Q4_K puts it in the min exactly up to fp16 rounding. */
                for (int c = 0; c < QK_K; c++)
                        CHECK(fabsf(y[6 * COLS + c] - 0.75f) <= 0.75f * 0x1p-9f);

                /* Nearest code for the stored scales, block by block. The K-quants choose codes
                 * from the stored scales; Q4_0/Q5_0, as ggml, from the unrounded one, which moves a
                 * code by up to 16 · 2^-11 steps (more where the scale is an fp16 subnormal: those
                 * rows are left out). */
                bool k = types[t] == GGML_TYPE_Q4_K || types[t] == GGML_TYPE_Q6_K;
                float slack = k ? 1e-4f : 16 * 0x1p-11f;
                for (int r = k ? 0 : 20; r < ROWS; r++) {
                        const uint8_t *row = q + r * rb;
                        const float *xr = x + r * COLS, *yr = y + r * COLS;
                        for (int c = 0; c < COLS; c++) {
                                float step, lo, hi;
                                if (types[t] == GGML_TYPE_Q4_K) {
                                        const GgmlBlockQ4_K *b = (const GgmlBlockQ4_K *) row + c / QK_K;
                                        uint8_t sc, m;
                                        ggml_q4_k_scale_min(c % QK_K / 32, b->scales, &sc, &m);
                                        step = qd_fp16_to_fp32(b->d) * sc;
                                        lo = -(qd_fp16_to_fp32(b->dmin) * m);
                                        hi = step * 15 + lo;
                                        if (step == 0)
                                                continue; /* all codes decode to −min */
                                } else if (types[t] == GGML_TYPE_Q6_K) {
                                        const GgmlBlockQ6_K *b = (const GgmlBlockQ6_K *) row + c / QK_K;
                                        step = qd_fp16_to_fp32(b->d) * b->scales[c % QK_K / 16];
                                        lo = MIN(-32 * step, 31 * step);
                                        hi = MAX(-32 * step, 31 * step);
                                } else {
                                        const GgmlBlockQ5_0 *b5 = (const GgmlBlockQ5_0 *) row + c / 32;
                                        const GgmlBlockQ4_0 *b4 = (const GgmlBlockQ4_0 *) row + c / 32;
                                        bool five = types[t] == GGML_TYPE_Q5_0;
                                        step = qd_fp16_to_fp32(five ? b5->d : b4->d);
                                        float a = (five ? -16 : -8) * step, z = (five ? 15 : 7) * step;
                                        lo = MIN(a, z);
                                        hi = MAX(a, z);
                                }
                                check_nearest(xr[c], yr[c], step, lo, hi, slack);
                        }
                }
                /* SQNR over the Gaussian rows that are not heavy-tailed. */
                double s = 0;
                int n = 0;
                for (int r = 8; r < ROWS; r++)
                        if (r % 4 != 0) {
                                s += sqnr_db(x + r * COLS, y + r * COLS, COLS);
                                n++;
                        }
                sq[t] = s / n;
                printf("%-5s SQNR on N(0, σ²) rows %.2f dB (%.4f bits/weight)\n", ggml_type_name(types[t]), sq[t],
                       8.0 * rb / COLS);
        }
        /* Each type against its analytic level on Gaussian data (see docs/QUANTIZATION.md: Q4_0 g32
         * 21.3 dB): Q4_K's (scale, min) search beats Q4_0's absmax at the same 4.5 bits; Q5_0 is
         * ~6 dB above Q4_0, Q6_K ~12 dB. */
        CHECK(sq[3] > 21.0 && sq[3] < 21.7);
        CHECK(sq[0] > sq[3] + 0.5);
        CHECK(sq[2] > sq[3] + 5.5 && sq[2] < sq[3] + 6.5);
        CHECK(sq[1] > sq[3] + 10.5);
}

static void kmix(void) {
        uint32_t t;
        const uint32_t n = 16;

        CHECK(qd_kmix_from_string("Q4_K_M") == QD_KMIX_Q4_K_M && qd_kmix_from_string("q8_0") == QD_KMIX_NONE);
        CHECK(streq(qd_kmix_to_string(QD_KMIX_Q6_K), "q6_k") && qd_kmix_file_type(QD_KMIX_Q4_K_M) == 15);
        /* use_more_bits for 16 layers: 0, 1 (< 2), 4, 7, 10, 13 ((i − 2) % 3 == 2), 14, 15 (≥ 14) */
        const bool more[16] = { 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1 };
        for (uint32_t l = 0; l < n; l++) {
                char name[64];
                CHECK(qd_kmix_more_bits(l, n) == more[l]);
                snprintf(name, sizeof(name), "blk.%u.ffn_down.weight", l);
                CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q4_K_M, name, 2048, n, &t));
                CHECK(t == (more[l] ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_K));
                snprintf(name, sizeof(name), "blk.%u.attn_v.weight", l);
                CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q4_K_M, name, 512, n, &t));
                CHECK(t == (more[l] ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_K));
                CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q4_K_M, name, 384, n, &t)); /* fallbacks */
                CHECK(t == (more[l] ? GGML_TYPE_Q8_0 : GGML_TYPE_Q5_0));
                snprintf(name, sizeof(name), "blk.%u.attn_q.weight", l);
                CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q4_K_M, name, 512, n, &t));
                CHECK(t == GGML_TYPE_Q4_K);
                CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q4_K, name, 512, n, &t));
                CHECK(t == GGML_TYPE_Q4_K);
                CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q6_K, name, 384, n, &t));
                CHECK(t == GGML_TYPE_Q8_0);
                /* Q5_K_M: Q4_K_M's rules with Q5_K, falling back to Q5_1 */
                CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q5_K_M, name, 512, n, &t));
                CHECK(t == GGML_TYPE_Q5_K);
                CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q5_K_M, name, 384, n, &t));
                CHECK(t == GGML_TYPE_Q5_1);
                snprintf(name, sizeof(name), "blk.%u.ffn_down.weight", l);
                CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q5_K_M, name, 2048, n, &t));
                CHECK(t == (more[l] ? GGML_TYPE_Q6_K : GGML_TYPE_Q5_K));
                CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q5_K_M, name, 384, n, &t));
                CHECK(t == (more[l] ? GGML_TYPE_Q8_0 : GGML_TYPE_Q5_1));
        }
        CHECK(qd_kmix_from_string("Q5_K_M") == QD_KMIX_Q5_K_M && qd_kmix_file_type(QD_KMIX_Q5_K_M) == 17);
        CHECK(streq(qd_kmix_to_string(QD_KMIX_Q5_K_M), "q5_k_m"));
        CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q5_K_M, "output.weight", 512, n, &t));
        CHECK(t == GGML_TYPE_Q6_K);
        CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q5_K_M, "output.weight", 384, n, &t));
        CHECK(t == GGML_TYPE_Q8_0);
        CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q4_K_M, "output.weight", 512, n, &t));
        CHECK(t == GGML_TYPE_Q6_K);
        CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q4_K_M, "output.weight", 384, n, &t));
        CHECK(t == GGML_TYPE_Q8_0);
        CHECK_OK(qd_kmix_tensor_type(QD_KMIX_Q4_K, "output.weight", 384, n, &t));
        CHECK(t == GGML_TYPE_Q8_0);
        CHECK(qd_kmix_tensor_type(QD_KMIX_Q4_K_M, "output.weight", 100, n, &t) == -EINVAL);
        CHECK(qd_kmix_tensor_type(QD_KMIX_NONE, "output.weight", 512, n, &t) == -EINVAL);
        /* 6 layers (the bundled model): 2 and 5 */
        for (uint32_t l = 0; l < 6; l++)
                CHECK(qd_kmix_more_bits(l, 6) == (l == 2 || l == 5));
}

/* The threaded matrix quantizer writes the same bytes for any thread count. */
static void threads(void) {
        static float x[ROWS * COLS];
        static uint8_t a[ROWS * COLS], b[ROWS * COLS];
        size_t rb;

        make_rows(x);
        CHECK_OK(ggml_row_size(GGML_TYPE_Q4_K, COLS, &rb));
        CHECK_OK(qd_ggml_quantize_matrix(GGML_TYPE_Q4_K, x, ROWS, COLS, 1, a));
        CHECK_OK(qd_ggml_quantize_matrix(GGML_TYPE_Q4_K, x, ROWS, COLS, 4, b));
        CHECK(memcmp(a, b, ROWS * rb) == 0);
        CHECK(qd_ggml_quantize_matrix(GGML_TYPE_Q4_K, x, ROWS, 100, 1, b) == -EINVAL);
        CHECK(qd_ggml_quantize_matrix(GGML_TYPE_Q2_K, x, ROWS, COLS, 1, b) < 0);  /* not written */
}

/* Q5_K and Q5_1 (the Q5_K_M mix): every value within half a step of its sub-block's grid (plus
 * the scale's rounding: Q5_K's 6-bit sub-scales, Q5_1's fp16 d and m), and Q5_K closer to x than
 * Q4_K. */
static void q5_rows(void) {
        static float x[ROWS * COLS], y[ROWS * COLS], y4[ROWS * COLS];
        static uint8_t q[ROWS * COLS];
        size_t rb;

        make_rows(x);
        CHECK_OK(ggml_row_size(GGML_TYPE_Q5_K, COLS, &rb));
        CHECK(rb == COLS / QK_K * 176);
        CHECK_OK(qd_ggml_quantize_matrix(GGML_TYPE_Q5_K, x, ROWS, COLS, 2, q));
        for (int r = 0; r < ROWS; r++)
                CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q5_K, q + r * rb, y + r * COLS, COLS));
        for (int r = 20; r < ROWS; r++)
                for (int c = 0; c < COLS; c++) {
                        const GgmlBlockQ5_K *b = (const GgmlBlockQ5_K *) (q + r * rb) + c / QK_K;
                        uint8_t sc, m;
                        ggml_q4_k_scale_min(c % QK_K / 32, b->scales, &sc, &m);
                        float step = qd_fp16_to_fp32(b->d) * sc, lo = -(qd_fp16_to_fp32(b->dmin) * m);
                        check_nearest(x[r * COLS + c], y[r * COLS + c], step, lo, step * 31 + lo, 1e-4f);
                }
        CHECK_OK(qd_ggml_quantize_matrix(GGML_TYPE_Q4_K, x, ROWS, COLS, 2, q));
        CHECK_OK(ggml_row_size(GGML_TYPE_Q4_K, COLS, &rb));
        for (int r = 0; r < ROWS; r++)
                CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q4_K, q + r * rb, y4 + r * COLS, COLS));
        double s5 = sqnr_db(x + 20 * COLS, y + 20 * COLS, (ROWS - 20) * COLS);
        double s4 = sqnr_db(x + 20 * COLS, y4 + 20 * COLS, (ROWS - 20) * COLS);
        printf("Q5_K %.1f dB, Q4_K %.1f dB\n", s5, s4);
        CHECK(s5 > s4 + 4);

        CHECK_OK(ggml_row_size(GGML_TYPE_Q5_1, COLS, &rb));
        CHECK_OK(qd_ggml_quantize_matrix(GGML_TYPE_Q5_1, x, ROWS, COLS, 2, q));
        for (int r = 0; r < ROWS; r++)
                CHECK_OK(ggml_dequantize_row(GGML_TYPE_Q5_1, q + r * rb, y + r * COLS, COLS));
        for (int r = 20; r < ROWS; r++)
                for (int c = 0; c < COLS; c++) {
                        const GgmlBlockQ5_1 *b = (const GgmlBlockQ5_1 *) (q + r * rb) + c / 32;
                        float step = qd_fp16_to_fp32(b->d), lo = qd_fp16_to_fp32(b->m);
                        /* codes from the unrounded d and min (as ggml): up to 32 · 2^-11 steps off */
                        check_nearest(x[r * COLS + c], y[r * COLS + c], step, lo, step * 31 + lo,
                                      32 * 0x1p-11f);
                }
}

int main(void) {
        roundtrip_q4_k();
        q5_rows();
        roundtrip_q6_k();
        roundtrip_q5_0();
        random_rows();
        kmix();
        threads();
        printf("K-quant tests passed\n");
        return 0;
}
