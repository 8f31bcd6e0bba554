/* Internal: Llama-family transformer (llama, qwen2) hyperparameters, weights as views into the
 * GGUF file, the CPU reference forward pass and the Vulkan forward pass. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "gguf.h"
#include "vk.h"
#include "macro.h"

typedef struct LlamaHParams {
        char arch[32];
        uint32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, n_ff;
        uint32_t head_dim, n_rot;
        float eps, rope_base, rope_freq_scale;
        bool neox;          /* qwen2: rotate halves; llama: adjacent pairs */
        bool qkv_bias;
        float *rope_factors; /* n_rot/2 divisors of the frequency (llama3 scaling), or NULL */
} LlamaHParams;

/* A weight matrix or vector: rows of ne0 values, ne1 rows, in a GGUF (ggml) type. */
typedef struct LlamaTensor {
        uint32_t type;      /* ggml type id */
        uint64_t ne0, ne1;
        const void *data;   /* into the mapped file */
        uint64_t row_bytes;
} LlamaTensor;

typedef struct LlamaLayer {
        LlamaTensor attn_norm, wq, wk, wv, wo, bq, bk, bv, ffn_norm, gate, up, down;
} LlamaLayer;

typedef struct LlamaWeights {
        LlamaHParams hp;
        LlamaTensor token_embd, output_norm, output; /* output may alias token_embd (tied) */
        LlamaLayer *layers;
        uint64_t n_params;
        uint32_t file_type;  /* ggml type of most weights */
        /* Some weight is a K-quant (Q4_K/Q5_K/Q6_K): a mix such as llama.cpp's Q4_K_M, whose
         * block-format tensors every Vulkan variant keeps as stored (docs/QUANTIZATION.md). */
        bool kquant_mix;
} LlamaWeights;

/* Fills ret from the file's metadata and tensors (views into g, which must outlive ret);
 * -EBADMSG with *ret_error for a missing or inconsistent piece, -EOPNOTSUPP for another arch. */
int llama_weights_load(const Gguf *g, LlamaWeights *ret, char **ret_error);
void llama_weights_done(LlamaWeights *w);
/* Dequantizes one row to f32; n = ne0. */
int llama_tensor_row(const LlamaTensor *t, uint64_t row, float *dst);
/* Copies a whole 1-D tensor (norm weight, bias) to f32. */
int llama_tensor_vector(const LlamaTensor *t, float *dst, uint64_t n);

/* The f32 reference: state of one sequence (KV cache in f32). */
typedef struct LlamaCpu LlamaCpu;
int llama_cpu_new(const LlamaWeights *w, uint32_t n_ctx, LlamaCpu **ret);
LlamaCpu *llama_cpu_free(LlamaCpu *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(LlamaCpu *, llama_cpu_free);
/* Dequantizes every matrix to f32 once (4 bytes per weight), for evaluations over many windows;
 * the dot products then also use eight partial sums (the logits differ from the row-by-row
 * path's by float rounding only). */
int llama_cpu_dequantize(LlamaCpu *c);
/* Empties the sequence (the next token is at position 0), with room for n_ctx tokens. */
int llama_cpu_reset(LlamaCpu *c, uint32_t n_ctx);
/* Where the inputs of one layer's linear layers are taken (calibration of GPTQ/AWQ). */
typedef enum LlamaSite {
        LLAMA_SITE_ATTN_IN,  /* attn_norm(x): input of attn_q/k/v */
        LLAMA_SITE_ATTN_OUT, /* attention output: input of attn_output */
        LLAMA_SITE_FFN_IN,   /* ffn_norm(x): input of ffn_gate/up */
        LLAMA_SITE_FFN_DOWN, /* silu(gate)·up: input of ffn_down */
} LlamaSite;
/* Called during llama_cpu_eval() with the n rows (tokens) of cols floats at each site of each
 * layer; a negative return stops the evaluation and is returned. fn NULL: none. */
typedef int (*LlamaCaptureFn)(void *userdata, uint32_t layer, LlamaSite site, const float *x, size_t n,
                              size_t cols);
void llama_cpu_set_capture(LlamaCpu *c, LlamaCaptureFn fn, void *userdata);
/* Evaluates n tokens at positions len..len+n-1; logits of the last token into logits
 * (n_vocab floats), or of every token into all_logits (n*n_vocab) when not NULL. */
int llama_cpu_eval(LlamaCpu *c, const int32_t *tokens, size_t n, float *logits, float *all_logits);
uint32_t llama_cpu_length(LlamaCpu *c);

/* The Vulkan path. LlamaVk holds the per-model device state (weights of each precision
 * variant); LlamaVkSeq a sequence's KV cache and recordings. */
typedef struct LlamaVk LlamaVk;
typedef struct LlamaVkSeq LlamaVkSeq;

int llama_vk_new(QvkDevice *d, const LlamaWeights *w, LlamaVk **ret);
LlamaVk *llama_vk_free(LlamaVk *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(LlamaVk *, llama_vk_free);
uint64_t llama_vk_variant_bytes(LlamaVk *v, QdPrecision p);
/* Builds and uploads the variant for p without switching to it. Safe on another thread while
 * the stepping thread evaluates, switches or drops variants (see LlamaVk.lock). */
int llama_vk_prepare(LlamaVk *v, QdPrecision p);
bool llama_vk_has_variant(LlamaVk *v, QdPrecision p);
int llama_vk_set_precision(LlamaVk *v, QdPrecision p);
QdPrecision llama_vk_get_precision(LlamaVk *v);
int llama_vk_drop_variants(LlamaVk *v, bool keep_current_only);
uint64_t llama_vk_device_bytes(LlamaVk *v);

int llama_vk_seq_new(LlamaVk *v, uint32_t n_ctx, LlamaVkSeq **ret);
LlamaVkSeq *llama_vk_seq_free(LlamaVkSeq *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(LlamaVkSeq *, llama_vk_seq_free);
uint32_t llama_vk_seq_length(LlamaVkSeq *s);
/* Evaluates n tokens. When want_logits, the last token's logits are downloaded into logits;
 * always the greedy argmax and its log-probability are returned (ret_* may be NULL). */
/* Profiling (benchmark): timestamps around the ops of the first layer in the next recordings;
 * llama_vk_seq_profile() gives the names and the times (ns since start) of the last decode or
 * prefill submission; returns their number. */
void llama_vk_seq_set_profile(LlamaVkSeq *s, bool on);
int llama_vk_seq_profile(LlamaVkSeq *s, bool decode, const char *const **ret_names, double *ret_ns);
/* Dispatches and pipeline barriers of the last decode (decode) or prefill recording; -ENODATA
 * before the first. */
int llama_vk_seq_stats(LlamaVkSeq *s, bool decode, uint32_t *ret_dispatches, uint32_t *ret_barriers);
/* Which of the decode step's fused epilogues (qvk_matvec_epi) the next recordings use: SiLU·up
 * in the gate/up product, the residual add + RMSNorm in the wo and down products. Initially
 * LLAMA_VK_FUSE_BLK on GPUs and none on CPU devices; $QUANTD_VK_FUSION=0 none, =1 both counter
 * epilogues, =glu or =norm that one, =blk LLAMA_VK_FUSE_BLK. The benchmark's A/B in one run. */
enum {
        LLAMA_VK_FUSE_GLU = 1 << 0,
        LLAMA_VK_FUSE_NORM = 1 << 1,
        LLAMA_VK_FUSE_ALL = LLAMA_VK_FUSE_GLU | LLAMA_VK_FUSE_NORM,
        /* "blk" (qvk_matvec_blk): on repacked int-dot and F16 rows, workgroups of whole blocks
         * without counters, the RMSNorm's scale applied by the next product; where it does not
         * apply, the unfused ops (it takes precedence over the two above) */
        LLAMA_VK_FUSE_BLK = 1 << 2,
};
void llama_vk_set_fusion(LlamaVk *v, unsigned which);
/* Greedy run-ahead (off initially; $QUANTD_VK_RUNAHEAD=0 keeps it off): a single-token
 * llama_vk_seq_eval() without logits queues the next decode step on its own argmax before it
 * returns, so that the GPU runs it while the caller handles the result. Called next with that
 * argmax (greedy decoding), the step is not submitted again; with another token, or with a
 * prompt, a batched step or a precision switch in between, it is waited for and discarded
 * (results equal those without run-ahead). Free the sequence as usual: that waits for it. */
void llama_vk_seq_set_runahead(LlamaVkSeq *s, bool on);
/* Downloads the logits of the last evaluated token (n_vocab floats). */
int llama_vk_seq_logits(LlamaVkSeq *s, float *logits);
int llama_vk_seq_eval(LlamaVkSeq *s, const int32_t *tokens, size_t n, bool want_logits,
                      float *logits, int32_t *ret_argmax, float *ret_logprob);
/* Evaluates tokens[i] at the end of seqs[i] (distinct sequences of v) in one batched decode:
 * each linear layer reads its weights once for all n columns (in submissions of at most 64),
 * RoPE, the KV store and attention use each sequence's own cache and position. Afterwards
 * each sequence is as after llama_vk_seq_eval() of its token: llama_vk_seq_logits() gives its
 * logits; its greedy argmax and log-probability go to ret_argmax[i], ret_logprob[i] (may be
 * NULL). -ENOSPC when a sequence is full, -EINVAL for a bad token or a repeated sequence;
 * nothing is evaluated then. */
int llama_vk_batch_eval(LlamaVk *v, LlamaVkSeq *const *seqs, const int32_t *tokens, size_t n,
                        int32_t *ret_argmax, float *ret_logprob);
