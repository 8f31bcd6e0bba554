/* Hyperparameters and weight tensors of llama/qwen2 GGUF files, named and shaped as llama.cpp
 * writes them, checked against each other before any forward pass uses them. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "macro.h"
#include "model-llama.h"

#define fail(ret_error, ...) error_set((ret_error), -EBADMSG, __VA_ARGS__)

static int get_u32(const Gguf *g, const char *arch, const char *key, uint32_t *ret) {
        char k[128];
        snprintf(k, sizeof(k), "%s.%s", arch, key);
        return gguf_get_u32(g, k, ret);
}

static int get_f32(const Gguf *g, const char *arch, const char *key, float *ret) {
        char k[128];
        snprintf(k, sizeof(k), "%s.%s", arch, key);
        return gguf_get_f32(g, k, ret);
}

static int tensor(const Gguf *g, const char *name, uint64_t ne0, uint64_t ne1, bool optional,
                  LlamaTensor *ret, char **ret_error) {
        const GgufTensor *t = gguf_find_tensor(g, name);
        size_t rb;

        if (!t) {
                if (optional) {
                        *ret = (LlamaTensor) {};
                        return 0;
                }
                return fail(ret_error, "tensor '%s' is missing", name);
        }
        if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
                return fail(ret_error, "tensor '%s' has shape [%" PRIu64 ", %" PRIu64 "], expected [%" PRIu64 ", %" PRIu64 "]",
                            name, t->ne[0], t->ne[1], ne0, ne1);
        if (ggml_row_size(t->type, ne0, &rb) < 0 || (uint64_t) rb * ne1 > t->size)
                return fail(ret_error, "tensor '%s' has a bad size for type %s", name,
                            ggml_type_name(t->type));
        *ret = (LlamaTensor) {
                .type = t->type,
                .ne0 = ne0,
                .ne1 = ne1,
                .data = t->data,
                .row_bytes = rb,
        };
        return 0;
}

void llama_weights_done(LlamaWeights *w) {
        if (!w)
                return;
        free(w->hp.rope_factors);
        free(w->layers);
        *w = (LlamaWeights) {};
}

static int rope_factors(const Gguf *g, LlamaHParams *hp, char **ret_error) {
        const GgufTensor *t = gguf_find_tensor(g, "rope_freqs.weight");
        const char *type = NULL;
        char k[128];
        uint32_t half = hp->n_rot / 2;

        hp->rope_freq_scale = 1.0f;
        if (t) {
                if (t->type != GGML_TYPE_F32 || t->n_elements != half)
                        return fail(ret_error, "tensor 'rope_freqs.weight' must be %u f32 values", half);
                hp->rope_factors = malloc(half * sizeof(float));
                if (!hp->rope_factors)
                        return -ENOMEM;
                memcpy(hp->rope_factors, t->data, half * sizeof(float));
                return 0;
        }

        snprintf(k, sizeof(k), "%s.rope.scaling.type", hp->arch);
        if (gguf_get_string(g, k, &type, NULL) < 0 || streq(type, "none"))
                return 0;

        float factor = 1.0f;
        (void) get_f32(g, hp->arch, "rope.scaling.factor", &factor);
        if (!(factor > 0))
                return fail(ret_error, "bad rope.scaling.factor");
        if (streq(type, "linear")) {
                hp->rope_freq_scale = 1.0f / factor;
                return 0;
        }
        if (!streq(type, "llama3"))
                return -EOPNOTSUPP; /* yarn etc. */

        /* As the Llama 3.1 converter computes rope_freqs when it is not stored. */
        float lo = 1.0f, hi = 4.0f;
        uint32_t orig = 8192;
        (void) get_f32(g, hp->arch, "rope.scaling.low_freq_factor", &lo);
        (void) get_f32(g, hp->arch, "rope.scaling.high_freq_factor", &hi);
        (void) get_u32(g, hp->arch, "rope.scaling.original_context_length", &orig);
        hp->rope_factors = malloc(half * sizeof(float));
        if (!hp->rope_factors)
                return -ENOMEM;
        float lo_wl = orig / lo, hi_wl = orig / hi;
        for (uint32_t i = 0; i < half; i++) {
                float freq = powf(hp->rope_base, -2.0f * i / hp->n_rot);
                float wl = 2.0f * (float) M_PI / freq;
                if (wl < hi_wl)
                        hp->rope_factors[i] = 1.0f;
                else if (wl > lo_wl)
                        hp->rope_factors[i] = factor;
                else {
                        float smooth = (orig / wl - lo) / (hi - lo);
                        hp->rope_factors[i] = 1.0f / ((1 - smooth) / factor + smooth);
                }
        }
        return 0;
}

int llama_weights_load(const Gguf *g, LlamaWeights *ret, char **ret_error) {
        LlamaWeights w = {};
        LlamaHParams *hp = &w.hp;
        const char *arch = NULL;
        const GgufTensor *te;
        uint32_t key_len = 0;
        int r;

        if (gguf_get_string(g, "general.architecture", &arch, NULL) < 0)
                return fail(ret_error, "general.architecture is missing");
        if (!streq(arch, "llama") && !streq(arch, "qwen2"))
                return -EOPNOTSUPP;
        snprintf(hp->arch, sizeof(hp->arch), "%s", arch);
        hp->neox = streq(arch, "qwen2");

        if (get_u32(g, arch, "embedding_length", &hp->n_embd) < 0 ||
            get_u32(g, arch, "block_count", &hp->n_layer) < 0 ||
            get_u32(g, arch, "feed_forward_length", &hp->n_ff) < 0 ||
            get_u32(g, arch, "attention.head_count", &hp->n_head) < 0)
                return fail(ret_error, "%s hyperparameters are missing", arch);
        hp->n_head_kv = hp->n_head;
        (void) get_u32(g, arch, "attention.head_count_kv", &hp->n_head_kv);
        hp->n_ctx_train = 2048;
        (void) get_u32(g, arch, "context_length", &hp->n_ctx_train);
        hp->eps = 1e-5f;
        (void) get_f32(g, arch, "attention.layer_norm_rms_epsilon", &hp->eps);
        hp->rope_base = 10000.0f;
        (void) get_f32(g, arch, "rope.freq_base", &hp->rope_base);

        if (hp->n_embd == 0 || hp->n_layer == 0 || hp->n_ff == 0 || hp->n_head == 0 ||
            hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv != 0 || hp->n_embd % hp->n_head != 0 ||
            hp->n_layer > 4096 || hp->n_embd > 1u << 20 || hp->n_ff > 1u << 22 || hp->n_head > 4096 ||
            !(hp->eps > 0) || !(hp->rope_base > 0))
                return fail(ret_error, "inconsistent %s hyperparameters", arch);
        hp->head_dim = hp->n_embd / hp->n_head;
        if (get_u32(g, arch, "attention.key_length", &key_len) >= 0 && key_len != hp->head_dim)
                return fail(ret_error, "attention.key_length %u differs from embedding/heads", key_len);
        hp->n_rot = hp->head_dim;
        (void) get_u32(g, arch, "rope.dimension_count", &hp->n_rot);
        if (hp->n_rot == 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0 || hp->head_dim % 2 != 0)
                return fail(ret_error, "bad rope.dimension_count %u", hp->n_rot);

        te = gguf_find_tensor(g, "token_embd.weight");
        if (!te)
                return fail(ret_error, "tensor 'token_embd.weight' is missing");
        hp->n_vocab = te->ne[1];
        if (hp->n_vocab == 0 || te->ne[1] > INT32_MAX)
                return fail(ret_error, "bad vocabulary size");

        r = rope_factors(g, hp, ret_error);
        if (r < 0)
                goto fail;

        uint32_t E = hp->n_embd, nq = hp->n_head * hp->head_dim, nkv = hp->n_head_kv * hp->head_dim;
        uint32_t F = hp->n_ff;
        bool bias = streq(arch, "qwen2");

        if ((r = tensor(g, "token_embd.weight", E, hp->n_vocab, false, &w.token_embd, ret_error)) < 0 ||
            (r = tensor(g, "output_norm.weight", E, 1, false, &w.output_norm, ret_error)) < 0 ||
            (r = tensor(g, "output.weight", E, hp->n_vocab, true, &w.output, ret_error)) < 0)
                goto fail;
        if (!w.output.data)
                w.output = w.token_embd; /* tied embeddings */

        w.layers = calloc(hp->n_layer, sizeof(LlamaLayer));
        if (!w.layers) {
                r = -ENOMEM;
                goto fail;
        }
        for (uint32_t l = 0; l < hp->n_layer; l++) {
                LlamaLayer *L = &w.layers[l];
                struct {
                        const char *n;
                        uint64_t ne0, ne1;
                        bool opt;
                        LlamaTensor *t;
                } list[] = {
                        { "attn_norm.weight", E, 1, false, &L->attn_norm },
                        { "attn_q.weight", E, nq, false, &L->wq },
                        { "attn_k.weight", E, nkv, false, &L->wk },
                        { "attn_v.weight", E, nkv, false, &L->wv },
                        { "attn_output.weight", nq, E, false, &L->wo },
                        { "attn_q.bias", nq, 1, !bias, &L->bq },
                        { "attn_k.bias", nkv, 1, !bias, &L->bk },
                        { "attn_v.bias", nkv, 1, !bias, &L->bv },
                        { "ffn_norm.weight", E, 1, false, &L->ffn_norm },
                        { "ffn_gate.weight", E, F, false, &L->gate },
                        { "ffn_up.weight", E, F, false, &L->up },
                        { "ffn_down.weight", F, E, false, &L->down },
                };
                for (size_t i = 0; i < ELEMENTSOF(list); i++) {
                        char name[96];
                        snprintf(name, sizeof(name), "blk.%u.%s", l, list[i].n);
                        r = tensor(g, name, list[i].ne0, list[i].ne1, list[i].opt, list[i].t, ret_error);
                        if (r < 0)
                                goto fail;
                }
                if (L->bq.data || L->bk.data || L->bv.data)
                        hp->qkv_bias = true;
        }

        /* Parameter count and the most common weight type (by elements). */
        uint64_t by_type[_GGML_TYPE_MAX] = {};
        for (size_t i = 0; i < gguf_n_tensors(g); i++) {
                const GgufTensor *t = gguf_tensor(g, i);
                w.n_params += t->n_elements;
                if (t->n_dims >= 2 && t->type < _GGML_TYPE_MAX)
                        by_type[t->type] += t->n_elements;
                if (t->n_dims >= 2 && (t->type == GGML_TYPE_Q4_K || t->type == GGML_TYPE_Q5_K ||
                                       t->type == GGML_TYPE_Q6_K))
                        w.kquant_mix = true;
        }
        for (uint32_t t = 0; t < _GGML_TYPE_MAX; t++)
                if (by_type[t] > by_type[w.file_type])
                        w.file_type = t;

        *ret = w;
        return 0;
fail:
        llama_weights_done(&w);
        return r;
}

int llama_tensor_row(const LlamaTensor *t, uint64_t row, float *dst) {
        if (row >= t->ne1)
                return -EINVAL;
        return ggml_dequantize_row(t->type, (const uint8_t *) t->data + row * t->row_bytes, dst, t->ne0);
}

int llama_tensor_vector(const LlamaTensor *t, float *dst, uint64_t n) {
        if (!t->data || t->ne0 * t->ne1 != n || t->ne1 != 1)
                return -EINVAL;
        return ggml_dequantize_row(t->type, t->data, dst, n);
}
