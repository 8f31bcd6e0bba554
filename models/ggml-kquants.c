/* Round-to-nearest quantizers for Q5_0, Q5_1 and the K-quants Q4_K, Q5_K and Q6_K, with the scale searches of
 * ggml's reference quantizers (what llama-quantize runs without an importance matrix):
 *
 * - Q4_K: each 32-element sub-block gets an asymmetric (scale, min) pair from a weighted
 *   least-squares search over 21 candidate scales (weights av|x| + |x|, so large values count
 *   more); the 8 scales and 8 mins of a 256-element super-block are then stored as 6-bit
 *   multiples of two fp16 super-scales, and the codes are recomputed from the stored values.
 * - Q6_K: each 16-element sub-block gets a symmetric scale from a search over 19 candidates
 *   around absmax/32 that maximises the x²-weighted fit; the 16 scales are stored as int8 with one
 *   fp16 super-scale, codes −32..31.
 * - Q5_0: absmax scale onto code −16 (ggml's quantize_row_q5_0_ref); llama.cpp falls back to it
 *   for Q4_K tensors whose rows are not a multiple of 256.
 * - Q5_K: Q4_K's search (a narrower one) and scale packing with codes 0..31; Q5_1: min/max onto codes 0..31
 *   (quantize_row_q5_1_ref), Q5_K's fallback where rows are not whole super-blocks.
 *
 * Rounding is to nearest with ties to even, as ggml's nearest_int. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "ggml-kquants.h"
#include "macro.h"

#define GROUP_MAX_EPS 1e-15f

/* Round to nearest, ties to even, for |v| < 2^22: adding 1.5·2^23 leaves the rounded integer in
 * the low mantissa bits (ggml's nearest_int; much faster than a libm lrintf call). */
static inline int nearest(float v) {
        float t = v + 12582912.0f;
        int32_t i;
        memcpy(&i, &t, sizeof(i));
        return (i & 0x007fffff) - 0x00400000;
}

/* Asymmetric codes 0..nmax for n values with weights w: x ≈ scale·L − min. Starts from the
 * min/max range (min clamped to ≤ 0) and tries iscale = (nmax + rmin + rdelta·k)/(max − min) for
 * k = 0..nstep, refitting (scale, offset) of each candidate's codes by weighted least squares;
 * keeps the lowest weighted squared error. Returns the scale, *ret_min the subtracted offset. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *ret_min,
                           float rmin, float rdelta, int nstep) {
        uint8_t aux[32];
        float min = x[0], max = x[0], sum_w = w[0], sum_x = w[0] * x[0];

        for (int i = 1; i < n; i++) {
                min = MIN(min, x[i]);
                max = MAX(max, x[i]);
                sum_w += w[i];
                sum_x += w[i] * x[i];
        }
        if (min > 0)
                min = 0;
        if (max == min) {
                memset(L, 0, n);
                *ret_min = -min;
                return 0.0f;
        }
        float iscale = nmax / (max - min), scale = 1 / iscale, best = 0;
        for (int i = 0; i < n; i++) {
                int l = CLAMP(nearest(iscale * (x[i] - min)), 0, nmax);
                L[i] = (uint8_t) l;
                float d = scale * l + min - x[i];
                best += w[i] * d * d;
        }
        for (int k = 0; k <= nstep; k++) {
                iscale = (rmin + rdelta * k + nmax) / (max - min);
                float sl = 0, sl2 = 0, sxl = 0;
                for (int i = 0; i < n; i++) {
                        int l = CLAMP(nearest(iscale * (x[i] - min)), 0, nmax);
                        aux[i] = (uint8_t) l;
                        sl += w[i] * l;
                        sl2 += w[i] * l * l;
                        sxl += w[i] * l * x[i];
                }
                float D = sum_w * sl2 - sl * sl;
                if (!(D > 0))
                        continue;
                float s = (sum_w * sxl - sum_x * sl) / D, m = (sl2 * sum_x - sl * sxl) / D;
                if (m > 0) { /* the offset must not be positive: refit the scale alone */
                        m = 0;
                        s = sxl / sl2;
                }
                float err = 0;
                for (int i = 0; i < n; i++) {
                        float d = s * aux[i] + m - x[i];
                        err += w[i] * d * d;
                }
                if (err < best) {
                        memcpy(L, aux, n);
                        best = err;
                        scale = s;
                        min = m;
                }
        }
        *ret_min = -min;
        return scale;
}

/* Symmetric codes −nmax..nmax−1 (stored in L as signed) for n values, weights x²: starts at
 * iscale = −nmax/max (max = the signed value of largest magnitude) and tries (nmax + 0.1k) for
 * k = −9..9, keeping the candidate whose least-squares scale explains most of Σw·x² (largest
 * (Σwxl)²/Σwl²). Returns that scale. */
static float fit_scale_sym(int n, int nmax, const float *x, int8_t *L) {
        float max = 0, amax = 0;

        for (int i = 0; i < n; i++)
                if (fabsf(x[i]) > amax) {
                        amax = fabsf(x[i]);
                        max = x[i];
                }
        if (amax < GROUP_MAX_EPS) {
                memset(L, 0, n);
                return 0.0f;
        }
        float iscale = -nmax / max, sxl = 0, sl2 = 0;
        for (int i = 0; i < n; i++) {
                int l = CLAMP(nearest(iscale * x[i]), -nmax, nmax - 1);
                L[i] = (int8_t) l;
                float w = x[i] * x[i];
                sxl += w * x[i] * l;
                sl2 += w * l * l;
        }
        float scale = sl2 ? sxl / sl2 : 0.0f, best = scale * sxl;
        for (int k = -9; k <= 9; k++) {
                if (k == 0)
                        continue;
                iscale = -(nmax + 0.1f * k) / max;
                sxl = sl2 = 0;
                for (int i = 0; i < n; i++) {
                        int l = CLAMP(nearest(iscale * x[i]), -nmax, nmax - 1);
                        float w = x[i] * x[i];
                        sxl += w * x[i] * l;
                        sl2 += w * l * l;
                }
                if (sl2 > 0 && sxl * sxl > best * sl2) {
                        for (int i = 0; i < n; i++)
                                L[i] = (int8_t) CLAMP(nearest(iscale * x[i]), -nmax, nmax - 1);
                        scale = sxl / sl2;
                        best = scale * sxl;
                }
        }
        return scale;
}

/* Q4_K and Q5_K (nmax 15 / 31; ggml searches rmin + i·0.1 for i ≤ nstep: −1.0, 20 steps for
 * Q4_K, −0.5, 15 for Q5_K): the 6-bit sub-scales and sub-mins with their two fp16 super-scales
 * into d, dmin, scales; the codes into L. */
static void quantize_scale_min_k(const float *x, int nmax, float rmin, int nstep, ggml_half *ret_d,
                                 ggml_half *ret_dmin, uint8_t scales_out[K_SCALE_SIZE], uint8_t L[QK_K]) {
        float w[32], mins[QK_K / 32], scales[QK_K / 32];
        float max_scale = 0, max_min = 0;

        for (int j = 0; j < QK_K / 32; j++) {
                const float *v = x + 32 * j;
                float s2 = 0;
                for (int l = 0; l < 32; l++)
                        s2 += v[l] * v[l];
                float av = sqrtf(s2 / 32);
                for (int l = 0; l < 32; l++)
                        w[l] = av + fabsf(v[l]);
                scales[j] = fit_scale_min(32, nmax, v, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep);
                max_scale = MAX(max_scale, scales[j]);
                max_min = MAX(max_min, mins[j]);
        }

        /* 6-bit sub-scales and sub-mins; j < 4 in the low 6 bits of scales[j] / [j+4],
         * j ≥ 4 split: low nibbles in scales[j+4], high 2 bits on top of scales[j−4] / [j]. */
        float is = max_scale > 0 ? 63.0f / max_scale : 0.0f, im = max_min > 0 ? 63.0f / max_min : 0.0f;
        memset(scales_out, 0, K_SCALE_SIZE);
        for (int j = 0; j < QK_K / 32; j++) {
                uint8_t ls = (uint8_t) MIN(63, nearest(is * scales[j]));
                uint8_t lm = (uint8_t) MIN(63, nearest(im * mins[j]));
                if (j < 4) {
                        scales_out[j] = ls;
                        scales_out[j + 4] = lm;
                } else {
                        scales_out[j + 4] = (uint8_t) ((ls & 0xF) | ((lm & 0xF) << 4));
                        scales_out[j - 4] |= (uint8_t) ((ls >> 4) << 6);
                        scales_out[j] |= (uint8_t) ((lm >> 4) << 6);
                }
        }
        *ret_d = qd_fp32_to_fp16(max_scale / 63.0f);
        *ret_dmin = qd_fp32_to_fp16(max_min / 63.0f);

        /* Codes from the scales as stored. */
        for (int j = 0; j < QK_K / 32; j++) {
                uint8_t sc, m;
                ggml_q4_k_scale_min(j, scales_out, &sc, &m);
                const float d = qd_fp16_to_fp32(*ret_d) * sc;
                if (d == 0.0f)
                        continue;
                const float dm = qd_fp16_to_fp32(*ret_dmin) * m;
                for (int l = 0; l < 32; l++)
                        L[32 * j + l] = (uint8_t) CLAMP(nearest((x[32 * j + l] + dm) / d), 0, nmax);
        }
}

void ggml_quantize_q4_k(const float *x, GgmlBlockQ4_K *y, size_t nb) {
        uint8_t L[QK_K];

        for (size_t i = 0; i < nb; i++, x += QK_K) {
                quantize_scale_min_k(x, 15, -1.0f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
                /* 64 elements per 32 bytes: the first 32 in the low nibbles, the next 32 high. */
                uint8_t *q = y[i].qs;
                for (int j = 0; j < QK_K; j += 64, q += 32)
                        for (int l = 0; l < 32; l++)
                                q[l] = (uint8_t) (L[j + l] | (L[j + l + 32] << 4));
        }
}

void ggml_quantize_q5_k(const float *x, GgmlBlockQ5_K *y, size_t nb) {
        uint8_t L[QK_K];

        for (size_t i = 0; i < nb; i++, x += QK_K) {
                quantize_scale_min_k(x, 31, -0.5f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
                /* Low 4 bits as Q4_K's nibbles; the fifth bit of element 64c + l (l < 32) in bit
                 * 2c of qh[l], of element 64c + 32 + l in bit 2c + 1. */
                uint8_t *q = y[i].qs;
                memset(y[i].qh, 0, sizeof(y[i].qh));
                for (int j = 0, c = 0; j < QK_K; j += 64, q += 32, c++)
                        for (int l = 0; l < 32; l++) {
                                uint8_t a = L[j + l], b = L[j + l + 32];
                                q[l] = (uint8_t) ((a & 0xF) | ((b & 0xF) << 4));
                                y[i].qh[l] |= (uint8_t) (((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1)));
                        }
        }
}

void ggml_quantize_q6_k(const float *x, GgmlBlockQ6_K *y, size_t nb) {
        int8_t L[QK_K];
        float scales[QK_K / 16];

        for (size_t i = 0; i < nb; i++, x += QK_K) {
                float max_scale = 0, max_abs = 0;
                for (int b = 0; b < QK_K / 16; b++) {
                        scales[b] = fit_scale_sym(16, 32, x + 16 * b, L + 16 * b);
                        if (fabsf(scales[b]) > max_abs) {
                                max_abs = fabsf(scales[b]);
                                max_scale = scales[b];
                        }
                }
                memset(&y[i], 0, sizeof(y[i]));
                if (max_abs < GROUP_MAX_EPS)
                        continue;

                /* The sub-scale of largest magnitude lands on −128. */
                float iscale = -128.0f / max_scale;
                y[i].d = qd_fp32_to_fp16(1 / iscale);
                for (int b = 0; b < QK_K / 16; b++)
                        y[i].scales[b] = (int8_t) MIN(127, nearest(iscale * scales[b]));

                /* Codes 0..63 from the scales as stored (a sub-block whose scale rounded to 0 keeps
                 * the search's codes; they decode to 0 either way). */
                uint8_t U[QK_K];
                for (int b = 0; b < QK_K / 16; b++) {
                        const float d = qd_fp16_to_fp32(y[i].d) * y[i].scales[b];
                        for (int l = 0; l < 16; l++)
                                U[16 * b + l] = (uint8_t) ((d == 0.0f ? L[16 * b + l] :
                                                            CLAMP(nearest(x[16 * b + l] / d), -32, 31)) + 32);
                }
                /* Per 128 elements: low nibbles of l, l+64 in ql[l], of l+32, l+96 in ql[l+32];
                 * the 2 high bits of l, l+32, l+64, l+96 in qh[l]. */
                uint8_t *ql = y[i].ql, *qh = y[i].qh;
                for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
                        for (int l = 0; l < 32; l++) {
                                const uint8_t *u = U + j + l;
                                ql[l] = (uint8_t) ((u[0] & 0xF) | ((u[64] & 0xF) << 4));
                                ql[l + 32] = (uint8_t) ((u[32] & 0xF) | ((u[96] & 0xF) << 4));
                                qh[l] = (uint8_t) ((u[0] >> 4) | ((u[32] >> 4) << 2) | ((u[64] >> 4) << 4) |
                                                   ((u[96] >> 4) << 6));
                        }
        }
}

void ggml_quantize_q5_0(const float *x, GgmlBlockQ5_0 *y, size_t nb) {
        for (size_t i = 0; i < nb; i++, x += QK5_0) {
                float amax = 0, max = 0;
                for (int j = 0; j < QK5_0; j++)
                        if (amax < fabsf(x[j])) {
                                amax = fabsf(x[j]);
                                max = x[j];
                        }
                const float d = max / -16, id = d != 0.0f ? 1.0f / d : 0.0f;
                uint32_t qh = 0;
                y[i].d = qd_fp32_to_fp16(d);
                for (int j = 0; j < QK5_0 / 2; j++) {
                        /* ggml: MIN(31, (int8_t)(x·id + 16.5)), truncation toward zero */
                        float v0 = x[j] * id + 16.5f, v1 = x[j + QK5_0 / 2] * id + 16.5f;
                        uint8_t q0 = (uint8_t) (v0 >= 0.0f ? MIN(31, (int) MIN(v0, 127.0f)) : 0);
                        uint8_t q1 = (uint8_t) (v1 >= 0.0f ? MIN(31, (int) MIN(v1, 127.0f)) : 0);
                        y[i].qs[j] = (uint8_t) ((q0 & 0xF) | ((q1 & 0xF) << 4));
                        qh |= (uint32_t) (q0 >> 4) << j;
                        qh |= (uint32_t) (q1 >> 4) << (j + QK5_0 / 2);
                }
                memcpy(y[i].qh, &qh, sizeof(qh));
        }
}

void ggml_quantize_q5_1(const float *x, GgmlBlockQ5_1 *y, size_t nb) {
        for (size_t i = 0; i < nb; i++, x += QK5_1) {
                float min = FLT_MAX, max = -FLT_MAX;
                for (int j = 0; j < QK5_1; j++) {
                        min = MIN(min, x[j]);
                        max = MAX(max, x[j]);
                }
                const float d = (max - min) / 31, id = d != 0.0f ? 1.0f / d : 0.0f;
                uint32_t qh = 0;
                y[i].d = qd_fp32_to_fp16(d);
                y[i].m = qd_fp32_to_fp16(min);
                for (int j = 0; j < QK5_1 / 2; j++) {
                        /* ggml: (uint8_t)((x - min)·id + 0.5), truncation; a 32 (rounding at
                         * max) keeps only its low 5 bits, as there */
                        float x0 = (x[j] - min) * id, x1 = (x[j + QK5_1 / 2] - min) * id;
                        uint8_t q0 = (uint8_t) (int) (x0 + 0.5f), q1 = (uint8_t) (int) (x1 + 0.5f);
                        y[i].qs[j] = (uint8_t) ((q0 & 0xF) | ((q1 & 0xF) << 4));
                        qh |= (uint32_t) ((q0 >> 4) & 1) << j;
                        qh |= (uint32_t) ((q1 >> 4) & 1) << (j + QK5_1 / 2);
                }
                memcpy(y[i].qh, &qh, sizeof(qh));
        }
}
