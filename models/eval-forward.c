/* The evaluation forward pass: llama/qwen2 in f32 over weights dequantized once, a whole window
 * per call, with the inputs of every linear layer offered to a capture callback. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "model-llama.h"
#include "tokenizer.h"

typedef struct EvalLayer {
        float *attn_norm, *ffn_norm, *bq, *bk, *bv;
        float *wq, *wk, *wv, *wo, *gate, *up, *down;
} EvalLayer;

struct QdEvalModel {
        Gguf *gguf;
        LlamaWeights w;
        QdTokenizer *tok;  /* NULL when the file has no tokenizer */
        EvalLayer *layers;
        float *output_norm, *output;
};

QdEvalModel *qd_eval_model_free(QdEvalModel *m) {
        if (!m)
                return NULL;
        if (m->layers)
                for (uint32_t l = 0; l < m->w.hp.n_layer; l++) {
                        EvalLayer *L = &m->layers[l];
                        float *all[] = { L->attn_norm, L->ffn_norm, L->bq, L->bk, L->bv, L->wq, L->wk,
                                         L->wv, L->wo, L->gate, L->up, L->down };
                        for (size_t i = 0; i < ELEMENTSOF(all); i++)
                                free(all[i]);
                }
        free(m->layers);
        free(m->output_norm);
        free(m->output);
        qd_tokenizer_free(m->tok);
        llama_weights_done(&m->w);
        gguf_close(m->gguf);
        return mfree(m);
}

static int dequant(const LlamaTensor *t, float **ret) {
        float *d;
        int r;

        if (!t->data) {
                *ret = NULL;
                return 0;
        }
        d = malloc(t->ne0 * t->ne1 * sizeof(float));
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

int qd_eval_model_load(const char *path, QdEvalModel **ret, char **ret_error) {
        _cleanup_(qd_eval_model_freep) QdEvalModel *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        r = gguf_open(path, &m->gguf, ret_error);
        if (r < 0)
                return r;
        r = llama_weights_load(m->gguf, &m->w, ret_error);
        if (r < 0)
                return r;
        if (qd_tokenizer_new_from_gguf(m->gguf, &m->tok, NULL) < 0)
                m->tok = NULL;
        m->layers = calloc(m->w.hp.n_layer, sizeof(EvalLayer));
        if (!m->layers)
                return -ENOMEM;
        for (uint32_t l = 0; l < m->w.hp.n_layer; l++) {
                const LlamaLayer *W = &m->w.layers[l];
                EvalLayer *L = &m->layers[l];
                if ((r = dequant(&W->attn_norm, &L->attn_norm)) < 0 ||
                    (r = dequant(&W->ffn_norm, &L->ffn_norm)) < 0 || (r = dequant(&W->bq, &L->bq)) < 0 ||
                    (r = dequant(&W->bk, &L->bk)) < 0 || (r = dequant(&W->bv, &L->bv)) < 0 ||
                    (r = dequant(&W->wq, &L->wq)) < 0 || (r = dequant(&W->wk, &L->wk)) < 0 ||
                    (r = dequant(&W->wv, &L->wv)) < 0 || (r = dequant(&W->wo, &L->wo)) < 0 ||
                    (r = dequant(&W->gate, &L->gate)) < 0 || (r = dequant(&W->up, &L->up)) < 0 ||
                    (r = dequant(&W->down, &L->down)) < 0)
                        return r;
        }
        if ((r = dequant(&m->w.output_norm, &m->output_norm)) < 0 ||
            (r = dequant(&m->w.output, &m->output)) < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

uint32_t qd_eval_model_n_vocab(const QdEvalModel *m) {
        return m->w.hp.n_vocab;
}

uint32_t qd_eval_model_n_layer(const QdEvalModel *m) {
        return m->w.hp.n_layer;
}

int qd_eval_model_tokenize(const QdEvalModel *m, const char *text, size_t len, uint32_t **ret,
                           size_t *ret_n, int64_t *ret_bos) {
        _cleanup_free_ int32_t *t = NULL;
        size_t n;
        int r;

        if (!m->tok)
                return -EOPNOTSUPP;
        r = qd_tokenizer_tokenize(m->tok, text, len, qd_tokenizer_add_bos(m->tok), false, &t, &n);
        if (r < 0)
                return r;
        /* int32 ids that are all >= 0 reinterpret as uint32 in place. */
        for (size_t i = 0; i < n; i++)
                if (t[i] < 0)
                        return -EINVAL;
        *ret = (uint32_t *) TAKE_PTR(t);
        *ret_n = n;
        if (ret_bos)
                *ret_bos = qd_tokenizer_bos(m->tok);
        return 0;
}

/* out[j][r] = W[r]·in[j] for n inputs: tiles of tokens so a weight row is reused from L1 and
 * eight partial sums so the dot product does not wait on one add chain. */
static void matmul(const float *w, size_t rows, size_t cols, const float *in, size_t n, float *out) {
        const size_t TJ = 32;

        for (size_t j0 = 0; j0 < n; j0 += TJ) {
                size_t j1 = MIN(n, j0 + TJ);
                for (size_t r = 0; r < rows; r++) {
                        const float *wr = w + r * cols;
                        for (size_t j = j0; j < j1; j++) {
                                const float *x = in + j * cols;
                                float s[8] = {};
                                size_t i = 0;
                                for (; i + 8 <= cols; i += 8)
                                        for (size_t k = 0; k < 8; k++)
                                                s[k] += wr[i + k] * x[i + k];
                                float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
                                for (; i < cols; i++)
                                        t += wr[i] * x[i];
                                out[j * rows + r] = t;
                        }
                }
        }
}

static void add_bias(const float *b, float *x, size_t n, size_t m) {
        if (!b)
                return;
        for (size_t j = 0; j < n; j++)
                for (size_t i = 0; i < m; i++)
                        x[j * m + i] += b[i];
}

static void attention(const LlamaHParams *hp, const float *q, const float *k, const float *v,
                      size_t n, float *sc, float *att) {
        uint32_t hd = hp->head_dim, nq = hp->n_head * hd, nkv = hp->n_head_kv * hd;
        uint32_t grp = hp->n_head / hp->n_head_kv;
        float scale = 1.0f / sqrtf((float) hd);

        for (size_t j = 0; j < n; j++)
                for (uint32_t h = 0; h < hp->n_head; h++) {
                        const float *qh = q + j * nq + (size_t) h * hd;
                        uint32_t kh = h / grp;
                        float mx = -INFINITY, sum = 0;
                        for (size_t t = 0; t <= j; t++) {
                                const float *kt = k + t * nkv + (size_t) kh * hd;
                                float s = 0;
                                for (uint32_t i = 0; i < hd; i++)
                                        s += qh[i] * kt[i];
                                sc[t] = s * scale;
                                mx = MAX(mx, sc[t]);
                        }
                        for (size_t t = 0; t <= j; t++) {
                                sc[t] = expf(sc[t] - mx);
                                sum += sc[t];
                        }
                        float *out = att + j * nq + (size_t) h * hd;
                        memset(out, 0, hd * sizeof(float));
                        for (size_t t = 0; t <= j; t++) {
                                const float *vt = v + t * nkv + (size_t) kh * hd;
                                float p = sc[t] / sum;
                                for (uint32_t i = 0; i < hd; i++)
                                        out[i] += p * vt[i];
                        }
                }
}

int qd_eval_forward(QdEvalModel *m, const uint32_t *tokens, size_t n, float *ret_logits,
                    QdEvalCaptureFn capture, void *userdata) {
        const LlamaHParams *hp = &m->w.hp;
        uint32_t E = hp->n_embd, hd = hp->head_dim, nq = hp->n_head * hd, nkv = hp->n_head_kv * hd;
        uint32_t F = hp->n_ff, V = hp->n_vocab;
        _cleanup_free_ float *x = NULL, *xb = NULL, *q = NULL, *k = NULL, *v = NULL, *att = NULL,
                             *o = NULL, *g = NULL, *u = NULL, *sc = NULL;
        int r;

        if (n == 0 || !ret_logits)
                return -EINVAL;
        for (size_t j = 0; j < n; j++)
                if (tokens[j] >= V)
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
        sc = malloc(n * sizeof(float));
        if (!x || !xb || !q || !k || !v || !att || !o || !g || !u || !sc)
                return -ENOMEM;

        for (size_t j = 0; j < n; j++) {
                r = llama_tensor_row(&m->w.token_embd, tokens[j], x + j * E);
                if (r < 0)
                        return r;
        }

#define CAPTURE(site, buf, cols)                                                        \
        do {                                                                            \
                if (capture) {                                                          \
                        r = capture(userdata, l, site, buf, n, cols);                   \
                        if (r < 0)                                                      \
                                return r;                                               \
                }                                                                       \
        } while (0)

        for (uint32_t l = 0; l < hp->n_layer; l++) {
                const EvalLayer *L = &m->layers[l];

                llama_rmsnorm_rows(L->attn_norm, x, xb, n, E, hp->eps);
                CAPTURE(QD_EVAL_SITE_ATTN_IN, xb, E);
                matmul(L->wq, nq, E, xb, n, q);
                matmul(L->wk, nkv, E, xb, n, k);
                matmul(L->wv, nkv, E, xb, n, v);
                add_bias(L->bq, q, n, nq);
                add_bias(L->bk, k, n, nkv);
                add_bias(L->bv, v, n, nkv);
                for (size_t j = 0; j < n; j++) {
                        llama_rope(hp, q + j * nq, hp->n_head, j);
                        llama_rope(hp, k + j * nkv, hp->n_head_kv, j);
                }
                attention(hp, q, k, v, n, sc, att);
                CAPTURE(QD_EVAL_SITE_ATTN_OUT, att, nq);
                matmul(L->wo, E, nq, att, n, o);
                for (size_t i = 0; i < n * E; i++)
                        x[i] += o[i];

                llama_rmsnorm_rows(L->ffn_norm, x, xb, n, E, hp->eps);
                CAPTURE(QD_EVAL_SITE_FFN_IN, xb, E);
                matmul(L->gate, F, E, xb, n, g);
                matmul(L->up, F, E, xb, n, u);
                for (size_t i = 0; i < n * F; i++)
                        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
                CAPTURE(QD_EVAL_SITE_FFN_DOWN, g, F);
                matmul(L->down, E, F, g, n, o);
                for (size_t i = 0; i < n * E; i++)
                        x[i] += o[i];
        }
#undef CAPTURE

        llama_rmsnorm_rows(m->output_norm, x, xb, n, E, hp->eps);
        matmul(m->output, V, E, xb, n, ret_logits);
        return 0;
}

int qd_eval_logits_fn(void *userdata, const uint32_t *tokens, size_t n, float *ret_logits) {
        return qd_eval_forward(userdata, tokens, n, ret_logits, NULL, NULL);
}
