/* The engine API of engine.h: a device (or the CPU reference), models loaded from GGUF files
 * with their precision variants, and sequences that prefill and step. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "engine.h"
#include "macro.h"
#include "model-llama.h"
#include "sampler.h"
#include "tokenizer.h"

struct QdEngine {
        QvkDevice *dev; /* NULL: CPU reference */
};

struct QdModel {
        QdEngine *e;
        Gguf *g;
        LlamaWeights w;
        QdTokenizer *tok; /* NULL when the file has no tokenizer (test fixtures) */
        const char *chat_template;
        LlamaVk *vk;
        char name[128];
        _Atomic int precision;
};

struct QdSequence {
        QdModel *m;
        uint32_t n_ctx;
        LlamaCpu *cpu;
        LlamaVkSeq *vk;
        float *logits;
        bool logits_valid; /* logits[] holds the last token's logits */
        bool evaluated;    /* at least one token evaluated */
        int32_t argmax;
        float argmax_logprob;
        QdSampler *sampler;
};

static const char *const precision_names[_QD_PRECISION_MAX] = {
        [QD_PRECISION_F16] = "fp16",
        [QD_PRECISION_INT8] = "int8",
        [QD_PRECISION_INT4] = "int4",
};

const char *qd_precision_to_string(QdPrecision p) {
        if (p == QD_PRECISION_AUTO)
                return "auto";
        if (p >= 0 && p < _QD_PRECISION_MAX)
                return precision_names[p];
        return NULL;
}

QdPrecision qd_precision_from_string(const char *s) {
        if (!s)
                return QD_PRECISION_INVALID;
        if (streq(s, "auto"))
                return QD_PRECISION_AUTO;
        for (int p = 0; p < _QD_PRECISION_MAX; p++)
                if (streq(s, precision_names[p]))
                        return p;
        return QD_PRECISION_INVALID;
}

int qd_engine_new(const QdEngineOptions *opts, QdEngine **ret) {
        QdEngine *e;
        int r;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        if (!opts || !opts->cpu_only) {
                r = qvk_device_new(opts ? opts->device : NULL, opts ? opts->cache_dir : NULL, &e->dev);
                if (r < 0) {
                        free(e);
                        return r;
                }
        }
        *ret = e;
        return 0;
}

QdEngine *qd_engine_free(QdEngine *e) {
        if (!e)
                return NULL;
        qvk_device_free(e->dev);
        return mfree(e);
}

int qd_engine_device_info(QdEngine *e, QdDeviceInfo *ret) {
        QdDeviceInfo i = {};

        if (!e->dev) {
                snprintf(i.name, sizeof(i.name), "CPU reference");
                snprintf(i.type, sizeof(i.type), "cpu");
                snprintf(i.driver, sizeof(i.driver), "quantd f32 reference");
                *ret = i;
                return 0;
        }
        const QvkFeatures *f = qvk_device_features(e->dev);
        snprintf(i.name, sizeof(i.name), "%s", f->name);
        snprintf(i.type, sizeof(i.type), "%s", f->type);
        snprintf(i.driver, sizeof(i.driver), "%s", f->driver);
        i.memory_total = f->device_local_bytes;
        qvk_device_memory(e->dev, &i.memory_budget, &i.memory_used);
        i.fp16 = f->fp16;
        i.int8 = f->int8;
        i.int_dot = f->int_dot;
        i.coopmat = f->coopmat_khr || f->coopmat_nv;
        *ret = i;
        return 0;
}

QdModel *qd_model_free(QdModel *m) {
        if (!m)
                return NULL;
        llama_vk_free(m->vk);
        qd_tokenizer_free(m->tok);
        llama_weights_done(&m->w);
        gguf_close(m->g);
        return mfree(m);
}

/* The variant closest to the file's own weights. */
static QdPrecision default_precision(uint32_t file_type) {
        switch (file_type) {
        case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q6_K:
        case GGML_TYPE_Q5_K:
        case GGML_TYPE_Q5_1: /* most weights of a Q5_K_M file whose rows are not whole super-blocks */
                return QD_PRECISION_INT8;
        case GGML_TYPE_Q4_0:
        case GGML_TYPE_Q4_1:
        case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q5_0: /* most weights of a Q4_K_M file whose rows are not whole super-blocks */
                return QD_PRECISION_INT4;
        default:
                return QD_PRECISION_F16;
        }
}

int qd_model_load(QdEngine *e, const char *path, QdModel **ret) {
        _cleanup_(qd_model_freep) QdModel *m = NULL;
        _cleanup_free_ char *err = NULL;
        const char *s;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->e = e;
        r = gguf_open(path, &m->g, &err);
        if (r < 0)
                return r;
        r = llama_weights_load(m->g, &m->w, &err);
        if (r < 0)
                return r;
        if (err)
                err = mfree(err);
        r = qd_tokenizer_new_from_gguf(m->g, &m->tok, &err);
        if (r < 0 && gguf_find_key(m->g, "tokenizer.ggml.model") >= 0)
                return r; /* a tokenizer is there but broken */
        if (gguf_get_string(m->g, "tokenizer.chat_template", &s, NULL) >= 0)
                m->chat_template = s;
        if (gguf_get_string(m->g, "general.name", &s, NULL) >= 0)
                snprintf(m->name, sizeof(m->name), "%s", s);
        else {
                const char *b = strrchr(path, '/');
                snprintf(m->name, sizeof(m->name), "%s", b ? b + 1 : path);
        }

        QdPrecision p = default_precision(m->w.file_type);
        if (e->dev) {
                r = llama_vk_new(e->dev, &m->w, &m->vk);
                if (r < 0)
                        return r;
                r = llama_vk_set_precision(m->vk, p);
                if (r < 0)
                        return r;
        }
        m->precision = p;
        *ret = TAKE_PTR(m);
        return 0;
}

void qd_model_info(QdModel *m, QdModelInfo *ret) {
        const LlamaHParams *hp = &m->w.hp;
        QdModelInfo i = {
                .n_params = m->w.n_params,
                .n_vocab = hp->n_vocab,
                .n_ctx_train = hp->n_ctx_train,
                .n_embd = hp->n_embd,
                .n_layer = hp->n_layer,
                .n_head = hp->n_head,
                .n_head_kv = hp->n_head_kv,
                .host_bytes = sizeof(*m) + hp->n_layer * sizeof(LlamaLayer),
                .device_bytes = m->vk ? llama_vk_device_bytes(m->vk) : 0,
                .has_chat_template = !!m->chat_template,
        };
        snprintf(i.name, sizeof(i.name), "%s", m->name);
        snprintf(i.arch, sizeof(i.arch), "%s", hp->arch);
        snprintf(i.file_type, sizeof(i.file_type), "%s", ggml_type_name(m->w.file_type));
        for (char *c = i.file_type; *c; c++)
                if (*c >= 'a' && *c <= 'z')
                        *c -= 'a' - 'A';
        *ret = i;
}

QdPrecision qd_model_get_precision(QdModel *m) {
        return m->precision;
}

uint64_t qd_model_variant_bytes(QdModel *m, QdPrecision p) {
        if (p < 0 || p >= _QD_PRECISION_MAX)
                return 0;
        if (m->vk)
                return llama_vk_variant_bytes(m->vk, p);
        /* CPU reference: the sizes the device would need. */
        const LlamaHParams *hp = &m->w.hp;
        uint64_t per_elem_x32 = p == QD_PRECISION_F16 ? 64 : p == QD_PRECISION_INT8 ? 34 : 18;
        uint64_t n = m->w.n_params;
        (void) hp;
        return n * per_elem_x32 / 32;
}

int qd_model_set_precision(QdModel *m, QdPrecision p) {
        int r;

        if (p == QD_PRECISION_AUTO) {
                /* The largest variant that fits three quarters of the free budget. */
                uint64_t budget = UINT64_MAX, used = 0;
                if (m->e->dev)
                        qvk_device_memory(m->e->dev, &budget, &used);
                p = QD_PRECISION_INT4;
                for (QdPrecision q = QD_PRECISION_F16; q < QD_PRECISION_INT4; q++)
                        if (qd_model_variant_bytes(m, q) <= (budget - MIN(budget, used)) / 4 * 3) {
                                p = q;
                                break;
                        }
        }
        if (p < 0 || p >= _QD_PRECISION_MAX)
                return -EINVAL;
        if (m->vk) {
                r = llama_vk_set_precision(m->vk, p);
                if (r < 0)
                        return r;
        }
        /* The CPU reference always computes from the file's weights in f32. */
        m->precision = p;
        return 0;
}

int qd_model_prepare_precision(QdModel *m, QdPrecision p) {
        if (p < 0 || p >= _QD_PRECISION_MAX)
                return -EINVAL;
        if (!m->vk)
                return 0; /* the CPU reference computes from the file's weights */
        return llama_vk_prepare(m->vk, p);
}

bool qd_model_has_variant(QdModel *m, QdPrecision p) {
        if (p < 0 || p >= _QD_PRECISION_MAX)
                return false;
        if (!m->vk)
                return true;
        return llama_vk_has_variant(m->vk, p);
}

int qd_model_drop_variants(QdModel *m, bool keep_current_only) {
        if (!m->vk)
                return 0;
        return llama_vk_drop_variants(m->vk, keep_current_only);
}

int qd_model_tokenize(QdModel *m, const char *text, size_t len, bool add_bos, bool parse_special,
                      int32_t **ret_tokens, size_t *ret_n) {
        if (!m->tok)
                return -EOPNOTSUPP;
        return qd_tokenizer_tokenize(m->tok, text, len, add_bos && qd_tokenizer_add_bos(m->tok),
                                     parse_special, ret_tokens, ret_n);
}

int qd_model_token_piece(QdModel *m, int32_t token, char *buf, size_t size) {
        if (!m->tok)
                return -EOPNOTSUPP;
        return qd_tokenizer_token_piece(m->tok, token, false, buf, size);
}

bool qd_model_token_is_eog(QdModel *m, int32_t token) {
        return m->tok && qd_tokenizer_is_eog(m->tok, token);
}

int32_t qd_model_token_bos(QdModel *m) {
        return m->tok ? qd_tokenizer_bos(m->tok) : -1;
}

int qd_model_chat_format(QdModel *m, const QdChatMessage *msgs, size_t n, bool add_assistant,
                         char **ret) {
        const char *eos = NULL;

        if (m->tok && qd_tokenizer_eos(m->tok) >= 0)
                eos = qd_tokenizer_token_text(m->tok, qd_tokenizer_eos(m->tok));
        return qd_chat_render(qd_chat_format_detect(m->chat_template), m->chat_template, eos, msgs, n,
                              add_assistant, ret);
}

int qd_text_stream_new(QdModel *m, char *const *stop, size_t n_stop, QdTextStream **ret) {
        if (!m->tok)
                return -EOPNOTSUPP;
        return qd_text_stream_new_tokenizer(m->tok, stop, n_stop, ret);
}

QdSequence *qd_sequence_free(QdSequence *s) {
        if (!s)
                return NULL;
        llama_cpu_free(s->cpu);
        llama_vk_seq_free(s->vk);
        qd_sampler_free(s->sampler);
        free(s->logits);
        return mfree(s);
}

int qd_sequence_new(QdModel *m, uint32_t n_ctx, QdSequence **ret) {
        _cleanup_(qd_sequence_freep) QdSequence *s = NULL;
        QdSampling defaults;
        int r;

        if (n_ctx == 0) /* the training context, capped: a 128k KV cache is rarely wanted */
                n_ctx = MIN(m->w.hp.n_ctx_train, 4096u);
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->m = m;
        s->n_ctx = n_ctx;
        s->logits = calloc(m->w.hp.n_vocab, sizeof(float));
        if (!s->logits)
                return -ENOMEM;
        if (m->vk)
                r = llama_vk_seq_new(m->vk, n_ctx, &s->vk);
        else
                r = llama_cpu_new(&m->w, n_ctx, &s->cpu);
        if (r < 0)
                return r;
        qd_sampling_init(&defaults);
        r = qd_sampler_new(&defaults, &s->sampler);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

uint32_t qd_sequence_length(QdSequence *s) {
        return s->vk ? llama_vk_seq_length(s->vk) : llama_cpu_length(s->cpu);
}

static int seq_eval(QdSequence *s, const int32_t *tokens, size_t n, bool want_logits) {
        uint32_t V = s->m->w.hp.n_vocab;
        int r;

        if (n == 0)
                return -EINVAL;
        if (n > s->n_ctx - qd_sequence_length(s))
                return -ENOSPC;
        for (size_t i = 0; i < n; i++)
                if (tokens[i] < 0 || (uint32_t) tokens[i] >= V)
                        return -EINVAL;
        if (s->vk) {
                r = llama_vk_seq_eval(s->vk, tokens, n, want_logits, s->logits, &s->argmax,
                                      &s->argmax_logprob);
                if (r < 0)
                        return r;
                s->logits_valid = want_logits;
        } else {
                r = llama_cpu_eval(s->cpu, tokens, n, s->logits, NULL);
                if (r < 0)
                        return r;
                s->logits_valid = true;
                s->argmax = qd_sampler_argmax(s->logits, V);
                double sum = 0;
                for (uint32_t i = 0; i < V; i++)
                        sum += exp((double) s->logits[i] - s->logits[s->argmax]);
                s->argmax_logprob = (float) -log(sum);
        }
        s->evaluated = true;
        for (size_t i = 0; i < n; i++)
                qd_sampler_accept(s->sampler, tokens[i]);
        return 0;
}

int qd_sequence_prefill(QdSequence *s, const int32_t *tokens, size_t n) {
        if (s->vk) /* the caller's own tokens: nothing to run ahead on */
                llama_vk_seq_set_runahead(s->vk, false);
        return seq_eval(s, tokens, n, false);
}

static bool sampling_is_greedy(const QdSampling *p) {
        return !p || (p->temperature <= 0 && (p->repeat_penalty == 1.0f || p->repeat_last_n == 0));
}

/* Picks the next token of s from its last logits, without evaluating it. */
static int seq_choose(QdSequence *s, const QdSampling *smp, int32_t *ret_token, float *ret_logprob) {
        int r;

        if (sampling_is_greedy(smp)) {
                *ret_token = s->argmax;
                *ret_logprob = s->argmax_logprob;
                return 0;
        }
        if (!s->logits_valid) {
                r = llama_vk_seq_logits(s->vk, s->logits);
                if (r < 0)
                        return r;
                s->logits_valid = true;
        }
        qd_sampler_set_params(s->sampler, smp);
        return qd_sampler_sample(s->sampler, s->logits, s->m->w.hp.n_vocab, ret_token, ret_logprob);
}

int qd_sequence_step(QdSequence *s, const QdSampling *smp, int32_t *ret_token, float *ret_logprob) {
        int32_t token;
        float lp;
        int r;

        if (!s->evaluated)
                return -EINVAL; /* nothing to sample from: prefill first */
        if (qd_sequence_length(s) >= s->n_ctx)
                return -ENOSPC;
        r = seq_choose(s, smp, &token, &lp);
        if (r < 0)
                return r;
        /* Greedy: the device queues the next step on this one's argmax before returning, which
         * the next greedy step then takes (llama_vk_seq_set_runahead). */
        if (s->vk)
                llama_vk_seq_set_runahead(s->vk, sampling_is_greedy(smp));
        r = seq_eval(s, &token, 1, !sampling_is_greedy(smp));
        if (r < 0)
                return r;
        if (ret_token)
                *ret_token = token;
        if (ret_logprob)
                *ret_logprob = lp;
        return 0;
}

int qd_model_step_batch(QdModel *m, QdSequence **seqs, const QdSampling *const *smps, size_t n,
                        int32_t *ret_tokens, float *ret_logprobs) {
        _cleanup_free_ LlamaVkSeq **vs = NULL;
        _cleanup_free_ int32_t *tok = NULL, *am = NULL;
        _cleanup_free_ float *lp = NULL, *alp = NULL;
        int r;

        if (n == 0)
                return 0;
        /* Checked for all before any is stepped, so that a failure leaves every sequence as
         * it was (except a sampler's random state on a later device error). */
        for (size_t i = 0; i < n; i++) {
                if (!seqs[i] || seqs[i]->m != m || !seqs[i]->evaluated)
                        return -EINVAL;
                if (qd_sequence_length(seqs[i]) >= seqs[i]->n_ctx)
                        return -ENOSPC;
                for (size_t k = 0; k < i; k++)
                        if (seqs[k] == seqs[i])
                                return -EINVAL;
        }
        if (!m->vk) {
                /* The CPU reference steps one sequence after the other. */
                for (size_t i = 0; i < n; i++) {
                        r = qd_sequence_step(seqs[i], smps ? smps[i] : NULL, ret_tokens ? &ret_tokens[i] : NULL,
                                             ret_logprobs ? &ret_logprobs[i] : NULL);
                        if (r < 0)
                                return r;
                }
                return 0;
        }

        vs = calloc(n, sizeof(*vs));
        tok = calloc(n, sizeof(*tok));
        am = calloc(n, sizeof(*am));
        lp = calloc(n, sizeof(*lp));
        alp = calloc(n, sizeof(*alp));
        if (!vs || !tok || !am || !lp || !alp)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                vs[i] = seqs[i]->vk;
                r = seq_choose(seqs[i], smps ? smps[i] : NULL, &tok[i], &lp[i]);
                if (r < 0)
                        return r;
        }
        /* All chosen tokens in one batch: each weight matrix is read once for all columns. */
        r = llama_vk_batch_eval(m->vk, vs, tok, n, am, alp);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                QdSequence *s = seqs[i];
                s->argmax = am[i];
                s->argmax_logprob = alp[i];
                s->logits_valid = false; /* downloaded when sampling or asked for */
                qd_sampler_accept(s->sampler, tok[i]);
                if (ret_tokens)
                        ret_tokens[i] = tok[i];
                if (ret_logprobs)
                        ret_logprobs[i] = lp[i];
        }
        return 0;
}

const float *qd_sequence_logits(QdSequence *s) {
        if (!s->evaluated)
                return NULL;
        if (!s->logits_valid) {
                if (llama_vk_seq_logits(s->vk, s->logits) < 0)
                        return NULL;
                s->logits_valid = true;
        }
        return s->logits;
}
