/* The inference engine as the daemon sees it: a device, models loaded on it, and sequences
 * (one conversation's KV cache each) that decode token by token.
 *
 * Threading: QdEngine and QdModel objects may be shared between threads, but all calls that
 * compute (prefill, step, set_precision, drop_variants) on one model must be serialised by the
 * caller (the daemon runs one worker per model). qd_model_prepare_precision() is the exception:
 * see there. qd_model_info(), qd_model_get_precision(), qd_model_variant_bytes() and
 * qd_model_has_variant() are safe from any thread at any time.
 * Errors: negative errno; nothing is logged by the engine except at debug level. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef enum QdPrecision {
        QD_PRECISION_F16,
        QD_PRECISION_INT8, /* Q8_0: blocks of 32, one fp16 scale */
        QD_PRECISION_INT4, /* Q4_0: blocks of 32, symmetric, one fp16 scale */
        _QD_PRECISION_MAX,
        QD_PRECISION_AUTO = -1,
        QD_PRECISION_INVALID = -2,
} QdPrecision;

const char *qd_precision_to_string(QdPrecision p);      /* "fp16", "int8", "int4", "auto" */
QdPrecision qd_precision_from_string(const char *s);    /* QD_PRECISION_INVALID if unknown */

typedef struct QdEngineOptions {
        const char *device;      /* index or name substring; NULL: $QUANTD_VK_DEVICE or the best */
        bool cpu_only;           /* run the plain-C reference path (tests, no Vulkan at all) */
        const char *cache_dir;   /* pipeline cache; NULL: none */
} QdEngineOptions;

typedef struct QdDeviceInfo {
        char name[256];
        char type[16];           /* "discrete", "integrated", "virtual", "cpu", "other" */
        char driver[128];
        uint64_t memory_total;   /* device-local heap bytes */
        uint64_t memory_budget;  /* VK_EXT_memory_budget, or memory_total */
        uint64_t memory_used;    /* bytes allocated by quantd */
        bool fp16, int8, int_dot, coopmat;
} QdDeviceInfo;

typedef struct QdEngine QdEngine;
int qd_engine_new(const QdEngineOptions *opts, QdEngine **ret);
QdEngine *qd_engine_free(QdEngine *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(QdEngine *, qd_engine_free);
int qd_engine_device_info(QdEngine *e, QdDeviceInfo *ret);

typedef struct QdModelInfo {
        char name[128];          /* general.name, or the file name */
        char arch[32];           /* "llama", "qwen2" */
        char file_type[16];      /* type of most weights in the file, e.g. "F16", "Q4_K" */
        uint64_t n_params;
        uint32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv;
        uint64_t host_bytes;     /* host memory held (mapped file excluded) */
        uint64_t device_bytes;   /* device memory held by all resident variants */
        bool has_chat_template;
} QdModelInfo;

typedef struct QdModel QdModel;
int qd_model_load(QdEngine *e, const char *path, QdModel **ret);
QdModel *qd_model_free(QdModel *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(QdModel *, qd_model_free);
void qd_model_info(QdModel *m, QdModelInfo *ret);

/* The precision the weights are used at now. */
QdPrecision qd_model_get_precision(QdModel *m);
/* Bytes the weights would take on the device at precision p (for the policy's budget check). */
uint64_t qd_model_variant_bytes(QdModel *m, QdPrecision p);
/* Makes the variant for p resident (quantizing from the source weights when needed) and
 * switches to it; the next step of every sequence uses it, KV caches are kept. Call from the
 * model's worker, between steps. Variants no longer used may be dropped with
 * qd_model_drop_variants(). */
int qd_model_set_precision(QdModel *m, QdPrecision p);
int qd_model_drop_variants(QdModel *m, bool keep_current_only);
/* Makes the variant for p (not AUTO) resident without switching to it, so that a later
 * qd_model_set_precision(m, p) only switches (about a millisecond). Takes seconds for a large
 * model: meant for a thread other than the one stepping the model. Safe concurrently with every
 * call of that stepping thread on m and its sequences (prefill, step, step_batch,
 * set_precision, drop_variants, info) and with prepare calls for other precisions: the variant
 * is published only when complete, and device uploads share the queue under the device's lock.
 * Not safe concurrently with qd_model_free() (join first). A drop_variants() that runs after a
 * prepare returned drops its variant again unless p is current by then. Returns 0 at once when
 * the variant is resident, and on the CPU reference path (which needs no variants). */
int qd_model_prepare_precision(QdModel *m, QdPrecision p);
/* Whether the variant for p is resident (always true on the CPU reference path). */
bool qd_model_has_variant(QdModel *m, QdPrecision p);

/* Text. Tokens are written to a newly allocated array. */
int qd_model_tokenize(QdModel *m, const char *text, size_t len, bool add_bos, bool parse_special,
                      int32_t **ret_tokens, size_t *ret_n);
/* Raw bytes of one token's piece (may be part of a UTF-8 character); returns length or -errno. */
int qd_model_token_piece(QdModel *m, int32_t token, char *buf, size_t size);
bool qd_model_token_is_eog(QdModel *m, int32_t token);
int32_t qd_model_token_bos(QdModel *m);

typedef struct QdChatMessage {
        const char *role;        /* "system", "user", "assistant" */
        const char *content;
} QdChatMessage;
/* Renders messages with the template found in tokenizer.chat_template (Llama 3, Llama 2, ChatML,
 * Zephyr recognised), or the documented fallback; add_assistant opens the assistant's turn. */
int qd_model_chat_format(QdModel *m, const QdChatMessage *msgs, size_t n, bool add_assistant,
                         char **ret);

typedef struct QdSampling {
        float temperature;       /* <= 0: greedy */
        int32_t top_k;           /* <= 0: off */
        float top_p;             /* >= 1: off */
        float min_p;             /* <= 0: off */
        float repeat_penalty;    /* 1: off */
        int32_t repeat_last_n;
        uint64_t seed;
} QdSampling;
void qd_sampling_init(QdSampling *s); /* greedy defaults */

typedef struct QdSequence QdSequence;
int qd_sequence_new(QdModel *m, uint32_t n_ctx, QdSequence **ret);
QdSequence *qd_sequence_free(QdSequence *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(QdSequence *, qd_sequence_free);
uint32_t qd_sequence_length(QdSequence *s); /* tokens in the KV cache */
/* Evaluates tokens (the prompt, in one pass). -ENOSPC when the context is full. */
int qd_sequence_prefill(QdSequence *s, const int32_t *tokens, size_t n);
/* Samples the next token from the last logits, then evaluates it so the next call can sample
 * again. ret_logprob (may be NULL) gets the log-probability of the chosen token. */
int qd_sequence_step(QdSequence *s, const QdSampling *smp, int32_t *ret_token, float *ret_logprob);
/* Steps several sequences of the same model in one batch (weights read once). */
int qd_model_step_batch(QdModel *m, QdSequence **seqs, const QdSampling *const *smps, size_t n,
                        int32_t *ret_tokens, float *ret_logprobs);
/* Logits after the last evaluated token (n_vocab floats, owned by the sequence). */
const float *qd_sequence_logits(QdSequence *s);

/* Turns a stream of tokens into complete UTF-8 text, holding back a partial character and any
 * text that could still become a stop string. */
typedef struct QdTextStream QdTextStream;
int qd_text_stream_new(QdModel *m, char *const *stop, size_t n_stop, QdTextStream **ret);
QdTextStream *qd_text_stream_free(QdTextStream *t);
/* Appends token's text; *ret_text (newly allocated, maybe "") is what can be shown now.
 * Returns 1 when a stop string completed (text before it is in *ret_text), else 0. */
int qd_text_stream_push(QdTextStream *t, int32_t token, char **ret_text);
/* The held-back rest at the end of a generation. */
int qd_text_stream_flush(QdTextStream *t, char **ret_text);
