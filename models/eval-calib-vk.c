/* GPTQ/AWQ calibration on a Vulkan device: the engine's F16 prompt pass over the calibration
 * windows with the capture hooks of llama-vulkan-capture.c, which sum the Gram matrices and keep
 * the AWQ rows on the device; only the results come back, one (layer, site) at a time. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "eval-internal.h"
#include "llama-vulkan-capture.h"


static void say(const QdCalibVkOptions *o, const char *msg) {
        if (o->q && o->q->log)
                o->q->log(o->q->userdata, msg);
}

int qd_eval_calib_vk(const QdEvalModel *m, const QdCalibVkOptions *o, const uint32_t *tok, size_t n_tok,
                     size_t n_ctx, QdCalibDeliverFn deliver, void *userdata, char **ret_error) {
        static const LlamaSite sites[_QD_EVAL_SITE_MAX] = {
                [QD_EVAL_SITE_ATTN_IN] = LLAMA_SITE_ATTN_IN,
                [QD_EVAL_SITE_ATTN_OUT] = LLAMA_SITE_ATTN_OUT,
                [QD_EVAL_SITE_FFN_IN] = LLAMA_SITE_FFN_IN,
                [QD_EVAL_SITE_FFN_DOWN] = LLAMA_SITE_FFN_DOWN,
        };
        const LlamaWeights *w = qd_eval_model_weights(m);
        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        _cleanup_(llama_vk_freep) LlamaVk *v = NULL;
        _cleanup_(llama_vk_seq_freep) LlamaVkSeq *s = NULL;
        _cleanup_(llama_vk_capture_freep) LlamaVkCapture *cap = NULL;
        _cleanup_free_ int32_t *t32 = NULL;
        _cleanup_free_ float *buf = NULL;
        char msg[512];
        int r;

        if (n_ctx < 2 || n_tok < 2)
                return error_set(ret_error, -EINVAL, "calibration windows need at least 2 tokens");
        r = qvk_device_new(o->device, NULL, &d);
        if (r < 0)
                return error_set(ret_error, r, "no Vulkan device%s%s", o->device ? " matching " : "",
                                 o->device ? o->device : "");
        if ((r = llama_vk_new(d, w, &v)) < 0 || (r = llama_vk_set_precision(v, QD_PRECISION_F16)) < 0)
                return error_set(ret_error, r, "cannot load the model on %s", qvk_device_features(d)->name);
        if ((r = llama_vk_seq_new(v, (uint32_t) n_ctx, &s)) < 0 ||
            (r = llama_vk_capture_new(v, o->gram, (uint32_t) o->max_rows, (uint32_t) o->stride, &cap)) < 0)
                return error_set(ret_error, r, "cannot allocate the calibration buffers on %s",
                                 qvk_device_features(d)->name);
        snprintf(msg, sizeof(msg), "calibration on %s: %zu tokens in windows of %zu", qvk_device_features(d)->name,
                 n_tok, n_ctx);
        say(o, msg);

        t32 = malloc(n_ctx * sizeof(int32_t));
        if (!t32)
                return -ENOMEM;
        size_t n_win = (n_tok + n_ctx - 1) / n_ctx;
        for (size_t k = 0; k < n_win; k++) {
                size_t first = k * n_ctx, len = MIN(n_ctx, n_tok - first);
                if (o->q && o->q->progress && (r = o->q->progress(o->q->userdata, 0.3 * k / n_win)) < 0)
                        return r;
                if (len % 512 == 1 || len < 2)
                        len--; /* a lone token would take the decode path, which has no hooks */
                if (len < 2)
                        continue;
                for (size_t j = 0; j < len; j++) {
                        if (tok[first + j] >= w->hp.n_vocab)
                                return -EINVAL;
                        t32[j] = (int32_t) tok[first + j];
                }
                r = llama_vk_capture_window(s, cap, t32, len, first);
                if (r < 0)
                        return error_set(ret_error, r, "calibration window %zu failed", k + 1);
        }
        snprintf(msg, sizeof(msg), "calibration forward done (%llu tokens); reading back the statistics",
                 (unsigned long long) llama_vk_capture_tokens(cap));
        say(o, msg);

        size_t most = 0;
        for (int i = 0; i < _QD_EVAL_SITE_MAX; i++) {
                size_t cols = llama_vk_capture_cols(cap, sites[i]);
                most = MAX(most, o->gram ? cols * cols : o->max_rows * cols);
        }
        buf = malloc(most * sizeof(float));
        if (!buf)
                return -ENOMEM;
        for (uint32_t l = 0; l < w->hp.n_layer; l++) {
                /* the read-back takes seconds on large models: a cancel is honoured per layer */
                if (o->q && o->q->progress && (r = o->q->progress(o->q->userdata, 0.3)) < 0)
                        return r;
                for (int i = 0; i < _QD_EVAL_SITE_MAX; i++) {
                        size_t cols = llama_vk_capture_cols(cap, sites[i]), n;
                        if (o->gram) {
                                r = llama_vk_capture_gram(cap, l, sites[i], buf);
                                n = llama_vk_capture_tokens(cap);
                        } else
                                r = llama_vk_capture_rows(cap, l, sites[i], buf, &n);
                        if (r < 0 || (r = deliver(userdata, l, i, buf, n, cols)) < 0)
                                return r;
                }
        }
        return 0;
}
