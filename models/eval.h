/* Quantizing whole GGUF models and judging the result: the library behind quantd-quantize.
 *
 * Evaluation runs the engine's f32 reference forward (llama-cpu.c, wrapped by models/eval-model.c)
 * over weights dequantized once, the whole window in one batch, with its capture hook giving the
 * inputs of every linear layer for GPTQ/AWQ calibration.
 * Errors: negative errno; nothing is logged. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "quant/quant.h"

/* ---- the f32 evaluation forward ---------------------------------------------------------- */

typedef struct QdEvalModel QdEvalModel;

/* Where the inputs of the linear layers of one transformer block come from. */
typedef enum QdEvalSite {
        QD_EVAL_SITE_ATTN_IN,  /* attn_norm(x): input of attn_q/k/v */
        QD_EVAL_SITE_ATTN_OUT, /* attention output: input of attn_output */
        QD_EVAL_SITE_FFN_IN,   /* ffn_norm(x): input of ffn_gate/up */
        QD_EVAL_SITE_FFN_DOWN, /* silu(gate)·up: input of ffn_down */
        _QD_EVAL_SITE_MAX,
} QdEvalSite;

/* Called with n rows of cols floats (one per token) at each site of each layer. */
typedef int (*QdEvalCaptureFn)(void *userdata, uint32_t layer, QdEvalSite site, const float *x,
                               size_t n, size_t cols);

int qd_eval_model_load(const char *path, QdEvalModel **ret, char **ret_error);
/* The same without the f32 copy of the weights and the CPU forward (qd_eval_forward() answers
 * -EOPNOTSUPP): for tokenizing and for the Vulkan calibration, which uploads the file's weights. */
int qd_eval_model_open(const char *path, QdEvalModel **ret, char **ret_error);
QdEvalModel *qd_eval_model_free(QdEvalModel *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(QdEvalModel *, qd_eval_model_free);
uint32_t qd_eval_model_n_vocab(const QdEvalModel *m);
uint32_t qd_eval_model_n_layer(const QdEvalModel *m);
/* Tokenizes text with the model's tokenizer (BOS first when the model wants it); ret_bos gets
 * the BOS id or -1. */
int qd_eval_model_tokenize(const QdEvalModel *m, const char *text, size_t len, uint32_t **ret,
                           size_t *ret_n, int64_t *ret_bos);
/* Logits of every position of one window starting at position 0 (n × n_vocab floats). */
int qd_eval_forward(QdEvalModel *m, const uint32_t *tokens, size_t n, float *ret_logits,
                    QdEvalCaptureFn capture, void *userdata);
/* A QdLogitsFn over qd_eval_forward (userdata: the QdEvalModel). */
int qd_eval_logits_fn(void *userdata, const uint32_t *tokens, size_t n, float *ret_logits);

/* ---- quantizing a file ------------------------------------------------------------------- */

typedef enum QdQuantizeMethod {
        QD_QUANTIZE_RTN,       /* round to nearest, min-max range (ggml's reference) */
        QD_QUANTIZE_RTN_CLIP,  /* per-block clipping search minimising squared error */
        QD_QUANTIZE_GPTQ,      /* Hessians from calibration activations */
        QD_QUANTIZE_AWQ,       /* activation-aware scales folded into the RMSNorms / ffn_up */
        _QD_QUANTIZE_METHOD_MAX,
        QD_QUANTIZE_METHOD_INVALID = -1,
} QdQuantizeMethod;

const char *qd_quantize_method_to_string(QdQuantizeMethod m); /* "rtn", "rtn-clip", "gptq", "awq" */
QdQuantizeMethod qd_quantize_method_from_string(const char *s);

typedef struct QdQuantizeOptions {
        QdQuantType type;              /* Q8_0, Q4_0 or Q4_1 (group 32, GGUF layouts) */
        /* Instead of type: one of llama.cpp's K-quant mixes (RTN only, ggml's reference
         * quantizers; see qd_kmix_tensor_type()). */
        QdKMix kmix;
        QdQuantizeMethod method;
        /* GPTQ: dampening (0: 0.01), keep the natural column order, and plain min-max group
         * scales instead of the clip search. */
        float gptq_damp;
        bool gptq_no_act_order;
        bool gptq_minmax;
        bool awq_fast_search;   /* AWQ: QdAwqOptions.fast_search */
        /* Calibration (GPTQ, AWQ): tokens if given, else text (else a built-in English sample),
         * cut into n_samples windows of n_ctx tokens (0: 32 and 256). */
        const uint32_t *calib_tokens;
        size_t n_calib_tokens;
        const char *calib_text;
        size_t calib_len;
        size_t n_samples, n_ctx;
        /* Where the calibration forward runs: NULL or "cpu", the f32 reference (llama-cpu.c);
         * "vulkan" or "vulkan:SELECT" (a device index or name substring, as $QUANTD_VK_DEVICE),
         * the engine's F16 prompt pass with the statistics summed on the device
         * (llama-vulkan-capture.c). */
        const char *calib_device;
        /* Instead of tokens or text: n_samples × n_ctx ids drawn uniformly from the vocabulary by
         * a generator seeded with calib_random_seed (a model without a tokenizer, benchmarks). */
        bool calib_random;
        uint64_t calib_random_seed;
        unsigned n_threads;            /* 0: 1 */
        /* Messages ("quantizing blk.0.attn_q.weight"), may be NULL. */
        void (*log)(void *userdata, const char *msg);
        /* Fraction done (0..1), called between calibration windows, AWQ layers and tensors; a
         * negative return (e.g. -ECANCELED) stops the work and is returned. May be NULL. */
        int (*progress)(void *userdata, double fraction);
        void *userdata;                /* of log and progress */
} QdQuantizeOptions;

/* Reads an F32/F16/BF16 llama/qwen2 GGUF, quantizes every 2-D weight except token_embd.weight
 * (output.weight of the 4-bit types at Q6_K, or Q8_0 when its rows are not a multiple of 256, round
 * to nearest, as llama.cpp's Q4_0/Q4_1), copies all metadata, sets general.file_type (7 Q8_0,
 * 2 Q4_0, 3 Q4_1, or the K mix's) and writes out_path atomically. The last log message gives the
 * bits per weight over the quantized matrices and how many tensors got each type. */
int qd_quantize_file(const char *in_path, const char *out_path, const QdQuantizeOptions *o,
                     char **ret_error);

/* ---- evaluation -------------------------------------------------------------------------- */

typedef struct QdEvalTensor {
        char name[96];
        uint32_t type;           /* ggml type in the model */
        uint64_t n_elements;
        double sqnr_db;          /* against the reference's weight */
        double ideal_db;         /* 6.02·b + 1.76 for the b-bit codes of the type */
} QdEvalTensor;

typedef struct QdEvalReport {
        uint64_t file_bytes;
        uint64_t weight_elements, weight_bytes; /* 2-D tensors except token_embd.weight */
        double bpw;                             /* 8·weight_bytes / weight_elements */
        QdPplResult ppl;
        bool has_ref;
        QdPplResult ref_ppl;
        QdDistSummary dist;
        QdEvalTensor *tensors;                  /* quantized tensors present in the reference */
        size_t n_tensors;
} QdEvalReport;

void qd_eval_report_done(QdEvalReport *r);

typedef struct QdEvalOptions {
        size_t n_ctx;            /* 0: 512 */
        size_t max_windows;      /* 0: all */
        /* Progress messages ("window 3/19"), may be NULL. */
        void (*log)(void *userdata, const char *msg);
        /* Fraction done (0..1), called before each window of the model and of the reference; a
         * negative return (e.g. -ECANCELED) stops the evaluation and is returned. May be NULL. */
        int (*progress)(void *userdata, double fraction);
        void *userdata;          /* of log and progress */
} QdEvalOptions;

/* Perplexity of model over tokens (llama.cpp's protocol, see qd_ppl_eval); with ref (may be
 * NULL): also the reference's perplexity, KL / top-1 over the scored positions and per-tensor
 * SQNR of the model's weights against the reference's. */
int qd_eval_tokens(const char *model_path, const char *ref_path, const uint32_t *tokens,
                   size_t n_tokens, int64_t bos, const QdEvalOptions *o, QdEvalReport *ret);
/* The same over a text, tokenized with the model's tokenizer. */
int qd_eval_text(const char *model_path, const char *ref_path, const char *text, size_t len,
                 const QdEvalOptions *o, QdEvalReport *ret);
