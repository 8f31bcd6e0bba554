/* Judges a (quantized) model: llama.cpp-protocol perplexity, KL divergence and top-1 agreement
 * against a reference model, per-tensor SQNR against the reference's weights, size per weight. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eval.h"
#include "gguf.h"


void qd_eval_report_done(QdEvalReport *r) {
        if (!r)
                return;
        free(r->tensors);
        *r = (QdEvalReport) {};
}

static int tensor_f32(const GgufTensor *t, float *dst) {
        size_t rb;
        int r = ggml_row_size(t->type, t->ne[0], &rb);
        if (r < 0)
                return r;
        for (uint64_t i = 0; i < t->n_elements / t->ne[0]; i++) {
                r = ggml_dequantize_row(t->type, (const uint8_t *) t->data + i * rb, dst + i * t->ne[0], t->ne[0]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static double code_bits(uint32_t type) {
        switch (type) {
        case GGML_TYPE_Q8_0: return 8;
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q4_K: return 4;
        case GGML_TYPE_Q5_0: return 5;
        case GGML_TYPE_Q6_K: return 6;
        case GGML_TYPE_F16: case GGML_TYPE_BF16: return 16; /* not used: float types are skipped */
        default: return 0;
        }
}

/* Sizes of the model and SQNR of its quantized tensors against ref (may be NULL). */
static int weights_report(const char *path, const char *ref_path, QdEvalReport *rep) {
        _cleanup_(gguf_closep) Gguf *g = NULL, *rg = NULL;
        struct stat st;
        int r;

        if (stat(path, &st) < 0)
                return -errno;
        rep->file_bytes = st.st_size;
        r = gguf_open(path, &g, NULL);
        if (r < 0)
                return r;
        if (ref_path) {
                r = gguf_open(ref_path, &rg, NULL);
                if (r < 0)
                        return r;
        }
        size_t n = gguf_n_tensors(g);
        rep->tensors = calloc(MAX(n, (size_t) 1), sizeof(QdEvalTensor));
        if (!rep->tensors)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const GgufTensor *t = gguf_tensor(g, i);
                if (t->n_dims < 2 || t->ne[1] < 2 || streq(t->name, "token_embd.weight"))
                        continue;
                rep->weight_elements += t->n_elements;
                rep->weight_bytes += t->size;
                const GgufTensor *rt = rg ? gguf_find_tensor(rg, t->name) : NULL;
                if (!rt || code_bits(t->type) == 0 || code_bits(t->type) >= 16 ||
                    rt->n_elements != t->n_elements)
                        continue;
                _cleanup_free_ float *a = malloc(t->n_elements * sizeof(float));
                _cleanup_free_ float *b = malloc(t->n_elements * sizeof(float));
                if (!a || !b)
                        return -ENOMEM;
                if ((r = tensor_f32(t, a)) < 0 || (r = tensor_f32(rt, b)) < 0)
                        return r;
                QdEvalTensor *e = &rep->tensors[rep->n_tensors++];
                snprintf(e->name, sizeof(e->name), "%s", t->name);
                e->type = t->type;
                e->n_elements = t->n_elements;
                e->sqnr_db = qd_metric_sqnr_db(b, a, t->n_elements);
                e->ideal_db = qd_metric_sqnr_ideal_db(code_bits(t->type));
        }
        rep->bpw = rep->weight_elements ? 8.0 * rep->weight_bytes / rep->weight_elements : 0;
        return 0;
}

typedef struct Progress {
        QdEvalModel *m;
        const QdEvalOptions *o;
        const char *what;
        size_t calls, total;
        size_t *done, all;       /* windows over model and reference, for o->progress */
} Progress;

static int logits_progress(void *userdata, const uint32_t *tokens, size_t n, float *ret_logits) {
        Progress *p = userdata;
        char msg[128];

        if (p->o && p->o->log) {
                snprintf(msg, sizeof(msg), "%s: window %zu/%zu", p->what, ++p->calls, p->total);
                p->o->log(p->o->userdata, msg);
        }
        if (p->o && p->o->progress) {
                int k = p->o->progress(p->o->userdata, (double) (*p->done)++ / MAX(p->all, (size_t) 1));
                if (k < 0)
                        return k;
        }
        return qd_eval_forward(p->m, tokens, n, ret_logits, NULL, NULL);
}

int qd_eval_tokens(const char *model_path, const char *ref_path, const uint32_t *tokens,
                   size_t n_tokens, int64_t bos, const QdEvalOptions *o, QdEvalReport *ret) {
        _cleanup_(qd_eval_model_freep) QdEvalModel *m = NULL, *ref = NULL;
        QdEvalReport rep = {};
        QdPplOptions po = {
                .n_ctx = o && o->n_ctx ? o->n_ctx : 512,
                .bos = bos,
                .max_windows = o ? o->max_windows : 0,
        };
        int r;

        r = qd_eval_model_load(model_path, &m, NULL);
        if (r < 0)
                return r;
        size_t total = n_tokens / po.n_ctx;
        if (po.max_windows)
                total = MIN(total, po.max_windows);
        size_t done = 0, all = ref_path ? 2 * total : total;
        Progress pm = { .m = m, .o = o, .what = "model", .total = total, .done = &done, .all = all };
        if (ref_path) {
                r = qd_eval_model_load(ref_path, &ref, NULL);
                if (r < 0)
                        return r;
                if (qd_eval_model_n_vocab(ref) != qd_eval_model_n_vocab(m))
                        return -EINVAL;
                Progress pr = { .m = ref, .o = o, .what = "reference", .total = total, .done = &done, .all = all };
                r = qd_ppl_compare(tokens, n_tokens, qd_eval_model_n_vocab(m), &po, logits_progress, &pr,
                                   logits_progress, &pm, &rep.ref_ppl, &rep.ppl, &rep.dist);
                rep.has_ref = true;
        } else
                r = qd_ppl_eval(tokens, n_tokens, qd_eval_model_n_vocab(m), &po, logits_progress, &pm, &rep.ppl);
        if (r < 0)
                return r;
        r = weights_report(model_path, ref_path, &rep);
        if (r < 0) {
                qd_eval_report_done(&rep);
                return r;
        }
        *ret = rep;
        return 0;
}

int qd_eval_text(const char *model_path, const char *ref_path, const char *text, size_t len,
                 const QdEvalOptions *o, QdEvalReport *ret) {
        _cleanup_(qd_eval_model_freep) QdEvalModel *m = NULL;
        _cleanup_free_ uint32_t *tokens = NULL;
        size_t n;
        int64_t bos;
        int r;

        r = qd_eval_model_load(model_path, &m, NULL);
        if (r < 0)
                return r;
        r = qd_eval_model_tokenize(m, text, len, &tokens, &n, &bos);
        if (r < 0)
                return r;
        m = qd_eval_model_free(m);
        return qd_eval_tokens(model_path, ref_path, tokens, n, bos, o, ret);
}
