/* The GPU layout of the per-row-scale weight formats (FP8 E4M3 and INT8 with one f32 scale per
 * output row), as the Vulkan kernels read them (vk.h QVK_W_FP8_ROW / QVK_W_I8_ROW,
 * docs/QUANTIZATION.md): every row is a 16-byte header — its f32 scale (host byte order,
 * little-endian on every supported machine) and 12 zero bytes — followed by its cols code bytes,
 * so rows are cols + 16 bytes and stay 16-byte aligned. cols must be a multiple of 32. Functions
 * return 0 or a negative errno (-EINVAL bad arguments or non-finite weights, -ENOMEM). */
#pragma once

#include <stddef.h>

typedef enum QdRowScaleType {
        QD_ROWSCALE_FP8,     /* qd_fp8_quantize_matrix(): scale = absmax/448, E4M3 codes */
        QD_ROWSCALE_INT8,    /* qd_w8_quantize_matrix(): scale = absmax/127, codes -127..127 */
        _QD_ROWSCALE_MAX,
} QdRowScaleType;

#define QD_ROWSCALE_HEADER 16

/* Bytes of the buffer, rows · (cols + 16); 0 if cols is not a multiple of 32. */
size_t qd_rowscale_bytes(size_t rows, size_t cols);
int qd_rowscale_quantize(QdRowScaleType t, const float *w, size_t rows, size_t cols, void *dst);
int qd_rowscale_dequantize(QdRowScaleType t, const void *src, size_t rows, size_t cols, float *dst);
