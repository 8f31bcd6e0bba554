/* The plain-C f32 reference forward pass of llama/qwen2 with a KV cache: the tests' oracle and
 * the engine's path when it runs without Vulkan. Weights are dequantized row by row. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "model-llama.h"

struct LlamaCpu {
        const LlamaWeights *w;
        uint32_t n_ctx, len;
        float *k_cache, *v_cache; /* [layer][n_ctx][n_head_kv * head_dim] */
};

LlamaCpu *llama_cpu_free(LlamaCpu *c) {
        if (!c)
                return NULL;
        free(c->k_cache);
        free(c->v_cache);
        return mfree(c);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(LlamaCpu *, llama_cpu_free);

int llama_cpu_new(const LlamaWeights *w, uint32_t n_ctx, LlamaCpu **ret) {
        _cleanup_(llama_cpu_freep) LlamaCpu *c = NULL;
        const LlamaHParams *hp = &w->hp;
        size_t n;

        if (n_ctx == 0)
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->w = w;
        c->n_ctx = n_ctx;
        n = (size_t) hp->n_layer * n_ctx * hp->n_head_kv * hp->head_dim;
        c->k_cache = calloc(n, sizeof(float));
        c->v_cache = calloc(n, sizeof(float));
        if (!c->k_cache || !c->v_cache)
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

uint32_t llama_cpu_length(LlamaCpu *c) {
        return c->len;
}

/* out[j][r] = sum_i W[r][i] * in[j][i] for n vectors. */
static int matmul(const LlamaTensor *t, const float *in, size_t n, float *out) {
        _cleanup_free_ float *row = malloc(t->ne0 * sizeof(float));
        if (!row)
                return -ENOMEM;
        for (uint64_t r = 0; r < t->ne1; r++) {
                int q = llama_tensor_row(t, r, row);
                if (q < 0)
                        return q;
                for (size_t j = 0; j < n; j++) {
                        const float *x = in + j * t->ne0;
                        float s = 0;
                        for (uint64_t i = 0; i < t->ne0; i++)
                                s += row[i] * x[i];
                        out[j * t->ne1 + r] = s;
                }
        }
        return 0;
}

static int add_bias(const LlamaTensor *b, float *x, size_t n, uint64_t m) {
        _cleanup_free_ float *v = NULL;
        int r;

        if (!b->data)
                return 0;
        v = malloc(m * sizeof(float));
        if (!v)
                return -ENOMEM;
        r = llama_tensor_vector(b, v, m);
        if (r < 0)
                return r;
        for (size_t j = 0; j < n; j++)
                for (uint64_t i = 0; i < m; i++)
                        x[j * m + i] += v[i];
        return 0;
}

void llama_rmsnorm_rows(const float *g, const float *x, float *out, size_t n, uint32_t d,
                        float eps) {
        for (size_t j = 0; j < n; j++) {
                double ss = 0;
                for (uint32_t i = 0; i < d; i++)
                        ss += (double) x[j * d + i] * x[j * d + i];
                float scale = 1.0f / sqrtf((float) (ss / d) + eps);
                for (uint32_t i = 0; i < d; i++)
                        out[j * d + i] = x[j * d + i] * scale * g[i];
        }
}

static int rmsnorm(const LlamaTensor *wt, const float *x, float *out, size_t n, uint32_t d,
                   float eps) {
        _cleanup_free_ float *g = malloc(d * sizeof(float));
        int r;

        if (!g)
                return -ENOMEM;
        r = llama_tensor_vector(wt, g, d);
        if (r < 0)
                return r;
        llama_rmsnorm_rows(g, x, out, n, d, eps);
        return 0;
}

/* Rotates each head of v (n_heads heads of head_dim) at position pos, as llama.cpp's rope. */
void llama_rope(const LlamaHParams *hp, float *v, uint32_t n_heads, uint32_t pos) {
        uint32_t nr = hp->n_rot;

        for (uint32_t i = 0; i < nr / 2; i++) {
                float theta = (float) pos * hp->rope_freq_scale *
                              powf(hp->rope_base, -2.0f * (float) i / (float) nr);
                if (hp->rope_factors)
                        theta /= hp->rope_factors[i];
                float c = cosf(theta), s = sinf(theta);
                for (uint32_t h = 0; h < n_heads; h++) {
                        float *x = v + (size_t) h * hp->head_dim;
                        uint32_t a = hp->neox ? i : 2 * i, b = hp->neox ? i + nr / 2 : 2 * i + 1;
                        float x0 = x[a], x1 = x[b];
                        x[a] = x0 * c - x1 * s;
                        x[b] = x0 * s + x1 * c;
                }
        }
}

int llama_cpu_eval(LlamaCpu *c, const int32_t *tokens, size_t n, float *logits, float *all_logits) {
        const LlamaWeights *w = c->w;
        const LlamaHParams *hp = &w->hp;
        uint32_t E = hp->n_embd, hd = hp->head_dim, nq = hp->n_head * hd, nkv = hp->n_head_kv * hd;
        uint32_t F = hp->n_ff, grp = hp->n_head / hp->n_head_kv;
        _cleanup_free_ float *x = NULL, *xb = NULL, *q = NULL, *k = NULL, *v = NULL, *att = NULL,
                             *o = NULL, *g = NULL, *u = NULL, *sc = NULL;
        int r;

        if (n == 0)
                return -EINVAL;
        if (n > c->n_ctx - c->len)
                return -ENOSPC;
        for (size_t j = 0; j < n; j++)
                if (tokens[j] < 0 || (uint32_t) tokens[j] >= hp->n_vocab)
                        return -EINVAL;

        x = malloc(n * E * sizeof(float));
        xb = malloc(n * E * sizeof(float));
        q = malloc(n * nq * sizeof(float));
        k = malloc(n * nkv * sizeof(float));
        v = malloc(n * nkv * sizeof(float));
        att = malloc(n * nq * sizeof(float));
        o = malloc(n * E * sizeof(float));
        g = malloc(n * F * sizeof(float));
        u = malloc(n * F * sizeof(float));
        sc = malloc(c->n_ctx * sizeof(float));
        if (!x || !xb || !q || !k || !v || !att || !o || !g || !u || !sc)
                return -ENOMEM;

        for (size_t j = 0; j < n; j++) {
                r = llama_tensor_row(&w->token_embd, tokens[j], x + j * E);
                if (r < 0)
                        return r;
        }

        for (uint32_t l = 0; l < hp->n_layer; l++) {
                const LlamaLayer *L = &w->layers[l];
                float *kc = c->k_cache + (size_t) l * c->n_ctx * nkv;
                float *vc = c->v_cache + (size_t) l * c->n_ctx * nkv;

                r = rmsnorm(&L->attn_norm, x, xb, n, E, hp->eps);
                if (r < 0)
                        return r;
                if ((r = matmul(&L->wq, xb, n, q)) < 0 || (r = matmul(&L->wk, xb, n, k)) < 0 ||
                    (r = matmul(&L->wv, xb, n, v)) < 0)
                        return r;
                if ((r = add_bias(&L->bq, q, n, nq)) < 0 || (r = add_bias(&L->bk, k, n, nkv)) < 0 ||
                    (r = add_bias(&L->bv, v, n, nkv)) < 0)
                        return r;
                for (size_t j = 0; j < n; j++) {
                        uint32_t pos = c->len + j;
                        llama_rope(hp, q + j * nq, hp->n_head, pos);
                        llama_rope(hp, k + j * nkv, hp->n_head_kv, pos);
                        memcpy(kc + (size_t) pos * nkv, k + j * nkv, nkv * sizeof(float));
                        memcpy(vc + (size_t) pos * nkv, v + j * nkv, nkv * sizeof(float));
                }
                float scale = 1.0f / sqrtf((float) hd);
                for (size_t j = 0; j < n; j++) {
                        uint32_t n_kv = c->len + j + 1; /* causal: keys up to this position */
                        for (uint32_t h = 0; h < hp->n_head; h++) {
                                const float *qh = q + j * nq + (size_t) h * hd;
                                uint32_t kh = h / grp;
                                float mx = -INFINITY, sum = 0;
                                for (uint32_t t = 0; t < n_kv; t++) {
                                        const float *kt = kc + (size_t) t * nkv + (size_t) kh * hd;
                                        float s = 0;
                                        for (uint32_t i = 0; i < hd; i++)
                                                s += qh[i] * kt[i];
                                        sc[t] = s * scale;
                                        mx = MAX(mx, sc[t]);
                                }
                                for (uint32_t t = 0; t < n_kv; t++) {
                                        sc[t] = expf(sc[t] - mx);
                                        sum += sc[t];
                                }
                                float *out = att + j * nq + (size_t) h * hd;
                                for (uint32_t i = 0; i < hd; i++)
                                        out[i] = 0;
                                for (uint32_t t = 0; t < n_kv; t++) {
                                        const float *vt = vc + (size_t) t * nkv + (size_t) kh * hd;
                                        float p = sc[t] / sum;
                                        for (uint32_t i = 0; i < hd; i++)
                                                out[i] += p * vt[i];
                                }
                        }
                }
                if ((r = matmul(&L->wo, att, n, o)) < 0)
                        return r;
                for (size_t i = 0; i < n * E; i++)
                        x[i] += o[i];

                r = rmsnorm(&L->ffn_norm, x, xb, n, E, hp->eps);
                if (r < 0)
                        return r;
                if ((r = matmul(&L->gate, xb, n, g)) < 0 || (r = matmul(&L->up, xb, n, u)) < 0)
                        return r;
                for (size_t i = 0; i < n * F; i++)
                        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
                if ((r = matmul(&L->down, g, n, o)) < 0)
                        return r;
                for (size_t i = 0; i < n * E; i++)
                        x[i] += o[i];
        }

        r = rmsnorm(&w->output_norm, x, xb, n, E, hp->eps);
        if (r < 0)
                return r;
        if (all_logits)
                r = matmul(&w->output, xb, n, all_logits);
        else
                r = matmul(&w->output, xb + (n - 1) * E, 1, logits);
        if (r < 0)
                return r;
        if (all_logits && logits)
                memcpy(logits, all_logits + (n - 1) * hp->n_vocab, hp->n_vocab * sizeof(float));
        c->len += n;
        return 0;
}
