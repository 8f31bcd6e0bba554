/* The evaluation's model: a GGUF file's weights and tokenizer with the reference forward pass
 * (llama-cpu.c) over weights dequantized once, a whole window per call, the inputs of every
 * linear layer offered to a capture callback. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "eval-internal.h"
#include "eval.h"
#include "model-llama.h"
#include "tokenizer.h"

struct QdEvalModel {
        Gguf *gguf;
        LlamaWeights w;
        QdTokenizer *tok;  /* NULL when the file has no tokenizer */
        LlamaCpu *cpu;     /* dense weights; its KV cache grows to the longest window */
};

QdEvalModel *qd_eval_model_free(QdEvalModel *m) {
        if (!m)
                return NULL;
        llama_cpu_free(m->cpu);
        qd_tokenizer_free(m->tok);
        llama_weights_done(&m->w);
        gguf_close(m->gguf);
        return mfree(m);
}

static int model_load(const char *path, bool dense, QdEvalModel **ret, char **ret_error) {
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
        if (dense && ((r = llama_cpu_new(&m->w, 1, &m->cpu)) < 0 || (r = llama_cpu_dequantize(m->cpu)) < 0))
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

int qd_eval_model_load(const char *path, QdEvalModel **ret, char **ret_error) {
        return model_load(path, true, ret, ret_error);
}

int qd_eval_model_open(const char *path, QdEvalModel **ret, char **ret_error) {
        return model_load(path, false, ret, ret_error);
}

const LlamaWeights *qd_eval_model_weights(const QdEvalModel *m) {
        return &m->w;
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

typedef struct Capture {
        QdEvalCaptureFn fn;
        void *userdata;
} Capture;

static int capture_site(void *userdata, uint32_t layer, LlamaSite site, const float *x, size_t n, size_t cols) {
        const Capture *c = userdata;
        static const QdEvalSite sites[] = {
                [LLAMA_SITE_ATTN_IN] = QD_EVAL_SITE_ATTN_IN,
                [LLAMA_SITE_ATTN_OUT] = QD_EVAL_SITE_ATTN_OUT,
                [LLAMA_SITE_FFN_IN] = QD_EVAL_SITE_FFN_IN,
                [LLAMA_SITE_FFN_DOWN] = QD_EVAL_SITE_FFN_DOWN,
        };
        return c->fn(c->userdata, layer, sites[site], x, n, cols);
}

int qd_eval_forward(QdEvalModel *m, const uint32_t *tokens, size_t n, float *ret_logits,
                    QdEvalCaptureFn capture, void *userdata) {
        _cleanup_free_ int32_t *t = NULL;
        Capture cap = { capture, userdata };
        int r;

        if (n == 0 || n > UINT32_MAX || !ret_logits)
                return -EINVAL;
        if (!m->cpu)
                return -EOPNOTSUPP; /* opened without the forward (qd_eval_model_open) */
        t = malloc(n * sizeof(int32_t));
        if (!t)
                return -ENOMEM;
        for (size_t j = 0; j < n; j++) {
                if (tokens[j] >= m->w.hp.n_vocab)
                        return -EINVAL;
                t[j] = (int32_t) tokens[j];
        }
        r = llama_cpu_reset(m->cpu, (uint32_t) n);
        if (r < 0)
                return r;
        llama_cpu_set_capture(m->cpu, capture ? capture_site : NULL, &cap);
        r = llama_cpu_eval(m->cpu, t, n, NULL, ret_logits);
        llama_cpu_set_capture(m->cpu, NULL, NULL);
        return r;
}

int qd_eval_logits_fn(void *userdata, const uint32_t *tokens, size_t n, float *ret_logits) {
        return qd_eval_forward(userdata, tokens, n, ret_logits, NULL, NULL);
}
