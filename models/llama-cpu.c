/* The plain-C f32 reference forward pass of llama/qwen2 with a KV cache: the tests' oracle, the
 * engine's path when it runs without Vulkan, and the evaluation's forward (models/eval-model.c):
 * a whole window per call, weights dequantized row by row or once for all (llama_cpu_dequantize),
 * the inputs of the linear layers offered to a capture callback (calibration). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "model-llama.h"

/* f32 copies of a layer's matrices (llama_cpu_dequantize). */
typedef struct DenseLayer {
        float *wq, *wk, *wv, *wo, *gate, *up, *down;
} DenseLayer;

struct LlamaCpu {
        const LlamaWeights *w;
        uint32_t n_ctx, len;
        float *k_cache, *v_cache; /* [layer][n_ctx][n_head_kv * head_dim] */
        DenseLayer *dense;        /* NULL: rows dequantized as they are used */
        float *dense_output;
        LlamaCaptureFn capture;
        void *userdata;
};

static void dense_free(LlamaCpu *c) {
        for (uint32_t l = 0; c->dense && l < c->w->hp.n_layer; l++) {
                DenseLayer *d = &c->dense[l];
                float *all[] = { d->wq, d->wk, d->wv, d->wo, d->gate, d->up, d->down };
                for (size_t i = 0; i < ELEMENTSOF(all); i++)
                        free(all[i]);
        }
        c->dense = mfree(c->dense);
        c->dense_output = mfree(c->dense_output);
}

LlamaCpu *llama_cpu_free(LlamaCpu *c) {
        if (!c)
                return NULL;
        dense_free(c);
        free(c->k_cache);
        free(c->v_cache);
        return mfree(c);
}

static int kv_alloc(LlamaCpu *c, uint32_t n_ctx) {
        const LlamaHParams *hp = &c->w->hp;
        size_t n = (size_t) hp->n_layer * n_ctx * hp->n_head_kv * hp->head_dim;
        float *k = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));

        if (!k || !v) {
                free(k);
                free(v);
                return -ENOMEM;
        }
        free(c->k_cache);
        free(c->v_cache);
        c->k_cache = k;
        c->v_cache = v;
        c->n_ctx = n_ctx;
        return 0;
}

int llama_cpu_new(const LlamaWeights *w, uint32_t n_ctx, LlamaCpu **ret) {
        _cleanup_(llama_cpu_freep) LlamaCpu *c = NULL;
        int r;

        if (n_ctx == 0)
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->w = w;
        r = kv_alloc(c, n_ctx);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

int llama_cpu_reset(LlamaCpu *c, uint32_t n_ctx) {
        if (n_ctx == 0)
                return -EINVAL;
        c->len = 0;
        return n_ctx > c->n_ctx ? kv_alloc(c, n_ctx) : 0;
}

void llama_cpu_set_capture(LlamaCpu *c, LlamaCaptureFn fn, void *userdata) {
        c->capture = fn;
        c->userdata = userdata;
}

static int dequant(const LlamaTensor *t, float **ret) {
        float *d = malloc(t->ne0 * t->ne1 * sizeof(float));
        int r;

        if (!d)
                return -ENOMEM;
        for (uint64_t i = 0; i < t->ne1; i++) {
                r = llama_tensor_row(t, i, d + i * t->ne0);
                if (r < 0) {
                        free(d);
                        return r;
                }
        }
        *ret = d;
        return 0;
}

int llama_cpu_dequantize(LlamaCpu *c) {
        const LlamaWeights *w = c->w;
        int r;

        if (c->dense)
                return 0;
        c->dense = calloc(w->hp.n_layer, sizeof(DenseLayer));
        if (!c->dense)
                return -ENOMEM;
        for (uint32_t l = 0; l < w->hp.n_layer; l++) {
                const LlamaLayer *L = &w->layers[l];
                DenseLayer *d = &c->dense[l];
                if ((r = dequant(&L->wq, &d->wq)) < 0 || (r = dequant(&L->wk, &d->wk)) < 0 ||
                    (r = dequant(&L->wv, &d->wv)) < 0 || (r = dequant(&L->wo, &d->wo)) < 0 ||
                    (r = dequant(&L->gate, &d->gate)) < 0 || (r = dequant(&L->up, &d->up)) < 0 ||
                    (r = dequant(&L->down, &d->down)) < 0)
                        goto fail;
        }
        r = dequant(&w->output, &c->dense_output);
        if (r >= 0)
                return 0;
fail:
        dense_free(c);
        return r;
}

uint32_t llama_cpu_length(LlamaCpu *c) {
        return c->len;
}

/* W[r]·x with eight partial sums, so that the additions do not wait on one chain. */
static float dot(const float *w, const float *x, size_t cols) {
        float s[8] = {};
        size_t i = 0;

        for (; i + 8 <= cols; i += 8)
                for (size_t k = 0; k < 8; k++)
                        s[k] += w[i + k] * x[i + k];
        float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
        for (; i < cols; i++)
                t += w[i] * x[i];
        return t;
}

/* out[j][r] = W[r]·in[j] for n vectors; W from dense (f32) when not NULL, else each row
 * dequantized once for all n. The two keep the sums of their callers before they shared this
 * file (the engine's one chain, the evaluation's eight), so that neither's numbers moved. */
static int matmul(const LlamaTensor *t, const float *dense, const float *in, size_t n, float *out) {
        const size_t TJ = 32; /* tokens per tile: a dense row is reused from L1 */
        size_t rows = t->ne1, cols = t->ne0;

        if (dense) {
                for (size_t j0 = 0; j0 < n; j0 += TJ)
                        for (size_t r = 0; r < rows; r++)
                                for (size_t j = j0; j < MIN(n, j0 + TJ); j++)
                                        out[j * rows + r] = dot(dense + r * cols, in + j * cols, cols);
                return 0;
        }
        _cleanup_free_ float *row = malloc(cols * sizeof(float));
        if (!row)
                return -ENOMEM;
        for (size_t r = 0; r < rows; r++) {
                int q = llama_tensor_row(t, r, row);
                if (q < 0)
                        return q;
                for (size_t j = 0; j < n; j++) {
                        const float *x = in + j * cols;
                        float sum = 0;
                        for (size_t i = 0; i < cols; i++)
                                sum += row[i] * x[i];
                        out[j * rows + r] = sum;
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

static void rmsnorm_rows(const float *g, const float *x, float *out, size_t n, uint32_t d,
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
        rmsnorm_rows(g, x, out, n, d, eps);
        return 0;
}

/* Rotates each head of v (n_heads heads of head_dim) at position pos, as llama.cpp's rope. */
static void rope(const LlamaHParams *hp, float *v, uint32_t n_heads, uint32_t pos) {
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

#define CAPTURE(site, buf, cols)                                                                     \
        do {                                                                                         \
                if (c->capture && (r = c->capture(c->userdata, l, site, buf, n, cols)) < 0)          \
                        return r;                                                                    \
        } while (0)

        for (uint32_t l = 0; l < hp->n_layer; l++) {
                const LlamaLayer *L = &w->layers[l];
                const DenseLayer *D = c->dense ? &c->dense[l] : &(const DenseLayer) {};
                float *kc = c->k_cache + (size_t) l * c->n_ctx * nkv;
                float *vc = c->v_cache + (size_t) l * c->n_ctx * nkv;

                r = rmsnorm(&L->attn_norm, x, xb, n, E, hp->eps);
                if (r < 0)
                        return r;
                CAPTURE(LLAMA_SITE_ATTN_IN, xb, E);
                if ((r = matmul(&L->wq, D->wq, xb, n, q)) < 0 || (r = matmul(&L->wk, D->wk, xb, n, k)) < 0 ||
                    (r = matmul(&L->wv, D->wv, xb, n, v)) < 0)
                        return r;
                if ((r = add_bias(&L->bq, q, n, nq)) < 0 || (r = add_bias(&L->bk, k, n, nkv)) < 0 ||
                    (r = add_bias(&L->bv, v, n, nkv)) < 0)
                        return r;
                for (size_t j = 0; j < n; j++) {
                        uint32_t pos = c->len + j;
                        rope(hp, q + j * nq, hp->n_head, pos);
                        rope(hp, k + j * nkv, hp->n_head_kv, pos);
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
                CAPTURE(LLAMA_SITE_ATTN_OUT, att, nq);
                if ((r = matmul(&L->wo, D->wo, att, n, o)) < 0)
                        return r;
                for (size_t i = 0; i < n * E; i++)
                        x[i] += o[i];

                r = rmsnorm(&L->ffn_norm, x, xb, n, E, hp->eps);
                if (r < 0)
                        return r;
                CAPTURE(LLAMA_SITE_FFN_IN, xb, E);
                if ((r = matmul(&L->gate, D->gate, xb, n, g)) < 0 || (r = matmul(&L->up, D->up, xb, n, u)) < 0)
                        return r;
                for (size_t i = 0; i < n * F; i++)
                        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
                CAPTURE(LLAMA_SITE_FFN_DOWN, g, F);
                if ((r = matmul(&L->down, D->down, g, n, o)) < 0)
                        return r;
                for (size_t i = 0; i < n * E; i++)
                        x[i] += o[i];
        }
#undef CAPTURE

        r = rmsnorm(&w->output_norm, x, xb, n, E, hp->eps);
        if (r < 0)
                return r;
        if (all_logits)
                r = matmul(&w->output, c->dense_output, xb, n, all_logits);
        else
                r = matmul(&w->output, c->dense_output, xb + (n - 1) * E, 1, logits);
        if (r < 0)
                return r;
        if (all_logits && logits)
                memcpy(logits, all_logits + (n - 1) * hp->n_vocab, hp->n_vocab * sizeof(float));
        c->len += n;
        return 0;
}
