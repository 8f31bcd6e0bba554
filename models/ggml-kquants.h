/* Quantizers for Q5_0, Q5_1, Q4_K, Q5_K and Q6_K (models/ggml-kquants.c), reached through ggml_quantize_row(). */
#pragma once

#include <stddef.h>

#include "ggml-types.h"

/* Scale j (0..7) and min j of a Q4_K/Q5_K block's 12 packed bytes. */
static inline void ggml_q4_k_scale_min(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
        if (j < 4) {
                *d = q[j] & 63;
                *m = q[j + 4] & 63;
        } else {
                *d = (uint8_t) ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
                *m = (uint8_t) ((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
        }
}

/* nb blocks each from nb · block-size floats. */
void ggml_quantize_q4_k(const float *x, GgmlBlockQ4_K *y, size_t nb);
void ggml_quantize_q6_k(const float *x, GgmlBlockQ6_K *y, size_t nb);
void ggml_quantize_q5_0(const float *x, GgmlBlockQ5_0 *y, size_t nb);
void ggml_quantize_q5_1(const float *x, GgmlBlockQ5_1 *y, size_t nb);
void ggml_quantize_q5_k(const float *x, GgmlBlockQ5_K *y, size_t nb);
