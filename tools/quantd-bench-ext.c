/* quantd-bench's CPU side for the extended weight formats (longer groups, NF4, per-row-scale
 * FP8 / INT8): encoded and decoded by models/quant, the quantizers the engine uses, so the check
 * compares the kernels with the library's own reading of each byte layout; the K-quants by
 * models/ggml-types.c (ggml's reference quantizers and the CPU path's dequantizers). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ggml-types.h"
#include "macro.h"
#include "quant-rowscale.h"
#include "quant.h"
#include "quantd-bench.h"

static const struct {
        QdQuantType type;      /* QD_QTYPE_INVALID: per-row scale */
        unsigned group;
        QdRowScaleType rowscale;
} ext[_QVK_W_MAX] = {
        [QVK_W_Q8_0_G64] = { QD_QTYPE_Q8_0, 64 },
        [QVK_W_Q8_0_G128] = { QD_QTYPE_Q8_0, 128 },
        [QVK_W_Q4_0_G64] = { QD_QTYPE_Q4_0, 64 },
        [QVK_W_Q4_0_G128] = { QD_QTYPE_Q4_0, 128 },
        [QVK_W_Q4_1_G64] = { QD_QTYPE_Q4_1, 64 },
        [QVK_W_Q4_1_G128] = { QD_QTYPE_Q4_1, 128 },
        [QVK_W_NF4_G32] = { QD_QTYPE_NF4, 32 },
        [QVK_W_NF4_G64] = { QD_QTYPE_NF4, 64 },
        [QVK_W_NF4_G128] = { QD_QTYPE_NF4, 128 },
        [QVK_W_FP8_ROW] = { QD_QTYPE_INVALID, 32, QD_ROWSCALE_FP8 },
        [QVK_W_I8_ROW] = { QD_QTYPE_INVALID, 32, QD_ROWSCALE_INT8 },
        [QVK_W_Q4_K] = { QD_QTYPE_INVALID, 256 },
        [QVK_W_Q6_K] = { QD_QTYPE_INVALID, 256 },
        [QVK_W_Q5_0] = { QD_QTYPE_INVALID, 32 },
        [QVK_W_Q5_K] = { QD_QTYPE_INVALID, 256 },
        [QVK_W_Q5_1] = { QD_QTYPE_INVALID, 32 },
};

/* ggml's type number of a K-quant format (or Q5_0 / Q5_1), 0 for the others. */
static uint32_t kquant(QvkWeightType t) {
        return t == QVK_W_Q4_K ? GGML_TYPE_Q4_K : t == QVK_W_Q6_K ? GGML_TYPE_Q6_K :
               t == QVK_W_Q5_0 ? GGML_TYPE_Q5_0 : t == QVK_W_Q5_K ? GGML_TYPE_Q5_K :
               t == QVK_W_Q5_1 ? GGML_TYPE_Q5_1 : 0;
}

bool bench_ext_type(QvkWeightType t) {
        return t < _QVK_W_MAX && ext[t].group > 0;
}

uint32_t bench_ext_group(QvkWeightType t) {
        return bench_ext_type(t) ? ext[t].group : 0;
}

/* Inputs are valid by construction (k a multiple of the group); a failure is a bug. */
static void must(int r, const char *what, QvkWeightType t) {
        if (r < 0) {
                fprintf(stderr, "%s %s: error %d\n", what, qvk_weight_type_name(t), r);
                abort();
        }
}

void bench_ext_quantize(QvkWeightType t, const float *src, uint32_t rows, uint32_t k, uint8_t *dst) {
        QdQuantParams p = { .type = ext[t].type, .group_size = ext[t].group, .range = QD_RANGE_MINMAX };
        uint64_t rb = qvk_weight_row_bytes(t, k);

        if (kquant(t)) {
                /* ggml's K-quant searches are slow (seconds per 8B-model matrix on one core);
                 * the bytes do not depend on the thread count */
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                must(qd_ggml_quantize_matrix(kquant(t), src, rows, k, (unsigned) CLAMP(cpus, 1L, 32L), dst),
                     "quantize", t);
                (void) rb;
                return;
        }
        if (ext[t].type == QD_QTYPE_INVALID) {
                must(qd_rowscale_quantize(ext[t].rowscale, src, rows, k, dst), "quantize", t);
                return;
        }
        for (uint32_t r = 0; r < rows; r++)
                must(qd_quant_row(&p, src + (uint64_t) r * k, NULL, k, dst + r * rb), "quantize", t);
}

void bench_ext_dequantize(QvkWeightType t, const uint8_t *src, uint32_t rows, uint32_t k, float *dst) {
        uint64_t rb = qvk_weight_row_bytes(t, k);

        if (kquant(t)) {
                for (uint32_t r = 0; r < rows; r++)
                        must(ggml_dequantize_row(kquant(t), src + r * rb, dst + (uint64_t) r * k, k), "dequantize", t);
                return;
        }
        if (ext[t].type == QD_QTYPE_INVALID) {
                must(qd_rowscale_dequantize(ext[t].rowscale, src, rows, k, dst), "dequantize", t);
                return;
        }
        for (uint32_t r = 0; r < rows; r++)
                must(qd_dequant_row(ext[t].type, ext[t].group, src + r * rb, dst + (uint64_t) r * k, k),
                     "dequantize", t);
}
