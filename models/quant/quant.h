/* Post-training quantization core: round-to-nearest with range search, GPTQ, AWQ, SmoothQuant,
 * activation-range calibration, NF4/FP8 storage, and the metrics that judge them
 * (SQNR, KL divergence, top-1 agreement, llama.cpp-protocol perplexity).
 *
 * Matrices are row-major f32: a weight W is [rows × cols] with one output channel per row and
 * the input dimension contiguous (ggml's ne0 = cols), so quantization groups run along a row.
 * Activations X are [n_samples × cols], one token per row.
 * Every function returns 0 or a negative errno (-EINVAL bad arguments or non-finite input,
 * -ENOMEM, -ENODATA nothing accumulated yet, -EDOM a matrix that is not positive definite even
 * after extra dampening, -ECANCELED when the progress callback asked to stop, -ENOSPC a budget
 * that cannot be met); nothing is logged. All functions are thread-safe on distinct data.
 * Byte layouts of every format are in docs/QUANTIZATION.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* ---- formats ---------------------------------------------------------------------------- */

typedef enum QdQuantType {
        QD_QTYPE_Q8_0,      /* {fp16 d; int8 q[g]}:           x = d*q                         */
        QD_QTYPE_Q4_0,      /* {fp16 d; u8 nib[g/2]}:         x = d*(q-8)                     */
        QD_QTYPE_Q4_1,      /* {fp16 d; fp16 m; u8 nib[g/2]}: x = d*q + m                     */
        QD_QTYPE_NF4,       /* {fp16 absmax; u8 nib[g/2]}:    x = absmax*NF4[q]               */
        _QD_QTYPE_MAX,
        QD_QTYPE_INVALID = -1,
} QdQuantType;

/* "q8_0", "q4_0", "q4_1", "nf4"; parsing accepts the same names. */
const char *qd_quant_type_to_string(QdQuantType t);
QdQuantType qd_quant_type_from_string(const char *s);
/* Bits per weight including the block header, e.g. 4.5 for Q4_0 with g = 32. 0 if invalid. */
double qd_quant_bits_per_weight(QdQuantType t, unsigned group_size);
/* Largest number of integer levels the type can represent (256 or 16). */
unsigned qd_quant_levels(QdQuantType t);

/* Group sizes: 32 (the GGUF block, byte-identical to ggml's Q8_0/Q4_0/Q4_1), 64 and 128
 * (quantd's own layout: the same fields with a longer qs array; nibble j and j+g/2 share byte j).
 * NF4 uses 32, 64 (QLoRA's default) or 128. */
bool qd_quant_group_size_valid(QdQuantType t, unsigned group_size);
size_t qd_quant_block_bytes(QdQuantType t, unsigned group_size);
/* Bytes for a row of n elements; -EINVAL if n is not a multiple of the group size. */
int qd_quant_row_size(QdQuantType t, unsigned group_size, size_t n, size_t *ret);

/* llama.cpp's K-quant file types (models/quant/quant-kmix.c): the ggml type llama-quantize gives
 * each 2-D weight. Q4_K_M: Q6_K for output.weight and for attn_v / ffn_down in the layers
 * qd_kmix_more_bits() picks, Q4_K elsewhere; Q4_K: Q4_K everywhere (llama-quantize --pure);
 * Q6_K: Q6_K everywhere; Q5_K_M: as Q4_K_M with Q5_K for Q4_K. A row that is not a multiple of
 * 256 falls back as llama.cpp does: Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, output.weight to
 * Q8_0. token_embd.weight is the caller's choice. */
typedef enum QdKMix {
        QD_KMIX_NONE,
        QD_KMIX_Q4_K_M,
        QD_KMIX_Q4_K,
        QD_KMIX_Q6_K,
        QD_KMIX_Q5_K_M,
        _QD_KMIX_MAX,
} QdKMix;

const char *qd_kmix_to_string(QdKMix m);  /* "q4_k_m", "q4_k", "q6_k", "q5_k_m"; NULL for NONE */
QdKMix qd_kmix_from_string(const char *s); /* case-insensitive; QD_KMIX_NONE if unknown */
/* llama.cpp's general.file_type for the mix (LLAMA_FTYPE_MOSTLY_Q4_K_M = 15, Q4_K_S = 14,
 * Q6_K = 18, Q5_K_M = 17). */
uint32_t qd_kmix_file_type(QdKMix m);
/* use_more_bits(): layer < n/8, layer >= 7n/8, or (layer − n/8) % 3 == 2. */
bool qd_kmix_more_bits(uint32_t layer, uint32_t n_layer);
/* The ggml type (GgmlType number) of the weight called name ("output.weight",
 * "blk.N.attn_v.weight", ...) with ne0 elements per row in a model of n_layer blocks. -EINVAL if
 * ne0 is not a multiple of 32. */
int qd_kmix_tensor_type(QdKMix m, const char *name, uint64_t ne0, uint32_t n_layer, uint32_t *ret_type);
/* ggml_quantize_row() (ggml's reference quantizers, K-quants included) over the rows of W
 * [rows × cols] into dst (rows · ggml_row_size bytes), in tiles of 16 rows on n_threads threads;
 * the bytes do not depend on n_threads. */
int qd_ggml_quantize_matrix(uint32_t type, const float *w, size_t rows, size_t cols, unsigned n_threads,
                            void *dst);
/* The reverse: ggml_dequantize_row() over rows × cols elements of src into dst, threaded alike. */
int qd_ggml_dequantize_matrix(uint32_t type, const void *src, size_t rows, size_t cols, unsigned n_threads,
                              float *dst);
/* Both in one pass, a row at a time (no f32 copy of the matrix): src of src_type → dst of type. */
int qd_ggml_convert_matrix(uint32_t src_type, const void *src, uint32_t type, void *dst, size_t rows, size_t cols,
                           unsigned n_threads);

/* ---- round-to-nearest ------------------------------------------------------------------- */

typedef enum QdQuantRange {
        QD_RANGE_MINMAX,     /* the plain ggml choice, the extremes representable; qd_quant_row()
                              * writes exactly ggml's quantize_row_*_ref bytes (codes from the
                              * unrounded scale), other paths the nearest code for the stored one */
        QD_RANGE_CLIP,       /* search a grid of clipped ranges, keep the one with least (weighted)
                              * squared error, least-squares refit of the scale; never worse than
                              * MINMAX on the same group */
        QD_RANGE_PERCENTILE, /* range from a percentile of the group's values */
        _QD_RANGE_MAX,
} QdQuantRange;

typedef struct QdQuantParams {
        QdQuantType type;
        unsigned group_size;     /* 0: 32 */
        QdQuantRange range;
        unsigned clip_grid;      /* QD_RANGE_CLIP: candidates per side; 0: 20 */
        float clip_min;          /* QD_RANGE_CLIP: smallest range fraction tried; 0: 0.5 */
        float percentile;        /* QD_RANGE_PERCENTILE, in (50, 100]; 0: 99.0 */
} QdQuantParams;

/* The affine map of one group: value = d*c + m for the integer code c, where c is in
 * [-127, 127] for Q8_0, [-8, 7] for Q4_0 (c = q - 8) and [0, 15] for Q4_1; m is 0 except for
 * Q4_1. d and m are already rounded to fp16, as stored. NF4 uses d = absmax, c in [0, 15]. */
typedef struct QdGroupScale {
        float d, m;
} QdGroupScale;

/* Chooses the scale of one group of n values (n = group size; at most 128 for PERCENTILE).
 * w: optional per-element importance weights (>= 0) for the error the range search minimises;
 * NULL means all 1. */
int qd_quant_group_scale(const QdQuantParams *p, const float *x, const float *w, size_t n,
                         QdGroupScale *ret);
/* The code of one value under a group scale (nearest level, clamped), and its dequantized value. */
int qd_quant_code(QdQuantType t, const QdGroupScale *s, float x);
float qd_quant_code_value(QdQuantType t, const QdGroupScale *s, int c);
/* Writes one block from n codes and the scale. */
void qd_quant_pack_block(QdQuantType t, unsigned group_size, const QdGroupScale *s,
                         const int8_t *codes, void *dst);

/* Quantizes a row of n values into consecutive blocks. w: optional importance, length n. */
int qd_quant_row(const QdQuantParams *p, const float *x, const float *w, size_t n, void *dst);
/* Dequantizes a row; for group size 32 of the GGUF types this is ggml_dequantize_row(). */
int qd_dequant_row(QdQuantType t, unsigned group_size, const void *src, float *dst, size_t n);
/* Quantizes rows × cols (row-major) and, if ret_deq != NULL, writes the dequantized matrix.
 * importance: optional, one weight per column. n_threads: 0 or 1 for the calling thread only. */
int qd_quant_matrix(const QdQuantParams *p, const float *w_in, const float *importance,
                    size_t rows, size_t cols, unsigned n_threads, void *dst, float *ret_deq);

/* ---- NF4 and FP8 E4M3 ------------------------------------------------------------------- */

/* QLoRA's 16 NormalFloat levels in [-1, 1], ascending; code 7 is exactly 0. */
extern const float qd_nf4_levels[16];

/* FP8 E4M3 (OCP "E4M3FN": bias 7, no infinities, 0x7f/0xff NaN, max 448). Round to nearest even,
 * saturating to ±448. */
uint8_t qd_fp32_to_e4m3(float f);
float qd_e4m3_to_fp32(uint8_t v);
/* FP8 E4M3 weights with one f32 scale per output channel (row): w ≈ scale[r]*e4m3(q), scale =
 * absmax/448. dst is rows × cols bytes, ret_scales rows floats. */
int qd_fp8_quantize_matrix(const float *w, size_t rows, size_t cols, uint8_t *dst,
                           float *ret_scales);
int qd_fp8_dequantize_matrix(const uint8_t *src, const float *scales, size_t rows, size_t cols,
                             float *dst);

/* ---- metrics ---------------------------------------------------------------------------- */

double qd_metric_mse(const float *ref, const float *x, size_t n);
/* 10·log10(Σref² / Σ(ref-x)²) in dB; +inf when identical, -inf when ref is all zero. */
double qd_metric_sqnr_db(const float *ref, const float *x, size_t n);
/* The ideal uniform quantizer's SQNR for a full-scale sine, 6.02·bits + 1.76 dB. */
double qd_metric_sqnr_ideal_db(double bits);
/* KL(P‖Q) in nats between softmax(ref_logits) = P and softmax(logits) = Q, in double. */
double qd_metric_kl_logits(const float *ref_logits, const float *logits, size_t n_vocab);
size_t qd_metric_argmax(const float *x, size_t n);
/* -log softmax(logits)[token] in double. */
double qd_metric_nll(const float *logits, size_t n_vocab, uint32_t token);

/* Accumulates next-token distribution statistics of a test model against a reference. */
typedef struct QdDistStats QdDistStats;
int qd_dist_stats_new(QdDistStats **ret);
QdDistStats *qd_dist_stats_free(QdDistStats *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(QdDistStats *, qd_dist_stats_free);
int qd_dist_stats_add(QdDistStats *s, const float *ref_logits, const float *logits, size_t n_vocab);
typedef struct QdDistSummary {
        size_t n;            /* positions compared */
        double kl_mean;      /* nats */
        double kl_p99;       /* 99th percentile (nearest rank) */
        double kl_max;
        double top1;         /* fraction of positions where both argmaxes agree */
} QdDistSummary;
int qd_dist_stats_summary(const QdDistStats *s, QdDistSummary *ret);

/* Logits of a window: writes n_tokens × n_vocab floats, row i = logits after tokens[0..i].
 * Returns 0 or a negative errno, which the evaluation passes on. */
typedef int (*QdLogitsFn)(void *userdata, const uint32_t *tokens, size_t n_tokens, float *ret_logits);

/* llama.cpp's perplexity protocol: windows of n_ctx tokens (0: 512) that do not overlap; if
 * bos >= 0 the first token of every window is replaced by it; only the second half of each window
 * is scored (predictions at positions n_ctx/2 .. n_ctx-2 of token i+1), so every scored token
 * has at least n_ctx/2 tokens of context. A trailing partial window is dropped. */
typedef struct QdPplOptions {
        size_t n_ctx;
        int64_t bos;             /* -1: keep the text's tokens */
        size_t max_windows;      /* 0: all */
} QdPplOptions;
typedef struct QdPplResult {
        size_t n_windows, n_scored;
        double nll_mean;         /* nats per scored token */
        double ppl;              /* exp(nll_mean) */
        double ppl_err;          /* ppl · stderr(nll), as llama.cpp prints it */
} QdPplResult;
int qd_ppl_eval(const uint32_t *tokens, size_t n_tokens, size_t n_vocab, const QdPplOptions *o,
                QdLogitsFn fn, void *userdata, QdPplResult *ret);
/* Same windows for a reference and a test model: both perplexities plus the KL / top-1 statistics
 * over the scored positions. */
int qd_ppl_compare(const uint32_t *tokens, size_t n_tokens, size_t n_vocab, const QdPplOptions *o,
                   QdLogitsFn ref_fn, void *ref_userdata, QdLogitsFn fn, void *userdata,
                   QdPplResult *ret_ref, QdPplResult *ret, QdDistSummary *ret_dist);

/* ---- activation range calibration ------------------------------------------------------- */

typedef enum QdCalibMethod {
        QD_CALIB_MINMAX,     /* absmax seen */
        QD_CALIB_PERCENTILE, /* the percentile of |x| from the histogram */
        QD_CALIB_ENTROPY,    /* TensorRT's KL-divergence threshold search */
        _QD_CALIB_MAX,
} QdCalibMethod;

/* Histogram of |x| with 2048 bins over [0, range]; the range doubles (merging bin pairs) when a
 * larger value arrives, as ONNX Runtime's collector does, so samples can stream in. */
#define QD_CALIB_BINS 2048
typedef struct QdCalib QdCalib;
int qd_calib_new(QdCalib **ret);
QdCalib *qd_calib_free(QdCalib *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(QdCalib *, qd_calib_free);
int qd_calib_add(QdCalib *c, const float *x, size_t n);
float qd_calib_absmax(const QdCalib *c);
/* The clipping threshold T (quantize with scale T/127 for int8). percentile: e.g. 99.99 (0 means
 * 99.99); levels: quantized levels of |x| for ENTROPY (0 means 128, i.e. int8). */
int qd_calib_threshold(const QdCalib *c, QdCalibMethod m, double percentile, unsigned levels,
                       float *ret);

/* ---- progress and cancellation ---------------------------------------------------------- */

/* Called now and then with the fraction done; a non-zero return cancels (-ECANCELED). May be
 * called from worker threads, but never concurrently. */
typedef int (*QdProgressFn)(void *userdata, double fraction);

/* ---- the BLAS under GPTQ and AWQ (OpenBLAS) --------------------------------------------- */

/* The OPENBLAS_CORETYPE that this CPU should use when the loaded OpenBLAS took it for an old
 * one and runs generic kernels (a CPU newer than the library: 0.3.21 knows no Emerald Rapids),
 * else NULL. */
const char *qd_blas_better_coretype(void);
/* For a program's main() before any thread starts: when qd_blas_better_coretype() says so and
 * OPENBLAS_CORETYPE is not set, sets it (and OPENBLAS_NUM_THREADS=1 unless set) and executes
 * /proc/self/exe with argv again, as OpenBLAS reads them only when loaded. Returns if there is
 * nothing to do or the exec failed (then with the slower kernels). */
void qd_blas_tune_process(char **argv);

/* ---- GPTQ ------------------------------------------------------------------------------- */

/* Hessian accumulation: H = 2/N Σ x xᵀ over all N samples added so far, cols × cols, double. */
typedef struct QdHessian QdHessian;
int qd_hessian_new(size_t cols, QdHessian **ret);
QdHessian *qd_hessian_free(QdHessian *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(QdHessian *, qd_hessian_free);
int qd_hessian_add(QdHessian *h, const float *x, size_t n_samples, unsigned n_threads);
/* The same from a Gram matrix Σ x xᵀ over n_samples rows computed elsewhere (the Vulkan
 * calibration): cols × cols floats, of which only the upper triangle is read. */
int qd_hessian_add_gram(QdHessian *h, const float *gram, size_t n_samples, unsigned n_threads);
const double *qd_hessian_data(const QdHessian *h);
/* Mean squared output error per sample of using deq instead of w ([rows × cols] each), from the
 * Hessian alone: (1/N) Σ_t ‖(w − deq)·x_t‖² = ½ Σ_r e_rᵀ H e_r. The per-tensor sensitivity for
 * qd_mixed_choose() without keeping the calibration activations. */
int qd_hessian_output_error(const QdHessian *h, const float *w, const float *deq, size_t rows,
                            double *ret);
size_t qd_hessian_samples(const QdHessian *h);

typedef struct QdGptqOptions {
        float damp;              /* λ = damp·mean(diag H); 0: 0.01 */
        unsigned block;          /* lazy update block; 0: 128 */
        bool act_order;          /* process columns by descending diag(H) */
        bool static_groups;      /* all group scales from W before any update (GPTQ's option);
                                  * default: when a group's first column comes up */
        unsigned n_threads;      /* 0: 1 */
        QdProgressFn progress;
        void *userdata;
} QdGptqOptions;

/* Quantizes W [rows × cols] with error compensation. dst gets rows · row_size bytes in the
 * layout of p; ret_deq (optional) the dequantized matrix. W is not modified. */
int qd_gptq_quantize(const QdQuantParams *p, const QdGptqOptions *o, const float *w,
                     size_t rows, size_t cols, const QdHessian *h, void *dst, float *ret_deq);

/* ---- AWQ -------------------------------------------------------------------------------- */

typedef struct QdAwqLinear {
        const float *w;          /* [rows × cols], the original weight */
        size_t rows;
        void *dst;               /* optional: quantized blocks of W·diag(s) after clipping */
        float *ret_w;            /* optional: W·diag(s) with the clip applied, f32 */
} QdAwqLinear;

typedef struct QdAwqOptions {
        unsigned n_grid;         /* α candidates i/n_grid, i = 0..n_grid-1; 0: 20 */
        bool clip;               /* output-aware clip search after scaling (AWQ's auto_clip) */
        float clip_max_shrink;   /* clip: smallest range tried = 1 - max_shrink; 0: 0.5 */
        unsigned clip_grid;      /* 0: 20 */
        size_t max_tokens;       /* the α and clip searches use at most this many evenly spaced
                                  * calibration tokens (the final error uses all); 0: all */
        bool fast_search;        /* score every α with min-max RTN (AWQ's own search), then with
                                  * p's range search only from that minimum to a local one and at
                                  * α = 0 (default: p's range search at every α): ~40% less time,
                                  * may settle on another α (docs/QUALITY.md) */
        unsigned n_threads;      /* 0: 1 */
        QdProgressFn progress;
        void *userdata;
} QdAwqOptions;

typedef struct QdAwqResult {
        float alpha;             /* chosen exponent */
        double err_rtn;          /* Σ‖XWᵀ - X Ŵᵀ‖² over the linears, plain RTN of p (α = 0) */
        double err_best;         /* the same after scaling (before clipping) */
        double err_final;        /* after clipping, over all tokens (the two above over the
                                  * max_tokens subset when one is used) */
} QdAwqResult;

/* x: calibration inputs [n_samples × cols] shared by all linears. ret_scales[cols]: s; the caller
 * divides the preceding RMSNorm weight (or projection rows) by s so the model computes the same
 * function with the scaled weights. */
int qd_awq_quantize(const QdQuantParams *p, const QdAwqOptions *o, const float *x,
                    size_t n_samples, size_t cols, QdAwqLinear *lin, size_t n_lin,
                    float *ret_scales, QdAwqResult *ret);

/* ---- mixed precision ------------------------------------------------------------------ */

/* One tensor's candidate formats: bytes[k] and cost[k] (its sensitivity in that format, e.g.
 * the output error or the model's KL increase measured in the calibration run; >= 0). */
typedef struct QdMixedTensor {
        size_t n_options;
        const uint64_t *bytes;
        const double *cost;
} QdMixedTensor;

/* Picks option ret_choice[i] for each of the n tensors with Σ bytes <= budget and a small Σ cost:
 * every tensor starts at its smallest option, then the upgrade saving the most cost per extra
 * byte that still fits is applied until none fits, then single changes and pairs of changes that
 * lower the cost within the budget. A heuristic, not exact. -ENOSPC if even the smallest options
 * do not fit. */
int qd_mixed_choose(const QdMixedTensor *t, size_t n, uint64_t budget, size_t *ret_choice,
                    uint64_t *ret_bytes, double *ret_cost);

/* Folds per-channel input scales into the op before the linears: norm_w[j] /= s[j] for an RMSNorm
 * weight (AWQ, SmoothQuant), so norm(x)·diag(1/s) feeds the weights scaled by diag(s). */
int qd_fold_scales_into_norm(float *norm_w, const float *s, size_t cols);

/* ---- SmoothQuant ------------------------------------------------------------------------ */

/* s_j = max|X_j|^α / max|W_j|^(1-α) over the activation channel j and the weight column j of
 * all linears sharing the input (act_absmax[cols], w_absmax[cols] may come from calibration).
 * Then X' = X/s (folded into the previous op) and W' = W·diag(s). α: 0 means 0.5. */
int qd_smooth_scales(const float *act_absmax, const float *w_absmax, size_t cols, float alpha,
                     float *ret_scales);
/* Column-wise absmax of a [rows × cols] matrix, merged into ret[cols] (initialise with zeros). */
void qd_absmax_columns(const float *m, size_t rows, size_t cols, float *ret);
/* Per-token dynamic int8 activation quantization (the CPU reference for the GPU path): each row
 * of x [n × cols] gets scale absmax/127; ret_q n × cols int8, ret_scales n floats. */
int qd_act_quantize_per_token(const float *x, size_t n, size_t cols, int8_t *ret_q,
                              float *ret_scales);
/* Int8 weights with one f32 scale per output channel (row), scale = absmax/127, codes -127..127:
 * the W8 side of W8A8. */
int qd_w8_quantize_matrix(const float *w, size_t rows, size_t cols, int8_t *dst, float *ret_scales);
/* Per-tensor static int8 quantize-dequantize with a given threshold (scale T/127). */
void qd_act_fake_quant_tensor(const float *x, size_t n, float threshold, float *ret);
