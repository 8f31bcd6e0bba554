/* Calibration statistics gathered by the Vulkan prompt pass: record() calls
 * llama_vk_capture_record() at each site, which adds a Gram-matrix dispatch (calib-gram.comp)
 * and/or a row-keeping dispatch (calib-rows.comp) reading the site's activations in place, so
 * that nothing but the final statistics crosses to the host. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "llama-vulkan-capture.h"
#include "llama-vulkan-internal.h"

#define N_SITES 4


struct LlamaVkCapture {
        LlamaVk *v;
        uint32_t n_layer, cols[N_SITES];
        bool gram;
        uint32_t max_rows, stride;
        QvkBuffer **g, **rows; /* [layer * N_SITES + site] */
        QvkBuffer *base;       /* host: the window's first token in the stream */
        QvkPipeline *p_gram, *p_rows;
        uint64_t n_tokens;
};

LlamaVkCapture *llama_vk_capture_free(LlamaVkCapture *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < (size_t) c->n_layer * N_SITES; i++) {
                if (c->g)
                        qvk_buffer_free(c->g[i]);
                if (c->rows)
                        qvk_buffer_free(c->rows[i]);
        }
        free(c->g);
        free(c->rows);
        qvk_buffer_free(c->base);
        return mfree(c);
}

int llama_vk_capture_new(LlamaVk *v, bool gram, uint32_t max_rows, uint32_t stride, LlamaVkCapture **ret) {
        _cleanup_(llama_vk_capture_freep) LlamaVkCapture *c = NULL;
        const LlamaHParams *hp = &v->w->hp;
        size_t n;
        int r;

        if ((!gram && max_rows == 0) || (max_rows > 0 && stride == 0))
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->v = v;
        c->n_layer = hp->n_layer;
        c->cols[LLAMA_SITE_ATTN_IN] = hp->n_embd;
        c->cols[LLAMA_SITE_ATTN_OUT] = hp->n_head * hp->head_dim;
        c->cols[LLAMA_SITE_FFN_IN] = hp->n_embd;
        c->cols[LLAMA_SITE_FFN_DOWN] = hp->n_ff;
        c->gram = gram;
        c->max_rows = max_rows;
        c->stride = stride;
        n = (size_t) c->n_layer * N_SITES;
        c->g = calloc(n, sizeof(QvkBuffer *));
        c->rows = calloc(n, sizeof(QvkBuffer *));
        if (!c->g || !c->rows)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                uint64_t cols = c->cols[i % N_SITES];
                if (gram) {
                        if (cols * cols * 4 > qvk_device_features(v->d)->max_storage_buffer_range)
                                return -E2BIG;
                        if ((r = qvk_buffer_new(v->d, cols * cols * 4, QVK_MEM_DEVICE, &c->g[i])) < 0)
                                return r;
                }
                if (max_rows > 0 && (r = qvk_buffer_new(v->d, max_rows * cols * 4, QVK_MEM_DEVICE, &c->rows[i])) < 0)
                        return r;
        }
        /* Zeroed sums: one recording of fills for all of them. */
        if (gram) {
                _cleanup_(qvk_cmd_freep) QvkCmd *cmd = NULL;
                if ((r = qvk_cmd_new(v->d, &cmd)) < 0)
                        return r;
                for (size_t i = 0; i < n; i++)
                        if ((r = qvk_cmd_fill(cmd, c->g[i], 0, qvk_buffer_size(c->g[i]), 0)) < 0)
                                return r;
                if ((r = qvk_cmd_end(cmd)) < 0 || (r = qvk_cmd_submit(cmd)) < 0 || (r = qvk_cmd_wait(cmd)) < 0)
                        return r;
        }
        if ((r = qvk_buffer_new(v->d, 256, QVK_MEM_HOST, &c->base)) < 0)
                return r;
        if ((r = qvk_pipeline_get(v->d, "calib_gram_f32", NULL, 0, 2, 8, &c->p_gram)) < 0 ||
            (r = qvk_pipeline_get(v->d, "calib_rows_f32", NULL, 0, 4, 12, &c->p_rows)) < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

uint32_t llama_vk_capture_cols(const LlamaVkCapture *c, LlamaSite site) {
        return site < N_SITES ? c->cols[site] : 0;
}

uint64_t llama_vk_capture_tokens(const LlamaVkCapture *c) {
        return c->n_tokens;
}

int llama_vk_capture_record(QvkCmd *cmd, LlamaVkSeq *s, uint32_t layer, LlamaSite site, QvkBuffer *x, uint32_t n) {
        LlamaVkCapture *c = s->capture;
        size_t i = (size_t) layer * N_SITES + site;
        uint32_t cols = c->cols[site];
        uint64_t xb = (uint64_t) n * cols * 4;
        int r;

        if (c->gram) {
                uint32_t push[2] = { n, cols }, tiles = DIV_ROUND_UP(cols, 64u);
                QvkBinding b[] = { B(x, 0, xb), B(c->g[i], 0, 0) };
                r = qvk_cmd_dispatch(cmd, c->p_gram, b, 2, 1u << 1, push, sizeof(push), tiles, tiles, 1);
                if (r < 0)
                        return r;
        }
        if (c->max_rows > 0) {
                uint32_t push[3] = { cols, c->stride, c->max_rows };
                QvkBinding b[] = { B(x, 0, xb), B(c->rows[i], 0, 0), B(c->base, 0, 4), B(s->params, 0, 4) };
                r = qvk_cmd_dispatch(cmd, c->p_rows, b, 4, 1u << 1, push, sizeof(push), DIV_ROUND_UP(cols, 256u), n, 1);
                if (r < 0)
                        return r;
        }
        return 0;
}

int llama_vk_capture_window(LlamaVkSeq *s, LlamaVkCapture *c, const int32_t *tokens, size_t n, uint64_t first) {
        if (n < 2 || n > s->n_ctx || n % s->ubatch == 1 || first > UINT32_MAX - n || c->v != s->v)
                return -EINVAL;
        if (s->capture != c) {
                s->capture = c;
                s->gen_prefill = UINT64_MAX; /* record again, with the hooks */
        }
        s->len = 0;
        *(uint32_t *) qvk_buffer_map(c->base) = (uint32_t) first;
        int r = llama_vk_seq_eval(s, tokens, n, false, NULL, NULL, NULL);
        if (r < 0)
                return r;
        c->n_tokens += n;
        return 0;
}

int llama_vk_capture_gram(LlamaVkCapture *c, uint32_t layer, LlamaSite site, float *ret) {
        if (!c->gram || layer >= c->n_layer || site >= N_SITES)
                return -EINVAL;
        size_t cols = c->cols[site];
        return qvk_buffer_download(c->g[(size_t) layer * N_SITES + site], 0, ret, cols * cols * 4);
}

int llama_vk_capture_rows(LlamaVkCapture *c, uint32_t layer, LlamaSite site, float *ret, size_t *ret_n) {
        if (c->max_rows == 0 || layer >= c->n_layer || site >= N_SITES)
                return -EINVAL;
        /* Rows stride·k of the tokens seen, k from 0, while below max_rows. */
        size_t n = MIN((size_t) c->max_rows, (size_t) ((c->n_tokens + c->stride - 1) / c->stride));
        int r = n ? qvk_buffer_download(c->rows[(size_t) layer * N_SITES + site], 0, ret, n * c->cols[site] * 4) : 0;
        if (r < 0)
                return r;
        *ret_n = n;
        return 0;
}
