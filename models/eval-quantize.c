/* Quantizes a whole F16/F32 GGUF model to Q8_0/Q4_0/Q4_1 with RTN, clipped RTN, GPTQ or AWQ, or to
 * one of llama.cpp's K-quant mixes (Q4_K_M, Q4_K, Q6_K) with ggml's reference quantizers, gathering
 * calibration activations with the evaluation forward pass. */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "eval-internal.h"
#include "eval.h"
#include "gguf.h"


static const char *const method_names[_QD_QUANTIZE_METHOD_MAX] = {
        [QD_QUANTIZE_RTN] = "rtn",
        [QD_QUANTIZE_RTN_CLIP] = "rtn-clip",
        [QD_QUANTIZE_GPTQ] = "gptq",
        [QD_QUANTIZE_AWQ] = "awq",
};

const char *qd_quantize_method_to_string(QdQuantizeMethod m) {
        return m >= 0 && m < _QD_QUANTIZE_METHOD_MAX ? method_names[m] : NULL;
}

QdQuantizeMethod qd_quantize_method_from_string(const char *s) {
        for (int i = 0; s && i < _QD_QUANTIZE_METHOD_MAX; i++)
                if (streq(s, method_names[i]))
                        return i;
        return QD_QUANTIZE_METHOD_INVALID;
}

/* Public-domain English for calibration when the caller gives none (Lincoln, Jefferson). */
static const char default_calib_text[] =
        "Four score and seven years ago our fathers brought forth on this continent, a new nation, "
        "conceived in Liberty, and dedicated to the proposition that all men are created equal. Now "
        "we are engaged in a great civil war, testing whether that nation, or any nation so conceived "
        "and so dedicated, can long endure. We are met on a great battle-field of that war. We have "
        "come to dedicate a portion of that field, as a final resting place for those who here gave "
        "their lives that that nation might live. It is altogether fitting and proper that we should "
        "do this. But, in a larger sense, we can not dedicate, we can not consecrate, we can not "
        "hallow this ground. The brave men, living and dead, who struggled here, have consecrated it, "
        "far above our poor power to add or detract.\n\n"
        "When in the Course of human events, it becomes necessary for one people to dissolve the "
        "political bands which have connected them with another, and to assume among the powers of "
        "the earth, the separate and equal station to which the Laws of Nature and of Nature's God "
        "entitle them, a decent respect to the opinions of mankind requires that they should declare "
        "the causes which impel them to the separation. We hold these truths to be self-evident, that "
        "all men are created equal, that they are endowed by their Creator with certain unalienable "
        "Rights, that among these are Life, Liberty and the pursuit of Happiness.\n";

static void say(const QdQuantizeOptions *o, const char *fmt, ...) _printf_(2, 3);
static void say(const QdQuantizeOptions *o, const char *fmt, ...) {
        char buf[512];
        va_list ap;

        if (!o->log)
                return;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        o->log(o->userdata, buf);
}

/* Tells o->progress; < 0 when it asks to stop. */
static int report(const QdQuantizeOptions *o, double fraction) {
        int k = o->progress ? o->progress(o->userdata, fraction) : 0;
        return k < 0 ? k : 0;
}

#define fail(ret_error, r, ...) error_set((ret_error), (r), __VA_ARGS__)

/* ---- calibration ---- */

#define AWQ_MAX_ROWS 512

typedef struct Calib {
        bool gptq;
        uint32_t n_layer;
        unsigned n_threads;
        QdHessian **h;       /* [layer * _QD_EVAL_SITE_MAX + site] (GPTQ) */
        float **x;           /* the same, rows kept for AWQ */
        size_t *x_n, *x_cols;
        size_t stride, seen_base;
} Calib;

static void calib_done(Calib *c) {
        size_t n = (size_t) c->n_layer * _QD_EVAL_SITE_MAX;
        for (size_t i = 0; c->h && i < n; i++)
                qd_hessian_free(c->h[i]);
        for (size_t i = 0; c->x && i < n; i++)
                free(c->x[i]);
        free(c->h);
        free(c->x);
        free(c->x_n);
        free(c->x_cols);
}

static int calib_capture(void *userdata, uint32_t layer, QdEvalSite site, const float *x, size_t n,
                         size_t cols) {
        Calib *c = userdata;
        size_t i = (size_t) layer * _QD_EVAL_SITE_MAX + site;
        int r;

        if (c->gptq) {
                if (!c->h[i]) {
                        r = qd_hessian_new(cols, &c->h[i]);
                        if (r < 0)
                                return r;
                }
                return qd_hessian_add(c->h[i], x, n, c->n_threads);
        }
        if (!c->x[i]) {
                c->x[i] = malloc(AWQ_MAX_ROWS * cols * sizeof(float));
                if (!c->x[i])
                        return -ENOMEM;
                c->x_cols[i] = cols;
        }
        /* Every stride-th token, so the rows spread over all calibration windows. */
        for (size_t j = 0; j < n && c->x_n[i] < AWQ_MAX_ROWS; j++)
                if ((c->seen_base + j) % c->stride == 0)
                        memcpy(c->x[i] + c->x_n[i]++ * cols, x + j * cols, cols * sizeof(float));
        return 0;
}

/* The Vulkan calibration's statistics of one site: a Gram matrix (GPTQ) or rows (AWQ). */
static int calib_take(void *userdata, uint32_t layer, QdEvalSite site, const float *data, size_t n,
                      size_t cols) {
        Calib *c = userdata;
        size_t i = (size_t) layer * _QD_EVAL_SITE_MAX + site;
        int r;

        if (c->gptq) {
                if (!c->h[i] && (r = qd_hessian_new(cols, &c->h[i])) < 0)
                        return r;
                return qd_hessian_add_gram(c->h[i], data, n, c->n_threads);
        }
        free(c->x[i]);
        c->x[i] = malloc(MAX(n, (size_t) 1) * cols * sizeof(float));
        if (!c->x[i])
                return -ENOMEM;
        memcpy(c->x[i], data, n * cols * sizeof(float));
        c->x_n[i] = n;
        c->x_cols[i] = cols;
        return 0;
}

/* "vulkan" or "vulkan:SELECT": true, with *ret_select SELECT or NULL; NULL or "cpu": false. */
static int calib_device(const char *s, bool *ret_vk, const char **ret_select) {
        *ret_select = NULL;
        *ret_vk = false;
        if (!s || streq(s, "cpu"))
                return 0;
        if (streq(s, "vulkan"))
                return *ret_vk = true, 0;
        if (strncmp(s, "vulkan:", 7) == 0 && s[7]) {
                *ret_select = s + 7;
                return *ret_vk = true, 0;
        }
        return -EINVAL;
}

static int calibrate(const char *in_path, const QdQuantizeOptions *o, Calib *c, char **ret_error) {
        _cleanup_(qd_eval_model_freep) QdEvalModel *m = NULL;
        _cleanup_free_ uint32_t *own = NULL;
        _cleanup_free_ float *logits = NULL;
        const uint32_t *tok = o->calib_tokens;
        size_t n_tok = o->n_calib_tokens;
        size_t n_ctx = o->n_ctx ? o->n_ctx : 256, n_samples = o->n_samples ? o->n_samples : 32;
        const char *select;
        bool vk;
        int r;

        if (calib_device(o->calib_device, &vk, &select) < 0)
                return fail(ret_error, -EINVAL, "unknown calibration device '%s' (cpu, vulkan, vulkan:SELECT)",
                            o->calib_device);
        r = vk ? qd_eval_model_open(in_path, &m, ret_error) : qd_eval_model_load(in_path, &m, ret_error);
        if (r < 0)
                return r;
        if (!tok && o->calib_random) {
                /* splitmix64: the same ids for a seed on every machine */
                uint64_t st = o->calib_random_seed, nv = qd_eval_model_n_vocab(m);
                n_tok = n_samples * n_ctx;
                own = malloc(n_tok * sizeof(uint32_t));
                if (!own)
                        return -ENOMEM;
                for (size_t i = 0; i < n_tok; i++) {
                        uint64_t z = (st += 0x9e3779b97f4a7c15ULL);
                        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
                        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
                        own[i] = (uint32_t) ((z ^ (z >> 31)) % nv);
                }
                tok = own;
        } else if (!tok) {
                const char *text = o->calib_text ? o->calib_text : default_calib_text;
                size_t len = o->calib_text ? o->calib_len : strlen(default_calib_text);
                r = qd_eval_model_tokenize(m, text, len, &own, &n_tok, NULL);
                if (r < 0)
                        return fail(ret_error, r, "cannot tokenize the calibration text");
                tok = own;
        }
        if (n_tok < 2)
                return fail(ret_error, -EINVAL, "calibration text too short");
        n_samples = MIN(n_samples, MAX((size_t) 1, n_tok / n_ctx));
        size_t n_used = MIN(n_tok, n_samples * n_ctx);

        c->n_layer = qd_eval_model_n_layer(m);
        size_t n = (size_t) c->n_layer * _QD_EVAL_SITE_MAX;
        c->h = calloc(n, sizeof(QdHessian *));
        c->x = calloc(n, sizeof(float *));
        c->x_n = calloc(n, sizeof(size_t));
        c->x_cols = calloc(n, sizeof(size_t));
        logits = malloc(MIN(n_ctx, n_used) * qd_eval_model_n_vocab(m) * sizeof(float));
        if (!c->h || !c->x || !c->x_n || !c->x_cols || !logits)
                return -ENOMEM;
        c->stride = MAX((size_t) 1, n_used / AWQ_MAX_ROWS);

        if (vk) {
                QdCalibVkOptions vo = { .device = select, .gram = c->gptq, .max_rows = c->gptq ? 0 : AWQ_MAX_ROWS,
                                        .stride = c->stride, .q = o };
                return qd_eval_calib_vk(m, &vo, tok, n_used, n_ctx, calib_take, c, ret_error);
        }
        for (size_t s = 0; s * n_ctx < n_used; s++) {
                size_t len = MIN(n_ctx, n_used - s * n_ctx);
                say(o, "calibration window %zu/%zu (%zu tokens)", s + 1, (n_used + n_ctx - 1) / n_ctx, len);
                r = report(o, 0.3 * (double) s / ((n_used + n_ctx - 1) / n_ctx));
                if (r < 0)
                        return r;
                c->seen_base = s * n_ctx;
                r = qd_eval_forward(m, tok + s * n_ctx, len, logits, calib_capture, c);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- per tensor ---- */

typedef struct OutTensor {
        GgmlType type;
        void *data;        /* owned; NULL: copy the input tensor */
        size_t size;
} OutTensor;

static int to_f32(const GgufTensor *t, unsigned n_threads, float **ret) {
        _cleanup_free_ float *d = malloc(t->n_elements * sizeof(float));
        int r;

        if (!d)
                return -ENOMEM;
        r = qd_ggml_dequantize_matrix(t->type, t->data, t->n_elements / t->ne[0], t->ne[0], n_threads, d);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(d);
        return 0;
}

static GgmlType ggml_of(QdQuantType t) {
        return t == QD_QTYPE_Q8_0 ? GGML_TYPE_Q8_0 : t == QD_QTYPE_Q4_0 ? GGML_TYPE_Q4_0 : GGML_TYPE_Q4_1;
}

/* The QdQuantType of a ggml type the models/quant algorithms handle, or QD_QTYPE_INVALID. */
static QdQuantType qd_of(GgmlType t) {
        return t == GGML_TYPE_Q8_0 ? QD_QTYPE_Q8_0 : t == GGML_TYPE_Q4_0 ? QD_QTYPE_Q4_0 :
               t == GGML_TYPE_Q4_1 ? QD_QTYPE_Q4_1 : QD_QTYPE_INVALID;
}

static int alloc_ggml(GgmlType type, size_t rows, size_t cols, OutTensor *out) {
        size_t rb;
        int r = ggml_row_size(type, cols, &rb);
        if (r < 0)
                return r;
        out->type = type;
        out->size = rb * rows;
        out->data = malloc(out->size);
        return out->data ? 0 : -ENOMEM;
}

/* Blocks in the model: 1 + the largest N of a blk.N. tensor. */
static uint32_t count_layers(const Gguf *g) {
        uint32_t n = 0;
        for (size_t i = 0; i < gguf_n_tensors(g); i++) {
                unsigned l;
                if (sscanf(gguf_tensor(g, i)->name, "blk.%u.", &l) == 1)
                        n = MAX(n, (uint32_t) l + 1);
        }
        return n;
}

/* The ggml type of weight t: the K mix's, or o->type with llama.cpp's output matrix rule for the
 * 4-bit types (Q6_K, Q8_0 for rows that are not whole super-blocks). */
static int type_of(const QdQuantizeOptions *o, const GgufTensor *t, uint32_t n_layer, GgmlType *ret) {
        uint32_t gt;
        int r;

        if (o->kmix != QD_KMIX_NONE) {
                r = qd_kmix_tensor_type(o->kmix, t->name, t->ne[0], n_layer, &gt);
                if (r < 0)
                        return r;
                *ret = gt;
        } else if (streq(t->name, "output.weight") && o->type != QD_QTYPE_Q8_0)
                *ret = t->ne[0] % QK_K == 0 ? GGML_TYPE_Q6_K : GGML_TYPE_Q8_0;
        else
                *ret = ggml_of(o->type);
        return 0;
}

static int alloc_out(QdQuantType type, size_t rows, size_t cols, OutTensor *out) {
        size_t rb;
        int r = qd_quant_row_size(type, 32, cols, &rb);
        if (r < 0)
                return r;
        out->type = ggml_of(type);
        out->size = rb * rows;
        out->data = malloc(out->size);
        return out->data ? 0 : -ENOMEM;
}

static bool is_weight(const GgufTensor *t) {
        return t->n_dims == 2 && t->ne[1] > 1 && t->ne[0] % 32 == 0 && !streq(t->name, "token_embd.weight");
}

/* blk.N.<name>: the calibration site of a linear's input, or -1. */
static int site_of(const char *name, uint32_t *ret_layer) {
        static const struct {
                const char *suffix;
                QdEvalSite site;
        } map[] = {
                { "attn_q.weight", QD_EVAL_SITE_ATTN_IN },  { "attn_k.weight", QD_EVAL_SITE_ATTN_IN },
                { "attn_v.weight", QD_EVAL_SITE_ATTN_IN },  { "attn_output.weight", QD_EVAL_SITE_ATTN_OUT },
                { "ffn_gate.weight", QD_EVAL_SITE_FFN_IN }, { "ffn_up.weight", QD_EVAL_SITE_FFN_IN },
                { "ffn_down.weight", QD_EVAL_SITE_FFN_DOWN },
        };
        unsigned l;
        int off = 0;

        if (sscanf(name, "blk.%u.%n", &l, &off) != 1 || off == 0)
                return -1;
        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (streq(name + off, map[i].suffix)) {
                        *ret_layer = l;
                        return map[i].site;
                }
        return -1;
}

/* AWQ of the n linear layers t[first..] (f32 weights f[], output slots idx[]) that read the
 * input captured at slot x of cols channels; their quantized rows go to out[], the scales to s. */
static int awq_group(const QdQuantParams *p, const QdAwqOptions *ao, const Calib *c, size_t x, size_t cols,
                     const GgufTensor *const *t, float *const *f, const int *idx, size_t first, size_t n,
                     const char *label, float *s, OutTensor *out, const QdQuantizeOptions *o) {
        QdAwqLinear lin[3];
        QdAwqResult res;
        int r;

        assert(n <= ELEMENTSOF(lin));
        if (!c->x[x])
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                lin[i] = (QdAwqLinear) { .w = f[first + i], .rows = t[first + i]->ne[1] };
                r = alloc_out(p->type, lin[i].rows, cols, &out[idx[first + i]]);
                if (r < 0)
                        return r;
                lin[i].dst = out[idx[first + i]].data;
        }
        r = qd_awq_quantize(p, ao, c->x[x], c->x_n[x], cols, lin, n, s, &res);
        if (r < 0)
                return r;
        say(o, "awq %s: alpha %.2f, output error %.4g -> %.4g", label, res.alpha, res.err_rtn, res.err_final);
        return 0;
}

/* AWQ for one layer: ffn_down's scales folded into ffn_up's rows, ffn_gate/up's into ffn_norm,
 * attn_q/k/v's into attn_norm. attn_output keeps clipped RTN: with grouped-query attention its
 * input channels cannot be rescaled through attn_v alone. */
static int awq_layer(const Gguf *g, uint32_t l, const QdQuantParams *p, const QdAwqOptions *ao,
                     const Calib *c, OutTensor *out, const QdQuantizeOptions *o) {
        char nm[8][96];
        const char *suffix[8] = { "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                                  "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight" };
        const GgufTensor *t[8];
        int idx[8];
        float *f[8] = {}, *s = NULL;
        int r = 0;

        for (size_t i = 0; i < 8; i++) {
                snprintf(nm[i], sizeof(nm[i]), "blk.%u.%s", l, suffix[i]);
                t[i] = NULL;
                idx[i] = -1;
                for (size_t k = 0; k < gguf_n_tensors(g); k++)
                        if (streq(gguf_tensor(g, k)->name, nm[i])) {
                                t[i] = gguf_tensor(g, k);
                                idx[i] = (int) k;
                        }
                if (!t[i] || (i != 0 && i != 4 && !is_weight(t[i])))
                        return 0; /* not the expected layout: the generic path handles it */
        }
        for (size_t i = 0; i < 8; i++)
                if ((r = to_f32(t[i], ao->n_threads, &f[i])) < 0)
                        goto finish;

        size_t base = (size_t) l * _QD_EVAL_SITE_MAX;
        size_t E = t[1]->ne[0], F = t[7]->ne[0];
        char label[64];
        s = malloc(MAX(E, F) * sizeof(float));
        if (!s) {
                r = -ENOMEM;
                goto finish;
        }

        /* ffn_down, scales into ffn_up's rows (its outputs are down's input channels). */
        r = awq_group(p, ao, c, base + QD_EVAL_SITE_FFN_DOWN, F, t, f, idx, 7, 1, nm[7], s, out, o);
        if (r < 0)
                goto finish;
        for (size_t row = 0; row < F; row++)
                for (size_t i = 0; i < E; i++)
                        f[6][row * E + i] /= s[row];

        /* ffn_gate/up, scales into ffn_norm. */
        snprintf(label, sizeof(label), "blk.%u.ffn_gate/up", l);
        r = awq_group(p, ao, c, base + QD_EVAL_SITE_FFN_IN, E, t, f, idx, 5, 2, label, s, out, o);
        if (r < 0)
                goto finish;
        for (size_t i = 0; i < E; i++)
                f[4][i] /= s[i];

        /* attn_q/k/v, scales into attn_norm. */
        snprintf(label, sizeof(label), "blk.%u.attn_q/k/v", l);
        r = awq_group(p, ao, c, base + QD_EVAL_SITE_ATTN_IN, E, t, f, idx, 1, 3, label, s, out, o);
        if (r < 0)
                goto finish;
        for (size_t i = 0; i < E; i++)
                f[0][i] /= s[i];

        /* The norms become F32 tensors holding the folded weights. */
        for (size_t i = 0; i < 8; i += 4) {
                out[idx[i]] = (OutTensor) { .type = GGML_TYPE_F32, .data = TAKE_PTR(f[i]), .size = E * sizeof(float) };
        }
finish:
        for (size_t i = 0; i < 8; i++)
                free(f[i]);
        free(s);
        return r;
}

/* ---- metadata ---- */

static int copy_kv(const Gguf *g, size_t i, GgufWriter *w) {
        const char *key = gguf_kv_key(g, i);
        GgufType type = gguf_kv_type(g, i);
        uint8_t raw[8];
        int r;

        switch (type) {
        case GGUF_TYPE_STRING: {
                const char *s;
                r = gguf_get_string(g, key, &s, NULL);
                return r < 0 ? r : gguf_writer_add_string(w, key, s);
        }
        case GGUF_TYPE_UINT8: case GGUF_TYPE_UINT16: case GGUF_TYPE_UINT32: case GGUF_TYPE_UINT64: {
                uint64_t v;
                size_t sz = type == GGUF_TYPE_UINT8 ? 1 : type == GGUF_TYPE_UINT16 ? 2 : type == GGUF_TYPE_UINT32 ? 4 : 8;
                r = gguf_get_u64(g, key, &v);
                if (r < 0)
                        return r;
                memcpy(raw, &v, sz); /* little-endian host */
                return gguf_writer_add_raw(w, key, type, raw, sz);
        }
        case GGUF_TYPE_INT8: case GGUF_TYPE_INT16: case GGUF_TYPE_INT32: {
                int32_t v;
                size_t sz = type == GGUF_TYPE_INT8 ? 1 : type == GGUF_TYPE_INT16 ? 2 : 4;
                r = gguf_get_i32(g, key, &v);
                if (r < 0)
                        return r;
                memcpy(raw, &v, sz);
                return gguf_writer_add_raw(w, key, type, raw, sz);
        }
        case GGUF_TYPE_FLOAT32: case GGUF_TYPE_FLOAT64: {
                float v;
                r = gguf_get_f32(g, key, &v);
                if (r < 0)
                        return r;
                if (type == GGUF_TYPE_FLOAT32)
                        return gguf_writer_add_f32(w, key, v);
                double d = v;
                memcpy(raw, &d, 8);
                return gguf_writer_add_raw(w, key, type, raw, 8);
        }
        case GGUF_TYPE_BOOL: {
                bool v;
                r = gguf_get_bool(g, key, &v);
                return r < 0 ? r : gguf_writer_add_bool(w, key, v);
        }
        case GGUF_TYPE_ARRAY:
                break;
        default:
                return -EOPNOTSUPP;
        }

        GgufType et;
        size_t n;
        r = gguf_get_array_info(g, key, &et, &n);
        if (r < 0)
                return r;
        if (et == GGUF_TYPE_STRING) {
                const char *const *strs;
                r = gguf_get_string_array(g, key, &strs, NULL, &n);
                return r < 0 ? r : gguf_writer_add_string_array(w, key, strs, n);
        }
        if (et == GGUF_TYPE_FLOAT32) {
                _cleanup_free_ float *v = NULL;
                r = gguf_get_f32_array(g, key, &v, &n);
                return r < 0 ? r : gguf_writer_add_array(w, key, et, v, n);
        }
        if (et == GGUF_TYPE_INT32 || et == GGUF_TYPE_UINT32 || et == GGUF_TYPE_INT16 ||
            et == GGUF_TYPE_UINT16 || et == GGUF_TYPE_INT8 || et == GGUF_TYPE_UINT8 || et == GGUF_TYPE_BOOL) {
                _cleanup_free_ int32_t *v = NULL;
                r = gguf_get_i32_array(g, key, &v, &n);
                if (r < 0)
                        return r;
                size_t sz = et == GGUF_TYPE_INT32 || et == GGUF_TYPE_UINT32 ? 4 :
                            et == GGUF_TYPE_INT16 || et == GGUF_TYPE_UINT16 ? 2 : 1;
                _cleanup_free_ uint8_t *buf = malloc(MAX(n * sz, (size_t) 1));
                if (!buf)
                        return -ENOMEM;
                for (size_t k = 0; k < n; k++)
                        memcpy(buf + k * sz, &v[k], sz);
                return gguf_writer_add_array(w, key, et, buf, n);
        }
        return -EOPNOTSUPP; /* 64-bit integer, f64 or nested arrays: not in llama GGUFs */
}

/* ---- the file ---- */

int qd_quantize_file(const char *in_path, const char *out_path, const QdQuantizeOptions *o,
                     char **ret_error) {
        _cleanup_(gguf_closep) Gguf *g = NULL;
        GgufWriter *w = NULL;
        OutTensor *out = NULL;
        Calib calib = {};
        size_t n_t = 0;
        int r;

        if (!o || o->method < 0 || o->method >= _QD_QUANTIZE_METHOD_MAX || o->kmix < 0 || o->kmix >= _QD_KMIX_MAX)
                return -EINVAL;
        if (o->kmix == QD_KMIX_NONE && o->type != QD_QTYPE_Q8_0 && o->type != QD_QTYPE_Q4_0 &&
            o->type != QD_QTYPE_Q4_1)
                return -EINVAL;
        if (o->kmix != QD_KMIX_NONE && o->method != QD_QUANTIZE_RTN)
                return fail(ret_error, -EOPNOTSUPP, "%s is written with round to nearest only",
                            qd_kmix_to_string(o->kmix));
        r = gguf_open(in_path, &g, ret_error);
        if (r < 0)
                return r;
        n_t = gguf_n_tensors(g);
        for (size_t i = 0; i < n_t; i++) {
                const GgufTensor *t = gguf_tensor(g, i);
                if (is_weight(t) && t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_BF16)
                        return fail(ret_error, -EINVAL, "tensor '%s' is already %s: quantize from F16/BF16/F32",
                                    t->name, ggml_type_name(t->type));
        }

        bool calibrated = o->method == QD_QUANTIZE_GPTQ || o->method == QD_QUANTIZE_AWQ;
        if (calibrated) {
                calib.gptq = o->method == QD_QUANTIZE_GPTQ;
                calib.n_threads = o->n_threads;
                r = calibrate(in_path, o, &calib, ret_error);
                if (r < 0)
                        goto finish;
        }

        out = calloc(MAX(n_t, (size_t) 1), sizeof(OutTensor));
        if (!out) {
                r = -ENOMEM;
                goto finish;
        }
        QdQuantParams p = {
                .type = o->kmix != QD_KMIX_NONE ? QD_QTYPE_Q4_0 : o->type,
                .group_size = 32,
                .range = o->method == QD_QUANTIZE_RTN ? QD_RANGE_MINMAX : QD_RANGE_CLIP,
        };
        uint32_t n_layer = count_layers(g);
        uint64_t n_type[_GGML_TYPE_MAX] = {}, q_elements = 0, q_bytes = 0;

        if (o->method == QD_QUANTIZE_AWQ) {
                QdAwqOptions ao = { .clip = true, .n_threads = o->n_threads, .fast_search = o->awq_fast_search };
                for (uint32_t l = 0; l < calib.n_layer; l++) {
                        r = report(o, 0.3 + 0.2 * l / calib.n_layer);
                        if (r < 0)
                                goto finish;
                        r = awq_layer(g, l, &p, &ao, &calib, out, o);
                        if (r < 0) {
                                fail(ret_error, r, "AWQ of layer %u failed", l);
                                goto finish;
                        }
                }
        }

        uint64_t done = 0, total = 0;
        double lo = o->method == QD_QUANTIZE_AWQ ? 0.5 : calibrated ? 0.3 : 0.0;
        for (size_t i = 0; i < n_t; i++)
                total += is_weight(gguf_tensor(g, i)) ? gguf_tensor(g, i)->n_elements : 0;
        for (size_t i = 0; i < n_t; i++) {
                const GgufTensor *t = gguf_tensor(g, i);
                _cleanup_free_ float *f = NULL;
                if (!is_weight(t) || out[i].data) /* out: done by AWQ */
                        continue;
                GgmlType gt;
                if ((r = type_of(o, t, n_layer, &gt)) < 0) {
                        fail(ret_error, r, "no type for '%s'", t->name);
                        goto finish;
                }
                QdQuantParams tp = p;
                tp.type = qd_of(gt);
                /* The output matrix and the K-quant types: round to nearest, as llama.cpp. */
                if (streq(t->name, "output.weight") || tp.type == QD_QTYPE_INVALID)
                        tp.range = QD_RANGE_MINMAX;
                size_t rows = t->n_elements / t->ne[0], cols = t->ne[0];
                uint32_t layer;
                int site = site_of(t->name, &layer);
                QdHessian *h = calib.gptq && tp.type != QD_QTYPE_INVALID && site >= 0 && layer < calib.n_layer ?
                        calib.h[(size_t) layer * _QD_EVAL_SITE_MAX + site] : NULL;
                if ((r = alloc_ggml(gt, rows, cols, &out[i])) < 0)
                        goto finish;
                /* Plain RTN reads the source rows directly; the others need the f32 matrix. */
                if ((h || tp.range != QD_RANGE_MINMAX) && (r = to_f32(t, o->n_threads, &f)) < 0)
                        goto finish;
                r = report(o, lo + (1.0 - lo) * done / MAX(total, (uint64_t) 1));
                if (r < 0)
                        goto finish;
                say(o, "[%3.0f%%] %s %s -> %s (%s)", 100.0 * done / MAX(total, (uint64_t) 1), t->name,
                    ggml_type_name(t->type), ggml_type_name(gt),
                    h ? "gptq" : tp.range == QD_RANGE_CLIP ? "rtn-clip" : "rtn");
                if (h) {
                        QdGptqOptions go = { .act_order = !o->gptq_no_act_order, .damp = o->gptq_damp,
                                             .n_threads = o->n_threads };
                        if (o->gptq_minmax)
                                tp.range = QD_RANGE_MINMAX;
                        r = qd_gptq_quantize(&tp, &go, f, rows, cols, h, out[i].data, NULL);
                } else if (tp.range == QD_RANGE_MINMAX)
                        /* Plain RTN: ggml's reference quantizers, so the bytes equal llama-quantize's
                         * (qd_quant_matrix rounds with the fp16-rounded scale and differs in a
                         * few codes). */
                        r = qd_ggml_convert_matrix(t->type, t->data, gt, out[i].data, rows, cols, o->n_threads);
                else
                        r = qd_quant_matrix(&tp, f, NULL, rows, cols, o->n_threads, out[i].data, NULL);
                if (r < 0) {
                        fail(ret_error, r, "quantizing '%s' failed", t->name);
                        goto finish;
                }
                done += t->n_elements;
        }
        for (size_t i = 0; i < n_t; i++)
                if (out[i].data && is_weight(gguf_tensor(g, i))) {
                        n_type[out[i].type]++;
                        q_elements += gguf_tensor(g, i)->n_elements;
                        q_bytes += out[i].size;
                }
        {
                char types[256] = "";
                size_t k = 0;
                for (int ty = 0; ty < _GGML_TYPE_MAX; ty++)
                        if (n_type[ty] && k < sizeof(types))
                                k += snprintf(types + k, sizeof(types) - k, "%s%s × %llu", k ? ", " : "",
                                              ggml_type_name(ty), (unsigned long long) n_type[ty]);
                say(o, "%.4f bits per weight over %llu quantized weights (%s)",
                    8.0 * q_bytes / MAX(q_elements, (uint64_t) 1), (unsigned long long) q_elements, types);
        }

        r = gguf_writer_new(&w);
        if (r < 0)
                goto finish;
        if ((r = gguf_writer_set_alignment(w, gguf_alignment(g))) < 0)
                goto finish;
        for (size_t i = 0; i < gguf_n_kv(g); i++) {
                const char *key = gguf_kv_key(g, i);
                if (streq(key, "general.file_type") || streq(key, "general.alignment") ||
                    streq(key, "general.quantization_version") || streq(key, "quantd.quantize.method"))
                        continue;
                r = copy_kv(g, i, w);
                if (r < 0) {
                        fail(ret_error, r, "cannot copy metadata '%s'", key);
                        goto finish;
                }
        }
        uint32_t ftype = o->kmix != QD_KMIX_NONE ? qd_kmix_file_type(o->kmix) :
                         o->type == QD_QTYPE_Q8_0 ? 7 : o->type == QD_QTYPE_Q4_0 ? 2 : 3;
        if ((r = gguf_writer_add_u32(w, "general.file_type", ftype)) < 0 ||
            (r = gguf_writer_add_u32(w, "general.quantization_version", 2)) < 0 ||
            (r = gguf_writer_add_string(w, "quantd.quantize.method",
                                        o->kmix != QD_KMIX_NONE ? qd_kmix_to_string(o->kmix) :
                                                                  qd_quantize_method_to_string(o->method))) < 0)
                goto finish;
        for (size_t i = 0; i < n_t; i++) {
                const GgufTensor *t = gguf_tensor(g, i);
                if (out[i].data)
                        r = gguf_writer_add_tensor(w, t->name, out[i].type, t->n_dims, t->ne, out[i].data, out[i].size);
                else
                        r = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->size);
                if (r < 0)
                        goto finish;
        }
        say(o, "writing %s", out_path);
        r = gguf_writer_write(w, out_path);
        if (r < 0)
                fail(ret_error, r, "cannot write %s", out_path);
finish:
        gguf_writer_free(w);
        for (size_t i = 0; out && i < n_t; i++)
                free(out[i].data);
        free(out);
        calib_done(&calib);
        return r;
}
