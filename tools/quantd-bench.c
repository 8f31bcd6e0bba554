/* quantd-bench: checks the matrix kernels against a double-precision CPU reference
 * (--check) and measures their speed with timestamp queries. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "quantd-bench.h"
#include "vk.h"


typedef struct Shape {
        uint32_t m, k, n;
} Shape;

static uint64_t rng_state;

static uint64_t rng_next(void) {
        /* splitmix64: reproducible from the printed seed */
        uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static float rng_uniform(void) {  /* [-1, 1) */
        return (float) ((double) (rng_next() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static bool is_block(QvkWeightType t) {
        return t >= QVK_W_Q8_0;
}

static int upload_new(QvkDevice *d, const void *data, uint64_t size, QvkBuffer **ret) {
        _cleanup_(qvk_buffer_freep) QvkBuffer *b = NULL;
        int r;

        r = qvk_buffer_new(d, MAX(size, (uint64_t) 16), QVK_MEM_DEVICE, &b);
        if (r < 0)
                return r;
        r = qvk_buffer_upload(b, 0, data, size);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(b);
        return 0;
}

/* Activations: fp32, or fp16 with the reference using the same rounded values. */
static void *make_acts(const float *x, uint64_t count, bool f16, float *ref_x, uint64_t *ret_bytes) {
        void *buf = malloc(count * (f16 ? 2 : 4) + 16);

        if (!buf)
                return NULL;
        for (uint64_t i = 0; i < count; i++) {
                if (f16) {
                        uint16_t h = bench_f32_to_f16(x[i]);
                        ((uint16_t *) buf)[i] = h;
                        ref_x[i] = bench_f16_to_f32(h);
                } else {
                        ((float *) buf)[i] = x[i];
                        ref_x[i] = x[i];
                }
        }
        *ret_bytes = count * (f16 ? 2 : 4);
        return buf;
}

/* Normalised error bound ||y - ref|| / ||ref||. The reference uses exactly the weights and
 * activations the GPU sees (same quantized bytes, same fp16-rounded activations), so for the
 * float kernels only fp32 accumulation differs: k products summed in a different order with
 * fp32 rounding (2^-24 relative) give an error of order 2^-24 * sqrt(k) ~ 4e-6 at k = 4096;
 * 3e-5 leaves margin while any indexing or dequantization bug gives errors of 1e-2 or more.
 * The int-dot path also quantizes the activations to int8 per block of 32 with step
 * s = max|x|/127: each activation is off by a rounding error ~ uniform in ±s/2 (variance
 * s²/12), so output i is off by a sum with variance E_i = Σ_e w_ie² s_e² / 12. The bound is
 * 5·sqrt(Σ E_i) / ||ref|| (five standard deviations; about 0.4% of the result for uniform
 * inputs, so ~2%), plus the fp32 term. A wrong nibble or scale gives errors of order 1. */
#define FLOAT_BOUND 3e-5
/* The extended formats (vk-matmul-ext.c) use FLOAT_BOUND too: their reference weights are those
 * qd_dequant_row() / qd_rowscale_dequantize() decode, the same f32 products (d·q, d·q + m,
 * d·NF4[q], s·e4m3(q), s·q; exact or rounded once) that the kernels form, so again only the
 * order of the fp32 sums differs. */
/* The extended formats' products of n > 8 on cooperative-matrix devices dequantize W to fp16
 * (dequant_ext.comp) for that kernel, and so are held to its bound. */
/* The cooperative-matrix kernel rounds both operands to fp16 (relative error up to 2^-11
 * each, ~2^-11 rms per product after both roundings); over many products of random sign the
 * normalised error stays near 2^-11 / sqrt(3) ~ 3e-4 (0 for fp16 weights and activations, where
 * nothing is rounded), so 3e-3 is a tenfold margin that still catches any layout bug. */
#define COOPMAT_BOUND 3e-3

static double int_dot_bound(const float *w, const float *x, uint32_t m, uint32_t k, uint32_t n,
                            double ref2) {
        double var = 0;

        for (uint32_t j = 0; j < n; j++)
                for (uint32_t b = 0; b < k / 32; b++) {
                        const float *xb = x + (uint64_t) j * k + 32 * b;
                        double amax = 0, s2;
                        for (int e = 0; e < 32; e++)
                                amax = MAX(amax, fabs((double) xb[e]));
                        s2 = (amax / 127) * (amax / 127) / 12;
                        for (uint32_t i = 0; i < m; i++)
                                for (int e = 0; e < 32; e++) {
                                        double wv = w[(uint64_t) i * k + 32 * b + e];
                                        var += wv * wv * s2;
                                }
                }
        return 5 * sqrt(var / MAX(ref2, 1e-300)) + FLOAT_BOUND;
}

/* blocks: W as two row blocks in different formats (qvk_matmul_blocks): s.m rows in wt, then
 * 21 rows in Q6_K (Q4_K where wt is Q6_K), the second block at a 256-byte offset. */
static int check_one(QvkDevice *d, QvkWeightType wt, bool x_f16, Shape s, bool blocks, double *ret_err,
                     double *ret_bound) {
        _cleanup_(qvk_buffer_freep) QvkBuffer *wb = NULL, *xb = NULL, *yb = NULL, *sb = NULL;
        _cleanup_(qvk_cmd_freep) QvkCmd *cmd = NULL;
        _cleanup_free_ float *wf = NULL, *wdeq = NULL, *xf = NULL, *xref = NULL, *y = NULL;
        _cleanup_free_ uint8_t *wq = NULL;
        _cleanup_free_ void *xa = NULL;
        _cleanup_free_ double *ref = NULL;
        QvkWeightType wt2 = wt == QVK_W_Q6_K ? QVK_W_Q4_K : QVK_W_Q6_K;
        uint32_t m1 = s.m, m2 = blocks ? 21 : 0;
        uint64_t wbytes1 = qvk_weight_row_bytes(wt, s.k) * m1, off2 = blocks ? ALIGN_TO(wbytes1, 256) : wbytes1;
        uint64_t wbytes = off2 + qvk_weight_row_bytes(wt2, s.k) * m2, xbytes, nk = (uint64_t) s.n * s.k, scratch;
        s.m += m2;
        uint64_t ybytes = (uint64_t) s.n * s.m * 4;
        double num = 0, den = 0;
        int r;

        wf = malloc((uint64_t) s.m * s.k * 4);
        wdeq = malloc((uint64_t) s.m * s.k * 4);
        wq = malloc(wbytes + 16);
        xf = malloc(nk * 4);
        xref = malloc(nk * 4);
        y = malloc(ybytes);
        ref = malloc((uint64_t) s.n * s.m * sizeof(double));
        if (!wf || !wdeq || !wq || !xf || !xref || !y || !ref)
                return -ENOMEM;
        for (uint64_t i = 0; i < (uint64_t) s.m * s.k; i++)
                wf[i] = rng_uniform();
        for (uint64_t i = 0; i < nk; i++)
                xf[i] = rng_uniform();
        bench_quantize(wt, wf, m1, s.k, wq);
        bench_dequantize(wt, wq, m1, s.k, wdeq);
        if (blocks) {
                bench_quantize(wt2, wf + (uint64_t) m1 * s.k, m2, s.k, wq + off2);
                bench_dequantize(wt2, wq + off2, m2, s.k, wdeq + (uint64_t) m1 * s.k);
        }
        xa = make_acts(xf, nk, x_f16, xref, &xbytes);
        if (!xa)
                return -ENOMEM;
        bench_reference(wdeq, xref, s.m, s.k, s.n, ref);

        r = upload_new(d, wq, wbytes, &wb);
        if (r < 0)
                return r;
        r = upload_new(d, xa, xbytes, &xb);
        if (r < 0)
                return r;
        r = qvk_buffer_new(d, ybytes, QVK_MEM_DEVICE, &yb);
        if (r < 0)
                return r;
        scratch = qvk_matmul_scratch_bytes(d, s.k, s.n);
        if (scratch > 0) {
                r = qvk_buffer_new(d, scratch, QVK_MEM_DEVICE, &sb);
                if (r < 0)
                        return r;
        }

        r = qvk_cmd_new(d, &cmd);
        if (r < 0)
                return r;
        r = qvk_cmd_fill(cmd, yb, 0, ybytes, 0x7fc00000u);  /* poison: NaN */
        if (r < 0)
                return r;
        if (blocks) {
                QvkRowBlock b[2] = { { wt, { wb, 0, wbytes1 }, m1 }, { wt2, { wb, off2, wbytes - off2 }, m2 } };
                r = qvk_matmul_blocks(cmd, b, 2, s.k, (QvkBinding) { xb, 0, 0 }, x_f16, s.n, (QvkBinding) { yb, 0, 0 });
        } else
                r = qvk_matmul(cmd, wt, (QvkBinding) { wb, 0, 0 }, s.m, s.k, (QvkBinding) { xb, 0, 0 }, x_f16,
                               s.n, (QvkBinding) { yb, 0, 0 }, (QvkBinding) { sb, 0, 0 });
        if (r < 0)
                return r;
        r = qvk_cmd_end(cmd);
        if (r < 0)
                return r;
        r = qvk_cmd_submit(cmd);
        if (r < 0)
                return r;
        r = qvk_cmd_wait(cmd);
        if (r < 0)
                return r;
        r = qvk_buffer_download(yb, 0, y, ybytes);
        if (r < 0)
                return r;

        for (uint64_t i = 0; i < (uint64_t) s.n * s.m; i++) {
                double e = (double) y[i] - ref[i];
                num += e * e;
                den += ref[i] * ref[i];
        }
        *ret_err = den > 0 ? sqrt(num / den) : sqrt(num);
        /* Rounding errors scale with Σ|w·x|, not with |Σ w·x|: where the products cancel (a
         * single output of a short row, say) ||ref|| is small while the error is not. Scale the
         * float bounds by that cancellation ratio (≥ 1; about 1.3 for random inputs). */
        double mag2 = 0;
        for (uint32_t j = 0; j < s.n; j++)
                for (uint32_t i = 0; i < s.m; i++) {
                        double a = 0;
                        for (uint32_t e = 0; e < s.k; e++)
                                a += fabs((double) wdeq[(uint64_t) i * s.k + e] *
                                          (double) xref[(uint64_t) j * s.k + e]);
                        mag2 += a * a;
                }
        double cancel = den > 0 ? MAX(1.0, sqrt(mag2 / den)) : 1.0;
        if (!blocks && strstr(qvk_matmul_kernel(d, wt, x_f16, s.k, s.n), "_dot"))
                *ret_bound = int_dot_bound(wdeq, xref, s.m, s.k, s.n, den) + FLOAT_BOUND * (cancel - 1);
        else if (strstr(qvk_matmul_kernel(d, blocks ? wt2 : wt, x_f16, s.k, s.n), "coopmat") ||
                 strstr(qvk_matmul_kernel(d, blocks ? wt2 : wt, x_f16, s.k, s.n), "dequant"))
                *ret_bound = COOPMAT_BOUND * cancel;
        else
                *ret_bound = FLOAT_BOUND * cancel;
        return 0;
}

/* wt_only >= 0: that weight type's checks alone. */
static int run_check(QvkDevice *d, int wt_only) {
        static const Shape shapes[] = {
                { 37, 96, 1 }, { 37, 96, 3 }, { 37, 96, 8 }, { 37, 96, 17 },
                { 1, 32, 1 }, { 130, 256, 2 }, { 67, 160, 65 }, { 300, 512, 1 },
                { 5, 4096, 1 }, { 129, 1024, 5 }, { 70, 320, 9 },
                { 21, 4352, 2 }, { 9, 8448, 1 },  /* several shared-memory tiles, the last partial */
                { 44, 256, 12 }, { 132, 96, 17 }, { 40, 320, 32 },  /* aligned column groups (batch split) */
                { 256, 192, 300 }, { 128, 64, 256 },  /* workgroup-scope tiles (coopmat2), + a rest */
        };
        static const Shape odd_k[] = {  /* F32/F16 only: k not a multiple of 8 or 32 */
                { 37, 97, 1 }, { 19, 33, 4 }, { 33, 45, 20 }, { 3, 7, 1 },
        };
        static const Shape group_k[] = {  /* extended formats only: k = 3 or 5 groups of 128 (or 3 of 64), */
                { 37, 384, 1 }, { 37, 384, 3 }, { 37, 384, 8 }, { 37, 384, 9 }, { 67, 640, 67 },
                { 45, 192, 3 }, { 1, 128, 1 }, { 130, 384, 2 },
        };
        static const Shape kq_k[] = {  /* the ggml block types only: k = 2, 3, 5 super-blocks of 256
                                          (the base shapes add k = 256 .. 8448) */
                { 37, 768, 1 }, { 37, 768, 3 }, { 37, 768, 8 }, { 37, 768, 9 }, { 67, 512, 67 },
                { 1, 256, 1 }, { 130, 1280, 17 },
        };
        const size_t n_base = ELEMENTSOF(shapes) + ELEMENTSOF(odd_k), n_group = n_base + ELEMENTSOF(group_k);
        unsigned failures = 0, total = 0;

        printf("%-28s %-5s %-4s %6s %6s %4s %10s %8s %s\n", "kernel", "wtype", "act", "m", "k", "n",
               "error", "bound", "result");
        for (QvkWeightType wt = 0; wt < _QVK_W_MAX; wt++)
                for (int f16 = 0; f16 < 2 && (wt_only < 0 || (int) wt == wt_only); f16++)
                        for (size_t i = 0; i < n_group + ELEMENTSOF(kq_k); i++) {
                                Shape s = i < ELEMENTSOF(shapes) ? shapes[i] :
                                          i < n_base ? odd_k[i - ELEMENTSOF(shapes)] :
                                          i < n_group ? group_k[i - n_base] : kq_k[i - n_group];
                                double err = NAN, bound = 0;
                                bool ok;
                                int r;

                                if (i >= ELEMENTSOF(shapes) && i < n_base && is_block(wt))
                                        continue;
                                if (i >= n_base && !bench_ext_type(wt))
                                        continue;
                                if (i >= n_group && wt != QVK_W_Q4_K && wt != QVK_W_Q5_K && wt != QVK_W_Q6_K &&
                                    wt != QVK_W_Q5_0 && wt != QVK_W_Q5_1)
                                        continue;
                                if (bench_ext_type(wt) && s.k % bench_ext_group(wt))
                                        continue;  /* the extended formats: k a multiple of the group */
                                r = check_one(d, wt, f16, s, false, &err, &bound);
                                if (r == -E2BIG && getenv("QUANTD_VK_MAX_STORAGE_RANGE")) {
                                        /* the forced range is below one aligned chunk of rows
                                         * (8 rows of Q6_K's 210-byte blocks at k = 8448) */
                                        printf("%-28s %-5s %-4s %6u %6u %4u %10s %8s skipped: rows beyond the range\n",
                                               "-", qvk_weight_type_name(wt), f16 ? "f16" : "f32", s.m, s.k, s.n, "-", "-");
                                        continue;
                                }
                                if (r < 0) {
                                        fprintf(stderr, "%s %s %ux%ux%u: %s\n", qvk_weight_type_name(wt),
                                                f16 ? "f16" : "f32", s.m, s.k, s.n, strerror(-r));
                                        return r;
                                }
                                ok = err <= bound;  /* false for NaN: a poisoned output survived */
                                total++;
                                failures += !ok;
                                printf("%-28s %-5s %-4s %6u %6u %4u %10.3g %8.2g %s\n",
                                       qvk_matmul_kernel(d, wt, f16, s.k, s.n), qvk_weight_type_name(wt),
                                       f16 ? "f16" : "f32", s.m, s.k, s.n, err, bound,
                                       ok ? "ok" : "MISMATCH");
                        }
        /* W as row blocks in two formats (qvk_matmul_blocks), the GGUF block types through the
         * extended shaders (G = 32): matrix-vector, batched and matrix-matrix. */
        static const QvkWeightType rows_types[] = { QVK_W_Q8_0, QVK_W_Q4_0, QVK_W_Q4_1, QVK_W_Q5_0, QVK_W_Q5_1,
                                                    QVK_W_Q4_K, QVK_W_Q5_K, QVK_W_Q6_K };
        static const Shape rows_shapes[] = { { 37, 512, 1 }, { 70, 768, 5 }, { 67, 512, 13 } };
        for (size_t t = 0; t < ELEMENTSOF(rows_types); t++)
                for (size_t i = 0; i < ELEMENTSOF(rows_shapes); i++) {
                        QvkWeightType wt = rows_types[t];
                        Shape s = rows_shapes[i];
                        if (wt_only >= 0 && (int) wt != wt_only)
                                continue;
                        double err = NAN, bound = 0;
                        bool f16 = i == 1, ok;
                        int r = check_one(d, wt, f16, s, true, &err, &bound);
                        if (r < 0) {
                                fprintf(stderr, "blocks %s %ux%ux%u: %s\n", qvk_weight_type_name(wt), s.m, s.k, s.n,
                                        strerror(-r));
                                return r;
                        }
                        ok = err <= bound;
                        total++;
                        failures += !ok;
                        printf("%-28s %-5s %-4s %6u %6u %4u %10.3g %8.2g %s\n", "qvk_matmul_blocks +21 rows",
                               qvk_weight_type_name(wt), f16 ? "f16" : "f32", s.m, s.k, s.n, err, bound,
                               ok ? "ok" : "MISMATCH");
                }
        printf("%u of %u checks passed\n", total - failures, total);
        return failures ? -EBADMSG : 0;
}

typedef struct BenchResult {
        double median_ns, gbs, gflops;
        uint32_t sets;
} BenchResult;

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

#define BENCH_RUNS 30u  /* 2 timestamps each: 60 of the 64 query slots */
#define BENCH_SETS_MAX 16u
#define BENCH_ROUNDS_MAX 200u

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

/* --q8: time the int-dot kernel alone, on activations quantized before the timed dispatches
 * (what the decode step runs where the op before a product writes the int8 blocks). */
static bool bench_q8;
static int act_only = -1;  /* --act: 0 f32, 1 f16 */

static bool q8_only(QvkDevice *d, QvkWeightType wt, Shape s) {
        return bench_q8 && qvk_matmul_wants_q8(d, wt, s.k, s.n);
}

/* --sweep WG:ROWS,...: time each shape of the int-dot kernel ($QUANTD_VK_MATVEC_DOT_WG, _ROWS)
 * on the same uploaded weights, one result line each (tagged with it). */
static const char *sweep_list;
static char sweep_tag[48];
/* --chain N: N products (each on the next weight set, a barrier between them as between the
 * dependent ops of a forward pass) between two timestamps, the time divided by N: what a
 * product costs inside a chain of dispatches, without the cost of the timestamp pair itself. */
static uint32_t bench_chain = 1;

static void print_result(QvkDevice *d, QvkWeightType wt, bool f16, Shape s, const struct BenchResult *res,
                         bool json, bool first);

static int bench_one(QvkDevice *d, QvkWeightType wt, bool x_f16, Shape s, BenchResult *ret) {
        _cleanup_(qvk_buffer_freep) QvkBuffer *xb = NULL, *yb = NULL, *sb = NULL;
        QvkBuffer *wb[BENCH_SETS_MAX] = {};
        _cleanup_(qvk_cmd_freep) QvkCmd *cmd = NULL;
        _cleanup_free_ float *wf = NULL, *xf = NULL, *xref = NULL;
        _cleanup_free_ uint8_t *wq = NULL;
        _cleanup_free_ void *xa = NULL;
        uint64_t wbytes = qvk_weight_row_bytes(wt, s.k) * s.m, nk = (uint64_t) s.n * s.k, xbytes, scratch;
        double ts[2 * BENCH_RUNS], t[BENCH_RUNS * BENCH_ROUNDS_MAX], start = 0;
        size_t n_t = 0;
        uint32_t sets;
        int r = 0;

        /* Enough weight copies to exceed any last-level cache (H100: 50 MiB L2). */
        sets = (uint32_t) CLAMP(DIV_ROUND_UP(512ull << 20, wbytes), 2ull, (uint64_t) BENCH_SETS_MAX);
        wf = malloc((uint64_t) s.m * s.k * 4);
        wq = malloc(wbytes);
        xf = malloc(nk * 4);
        xref = malloc(nk * 4);
        if (!wf || !wq || !xf || !xref)
                return -ENOMEM;
        for (uint64_t i = 0; i < (uint64_t) s.m * s.k; i++)
                wf[i] = rng_uniform();
        for (uint64_t i = 0; i < nk; i++)
                xf[i] = rng_uniform();
        bench_quantize(wt, wf, s.m, s.k, wq);
        xa = make_acts(xf, nk, x_f16, xref, &xbytes);
        if (!xa)
                return -ENOMEM;

        for (uint32_t i = 0; i < sets && r >= 0; i++)
                r = upload_new(d, wq, wbytes, &wb[i]);
        if (r >= 0)
                r = upload_new(d, xa, xbytes, &xb);
        if (r >= 0)
                r = qvk_buffer_new(d, (uint64_t) s.n * s.m * 4, QVK_MEM_DEVICE, &yb);
        scratch = qvk_matmul_scratch_bytes(d, s.k, s.n);
        if (r >= 0 && scratch)
                r = qvk_buffer_new(d, scratch, QVK_MEM_DEVICE, &sb);
        const char *next = sweep_list;
sweep:
        if (next && r >= 0) {
                uint32_t wg = 0, rows = 0;
                char var[16];
                if (sscanf(next, "%u:%u", &wg, &rows) != 2) {
                        fprintf(stderr, "Bad --sweep entry at %s\n", next);
                        r = -EINVAL;
                }
                snprintf(sweep_tag, sizeof(sweep_tag), " %u:%u", wg, rows);
                snprintf(var, sizeof(var), "%u", wg);
                setenv("QUANTD_VK_MATVEC_DOT_WG", var, 1);
                snprintf(var, sizeof(var), "%u", rows);
                setenv("QUANTD_VK_MATVEC_DOT_ROWS", var, 1);
                next = strchr(next, ',');
                next = next ? next + 1 : NULL;
                cmd = qvk_cmd_free(cmd);
                n_t = 0;
        }
        if (r >= 0)
                r = qvk_cmd_new(d, &cmd);
        if (r >= 0 && q8_only(d, wt, s))
                r = qvk_quantize_act(cmd, (QvkBinding) { xb, 0, 0 }, x_f16, s.k, s.n, (QvkBinding) { sb, 0, 0 });
        for (uint32_t i = 0; i < BENCH_RUNS && r >= 0; i++) {
                r = qvk_cmd_timestamp(cmd, 2 * i);
                for (uint32_t j = 0; j < bench_chain && r >= 0; j++) {
                        QvkBinding w = { wb[(i * bench_chain + j) % sets], 0, 0 };
                        if (q8_only(d, wt, s))
                                r = qvk_matmul_q8(cmd, wt, w, s.m, s.k, (QvkBinding) { sb, 0, 0 }, s.n,
                                                  (QvkBinding) { yb, 0, 0 });
                        else
                                r = qvk_matmul(cmd, wt, w, s.m, s.k, (QvkBinding) { xb, 0, 0 }, x_f16, s.n,
                                               (QvkBinding) { yb, 0, 0 }, (QvkBinding) { sb, 0, 0 });
                }
                if (r >= 0)
                        r = qvk_cmd_timestamp(cmd, 2 * i + 1);
        }
        if (r >= 0)
                r = qvk_cmd_end(cmd);
        /* Submit the recording again and again for a quarter of a second so that the GPU
         * reaches its working clocks (a lone millisecond of work does not), dropping the first
         * round; the median over all timed dispatches is reported. */
        for (uint32_t round = 0; round < BENCH_ROUNDS_MAX && r >= 0; round++) {
                r = qvk_cmd_submit(cmd);
                if (r >= 0)
                        r = qvk_cmd_wait(cmd);
                if (r >= 0)
                        r = qvk_cmd_timestamps_read(cmd, 0, 2 * BENCH_RUNS, ts);
                if (round == 0)
                        start = now_s();
                if (r < 0 || round == 0)
                        continue;
                for (uint32_t i = 0; i < BENCH_RUNS; i++)
                        t[n_t++] = (ts[2 * i + 1] - ts[2 * i]) / bench_chain;
                if (round >= 4 && now_s() - start >= 0.25)
                        break;
        }
        if (r >= 0) {
                qsort(t, n_t, sizeof(double), cmp_double);
                ret->median_ns = t[n_t / 2];
                ret->gbs = (double) (wbytes + xbytes) / ret->median_ns;
                ret->gflops = 2.0 * s.m * s.k * s.n / ret->median_ns;
                ret->sets = sets;
                if (sweep_list) {
                        print_result(d, wt, x_f16, s, ret, false, false);
                        fflush(stdout);
                        if (next)
                                goto sweep;
                }
        }
        for (uint32_t i = 0; i < BENCH_SETS_MAX; i++)
                qvk_buffer_free(wb[i]);
        return r;
}

static void print_result(QvkDevice *d, QvkWeightType wt, bool f16, Shape s, const BenchResult *res,
                         bool json, bool first) {
        char kernel[256], chain[24] = "";

        if (bench_chain > 1)
                snprintf(chain, sizeof(chain), " chain%u", bench_chain);
        snprintf(kernel, sizeof(kernel), "%s%s%s%s", qvk_matmul_kernel(d, wt, f16, s.k, s.n),
                 q8_only(d, wt, s) ? " q8" : "", chain, sweep_list ? sweep_tag : "");

        if (json)
                printf("%s  {\"kernel\": \"%s\", \"wtype\": \"%s\", \"act\": \"%s\", "
                       "\"m\": %u, \"k\": %u, \"n\": %u, \"weight_sets\": %u, "
                       "\"median_us\": %.3f, \"gbs\": %.2f, \"gflops\": %.2f}",
                       first ? "" : ",\n", kernel, qvk_weight_type_name(wt), f16 ? "f16" : "f32", s.m, s.k,
                       s.n, res->sets, res->median_ns / 1000.0, res->gbs, res->gflops);
        else
                printf("%-28s %-5s %-4s %6u %6u %4u %4u %11.2f %9.1f %9.1f\n", kernel,
                       qvk_weight_type_name(wt), f16 ? "f16" : "f32", s.m, s.k, s.n, res->sets,
                       res->median_ns / 1000.0, res->gbs, res->gflops);
}

static int run_bench(QvkDevice *d, bool json, bool small, const Shape *only, size_t n_only, int wt_only) {
        static const Shape big[] = {
                { 14336, 4096, 1 }, { 4096, 14336, 1 }, { 4096, 4096, 4 }, { 4096, 4096, 512 },
        };
        static const Shape tiny[] = { { 512, 512, 1 }, { 256, 512, 4 }, { 128, 256, 64 } };
        const Shape *shapes = n_only ? only : small ? tiny : big;
        size_t n_shapes = n_only ? n_only : small ? ELEMENTSOF(tiny) : ELEMENTSOF(big);
        bool first = true;

        if (json)
                printf("[\n");
        else
                printf("%-28s %-5s %-4s %6s %6s %4s %4s %11s %9s %9s\n", "kernel", "wtype", "act", "m", "k",
                       "n", "sets", "median_us", "GB/s", "GFLOP/s");
        for (size_t i = 0; i < n_shapes; i++)
                for (QvkWeightType wt = 0; wt < _QVK_W_MAX; wt++)
                        for (int f16 = 0; f16 < 2; f16++) {
                                BenchResult res = {};
                                Shape s = shapes[i];
                                int r;

                                if ((wt_only >= 0 && (int) wt != wt_only) || (is_block(wt) && s.k % 32) ||
                                    (bench_ext_type(wt) && s.k % bench_ext_group(wt)) ||
                                    (act_only >= 0 && f16 != act_only))
                                        continue;

                                r = bench_one(d, wt, f16, s, &res);
                                if (r < 0) {
                                        fprintf(stderr, "%s %s %ux%ux%u: %s\n", qvk_weight_type_name(wt),
                                                f16 ? "f16" : "f32", s.m, s.k, s.n, strerror(-r));
                                        return r;
                                }
                                if (!sweep_list)
                                        print_result(d, wt, f16, s, &res, json, first);
                                first = false;
                                fflush(stdout);
                        }
        if (json)
                printf("\n]\n");
        return 0;
}

static void help(void) {
        printf("quantd-bench [OPTIONS]\n\n"
               "Checks (--check) or benchmarks quantd's Vulkan matrix kernels.\n\n"
               "  --check            compare every kernel with a double-precision reference\n"
               "  --seed N           random seed (default: from the clock; printed)\n"
               "  --device SEL       device index or name substring (default $QUANTD_VK_DEVICE)\n"
               "  --disable WHAT     f16, int8, intdot, subgroup or coopmat: force that fallback\n"
               "                     (sets QUANTD_VK_DISABLE_<WHAT>=1); repeatable\n"
               "  --small            benchmark small shapes only (smoke test)\n"
               "  --shape MxKxN      benchmark this shape (repeatable; default: Llama-3-8B's)\n"
               "  --wtype T          benchmark (or --check) weight type T only (f32 f16 q8_0\n"
               "                     q4_0 q4_1, and the\n"
               "                     extended q8_0_g64 q8_0_g128 q4_0_g64 q4_0_g128 q4_1_g64\n"
               "                     q4_1_g128 nf4_g32 nf4_g64 nf4_g128 fp8_row i8_row, ggml's\n"
               "                     q4_k q5_k q6_k q5_0 q5_1, and the repacked upload layouts q8_0r q4_0r\n"
               "                     q4_1r)\n"
               "  --json             benchmark results as JSON\n"
               "  --q8               int-dot kernels alone, activations quantized beforehand\n"
               "  --act A            benchmark activation type A only (f32 f16)\n"
               "  --sweep LIST       time each int-dot kernel shape WG:ROWS of the comma-separated\n"
               "                     LIST on the same weights (tuning)\n"
               "  --chain N          N products between two timestamps (default 1), time / N\n");
}

int main(int argc, char *argv[]) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "check", no_argument, NULL, 'c' },
                { "seed", required_argument, NULL, 's' },
                { "device", required_argument, NULL, 'd' },
                { "disable", required_argument, NULL, 'D' },
                { "small", no_argument, NULL, 'S' },
                { "q8", no_argument, NULL, 'Q' },
                { "act", required_argument, NULL, 'A' },
                { "json", no_argument, NULL, 'j' },
                { "shape", required_argument, NULL, 'x' },
                { "wtype", required_argument, NULL, 'w' },
                { "sweep", required_argument, NULL, 'W' },
                { "chain", required_argument, NULL, 'C' },
                {},
        };
        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        const char *device = NULL;
        Shape only[16];
        size_t n_only = 0;
        int wt_only = -1;
        bool check = false, json = false, small = false;
        uint64_t seed = (uint64_t) time(NULL) ^ ((uint64_t) clock() << 32);
        const QvkFeatures *f;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case 'c':
                        check = true;
                        break;
                case 's':
                        seed = strtoull(optarg, NULL, 0);
                        break;
                case 'd':
                        device = optarg;
                        break;
                case 'D': {
                        char var[64];
                        if (!streq(optarg, "f16") && !streq(optarg, "int8") && !streq(optarg, "intdot") &&
                            !streq(optarg, "subgroup") && !streq(optarg, "coopmat")) {
                                fprintf(stderr, "Unknown --disable %s\n", optarg);
                                return EXIT_FAILURE;
                        }
                        snprintf(var, sizeof(var), "QUANTD_VK_DISABLE_%s", optarg);
                        for (char *p = var; *p; p++)
                                *p = (char) (*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
                        setenv(var, "1", 1);
                        break;
                }
                case 'Q':
                        bench_q8 = true;
                        break;
                case 'W':
                        sweep_list = optarg;
                        break;
                case 'C':
                        bench_chain = (uint32_t) strtoul(optarg, NULL, 10);
                        if (bench_chain < 1 || bench_chain > 64) {
                                fprintf(stderr, "Bad --chain %s (1 to 64)\n", optarg);
                                return EXIT_FAILURE;
                        }
                        break;
                case 'A':
                        if (!streq(optarg, "f32") && !streq(optarg, "f16")) {
                                fprintf(stderr, "Unknown --act %s\n", optarg);
                                return EXIT_FAILURE;
                        }
                        act_only = streq(optarg, "f16");
                        break;
                case 'S':
                        small = true;
                        break;
                case 'j':
                        json = true;
                        break;
                case 'x':
                        if (n_only >= ELEMENTSOF(only) ||
                            sscanf(optarg, "%ux%ux%u", &only[n_only].m, &only[n_only].k,
                                   &only[n_only].n) != 3 ||
                            !only[n_only].m || !only[n_only].k || !only[n_only].n) {
                                fprintf(stderr, "Bad --shape %s\n", optarg);
                                return EXIT_FAILURE;
                        }
                        n_only++;
                        break;
                case 'w':
                        for (QvkWeightType t = 0; t < _QVK_W_MAX; t++)
                                if (streq(optarg, qvk_weight_type_name(t)))
                                        wt_only = (int) t;
                        if (wt_only < 0) {
                                fprintf(stderr, "Unknown --wtype %s\n", optarg);
                                return EXIT_FAILURE;
                        }
                        break;
                default:
                        return EXIT_FAILURE;
                }

        r = qvk_device_new(device, NULL, &d);
        if (r < 0) {
                fprintf(stderr, "No usable Vulkan device: %s\n", strerror(-r));
                return r == -ENODEV ? 77 : EXIT_FAILURE;
        }
        f = qvk_device_features(d);
        fprintf(json ? stderr : stdout,
                "device: %s (%s), %s; fp16=%d storage8=%d storage16=%d subgroup=%u%s int_dot=%d%s "
                "coopmat_nv=%d coopmat2_nv=%d\n"
                "seed: %llu\n",
                f->name, f->type, f->driver, f->fp16, f->storage8, f->storage16, f->subgroup_size,
                f->subgroup_arith ? " (arith)" : "", f->int_dot,
                f->int_dot_accelerated ? " (accelerated)" : "", f->coopmat_nv, f->coopmat2_nv,
                (unsigned long long) seed);
        rng_state = seed;

        r = check ? run_check(d, wt_only) : run_bench(d, json, small, only, n_only, wt_only);
        d = qvk_device_free(d);
        if (qvk_validation_messages() > 0) {
                fprintf(stderr, "%u Vulkan validation messages, last: %s\n", qvk_validation_messages(),
                        strna(qvk_validation_last_message()));
                return EXIT_FAILURE;
        }
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
