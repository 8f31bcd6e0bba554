/* The per-row-scale formats (FP8 E4M3, INT8) packed into the single buffer the GPU kernels read:
 * codes first, the f32 row scales after them (quant-rowscale.h). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "quant-rowscale.h"
#include "quant.h"

size_t qd_rowscale_bytes(size_t rows, size_t cols) {
        if (cols == 0 || cols % 32)
                return 0;
        return rows * cols + rows * sizeof(float);
}

int qd_rowscale_quantize(QdRowScaleType t, const float *w, size_t rows, size_t cols, void *dst) {
        _cleanup_free_ float *scales = NULL;
        uint8_t *codes = dst;
        int r;

        if (!w || !dst || t >= _QD_ROWSCALE_MAX || qd_rowscale_bytes(rows, cols) == 0)
                return -EINVAL;
        scales = malloc(MAX(rows, (size_t) 1) * sizeof(float));
        if (!scales)
                return -ENOMEM;
        if (t == QD_ROWSCALE_FP8)
                r = qd_fp8_quantize_matrix(w, rows, cols, codes, scales);
        else
                r = qd_w8_quantize_matrix(w, rows, cols, (int8_t *) codes, scales);
        if (r < 0)
                return r;
        memcpy(codes + rows * cols, scales, rows * sizeof(float));
        return 0;
}

int qd_rowscale_dequantize(QdRowScaleType t, const void *src, size_t rows, size_t cols, float *dst) {
        _cleanup_free_ float *scales = NULL;
        const uint8_t *codes = src;

        if (!src || !dst || t >= _QD_ROWSCALE_MAX || qd_rowscale_bytes(rows, cols) == 0)
                return -EINVAL;
        scales = malloc(MAX(rows, (size_t) 1) * sizeof(float));
        if (!scales)
                return -ENOMEM;
        memcpy(scales, codes + rows * cols, rows * sizeof(float));
        if (t == QD_ROWSCALE_FP8)
                return qd_fp8_dequantize_matrix(codes, scales, rows, cols, dst);
        for (size_t i = 0; i < rows; i++)
                for (size_t j = 0; j < cols; j++)
                        dst[i * cols + j] = scales[i] * (float) (int8_t) codes[i * cols + j];
        return 0;
}
