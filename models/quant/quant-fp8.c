/* FP8 E4M3 ("E4M3FN": bias 7, no infinities, max 448) conversion and per-output-channel scaled
 * FP8 weight storage. */
#include <errno.h>
#include <math.h>

#include "macro.h"
#include "quant.h"

uint8_t qd_fp32_to_e4m3(float f) {
        if (isnan(f))
                return 0x7f;
        uint8_t sign = signbit(f) ? 0x80 : 0x00;
        float a = fabsf(f);
        if (a >= 448.0f)
                return sign | 0x7e; /* saturate: E4M3FN has no infinity */
        if (a < 0x1p-6f) {
                /* Subnormals are multiples of 2^-9; 8·2^-9 rounds up into the first normal,
                 * whose code happens to be 8 as well. */
                return sign | (uint8_t) nearbyintf(a * 0x1p9f);
        }
        int ex;
        float fr = frexpf(a, &ex);          /* a = fr·2^ex, fr in [0.5, 1) */
        int e = ex - 1 + 7;
        int m = (int) nearbyintf((2.0f * fr - 1.0f) * 8.0f);
        if (m == 8) {
                m = 0;
                e++;
        }
        if (e > 15 || (e == 15 && m == 7))
                return sign | 0x7e;
        return sign | (uint8_t) (e << 3 | m);
}

float qd_e4m3_to_fp32(uint8_t v) {
        int e = (v >> 3) & 15, m = v & 7;
        float s = v & 0x80 ? -1.0f : 1.0f;
        if (e == 15 && m == 7)
                return NAN;
        if (e == 0)
                return s * ldexpf((float) m, -9);
        return s * ldexpf(1.0f + (float) m / 8.0f, e - 7);
}

int qd_fp8_quantize_matrix(const float *w, size_t rows, size_t cols, uint8_t *dst,
                           float *ret_scales) {
        if (!w || !dst || !ret_scales)
                return -EINVAL;
        for (size_t i = 0; i < rows; i++) {
                const float *wr = w + i * cols;
                float amax = 0.0f;
                for (size_t j = 0; j < cols; j++) {
                        if (!isfinite(wr[j]))
                                return -EINVAL;
                        amax = MAX(amax, fabsf(wr[j]));
                }
                float scale = amax / 448.0f;
                for (size_t j = 0; j < cols; j++)
                        dst[i * cols + j] = scale > 0.0f ? qd_fp32_to_e4m3(wr[j] / scale) : 0;
                ret_scales[i] = scale;
        }
        return 0;
}

int qd_fp8_dequantize_matrix(const uint8_t *src, const float *scales, size_t rows, size_t cols,
                             float *dst) {
        if (!src || !scales || !dst)
                return -EINVAL;
        for (size_t i = 0; i < rows; i++)
                for (size_t j = 0; j < cols; j++)
                        dst[i * cols + j] = scales[i] * qd_e4m3_to_fp32(src[i * cols + j]);
        return 0;
}
