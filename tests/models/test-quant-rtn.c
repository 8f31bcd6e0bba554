/* Round-to-nearest quantization: clipping search never loses to min-max, error bounds, SQNR
 * against the 6.02·b + 1.76 line, and byte layouts read back by ggml-types' dequantizer. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "ggml-types.h"
#include "quant.h"
#include "test-quant-common.h"

static const QdQuantType types[] = { QD_QTYPE_Q8_0, QD_QTYPE_Q4_0, QD_QTYPE_Q4_1, QD_QTYPE_NF4 };
static const unsigned groups[] = { 32, 64, 128 };

/* A row of Gaussian weights with an outlier every 97 elements, as real weight rows have. */
static void make_row(Rng *r, float *x, size_t n) {
        fill_gauss(r, x, n, 0.02f);
        for (size_t i = 13; i < n; i += 97)
                x[i] *= 8.0f;
}

static double sq_err(const float *a, const float *b, size_t n) {
        double e = 0;
        for (size_t i = 0; i < n; i++)
                e += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
        return e;
}

static void test_sizes(void) {
        size_t sz;
        check(qd_quant_bits_per_weight(QD_QTYPE_Q8_0, 32) == 8.5);
        check(qd_quant_bits_per_weight(QD_QTYPE_Q4_0, 32) == 4.5);
        check(qd_quant_bits_per_weight(QD_QTYPE_Q4_0, 64) == 4.25);
        check(qd_quant_bits_per_weight(QD_QTYPE_Q4_0, 128) == 4.125);
        check(qd_quant_bits_per_weight(QD_QTYPE_Q4_1, 32) == 5.0);
        check(qd_quant_bits_per_weight(QD_QTYPE_NF4, 64) == 4.25);
        check(qd_quant_block_bytes(QD_QTYPE_Q8_0, 32) == sizeof(GgmlBlockQ8_0));
        check(qd_quant_block_bytes(QD_QTYPE_Q4_0, 32) == sizeof(GgmlBlockQ4_0));
        check(qd_quant_block_bytes(QD_QTYPE_Q4_1, 32) == sizeof(GgmlBlockQ4_1));
        check(qd_quant_row_size(QD_QTYPE_Q4_0, 32, 4096, &sz) == 0 && sz == 4096 / 32 * 18);
        check(qd_quant_row_size(QD_QTYPE_Q4_0, 64, 96, &sz) == -EINVAL);
        check(qd_quant_row_size(QD_QTYPE_Q4_0, 48, 96, &sz) == -EINVAL);
        check(qd_quant_type_from_string("Q4_1") == QD_QTYPE_Q4_1);
        check(qd_quant_type_from_string("q5_0") == QD_QTYPE_INVALID);
        check(streq(qd_quant_type_to_string(QD_QTYPE_NF4), "nf4"));
}

/* Per group: the clipping search's squared error is never above min-max's (also weighted). */
static void test_clip_never_worse(void) {
        Rng rng = { 1 };
        float x[128], w[128], dq[128];
        uint8_t buf[256];
        for (size_t ti = 0; ti < ELEMENTSOF(types); ti++)
                for (size_t gi = 0; gi < ELEMENTSOF(groups); gi++) {
                        unsigned g = groups[gi];
                        double tot_mm = 0, tot_clip = 0;
                        for (int it = 0; it < 200; it++) {
                                make_row(&rng, x, g);
                                if (it % 3 == 0)
                                        x[it % g] = 0.3f; /* a lone outlier */
                                for (unsigned j = 0; j < g; j++)
                                        w[j] = (float) rng_uniform(&rng) * 4.0f;
                                for (int weighted = 0; weighted < 2; weighted++) {
                                        const float *wp = weighted ? w : NULL;
                                        QdQuantParams mm = { .type = types[ti], .group_size = g };
                                        QdQuantParams cl = mm;
                                        cl.range = QD_RANGE_CLIP;
                                        double e_mm = 0, e_cl = 0;
                                        check(qd_quant_row(&mm, x, wp, g, buf) == 0);
                                        check(qd_dequant_row(types[ti], g, buf, dq, g) == 0);
                                        for (unsigned j = 0; j < g; j++)
                                                e_mm += (wp ? wp[j] : 1.0) * (x[j] - dq[j]) * (x[j] - dq[j]);
                                        check(qd_quant_row(&cl, x, wp, g, buf) == 0);
                                        check(qd_dequant_row(types[ti], g, buf, dq, g) == 0);
                                        for (unsigned j = 0; j < g; j++)
                                                e_cl += (wp ? wp[j] : 1.0) * (x[j] - dq[j]) * (x[j] - dq[j]);
                                        check(e_cl <= e_mm * (1 + 1e-9));
                                        if (!weighted) {
                                                tot_mm += e_mm;
                                                tot_clip += e_cl;
                                        }
                                }
                        }
                        printf("clip/minmax MSE ratio %s g%u: %.3f\n", qd_quant_type_to_string(types[ti]),
                               g, tot_clip / tot_mm);
                        check(tot_clip < tot_mm);
                }
}

/* |x - deq| bounded by the step (half a step, plus fp16 rounding of the scale). */
static void test_error_bounds(void) {
        Rng rng = { 2 };
        float x[128], dq[128];
        uint8_t buf[256];
        for (size_t ti = 0; ti < 3; ti++)
                for (size_t gi = 0; gi < ELEMENTSOF(groups); gi++) {
                        unsigned g = groups[gi];
                        for (int it = 0; it < 100; it++) {
                                make_row(&rng, x, g);
                                QdQuantParams p = { .type = types[ti], .group_size = g };
                                check(qd_quant_row(&p, x, NULL, g, buf) == 0);
                                check(qd_dequant_row(types[ti], g, buf, dq, g) == 0);
                                float lo = x[0], hi = x[0], amax = 0;
                                for (unsigned j = 0; j < g; j++) {
                                        lo = fminf(lo, x[j]);
                                        hi = fmaxf(hi, x[j]);
                                        amax = fmaxf(amax, fabsf(x[j]));
                                }
                                /* Q8_0: half a step of amax/127; Q4_0: one step of amax/8 (the
                                 * side opposite the extreme ends at 7); Q4_1: half of span/15. */
                                double bound = types[ti] == QD_QTYPE_Q8_0 ? 0.5 * amax / 127
                                               : types[ti] == QD_QTYPE_Q4_0 ? amax / 8
                                                                            : 0.5 * (hi - lo) / 15;
                                bound = bound * (1 + 2e-3) + amax * 1e-3;
                                for (unsigned j = 0; j < g; j++)
                                        check(fabs((double) x[j] - dq[j]) <= bound);
                        }
                }
}

/* MINMAX at g = 32 writes exactly ggml's reference bytes (what llama-quantize writes); the
 * range-searched blocks decode through ggml-types to the values of our scales and codes. */
static void test_ggml_layout(void) {
        static const uint32_t gt[] = { GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1 };
        Rng rng = { 3 };
        enum { N = 4096 };
        static float x[N], a[N], b[N];
        static uint8_t ours[N * 2], ref[N * 2];
        for (size_t ti = 0; ti < 3; ti++) {
                make_row(&rng, x, N);
                x[64] = x[65] = x[66] = 0.0f; /* ties and zeros */
                QdQuantParams p = { .type = types[ti], .group_size = 32 };
                size_t rs;
                check(qd_quant_row_size(types[ti], 32, N, &rs) == 0);
                check(qd_quant_row(&p, x, NULL, N, ours) == 0);
                check(ggml_quantize_row(gt[ti], x, ref, N) == 0);
                check(memcmp(ours, ref, rs) == 0);
                float z[32] = {};
                check(qd_quant_row(&p, z, NULL, 32, ours) == 0);
                check(ggml_quantize_row(gt[ti], z, ref, 32) == 0);
                check(memcmp(ours, ref, qd_quant_block_bytes(types[ti], 32)) == 0);

                /* Independent decode of the clip-searched bytes from scales and codes. */
                p.range = QD_RANGE_CLIP;
                check(qd_quant_row(&p, x, NULL, N, ours) == 0);
                check(ggml_dequantize_row(gt[ti], ours, a, N) == 0);
                check(ggml_quantize_row(gt[ti], x, ref, N) == 0);
                check(ggml_dequantize_row(gt[ti], ref, b, N) == 0);
                for (size_t k = 0; k < N / 32; k++) {
                        QdGroupScale s;
                        check(qd_quant_group_scale(&p, x + k * 32, NULL, 32, &s) == 0);
                        for (size_t j = 0; j < 32; j++) {
                                int c = qd_quant_code(types[ti], &s, x[k * 32 + j]);
                                check(a[k * 32 + j] == qd_quant_code_value(types[ti], &s, c));
                        }
                }
                printf("%s g32: MINMAX bytes = ggml reference; clip/ggml squared error %.4f\n",
                       qd_quant_type_to_string(types[ti]), sq_err(x, a, N) / sq_err(x, b, N));
                check(sq_err(x, a, N) <= sq_err(x, b, N));
        }
}

/* quantd's 64/128 groups: element j in the low nibble of byte j, j + g/2 in the high nibble. */
static void test_long_group_layout(void) {
        Rng rng = { 4 };
        float x[128], dq[128];
        uint8_t buf[256];
        for (size_t gi = 1; gi < 3; gi++) {
                unsigned g = groups[gi];
                make_row(&rng, x, g);
                for (size_t ti = 0; ti < ELEMENTSOF(types); ti++) {
                        QdQuantParams p = { .type = types[ti], .group_size = g, .range = QD_RANGE_CLIP };
                        QdGroupScale s;
                        check(qd_quant_row(&p, x, NULL, g, buf) == 0);
                        check(qd_quant_group_scale(&p, x, NULL, g, &s) == 0);
                        check(qd_dequant_row(types[ti], g, buf, dq, g) == 0);
                        uint16_t d;
                        memcpy(&d, buf, 2);
                        check(qd_fp16_to_fp32(d) == s.d);
                        for (unsigned j = 0; j < g; j++) {
                                int c = qd_quant_code(types[ti], &s, x[j]);
                                int stored;
                                if (types[ti] == QD_QTYPE_Q8_0)
                                        stored = (int8_t) buf[2 + j];
                                else {
                                        size_t hdr = types[ti] == QD_QTYPE_Q4_1 ? 4 : 2;
                                        uint8_t byte = buf[hdr + j % (g / 2)];
                                        stored = j < g / 2 ? byte & 15 : byte >> 4;
                                        if (types[ti] == QD_QTYPE_Q4_0)
                                                stored -= 8;
                                }
                                check(stored == c);
                                check(dq[j] == qd_quant_code_value(types[ti], &s, c));
                        }
                }
        }
}

/* SQNR of Gaussian weights against the ideal 6.02·b + 1.76 dB line. */
static void test_sqnr(void) {
        Rng rng = { 5 };
        enum { N = 1 << 15 };
        static float x[N], dq[N];
        static uint8_t buf[N * 2];
        double last_minmax = 0;
        fill_gauss(&rng, x, N, 1.0f);
        for (size_t ti = 0; ti < ELEMENTSOF(types); ti++)
                for (size_t gi = 0; gi < ELEMENTSOF(groups); gi++)
                        for (int range = 0; range < _QD_RANGE_MAX; range++) {
                                unsigned g = groups[gi];
                                QdQuantParams p = { .type = types[ti], .group_size = g, .range = range };
                                check(qd_quant_row(&p, x, NULL, N, buf) == 0);
                                check(qd_dequant_row(types[ti], g, buf, dq, N) == 0);
                                double sq = qd_metric_sqnr_db(x, dq, N);
                                int bits = types[ti] == QD_QTYPE_Q8_0 ? 8 : 4;
                                double ideal = qd_metric_sqnr_ideal_db(bits);
                                printf("SQNR %s g%u %s: %.2f dB (ideal %d-bit %.2f dB)\n",
                                       qd_quant_type_to_string(types[ti]), g,
                                       range == 0 ? "minmax" : range == 1 ? "clip" : "p99", sq, bits, ideal);
                                /* A Gaussian group of g peaks near 2.5-2.9σ where a full-scale
                                 * sine peaks at 1.41σ: about 6 dB below the line for min-max.
                                 * Percentile ranges clip every group's extremes, which costs
                                 * 8-bit far more than it saves. */
                                if (range != QD_RANGE_PERCENTILE)
                                        check(sq > ideal - 8.0);
                                else
                                        check(sq > qd_metric_sqnr_ideal_db(bits - 4));
                                if (range == QD_RANGE_CLIP)
                                        check(sq >= last_minmax);
                                if (range == QD_RANGE_MINMAX)
                                        last_minmax = sq;
                        }
}

static void test_percentile(void) {
        float x[32];
        for (int j = 0; j < 32; j++)
                x[j] = (float) (j - 16) / 16.0f;
        x[5] = 10.0f;
        QdGroupScale mm, p100, p90;
        QdQuantParams p = { .type = QD_QTYPE_Q8_0, .group_size = 32 };
        check(qd_quant_group_scale(&p, x, NULL, 32, &mm) == 0);
        p.range = QD_RANGE_PERCENTILE;
        p.percentile = 100.0f;
        check(qd_quant_group_scale(&p, x, NULL, 32, &p100) == 0);
        check(p100.d == mm.d);
        p.percentile = 90.0f;
        check(qd_quant_group_scale(&p, x, NULL, 32, &p90) == 0);
        check(p90.d < mm.d / 5);
        p.percentile = 40.0f;
        check(qd_quant_group_scale(&p, x, NULL, 32, &p90) == -EINVAL);
        check(mm.d == qd_fp16_to_fp32(qd_fp32_to_fp16(10.0f / 127.0f)));
}

static void test_degenerate(void) {
        float z[32] = {}, c[32], dq[32];
        uint8_t buf[64];
        for (int j = 0; j < 32; j++)
                c[j] = 0.75f;
        for (size_t ti = 0; ti < ELEMENTSOF(types); ti++)
                for (int range = 0; range < _QD_RANGE_MAX; range++) {
                        QdQuantParams p = { .type = types[ti], .group_size = 32, .range = range };
                        check(qd_quant_row(&p, z, NULL, 32, buf) == 0);
                        check(qd_dequant_row(types[ti], 32, buf, dq, 32) == 0);
                        for (int j = 0; j < 32; j++)
                                check(dq[j] == 0.0f);
                        check(qd_quant_row(&p, c, NULL, 32, buf) == 0);
                        check(qd_dequant_row(types[ti], 32, buf, dq, 32) == 0);
                        for (int j = 0; j < 32; j++)
                                check(fabsf(dq[j] - 0.75f) < 1e-3f);
                }
        QdQuantParams p = { .type = QD_QTYPE_Q4_0, .group_size = 32 };
        c[3] = NAN;
        check(qd_quant_row(&p, c, NULL, 32, buf) == -EINVAL);
        check(qd_quant_row(&p, z, NULL, 48, buf) == -EINVAL);
}

/* The threaded matrix path writes the same bytes as row-by-row quantization. */
static void test_matrix_threads(void) {
        enum { R = 37, C = 256 };
        static float w[R * C], deq[R * C], dq[C];
        static uint8_t a[R * C], b[R * C];
        Rng rng = { 6 };
        for (size_t i = 0; i < R; i++)
                make_row(&rng, w + i * C, C);
        QdQuantParams p = { .type = QD_QTYPE_Q4_1, .group_size = 64, .range = QD_RANGE_CLIP };
        size_t rs;
        check(qd_quant_row_size(p.type, 64, C, &rs) == 0);
        check(qd_quant_matrix(&p, w, NULL, R, C, 3, a, deq) == 0);
        for (size_t i = 0; i < R; i++) {
                check(qd_quant_row(&p, w + i * C, NULL, C, b + i * rs) == 0);
                check(qd_dequant_row(p.type, 64, b + i * rs, dq, C) == 0);
                check(memcmp(dq, deq + i * C, sizeof(dq)) == 0);
        }
        check(memcmp(a, b, R * rs) == 0);
        check(qd_quant_matrix(&p, w, NULL, R, C - 32, 2, a, NULL) == -EINVAL);
}

int main(void) {
        test_sizes();
        test_clip_never_worse();
        test_error_bounds();
        test_ggml_layout();
        test_long_group_layout();
        test_sqnr();
        test_percentile();
        test_degenerate();
        test_matrix_threads();
        printf("ok\n");
        return 0;
}
