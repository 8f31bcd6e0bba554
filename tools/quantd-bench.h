/* Host-side helpers of quantd-bench: fp16 conversion, GGUF block quantizers and the
 * double-precision reference product. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vk.h"

uint16_t bench_f32_to_f16(float f);
float bench_f16_to_f32(uint16_t h);

/* Encodes rows × k floats in format t into dst (qvk_weight_row_bytes(t, k) per row). */
void bench_quantize(QvkWeightType t, const float *src, uint32_t rows, uint32_t k, uint8_t *dst);
/* Decodes the encoded rows back to floats, straight from the GGUF byte layout. */
void bench_dequantize(QvkWeightType t, const uint8_t *src, uint32_t rows, uint32_t k, float *dst);
/* ref[j*m + i] = sum_e w[i*k + e] * x[j*k + e], accumulated in double. */
void bench_reference(const float *w, const float *x, uint32_t m, uint32_t k, uint32_t n, double *ref);

/* The extended formats (vk.h, from QVK_W_Q8_0_G64 on), encoded and decoded by models/quant
 * (quantd-bench-ext.c); bench_quantize()/bench_dequantize() hand them over. */
bool bench_ext_type(QvkWeightType t);
uint32_t bench_ext_group(QvkWeightType t);  /* elements per group (32 for the per-row formats) */
void bench_ext_quantize(QvkWeightType t, const float *src, uint32_t rows, uint32_t k, uint8_t *dst);
void bench_ext_dequantize(QvkWeightType t, const uint8_t *src, uint32_t rows, uint32_t k, float *dst);
