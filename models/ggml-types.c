/* ggml tensor types: type table, fp16/bf16 conversion, row dequantization and RTN quantization. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "ggml-kquants.h"
#include "ggml-types.h"
#include "macro.h"

static const GgmlTypeInfo type_table[_GGML_TYPE_MAX] = {
        [0] = {"f32", 1, 4, true},
        [1] = {"f16", 1, 2, true},
        [2] = {"q4_0", QK4_0, sizeof(GgmlBlockQ4_0), true},
        [3] = {"q4_1", QK4_1, sizeof(GgmlBlockQ4_1), true},
        [4] = {"q4_2", 0, 0, false},
        [5] = {"q4_3", 0, 0, false},
        [6] = {"q5_0", QK5_0, sizeof(GgmlBlockQ5_0), true},
        [7] = {"q5_1", QK5_1, sizeof(GgmlBlockQ5_1), true},
        [8] = {"q8_0", QK8_0, sizeof(GgmlBlockQ8_0), true},
        [9] = {"q8_1", 32, 36, false},
        [10] = {"q2_K", 256, 84, false},
        [11] = {"q3_K", 256, 110, false},
        [12] = {"q4_K", QK_K, sizeof(GgmlBlockQ4_K), true},
        [13] = {"q5_K", QK_K, sizeof(GgmlBlockQ5_K), true},
        [14] = {"q6_K", QK_K, sizeof(GgmlBlockQ6_K), true},
        [15] = {"q8_K", 256, 292, false},
        [16] = {"iq2_xxs", 256, 66, false},
        [17] = {"iq2_xs", 256, 74, false},
        [18] = {"iq3_xxs", 256, 98, false},
        [19] = {"iq1_s", 256, 50, false},
        [20] = {"iq4_nl", 32, 18, false},
        [21] = {"iq3_s", 256, 110, false},
        [22] = {"iq2_s", 256, 82, false},
        [23] = {"iq4_xs", 256, 136, false},
        [24] = {"i8", 1, 1, false},
        [25] = {"i16", 1, 2, false},
        [26] = {"i32", 1, 4, false},
        [27] = {"i64", 1, 8, false},
        [28] = {"f64", 1, 8, false},
        [29] = {"iq1_m", 256, 56, false},
        [30] = {"bf16", 1, 2, true},
        [31] = {"q4_0_4_4", 0, 0, false},
        [32] = {"q4_0_4_8", 0, 0, false},
        [33] = {"q4_0_8_8", 0, 0, false},
        [34] = {"tq1_0", 256, 54, false},
        [35] = {"tq2_0", 256, 66, false},
        [36] = {"iq4_nl_4_4", 0, 0, false},
        [37] = {"iq4_nl_4_8", 0, 0, false},
        [38] = {"iq4_nl_8_8", 0, 0, false},
        [39] = {"mxfp4", 32, 17, false},
};

const GgmlTypeInfo *ggml_type_info(uint32_t type) {
        if (type >= _GGML_TYPE_MAX || !type_table[type].name)
                return NULL;
        return &type_table[type];
}

const char *ggml_type_name(uint32_t type) {
        const GgmlTypeInfo *i = ggml_type_info(type);
        return i ? i->name : "unknown";
}

bool ggml_type_supported(uint32_t type) {
        const GgmlTypeInfo *i = ggml_type_info(type);
        return i && i->supported;
}

int ggml_row_size(uint32_t type, uint64_t n, size_t *ret) {
        const GgmlTypeInfo *i = ggml_type_info(type);
        uint64_t bytes;

        if (!i || !i->supported || n % i->block_size != 0)
                return -EINVAL;
        if (__builtin_mul_overflow(n / i->block_size, (uint64_t)i->type_size, &bytes) || bytes > SIZE_MAX)
                return -EOVERFLOW;
        *ret = (size_t)bytes;
        return 0;
}

static inline uint32_t f32_bits(float f) {
        uint32_t u;
        memcpy(&u, &f, 4);
        return u;
}

static inline float f32_from_bits(uint32_t u) {
        float f;
        memcpy(&f, &u, 4);
        return f;
}

/* The FP16 library's branch-free conversions, as ggml uses them without F16C. Inline here so
 * that the row loops vectorize. */
static inline float half_to_float(uint16_t h) {
        const uint32_t w = (uint32_t)h << 16;
        const uint32_t sign = w & UINT32_C(0x80000000);
        const uint32_t two_w = w + w;
        const uint32_t exp_offset = UINT32_C(0xE0) << 23;
        const float normalized = f32_from_bits((two_w >> 4) + exp_offset) * 0x1.0p-112f;
        const float denormalized = f32_from_bits((two_w >> 17) | (UINT32_C(126) << 23)) - 0.5f;
        const uint32_t result =
                sign | (two_w < (UINT32_C(1) << 27) ? f32_bits(denormalized) : f32_bits(normalized));
        return f32_from_bits(result);
}

float qd_fp16_to_fp32(uint16_t h) {
        return half_to_float(h);
}

uint16_t qd_fp32_to_fp16(float f) {
        float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
        const uint32_t w = f32_bits(f);
        const uint32_t shl1_w = w + w;
        const uint32_t sign = w & UINT32_C(0x80000000);
        uint32_t bias = shl1_w & UINT32_C(0xFF000000);

        if (bias < UINT32_C(0x71000000))
                bias = UINT32_C(0x71000000);
        base = f32_from_bits((bias >> 1) + UINT32_C(0x07800000)) + base;
        const uint32_t bits = f32_bits(base);
        const uint32_t exp_bits = (bits >> 13) & UINT32_C(0x00007C00);
        const uint32_t mantissa_bits = bits & UINT32_C(0x00000FFF);
        const uint32_t nonsign = exp_bits + mantissa_bits;
        return (uint16_t)((sign >> 16) | (shl1_w > UINT32_C(0xFF000000) ? UINT16_C(0x7E00) : nonsign));
}

float qd_bf16_to_fp32(uint16_t h) {
        return f32_from_bits((uint32_t)h << 16);
}

uint16_t qd_fp32_to_bf16(float f) {
        uint32_t u = f32_bits(f);

        if ((u & 0x7fffffff) > 0x7f800000) /* NaN: keep it quiet */
                return (uint16_t)((u >> 16) | 64);
        return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

static void dequant_q4_k(const GgmlBlockQ4_K *x, float *y, size_t nb) {
        for (size_t i = 0; i < nb; i++) {
                const uint8_t *q = x[i].qs;
                const float d = qd_fp16_to_fp32(x[i].d);
                const float min = qd_fp16_to_fp32(x[i].dmin);
                int is = 0;
                uint8_t sc, m;

                for (int j = 0; j < QK_K; j += 64) {
                        ggml_q4_k_scale_min(is + 0, x[i].scales, &sc, &m);
                        const float d1 = d * sc, m1 = min * m;
                        ggml_q4_k_scale_min(is + 1, x[i].scales, &sc, &m);
                        const float d2 = d * sc, m2 = min * m;
                        for (int l = 0; l < 32; l++)
                                *y++ = d1 * (q[l] & 0xF) - m1;
                        for (int l = 0; l < 32; l++)
                                *y++ = d2 * (q[l] >> 4) - m2;
                        q += 32;
                        is += 2;
                }
        }
}

static void dequant_q5_k(const GgmlBlockQ5_K *x, float *y, size_t nb) {
        for (size_t i = 0; i < nb; i++) {
                const uint8_t *ql = x[i].qs, *qh = x[i].qh;
                const float d = qd_fp16_to_fp32(x[i].d);
                const float min = qd_fp16_to_fp32(x[i].dmin);
                uint8_t sc, m, u1 = 1, u2 = 2;
                int is = 0;

                for (int j = 0; j < QK_K; j += 64) {
                        ggml_q4_k_scale_min(is + 0, x[i].scales, &sc, &m);
                        const float d1 = d * sc, m1 = min * m;
                        ggml_q4_k_scale_min(is + 1, x[i].scales, &sc, &m);
                        const float d2 = d * sc, m2 = min * m;
                        for (int l = 0; l < 32; l++)
                                *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
                        for (int l = 0; l < 32; l++)
                                *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
                        ql += 32;
                        is += 2;
                        u1 <<= 2;
                        u2 <<= 2;
                }
        }
}

static void dequant_q6_k(const GgmlBlockQ6_K *x, float *y, size_t nb) {
        for (size_t i = 0; i < nb; i++) {
                const float d = qd_fp16_to_fp32(x[i].d);
                const uint8_t *ql = x[i].ql, *qh = x[i].qh;
                const int8_t *sc = x[i].scales;

                for (int n = 0; n < QK_K; n += 128) {
                        for (int l = 0; l < 32; l++) {
                                int is = l / 16;
                                int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                                int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                                y[l + 0] = d * sc[is + 0] * q1;
                                y[l + 32] = d * sc[is + 2] * q2;
                                y[l + 64] = d * sc[is + 4] * q3;
                                y[l + 96] = d * sc[is + 6] * q4;
                        }
                        y += 128;
                        ql += 64;
                        qh += 32;
                        sc += 8;
                }
        }
}

int ggml_dequantize_row(uint32_t type, const void *src, float *dst, size_t n) {
        const GgmlTypeInfo *info = ggml_type_info(type);

        if (!info || !info->supported || n % info->block_size != 0)
                return -EINVAL;
        size_t nb = n / info->block_size;

        switch (type) {
        case GGML_TYPE_F32:
                memcpy(dst, src, n * sizeof(float));
                break;
        case GGML_TYPE_F16: {
                const uint8_t *p = src;
                for (size_t i = 0; i < n; i++) {
                        uint16_t h;
                        memcpy(&h, p + 2 * i, 2);
                        dst[i] = half_to_float(h);
                }
                break;
        }
        case GGML_TYPE_BF16: {
                const uint8_t *p = src;
                for (size_t i = 0; i < n; i++) {
                        uint16_t h;
                        memcpy(&h, p + 2 * i, 2);
                        dst[i] = qd_bf16_to_fp32(h);
                }
                break;
        }
        case GGML_TYPE_Q8_0: {
                const GgmlBlockQ8_0 *x = src;
                for (size_t i = 0; i < nb; i++) {
                        const float d = qd_fp16_to_fp32(x[i].d);
                        for (int j = 0; j < QK8_0; j++)
                                dst[i * QK8_0 + j] = x[i].qs[j] * d;
                }
                break;
        }
        case GGML_TYPE_Q4_0: {
                const GgmlBlockQ4_0 *x = src;
                for (size_t i = 0; i < nb; i++) {
                        const float d = qd_fp16_to_fp32(x[i].d);
                        for (int j = 0; j < QK4_0 / 2; j++) {
                                dst[i * QK4_0 + j] = ((x[i].qs[j] & 0x0F) - 8) * d;
                                dst[i * QK4_0 + j + QK4_0 / 2] = ((x[i].qs[j] >> 4) - 8) * d;
                        }
                }
                break;
        }
        case GGML_TYPE_Q4_1: {
                const GgmlBlockQ4_1 *x = src;
                for (size_t i = 0; i < nb; i++) {
                        const float d = qd_fp16_to_fp32(x[i].d);
                        const float m = qd_fp16_to_fp32(x[i].m);
                        for (int j = 0; j < QK4_1 / 2; j++) {
                                dst[i * QK4_1 + j] = (x[i].qs[j] & 0x0F) * d + m;
                                dst[i * QK4_1 + j + QK4_1 / 2] = (x[i].qs[j] >> 4) * d + m;
                        }
                }
                break;
        }
        case GGML_TYPE_Q5_0:
        case GGML_TYPE_Q5_1: {
                bool q51 = type == GGML_TYPE_Q5_1;
                const uint8_t *b = src;
                size_t bs = q51 ? sizeof(GgmlBlockQ5_1) : sizeof(GgmlBlockQ5_0);
                for (size_t i = 0; i < nb; i++, b += bs) {
                        const GgmlBlockQ5_0 *x0 = (const GgmlBlockQ5_0 *) b;
                        const GgmlBlockQ5_1 *x1 = (const GgmlBlockQ5_1 *) b;
                        const float d = qd_fp16_to_fp32(q51 ? x1->d : x0->d);
                        const float m = q51 ? qd_fp16_to_fp32(x1->m) : 0.0f;
                        const uint8_t *qs = q51 ? x1->qs : x0->qs;
                        uint32_t qh;
                        memcpy(&qh, q51 ? x1->qh : x0->qh, 4);
                        for (int j = 0; j < 16; j++) {
                                int h0 = ((qh >> (j + 0)) << 4) & 0x10;
                                int h1 = ((qh >> (j + 12))) & 0x10;
                                int v0 = (qs[j] & 0x0F) | h0, v1 = (qs[j] >> 4) | h1;
                                dst[i * 32 + j] = q51 ? v0 * d + m : (v0 - 16) * d;
                                dst[i * 32 + j + 16] = q51 ? v1 * d + m : (v1 - 16) * d;
                        }
                }
                break;
        }
        case GGML_TYPE_Q4_K:
                dequant_q4_k(src, dst, nb);
                break;
        case GGML_TYPE_Q5_K:
                dequant_q5_k(src, dst, nb);
                break;
        case GGML_TYPE_Q6_K:
                dequant_q6_k(src, dst, nb);
                break;
        default:
                return -EINVAL;
        }
        return 0;
}

static inline uint8_t nibble(float v) {
        /* ggml: MIN(15, (int8_t)(v)); v is in [0, 16.5] for finite input. Branch-free (NaN → 0)
         * so that the block loops vectorize. */
        float c = v >= 0.0f ? v : 0.0f;
        return (uint8_t)(int)(c < 15.0f ? c : 15.0f);
}

int ggml_quantize_row(uint32_t type, const float *src, void *dst, size_t n) {
        const GgmlTypeInfo *info = ggml_type_info(type);

        if (!info || !info->supported)
                return -EINVAL;
        if (n % info->block_size != 0)
                return -EINVAL;
        size_t nb = n / info->block_size;

        switch (type) {
        case GGML_TYPE_F32:
                memcpy(dst, src, n * sizeof(float));
                return 0;
        case GGML_TYPE_F16:
        case GGML_TYPE_BF16: {
                uint8_t *p = dst;
                for (size_t i = 0; i < n; i++) {
                        uint16_t h =
                                type == GGML_TYPE_F16 ? qd_fp32_to_fp16(src[i]) : qd_fp32_to_bf16(src[i]);
                        memcpy(p + 2 * i, &h, 2);
                }
                return 0;
        }
        case GGML_TYPE_Q8_0: {
                GgmlBlockQ8_0 *y = dst;
                for (size_t i = 0; i < nb; i++) {
                        const float *x = src + i * QK8_0;
                        float amax = 0.0f;
                        for (int j = 0; j < QK8_0; j++)
                                amax = MAX(amax, fabsf(x[j]));
                        const float d = amax / 127;
                        const float id = d != 0.0f ? 1.0f / d : 0.0f;
                        y[i].d = qd_fp32_to_fp16(d);
                        for (int j = 0; j < QK8_0; j++)
                                y[i].qs[j] = (int8_t)CLAMP(roundf(x[j] * id), -127.0f, 127.0f);
                }
                return 0;
        }
        case GGML_TYPE_Q4_0: {
                GgmlBlockQ4_0 *y = dst;
                for (size_t i = 0; i < nb; i++) {
                        const float *x = src + i * QK4_0;
                        float amax = 0.0f, max = 0.0f;
                        for (int j = 0; j < QK4_0; j++)
                                if (amax < fabsf(x[j])) {
                                        amax = fabsf(x[j]);
                                        max = x[j];
                                }
                        const float d = max / -8;
                        const float id = d != 0.0f ? 1.0f / d : 0.0f;
                        y[i].d = qd_fp32_to_fp16(d);
                        for (int j = 0; j < QK4_0 / 2; j++) {
                                uint8_t x0 = nibble(x[j] * id + 8.5f);
                                uint8_t x1 = nibble(x[j + QK4_0 / 2] * id + 8.5f);
                                y[i].qs[j] = (uint8_t)(x0 | (x1 << 4));
                        }
                }
                return 0;
        }
        case GGML_TYPE_Q4_1: {
                GgmlBlockQ4_1 *y = dst;
                for (size_t i = 0; i < nb; i++) {
                        const float *x = src + i * QK4_1;
                        float min = FLT_MAX, max = -FLT_MAX;
                        for (int j = 0; j < QK4_1; j++) {
                                min = MIN(min, x[j]);
                                max = MAX(max, x[j]);
                        }
                        const float d = (max - min) / 15;
                        const float id = d != 0.0f ? 1.0f / d : 0.0f;
                        y[i].d = qd_fp32_to_fp16(d);
                        y[i].m = qd_fp32_to_fp16(min);
                        for (int j = 0; j < QK4_1 / 2; j++) {
                                uint8_t x0 = nibble((x[j] - min) * id + 0.5f);
                                uint8_t x1 = nibble((x[j + QK4_1 / 2] - min) * id + 0.5f);
                                y[i].qs[j] = (uint8_t)(x0 | (x1 << 4));
                        }
                }
                return 0;
        }
        case GGML_TYPE_Q5_0:
                ggml_quantize_q5_0(src, dst, nb);
                return 0;
        case GGML_TYPE_Q5_1:
                ggml_quantize_q5_1(src, dst, nb);
                return 0;
        case GGML_TYPE_Q4_K:
                ggml_quantize_q4_k(src, dst, nb);
                return 0;
        case GGML_TYPE_Q5_K:
                ggml_quantize_q5_k(src, dst, nb);
                return 0;
        case GGML_TYPE_Q6_K:
                ggml_quantize_q6_k(src, dst, nb);
                return 0;
        default:
                return -EOPNOTSUPP;
        }
}
