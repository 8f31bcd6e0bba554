/* SmoothQuant (Xiao et al. 2023) for W8A8: per-channel scales that move activation outliers into
 * the weights, and the int8 activation quantizers (per-token dynamic, per-tensor static). */
#include <errno.h>
#include <math.h>

#include "macro.h"
#include "quant.h"

int qd_smooth_scales(const float *act_absmax, const float *w_absmax, size_t cols, float alpha,
                     float *ret_scales) {
        if (!act_absmax || !w_absmax || !ret_scales || cols == 0)
                return -EINVAL;
        if (alpha == 0.0f)
                alpha = 0.5f;
        if (!(alpha > 0.0f && alpha <= 1.0f))
                return -EINVAL;
        for (size_t j = 0; j < cols; j++) {
                /* Clamped as the reference implementation does, so dead channels stay finite. */
                double a = MAX((double) act_absmax[j], 1e-5);
                double w = MAX((double) w_absmax[j], 1e-5);
                ret_scales[j] = (float) MAX(pow(a, alpha) / pow(w, 1.0 - alpha), 1e-5);
        }
        return 0;
}

void qd_absmax_columns(const float *m, size_t rows, size_t cols, float *ret) {
        for (size_t i = 0; i < rows; i++)
                for (size_t j = 0; j < cols; j++)
                        ret[j] = MAX(ret[j], fabsf(m[i * cols + j]));
}

int qd_act_quantize_per_token(const float *x, size_t n, size_t cols, int8_t *ret_q,
                              float *ret_scales) {
        if (!x || !ret_q || !ret_scales || cols == 0)
                return -EINVAL;
        for (size_t t = 0; t < n; t++) {
                const float *xt = x + t * cols;
                float amax = 0.0f;
                for (size_t j = 0; j < cols; j++)
                        amax = MAX(amax, fabsf(xt[j]));
                float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
                for (size_t j = 0; j < cols; j++)
                        ret_q[t * cols + j] = (int8_t) CLAMP(lrintf(xt[j] * id), -127L, 127L);
                ret_scales[t] = d;
        }
        return 0;
}

void qd_act_fake_quant_tensor(const float *x, size_t n, float threshold, float *ret) {
        float d = threshold / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        for (size_t i = 0; i < n; i++)
                ret[i] = d * (float) CLAMP(lrintf(x[i] * id), -127L, 127L);
}

int qd_w8_quantize_matrix(const float *w, size_t rows, size_t cols, int8_t *dst, float *ret_scales) {
        if (!w || !dst || !ret_scales || cols == 0)
                return -EINVAL;
        for (size_t i = 0; i < rows; i++)
                for (size_t j = 0; j < cols; j++)
                        if (!isfinite(w[i * cols + j]))
                                return -EINVAL;
        /* The same arithmetic as the per-token activation quantizer, row by row. */
        return qd_act_quantize_per_token(w, rows, cols, dst, ret_scales);
}
