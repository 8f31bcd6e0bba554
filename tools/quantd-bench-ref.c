/* quantd-bench's CPU side: fp16 conversion, GGUF Q8_0/Q4_0/Q4_1 encoders and decoders (as in
 * ggml's reference quantizers), and the double-precision reference product. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "quantd-bench.h"

uint16_t bench_f32_to_f16(float f) {
        uint32_t x, sign, mant;
        int32_t exp;

        memcpy(&x, &f, 4);
        sign = (x >> 16) & 0x8000u;
        exp = (int32_t) ((x >> 23) & 0xff) - 127 + 15;
        mant = x & 0x7fffffu;
        if (((x >> 23) & 0xff) == 0xff)
                return (uint16_t) (sign | 0x7c00u | (mant ? 0x200u : 0));
        if (exp >= 31)
                return (uint16_t) (sign | 0x7c00u);
        if (exp <= 0) {
                uint32_t shift, half, rem, v;
                if (exp < -10)
                        return (uint16_t) sign;
                mant |= 0x800000u;
                shift = (uint32_t) (14 - exp);
                v = mant >> shift;
                rem = mant & ((1u << shift) - 1);
                half = 1u << (shift - 1);
                if (rem > half || (rem == half && (v & 1)))
                        v++;
                return (uint16_t) (sign | v);
        }
        {
                uint32_t v = ((uint32_t) exp << 10) | (mant >> 13), rem = mant & 0x1fffu;
                if (rem > 0x1000u || (rem == 0x1000u && (v & 1)))
                        v++;  /* may carry into the exponent, which is right */
                return (uint16_t) (sign | v);
        }
}

float bench_f16_to_f32(uint16_t h) {
        uint32_t sign = (uint32_t) (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
        float f;

        if (exp == 0)
                f = ldexpf((float) mant, -24);
        else if (exp == 31)
                f = mant ? NAN : INFINITY;
        else
                f = ldexpf((float) (mant | 0x400u), (int) exp - 25);
        return sign ? -f : f;
}

static void put16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) v;
        p[1] = (uint8_t) (v >> 8);
}

static uint16_t get16(const uint8_t *p) {
        return (uint16_t) (p[0] | (p[1] << 8));
}

static void quantize_block(QvkWeightType t, const float *x, uint8_t *out) {
        float amax = 0, max = 0, min = INFINITY, mx = -INFINITY, d, id;

        switch (t) {
        case QVK_W_Q8_0:
                for (int i = 0; i < 32; i++)
                        amax = MAX(amax, fabsf(x[i]));
                d = amax / 127.0f;
                id = d ? 1.0f / d : 0.0f;
                put16(out, bench_f32_to_f16(d));
                for (int i = 0; i < 32; i++)
                        out[2 + i] = (uint8_t) (int8_t) lroundf(x[i] * id);
                break;
        case QVK_W_Q4_0:
                for (int i = 0; i < 32; i++)
                        if (fabsf(x[i]) > amax) {
                                amax = fabsf(x[i]);
                                max = x[i];
                        }
                d = max / -8.0f;
                id = d ? 1.0f / d : 0.0f;
                put16(out, bench_f32_to_f16(d));
                for (int j = 0; j < 16; j++) {
                        int a = MIN(15, (int) (x[j] * id + 8.5f));
                        int b = MIN(15, (int) (x[j + 16] * id + 8.5f));
                        out[2 + j] = (uint8_t) (a | (b << 4));
                }
                break;
        case QVK_W_Q4_1:
                for (int i = 0; i < 32; i++) {
                        min = MIN(min, x[i]);
                        mx = MAX(mx, x[i]);
                }
                d = (mx - min) / 15.0f;
                id = d ? 1.0f / d : 0.0f;
                put16(out, bench_f32_to_f16(d));
                put16(out + 2, bench_f32_to_f16(min));
                for (int j = 0; j < 16; j++) {
                        int a = MIN(15, (int) ((x[j] - min) * id + 0.5f));
                        int b = MIN(15, (int) ((x[j + 16] - min) * id + 0.5f));
                        out[4 + j] = (uint8_t) (a | (b << 4));
                }
                break;
        default:
                break;
        }
}

void bench_quantize(QvkWeightType t, const float *src, uint32_t rows, uint32_t k, uint8_t *dst) {
        uint64_t rb = qvk_weight_row_bytes(t, k);

        if (qvk_weight_repacked(t)) {  /* the GGUF blocks, then the upload's repacking */
                QvkWeightType base = qvk_weight_base(t);
                uint8_t *g = malloc(qvk_weight_row_bytes(base, k) * rows);
                if (!g)
                        abort();
                bench_quantize(base, src, rows, k, g);
                if (qvk_weight_repack(t, k, g, rows, dst) < 0)
                        abort();
                free(g);
                return;
        }
        if (bench_ext_type(t)) {
                bench_ext_quantize(t, src, rows, k, dst);
                return;
        }

        for (uint32_t r = 0; r < rows; r++) {
                const float *x = src + (uint64_t) r * k;
                uint8_t *o = dst + r * rb;
                switch (t) {
                case QVK_W_F32:
                        memcpy(o, x, (size_t) k * 4);
                        break;
                case QVK_W_F16:
                        for (uint32_t e = 0; e < k; e++)
                                put16(o + 2 * e, bench_f32_to_f16(x[e]));
                        break;
                default:
                        for (uint32_t b = 0; b < k / 32; b++)
                                quantize_block(t, x + 32 * b, o + qvk_weight_row_bytes(t, 32) * b);
                        break;
                }
        }
}

void bench_dequantize(QvkWeightType t, const uint8_t *src, uint32_t rows, uint32_t k, float *dst) {
        uint64_t rb = qvk_weight_row_bytes(t, k);

        if (qvk_weight_repacked(t)) {  /* back to the GGUF blocks (test-vk-repack checks the pair) */
                QvkWeightType base = qvk_weight_base(t);
                uint8_t *g = malloc(qvk_weight_row_bytes(base, k) * rows);
                if (!g)
                        abort();
                if (qvk_weight_unpack(t, k, src, rows, g) < 0)
                        abort();
                bench_dequantize(base, g, rows, k, dst);
                free(g);
                return;
        }
        if (bench_ext_type(t)) {
                bench_ext_dequantize(t, src, rows, k, dst);
                return;
        }

        for (uint32_t r = 0; r < rows; r++) {
                const uint8_t *p = src + r * rb;
                float *o = dst + (uint64_t) r * k;
                for (uint32_t b = 0; t >= QVK_W_Q8_0 && b < k / 32; b++) {
                        const uint8_t *blk = p + qvk_weight_row_bytes(t, 32) * b;
                        float d = bench_f16_to_f32(get16(blk));
                        for (int j = 0; j < 32; j++) {
                                int shift = j < 16 ? 0 : 4;  /* element j+16: high nibble of byte j */
                                if (t == QVK_W_Q8_0)
                                        o[32 * b + j] = d * (float) (int8_t) blk[2 + j];
                                else if (t == QVK_W_Q4_0)
                                        o[32 * b + j] = d * (float) (((blk[2 + j % 16] >> shift) & 15) - 8);
                                else
                                        o[32 * b + j] = d * (float) ((blk[4 + j % 16] >> shift) & 15) +
                                                        bench_f16_to_f32(get16(blk + 2));
                        }
                }
                if (t == QVK_W_F32)
                        memcpy(o, p, (size_t) k * 4);
                else if (t == QVK_W_F16)
                        for (uint32_t e = 0; e < k; e++)
                                o[e] = bench_f16_to_f32(get16(p + 2 * e));
        }
}

void bench_reference(const float *w, const float *x, uint32_t m, uint32_t k, uint32_t n, double *ref) {
        for (uint32_t j = 0; j < n; j++)
                for (uint32_t i = 0; i < m; i++) {
                        double s = 0;
                        for (uint32_t e = 0; e < k; e++)
                                s += (double) w[(uint64_t) i * k + e] * (double) x[(uint64_t) j * k + e];
                        ref[(uint64_t) j * m + i] = s;
                }
}
