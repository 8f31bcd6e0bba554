/* The Vulkan calibration (models/eval-calib-vk.c, llama-vulkan-capture.c) against the CPU
 * reference (llama-cpu.c's capture) on a fresh random llama fixture: the Gram matrices and the
 * AWQ rows of every site and layer; then whole GPTQ and AWQ quantizations calibrated either way,
 * judged by the layer-output error they leave under the CPU statistics (the codes themselves may
 * differ: GPTQ's rounding cascades, AWQ's grid may pick a neighbouring exponent).
 * The seed is printed; QUANTD_TEST_SEED repeats a run. Skipped (77) without a Vulkan device. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "eval-internal.h"
#include "fixture-model.h"
#include "gguf.h"


#define N_CTX 128
#define N_TOK (3 * N_CTX + 6) /* three whole windows and a short one */
#define MAX_ROWS 20
#define STRIDE 7
#define N_LAYER 2
#define N_SITE _QD_EVAL_SITE_MAX

/* Bounds, from the F16 weights' products with f32 (CPU) or f16-stored KV (Vulkan) activations:
 * the worst seen over several seeds is about 5x below them. */
#define BOUND_GRAM 2e-3   /* max |ΔG| / max |G| per site */
#define BOUND_ROWS 2e-3   /* max |Δx| / max |x| per site */

typedef struct Stats {
        double *g[N_LAYER][N_SITE]; /* upper triangles, cols × cols */
        float *x[N_LAYER][N_SITE];  /* MAX_ROWS rows */
        size_t x_n[N_LAYER][N_SITE], cols[N_SITE];
        size_t n_g[N_LAYER][N_SITE];
        size_t base;                /* CPU: the window's first token */
} Stats;

static void stats_done(Stats *s) {
        for (int l = 0; l < N_LAYER; l++)
                for (int i = 0; i < N_SITE; i++) {
                        free(s->g[l][i]);
                        free(s->x[l][i]);
                }
}

static int stats_alloc(Stats *s, uint32_t layer, QdEvalSite site, size_t cols) {
        if (layer >= N_LAYER || site >= N_SITE)
                return -EINVAL;
        if (!s->g[layer][site]) {
                s->cols[site] = cols;
                s->g[layer][site] = calloc(cols * cols, sizeof(double));
                s->x[layer][site] = calloc(MAX_ROWS * cols, sizeof(float));
                if (!s->g[layer][site] || !s->x[layer][site])
                        return -ENOMEM;
        }
        return s->cols[site] == cols ? 0 : -EINVAL;
}

/* The CPU reference: Gram matrices in double, every STRIDE-th token's row. */
static int cpu_capture(void *userdata, uint32_t layer, QdEvalSite site, const float *x, size_t n, size_t cols) {
        Stats *s = userdata;
        int r = stats_alloc(s, layer, site, cols);
        if (r < 0)
                return r;
        double *g = s->g[layer][site];
        for (size_t t = 0; t < n; t++)
                for (size_t a = 0; a < cols; a++)
                        for (size_t b = a; b < cols; b++)
                                g[a * cols + b] += (double) x[t * cols + a] * x[t * cols + b];
        s->n_g[layer][site] += n;
        for (size_t t = 0; t < n; t++) {
                size_t gi = s->base + t;
                if (gi % STRIDE == 0 && gi / STRIDE < MAX_ROWS) {
                        memcpy(s->x[layer][site] + gi / STRIDE * cols, x + t * cols, cols * sizeof(float));
                        s->x_n[layer][site] = MAX(s->x_n[layer][site], gi / STRIDE + 1);
                }
        }
        return 0;
}

static int vk_take(void *userdata, uint32_t layer, QdEvalSite site, const float *data, size_t n, size_t cols) {
        Stats *s = userdata;
        int r = stats_alloc(s, layer, site, cols);
        if (r < 0)
                return r;
        if (n > MAX_ROWS || s->n_g[layer][site] == 0) { /* the Gram pass comes first */
                for (size_t a = 0; a < cols; a++)
                        for (size_t b = a; b < cols; b++)
                                s->g[layer][site][a * cols + b] = data[a * cols + b];
                s->n_g[layer][site] = n;
        } else {
                memcpy(s->x[layer][site], data, n * cols * sizeof(float));
                s->x_n[layer][site] = n;
        }
        return 0;
}

static const char *const site_names[N_SITE] = { "attn_in", "attn_out", "ffn_in", "ffn_down" };

static int compare_stats(const Stats *c, const Stats *v) {
        int failures = 0;
        for (int l = 0; l < N_LAYER; l++)
                for (int i = 0; i < N_SITE; i++) {
                        size_t cols = c->cols[i];
                        double gmax = 0, gd = 0, xmax = 0, xd = 0;
                        if (!c->g[l][i] || !v->g[l][i] || v->cols[i] != cols) {
                                printf("layer %d %s: missing\n", l, site_names[i]);
                                failures++;
                                continue;
                        }
                        for (size_t a = 0; a < cols; a++)
                                for (size_t b = a; b < cols; b++) {
                                        gmax = fmax(gmax, fabs(c->g[l][i][a * cols + b]));
                                        gd = fmax(gd, fabs(c->g[l][i][a * cols + b] - v->g[l][i][a * cols + b]));
                                }
                        for (size_t k = 0; k < c->x_n[l][i] * cols; k++) {
                                xmax = fmax(xmax, fabs(c->x[l][i][k]));
                                xd = fmax(xd, fabs(c->x[l][i][k] - v->x[l][i][k]));
                        }
                        bool ok = c->n_g[l][i] == v->n_g[l][i] && c->x_n[l][i] == v->x_n[l][i] &&
                                  gd <= BOUND_GRAM * gmax && xd <= BOUND_ROWS * xmax && gmax > 0 && xmax > 0;
                        printf("layer %d %-8s (%3zu cols): %zu tokens, Gram max |Δ|/max %.2e, %zu rows max |Δ|/max %.2e%s\n",
                               l, site_names[i], cols, v->n_g[l][i], gd / gmax, v->x_n[l][i], xd / xmax,
                               ok ? "" : "  FAIL");
                        failures += !ok;
                }
        return failures;
}

#define BOUND_OBJECTIVE 0.05 /* the Vulkan-calibrated output's error may exceed the CPU one's by 5% */

static const GgufTensor *find(const Gguf *g, const char *name) {
        for (size_t i = 0; i < gguf_n_tensors(g); i++)
                if (streq(gguf_tensor(g, i)->name, name))
                        return gguf_tensor(g, i);
        return NULL;
}

static int dequant(const GgufTensor *t, float **ret) {
        size_t cols = t->ne[0], rows = t->n_elements / cols;
        *ret = malloc(rows * cols * sizeof(float));
        if (!*ret)
                return -ENOMEM;
        return qd_ggml_dequantize_matrix(t->type, t->data, rows, cols, 1, *ret);
}

/* The layer-output error of quantized tensor `name` of out, by the CPU statistics:
 * Σ_r (w_r - e_r)·G·(w_r - e_r)ᵀ with e = Q·diag(1/s), s the channel scales that AWQ folded into
 * `norm` (NULL: none), G the CPU Gram matrix of its input. */
static int objective(const Gguf *src, const Gguf *out, const Stats *cpu, uint32_t l, QdEvalSite site,
                     const char *name, const char *norm, double *ret) {
        _cleanup_free_ float *w = NULL, *q = NULL, *n0 = NULL, *n1 = NULL;
        const GgufTensor *tw = find(src, name), *tq = find(out, name);
        size_t cols = cpu->cols[site];
        if (!tw || !tq || tw->ne[0] != cols || dequant(tw, &w) < 0 || dequant(tq, &q) < 0)
                return -EINVAL;
        if (norm && (dequant(find(src, norm), &n0) < 0 || dequant(find(out, norm), &n1) < 0))
                return -EINVAL;
        const double *g = cpu->g[l][site];
        _cleanup_free_ double *e = malloc(cols * sizeof(double));
        if (!e)
                return -ENOMEM;
        double total = 0;
        for (size_t r = 0; r < tw->n_elements / cols; r++) {
                for (size_t j = 0; j < cols; j++)
                        e[j] = (double) w[r * cols + j] - (norm ? (double) q[r * cols + j] * n1[j] / n0[j] : q[r * cols + j]);
                for (size_t a = 0; a < cols; a++) {
                        double t = g[a * cols + a] * e[a];
                        for (size_t b = a + 1; b < cols; b++)
                                t += 2 * g[a * cols + b] * e[b];
                        total += e[a] * t;
                }
        }
        *ret = total;
        return 0;
}

/* The tensors whose input statistics decide them (GPTQ: all; AWQ: those whose scales went into a
 * norm, which the F32 norms let us undo), judged by the CPU statistics. */
static int compare_outputs(const char *src_path, const char *cpu_path, const char *vk_path, bool awq,
                           const Stats *cpu) {
        static const struct {
                const char *name, *norm_awq;
                QdEvalSite site;
                bool awq;
        } list[] = {
                { "attn_q.weight", "attn_norm.weight", QD_EVAL_SITE_ATTN_IN, true },
                { "attn_k.weight", "attn_norm.weight", QD_EVAL_SITE_ATTN_IN, true },
                { "attn_v.weight", "attn_norm.weight", QD_EVAL_SITE_ATTN_IN, true },
                { "attn_output.weight", NULL, QD_EVAL_SITE_ATTN_OUT, false },
                { "ffn_gate.weight", "ffn_norm.weight", QD_EVAL_SITE_FFN_IN, true },
                { "ffn_up.weight", NULL, QD_EVAL_SITE_FFN_IN, false },
                { "ffn_down.weight", NULL, QD_EVAL_SITE_FFN_DOWN, false },
        };
        _cleanup_(gguf_closep) Gguf *s = NULL, *a = NULL, *b = NULL;
        int failures = 0;

        if (gguf_open(src_path, &s, NULL) < 0 || gguf_open(cpu_path, &a, NULL) < 0 || gguf_open(vk_path, &b, NULL) < 0)
                return 1;
        double worst = -INFINITY;
        for (uint32_t l = 0; l < N_LAYER; l++)
                for (size_t i = 0; i < ELEMENTSOF(list); i++) {
                        char name[64], norm[64];
                        double oa, ob;
                        if (awq && !list[i].awq)
                                continue;
                        snprintf(name, sizeof(name), "blk.%u.%s", l, list[i].name);
                        if (awq)
                                snprintf(norm, sizeof(norm), "blk.%u.%s", l, list[i].norm_awq);
                        if (objective(s, a, cpu, l, list[i].site, name, awq ? norm : NULL, &oa) < 0 ||
                            objective(s, b, cpu, l, list[i].site, name, awq ? norm : NULL, &ob) < 0 || !(oa > 0)) {
                                printf("%s: cannot compare\n", name);
                                failures++;
                                continue;
                        }
                        worst = fmax(worst, ob / oa - 1);
                        failures += !(ob <= (1 + BOUND_OBJECTIVE) * oa);
                }
        printf("%s Q4_0: output error (CPU statistics) of the Vulkan-calibrated tensors vs the CPU-calibrated: "
               "worst %+.2f%% (bound +%.0f%%)\n", awq ? "AWQ" : "GPTQ", 100 * worst, 100 * BOUND_OBJECTIVE);
        return failures;
}

int main(void) {
        const char *env = getenv("QUANTD_TEST_SEED");
        uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t) time(NULL) ^ ((uint64_t) getpid() << 32);
        FixtureSpec spec = {
                .arch = "llama", .n_vocab = 96, .n_embd = 128, .n_layer = N_LAYER, .n_head = 2, .n_head_kv = 1,
                /* head_dim 64: the flash prompt attention where the device has it (H100) */
                .n_ff = 352, /* not a multiple of the Gram kernel's 64-wide tiles */
                .wtype = GGML_TYPE_F16, .rope_base = 10000.0f, .seed = seed,
        };
        _cleanup_free_ char *dir = fixture_tmpdir();
        char path[512], out_cpu[512], out_vk[512];
        uint32_t tok[N_TOK];
        uint64_t st = seed;
        Stats cpu = {}, vk = {};
        int failures = 0, r;

        printf("seed 0x%llx (QUANTD_TEST_SEED repeats it)\n", (unsigned long long) seed);
        if (!dir)
                return 1;
        snprintf(path, sizeof(path), "%s/model.gguf", dir);
        snprintf(out_cpu, sizeof(out_cpu), "%s/cpu.gguf", dir);
        snprintf(out_vk, sizeof(out_vk), "%s/vk.gguf", dir);
        if (fixture_write(&spec, path) < 0)
                return 1;
        for (size_t i = 0; i < N_TOK; i++)
                tok[i] = fixture_rand(&st) % spec.n_vocab;

        {
                _cleanup_(qd_eval_model_freep) QdEvalModel *m = NULL;
                _cleanup_free_ float *logits = malloc(N_CTX * spec.n_vocab * sizeof(float));
                if (!logits || qd_eval_model_load(path, &m, NULL) < 0)
                        return 1;
                for (size_t first = 0; first < N_TOK; first += N_CTX) {
                        cpu.base = first;
                        if (qd_eval_forward(m, tok + first, MIN((size_t) N_CTX, N_TOK - first), logits, cpu_capture, &cpu) < 0)
                                return 1;
                }
        }
        {
                _cleanup_(qd_eval_model_freep) QdEvalModel *m = NULL;
                _cleanup_free_ char *err = NULL;
                if (qd_eval_model_open(path, &m, NULL) < 0)
                        return 1;
                QdCalibVkOptions o = { .gram = true };
                r = qd_eval_calib_vk(m, &o, tok, N_TOK, N_CTX, vk_take, &vk, &err);
                if (r == -ENODEV) {
                        printf("no Vulkan device: skipped (%s)\n", err ? err : "");
                        fixture_rmdir(TAKE_PTR(dir));
                        return 77;
                }
                if (r < 0) {
                        printf("Vulkan calibration (Gram): %s: %s\n", err ? err : "", strerror(-r));
                        return 1;
                }
                o = (QdCalibVkOptions) { .max_rows = MAX_ROWS, .stride = STRIDE };
                r = qd_eval_calib_vk(m, &o, tok, N_TOK, N_CTX, vk_take, &vk, NULL);
                if (r < 0) {
                        printf("Vulkan calibration (rows): %s\n", strerror(-r));
                        return 1;
                }
        }
        failures += compare_stats(&cpu, &vk);

        /* Whole quantizations calibrated on either path. */
        for (int m = 0; m < 2; m++) {
                QdQuantizeOptions o = {
                        .type = QD_QTYPE_Q4_0,
                        .method = m == 0 ? QD_QUANTIZE_GPTQ : QD_QUANTIZE_AWQ,
                        .calib_tokens = tok, .n_calib_tokens = N_TOK,
                        .n_ctx = N_CTX, .n_samples = 4, .n_threads = 2,
                };
                o.calib_device = "cpu";
                if (qd_quantize_file(path, out_cpu, &o, NULL) < 0)
                        return 1;
                o.calib_device = "vulkan";
                if (qd_quantize_file(path, out_vk, &o, NULL) < 0)
                        return 1;
                failures += compare_outputs(path, out_cpu, out_vk, m == 1, &cpu);
        }
        {
                QdQuantizeOptions o = { .type = QD_QTYPE_Q4_0, .method = QD_QUANTIZE_GPTQ, .calib_device = "gpu" };
                _cleanup_free_ char *err = NULL;
                failures += qd_quantize_file(path, out_vk, &o, &err) != -EINVAL;
                printf("bad device: %s\n", err ? err : "(no message)");
        }
        stats_done(&cpu);
        stats_done(&vk);
        failures += !fixture_validation_clean();
        fixture_rmdir(TAKE_PTR(dir));
        printf("%s\n", failures ? "FAILED" : "ok");
        return failures ? 1 : 0;
}
