/* llama.cpp's K-quant mixes: which ggml type each weight of a llama-style model gets, following
 * llama-quantize's rules (llama_tensor_get_type) for the types quantd can write; and ggml's
 * reference quantizers over a whole matrix on several threads. */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ggml-types.h"
#include "quant-internal.h"
#include "quant.h"

static const char *const mix_names[_QD_KMIX_MAX] = {
        [QD_KMIX_Q4_K_M] = "q4_k_m",
        [QD_KMIX_Q4_K] = "q4_k",
        [QD_KMIX_Q6_K] = "q6_k",
        [QD_KMIX_Q5_K_M] = "q5_k_m",
};

const char *qd_kmix_to_string(QdKMix m) {
        return m > QD_KMIX_NONE && m < _QD_KMIX_MAX ? mix_names[m] : NULL;
}

QdKMix qd_kmix_from_string(const char *s) {
        for (int m = QD_KMIX_NONE + 1; s && m < _QD_KMIX_MAX; m++)
                if (strcasecmp(s, mix_names[m]) == 0)
                        return m;
        return QD_KMIX_NONE;
}

uint32_t qd_kmix_file_type(QdKMix m) {
        /* LLAMA_FTYPE_MOSTLY_Q4_K_M 15, _Q4_K_S 14 (what llama-quantize --pure Q4_K_S writes), _Q6_K 18,
         * _Q5_K_M 17 */
        return m == QD_KMIX_Q4_K_M ? 15 : m == QD_KMIX_Q4_K ? 14 : m == QD_KMIX_Q6_K ? 18 : m == QD_KMIX_Q5_K_M ? 17 : 0;
}

bool qd_kmix_more_bits(uint32_t layer, uint32_t n_layer) {
        /* llama.cpp's use_more_bits(): the first and last eighth of the layers and every third one
         * between them. */
        return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

int qd_kmix_tensor_type(QdKMix m, const char *name, uint64_t ne0, uint32_t n_layer, uint32_t *ret_type) {
        uint32_t t;
        unsigned layer;
        int off = 0;

        if (m <= QD_KMIX_NONE || m >= _QD_KMIX_MAX || !name || !ret_type || ne0 == 0)
                return -EINVAL;
        bool km = m == QD_KMIX_Q4_K_M || m == QD_KMIX_Q5_K_M;  /* the _M mixes */
        t = m == QD_KMIX_Q6_K ? GGML_TYPE_Q6_K : m == QD_KMIX_Q5_K_M ? GGML_TYPE_Q5_K : GGML_TYPE_Q4_K;
        if (streq(name, "output.weight")) {
                if (km)
                        t = GGML_TYPE_Q6_K;
        } else if (km && sscanf(name, "blk.%u.%n", &layer, &off) == 1 && off > 0 &&
                   (streq(name + off, "attn_v.weight") || streq(name + off, "ffn_down.weight")) &&
                   layer < n_layer && qd_kmix_more_bits(layer, n_layer))
                t = GGML_TYPE_Q6_K;
        /* Rows that are not whole 256-element super-blocks: llama.cpp's fallbacks (the output
         * matrix always goes to Q8_0 then). */
        if (ne0 % QK_K != 0) {
                if (streq(name, "output.weight"))
                        t = GGML_TYPE_Q8_0;
                else
                        t = t == GGML_TYPE_Q4_K ? GGML_TYPE_Q5_0 : t == GGML_TYPE_Q5_K ? GGML_TYPE_Q5_1 : GGML_TYPE_Q8_0;
                if (ne0 % 32 != 0)
                        return -EINVAL;
        }
        *ret_type = t;
        return 0;
}

typedef struct RowsJob {
        uint32_t type;
        const float *w;
        size_t rows, cols, row_bytes;
        uint8_t *dst;
        const uint8_t *src;
        float *out;
        uint32_t src_type;
        size_t src_row_bytes;
} RowsJob;

#define ROWS_PER_TILE 16

static int rows_tile(void *userdata, size_t tile) {
        const RowsJob *j = userdata;
        size_t end = MIN(j->rows, (tile + 1) * ROWS_PER_TILE);
        for (size_t r = tile * ROWS_PER_TILE; r < end; r++) {
                int k = ggml_quantize_row(j->type, j->w + r * j->cols, j->dst + r * j->row_bytes, j->cols);
                if (k < 0)
                        return k;
        }
        return 0;
}

int qd_ggml_quantize_matrix(uint32_t type, const float *w, size_t rows, size_t cols, unsigned n_threads,
                            void *dst) {
        RowsJob j = { .type = type, .w = w, .rows = rows, .cols = cols, .dst = dst };
        int r;

        if (!w || !dst)
                return -EINVAL;
        r = ggml_row_size(type, cols, &j.row_bytes);
        if (r < 0)
                return r;
        return qd_parallel_for((rows + ROWS_PER_TILE - 1) / ROWS_PER_TILE, n_threads, rows_tile, &j);
}

static int rows_tile_deq(void *userdata, size_t tile) {
        const RowsJob *j = userdata;
        size_t end = MIN(j->rows, (tile + 1) * ROWS_PER_TILE);
        for (size_t r = tile * ROWS_PER_TILE; r < end; r++) {
                int k = ggml_dequantize_row(j->type, j->src + r * j->row_bytes, j->out + r * j->cols, j->cols);
                if (k < 0)
                        return k;
        }
        return 0;
}

int qd_ggml_dequantize_matrix(uint32_t type, const void *src, size_t rows, size_t cols, unsigned n_threads,
                              float *dst) {
        RowsJob j = { .type = type, .src = src, .rows = rows, .cols = cols, .out = dst };
        int r;

        if (!src || !dst)
                return -EINVAL;
        r = ggml_row_size(type, cols, &j.row_bytes);
        if (r < 0)
                return r;
        return qd_parallel_for((rows + ROWS_PER_TILE - 1) / ROWS_PER_TILE, n_threads, rows_tile_deq, &j);
}

static int rows_tile_conv(void *userdata, size_t tile) {
        const RowsJob *j = userdata;
        size_t end = MIN(j->rows, (tile + 1) * ROWS_PER_TILE);
        _cleanup_free_ float *row = malloc(j->cols * sizeof(float));
        int k;

        if (!row)
                return -ENOMEM;
        for (size_t r = tile * ROWS_PER_TILE; r < end; r++) {
                k = ggml_dequantize_row(j->src_type, j->src + r * j->src_row_bytes, row, j->cols);
                if (k < 0)
                        return k;
                k = ggml_quantize_row(j->type, row, j->dst + r * j->row_bytes, j->cols);
                if (k < 0)
                        return k;
        }
        return 0;
}

int qd_ggml_convert_matrix(uint32_t src_type, const void *src, uint32_t type, void *dst, size_t rows, size_t cols,
                           unsigned n_threads) {
        RowsJob j = { .type = type, .src_type = src_type, .src = src, .dst = dst, .rows = rows, .cols = cols };
        int r;

        if (!src || !dst)
                return -EINVAL;
        if ((r = ggml_row_size(type, cols, &j.row_bytes)) < 0 || (r = ggml_row_size(src_type, cols, &j.src_row_bytes)) < 0)
                return r;
        return qd_parallel_for((rows + ROWS_PER_TILE - 1) / ROWS_PER_TILE, n_threads, rows_tile_conv, &j);
}
