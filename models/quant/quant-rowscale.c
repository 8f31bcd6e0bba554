/* The per-row-scale formats (FP8 E4M3, INT8) in the layout the GPU kernels read: each row's f32
 * scale in a 16-byte header before its codes (quant-rowscale.h). */
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
        return rows * (cols + QD_ROWSCALE_HEADER);
}

int qd_rowscale_quantize(QdRowScaleType t, const float *w, size_t rows, size_t cols, void *dst) {
        _cleanup_free_ uint8_t *codes = NULL;
        _cleanup_free_ float *scales = NULL;
        uint8_t *out = dst;
        int r;

        if (!w || !dst || t >= _QD_ROWSCALE_MAX || qd_rowscale_bytes(rows, cols) == 0)
                return -EINVAL;
        codes = malloc(MAX(rows * cols, (size_t) 1));
        scales = malloc(MAX(rows, (size_t) 1) * sizeof(float));
        if (!codes || !scales)
                return -ENOMEM;
        if (t == QD_ROWSCALE_FP8)
                r = qd_fp8_quantize_matrix(w, rows, cols, codes, scales);
        else
                r = qd_w8_quantize_matrix(w, rows, cols, (int8_t *) codes, scales);
        if (r < 0)
                return r;
        for (size_t i = 0; i < rows; i++, out += cols + QD_ROWSCALE_HEADER) {
                memset(out, 0, QD_ROWSCALE_HEADER);
                memcpy(out, &scales[i], sizeof(float));
                memcpy(out + QD_ROWSCALE_HEADER, codes + i * cols, cols);
        }
        return 0;
}

int qd_rowscale_dequantize(QdRowScaleType t, const void *src, size_t rows, size_t cols, float *dst) {
        const uint8_t *row = src;

        if (!src || !dst || t >= _QD_ROWSCALE_MAX || qd_rowscale_bytes(rows, cols) == 0)
                return -EINVAL;
        for (size_t i = 0; i < rows; i++, row += cols + QD_ROWSCALE_HEADER) {
                const uint8_t *q = row + QD_ROWSCALE_HEADER;
                float scale;
                memcpy(&scale, row, sizeof(float));
                for (size_t j = 0; j < cols; j++)
                        dst[i * cols + j] = scale * (t == QD_ROWSCALE_FP8 ? qd_e4m3_to_fp32(q[j]) : (float) (int8_t) q[j]);
        }
        return 0;
}
