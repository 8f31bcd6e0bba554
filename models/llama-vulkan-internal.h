/* Internal to the Vulkan forward pass (llama-vulkan*.c): device state of a model and of a
 * sequence, shared by the single-sequence path and the batched decode. */
#pragma once

#include <pthread.h>

#include "model-llama.h"

#define ALIGN 256u /* buffer offsets: the largest minStorageBufferOffsetAlignment Vulkan allows */
#define BATCH_MAX 64u /* columns of one batched decode submission */

typedef struct VkTensor {
        QvkWeightType wt;
        uint64_t off, bytes;
        uint32_t m, k;
        /* Its own allocations (off 0), where the layer's weights exceed maxMemoryAllocationSize;
         * else n_parts is 0 and the tensor lies at off in the layer's buffer. */
        QvkSplit own;
        /* n_seg > 0: products through qvk_matmul_blocks(), W as row blocks: n_seg > 1 where
         * the rows are stored as they are in different block formats (a fused Q/K/V of a Q4_K_M
         * file: Q4_K and Q6_K rows; wt is then the first block's), block i of n_t tensors at
         * off + seg[i].off; n_seg = 1 for a K-quant mix's Q8_0 (fp32 activations, no int-dot).
         * Never with own allocations. */
        uint32_t n_seg;
        struct {
                QvkWeightType wt;
                uint32_t m, n_t;
                uint64_t off;
        } seg[3];
} VkTensor;

/* Q/K/V and gate/up are fused: their rows follow each other in one format, so that one matrix
 * product computes them (fewer dispatches per token). */
typedef struct VkLayerW {
        VkTensor qkv, wo, gu, down;
} VkLayerW;

typedef struct Variant {
        QvkBuffer **bufs; /* one per layer, the last for the output head */
        VkLayerW *layers;
        VkTensor output;
        uint64_t bytes;
} Variant;

/* The batched decode of several sequences (one token each): activations of up to cap columns
 * and the recording for the last set of sequences. */
typedef struct Batch {
        uint32_t cap;
        QvkBuffer *x, *xb, *qkv, *q, *att, *o, *gu, *g, *logits, *scratch, *tokens;
        QvkCmd *cmd;
        uint64_t gen; /* weights generation of the recording; UINT64_MAX: none */
        uint32_t n;   /* its columns and their sequences */
        uint64_t ids[BATCH_MAX];
} Batch;

struct LlamaVk {
        QvkDevice *d;
        const LlamaWeights *w;
        bool kv_f16;
        QvkSplit table;    /* token embeddings, f16 (f32 without 16-bit storage) */
        QvkBuffer *common; /* norms, biases, rope angles: f32 */
        uint64_t off_out_norm, off_freq, *off_attn_norm, *off_ffn_norm, *off_bias;
        uint64_t common_bytes, table_bytes;
        /* var[] may gain an entry from a preparing thread (llama_vk_prepare): lock guards every
         * change of var[] and every read of an entry other than var[cur]; var[cur] and cur
         * change only on the stepping thread, which reads them without the lock. */
        pthread_mutex_t lock;
        Variant var[_QD_PRECISION_MAX];
        QdPrecision cur;
        uint64_t generation;
        uint64_t next_seq_id;
        Batch batch;
        QvkPipeline *p_get_rows, *p_norm, *p_add_norm, *p_silu, *p_rope, *p_argmax;
        /* the same ops writing int8 blocks for the int-dot decode (NULL where not used) */
        QvkPipeline *p_norm_q8, *p_add_norm_q8, *p_silu_q8;
        QvkPipeline *p_norm_wide, *p_add_norm_wide; /* one row over many workgroups (decode) */
        QvkPipeline *p_attn_dec, *p_attn_dec_rope, *p_attn_dec_rope_q8; /* decode attention, one dispatch */
        /* decode: SiLU·up and the residual add + RMSNorm folded into the matrix-vector products
         * before them (qvk_matvec_epi): LLAMA_VK_FUSE_* bits, $QUANTD_VK_FUSION */
        unsigned fusion;
        bool no_runahead; /* llama_vk_seq_set_runahead() has no effect ($QUANTD_VK_RUNAHEAD, CPU devices) */
};

struct LlamaVkSeq {
        LlamaVk *v;
        uint64_t id; /* unique in v: names the sequence in the batch recording */
        uint32_t n_ctx, len, ubatch;
        uint64_t kv_stride; /* bytes of one layer's K (or V) cache */
        QvkBuffer *kc, *vc, *x, *x2, *xb, *qkv, *q, *att, *o, *gu, *g, *xlast, *logits, *scratch;
        QvkBuffer *tokens, *params, *result, *part;
        QvkBuffer *cnt; /* per query head: finished splits of the decode attention */
        /* fused decode epilogues: int8 blocks written by a product whose own input is in
         * scratch, and the epilogues' counters (per block of 32 of n_ff; one for the norms) */
        QvkBuffer *xq2, *cnt_glu, *cnt_norm;
        QvkBuffer *blk_ss;  /* blk epilogues: sums of squares per block of 32 of the residual */
        uint32_t kps, n_split; /* decode attention: keys per split, splits */
        /* The decode step in two parities (greedy run-ahead, llama-vulkan-runahead.c): each its
         * own recording, position, logits and argmax; parity p reads its token from the argmax
         * of parity 1-p (written there by the host unless the step runs ahead). Parity 0's
         * are params, logits and result above, which prompts and the batched decode use. */
        QvkCmd *cmd_dec[2], *cmd_prefill;
        uint64_t gen_dec[2], gen_prefill;
        QvkBuffer *params1, *logits1, *result1;
        bool runahead;       /* llama_vk_seq_set_runahead() */
        int spec;            /* parity of the step queued ahead of the caller, -1: none */
        uint32_t spec_pos;   /* its position; its token is the argmax of the step before */
        int32_t spec_token;
        uint32_t last;       /* parity whose logits and argmax are the last token's */
        uint32_t prefill_n;
        struct LlamaVkCapture *capture; /* calibration hooks in the prefill (llama-vulkan-capture.c) */
        bool profile;      /* timestamps around the ops of the first layer */
        uint32_t n_stamps;
};

#define B(b_, o_, s_) ((QvkBinding) { .buf = (b_), .offset = (o_), .size = (s_) })

/* The attention of sequence s's newest token at layer l (attention-decode.comp, one dispatch):
 * query q (n_head * head_dim f32, rotated) to att. rope: q is the token's Q/K/V projection
 * instead, rotated (and K, V stored into the cache) in the same dispatch, rope.comp not run;
 * q8 (with rope only): also att's int8 blocks into s->scratch. */
int llama_vk_attn_decode(QvkCmd *c, LlamaVkSeq *s, uint32_t l, QvkBinding q, QvkBinding att, bool rope,
                         bool q8);

/* Y = W·X over n columns of the activations x (see qvk_matmul), W the device matrix t in wbuf. */
int llama_vk_mm(QvkCmd *c, QvkBuffer *scratch, QvkBuffer *wbuf, const VkTensor *t, QvkBuffer *x,
                QvkBuffer *y, uint32_t n);
/* x[j] = embedding of tokens[j] for n tokens, over every part and range-sized chunk of the table. */
int llama_vk_get_rows(QvkCmd *c, LlamaVk *v, QvkBuffer *tokens, uint32_t n, QvkBuffer *x);
/* Prompt attention (llama-vulkan-attn.c): queries q (n tokens x n_head x head_dim, fp32),
 * the layer's K and V caches (n_head_kv x head_dim per position, fp16 or fp32 per kv_f16),
 * params (uint32 pos0, n_tokens: the first token's position), out like q; part: scratch of
 * the plain kernel, unused with one split. Token t attends to positions 0 .. pos0 + t. */
typedef struct LlamaVkAttn {
        QvkBinding q, kc, vc, out, params, part;
        uint32_t n_head, n_head_kv, head_dim, n, n_ctx;
        bool kv_f16;
} LlamaVkAttn;
/* Whether the prompt attention takes the flash (cooperative-matrix) kernel on d. */
bool llama_vk_attn_prompt_flash(QvkDevice *d, uint32_t head_dim, bool kv_f16);
int llama_vk_attn_prompt_record(QvkCmd *c, const LlamaVkAttn *a);
/* The same for layer l of sequence s, n tokens (record()'s prompt path). */
int llama_vk_attn_prompt(QvkCmd *c, LlamaVkSeq *s, uint32_t l, uint32_t n);
/* Records the step of n tokens of s into c (binding s->tokens, params, logits and result). */
int llama_vk_seq_record(LlamaVkSeq *s, QvkCmd *c, uint32_t n);
/* Evaluates token at position s->len (the decode step, llama-vulkan-runahead.c); ahead: queue
 * the step after it on its argmax when run-ahead is on. */
int llama_vk_seq_decode(LlamaVkSeq *s, int32_t token, bool ahead);
/* Parity p's params, logits and argmax buffers of the decode step. */
QvkBuffer *llama_vk_seq_io(LlamaVkSeq *s, uint32_t p, QvkBuffer **ret_logits, QvkBuffer **ret_result);
/* Waits for a step queued ahead (run-ahead) and discards it, so that the host may write the
 * sequence's buffers (its KV entry past len is overwritten by the next step). */
int llama_vk_seq_settle(LlamaVkSeq *s);
/* Frees the batch's buffers (not its recording); the recording must be made again. */
void llama_vk_batch_done(Batch *b);
