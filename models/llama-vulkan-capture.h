/* Calibration statistics from the Vulkan prompt pass (llama-vulkan-capture.c): while a capture is
 * attached to a sequence, its prefill recordings also accumulate, at every site of every layer
 * (LlamaSite), the Gram matrix XᵀX of the linear layer's inputs (GPTQ) and/or keep the rows of
 * every stride-th token (AWQ), on the device; they are read back at the end. */
#pragma once

#include "macro.h"
#include "model-llama.h"

typedef struct LlamaVkCapture LlamaVkCapture;

/* gram: Gram matrices (f32 sums, cols² floats per site and layer on the device); max_rows > 0:
 * up to max_rows rows of tokens stride, 2·stride, ... of the calibration stream (token 0 first). */
int llama_vk_capture_new(LlamaVk *v, bool gram, uint32_t max_rows, uint32_t stride, LlamaVkCapture **ret);
LlamaVkCapture *llama_vk_capture_free(LlamaVkCapture *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(LlamaVkCapture *, llama_vk_capture_free);
/* Columns of a site's inputs. */
uint32_t llama_vk_capture_cols(const LlamaVkCapture *c, LlamaSite site);
/* Evaluates one window of n tokens from position 0 of s (its previous content is dropped), the
 * window's first token being token first of the calibration stream; s stays attached to c.
 * -EINVAL where a submission would hold a single token (n % 512 == 1): that one runs the decode
 * path, which has no capture. */
int llama_vk_capture_window(LlamaVkSeq *s, LlamaVkCapture *c, const int32_t *tokens, size_t n, uint64_t first);
/* Tokens seen so far (the N of the Gram matrices). */
uint64_t llama_vk_capture_tokens(const LlamaVkCapture *c);
/* The Gram matrix of (layer, site): cols × cols floats, of which the upper triangle is set (the
 * kernel skips the tiles below the diagonal). */
int llama_vk_capture_gram(LlamaVkCapture *c, uint32_t layer, LlamaSite site, float *ret);
/* The kept rows of (layer, site): up to max_rows × cols floats; ret_n gets their number. */
int llama_vk_capture_rows(LlamaVkCapture *c, uint32_t layer, LlamaSite site, float *ret, size_t *ret_n);

/* The hook in record(): the captures of (layer, site) over the n rows of x in this recording. */
int llama_vk_capture_record(QvkCmd *cmd, LlamaVkSeq *s, uint32_t layer, LlamaSite site, QvkBuffer *x, uint32_t n);
