/* The extended weight formats of vk.h (longer groups, NF4, per-row-scale FP8 / INT8): private
 * hooks called first by vk-matmul.c's public functions. */
#pragma once

#include "vk.h"

bool qvk_ext_type(QvkWeightType t);
const char *qvk_ext_type_name(QvkWeightType t);
uint64_t qvk_ext_row_bytes(QvkWeightType t, uint32_t k);
const char *qvk_ext_kernel(QvkDevice *d, QvkWeightType wt, bool x_f16, uint32_t k, uint32_t n);
int qvk_matmul_ext(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k, QvkBinding x,
                   bool x_f16, uint32_t n, QvkBinding y);
