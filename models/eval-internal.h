/* Internal to the whole-model quantization and evaluation (models/eval-*.c). */
#pragma once

#include "eval.h"
#include "model-llama.h"

const LlamaWeights *qd_eval_model_weights(const QdEvalModel *m);

/* Receives the statistics of one (layer, site) of the Vulkan calibration: a Gram matrix Σ x xᵀ
 * (cols × cols floats over n tokens, upper triangle only) or n kept rows of cols floats. */
typedef int (*QdCalibDeliverFn)(void *userdata, uint32_t layer, QdEvalSite site, const float *data, size_t n,
                                size_t cols);

typedef struct QdCalibVkOptions {
        const char *device;        /* qvk_device_new()'s select; NULL: $QUANTD_VK_DEVICE or the best */
        bool gram;                 /* Gram matrices (GPTQ) */
        size_t max_rows, stride;   /* rows of every stride-th token, up to max_rows (AWQ); 0: none */
        const QdQuantizeOptions *q; /* log, progress (0 .. 0.3 over the windows), userdata */
} QdCalibVkOptions;

/* The calibration forward on a Vulkan device (eval-calib-vk.c): the engine's F16 prompt pass over
 * n_tok tokens in windows of n_ctx (each from position 0), then every (layer, site) to deliver. */
int qd_eval_calib_vk(const QdEvalModel *m, const QdCalibVkOptions *o, const uint32_t *tok, size_t n_tok,
                     size_t n_ctx, QdCalibDeliverFn deliver, void *userdata, char **ret_error);
