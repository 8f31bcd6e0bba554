/* quantd-quant-bench: one transformer layer of GPTQ and of AWQ (Q4_0, as `quantd-quantize
 * --method gptq|awq` runs them) on random weights, a random positive-definite Hessian and random
 * activations, timed per part. Default shape: TinyLlama-1.1B (n_embd 2048, n_ff 5632, 32 heads,
 * 4 KV heads). Uses only models/quant's public API, so the same source measures older trees:
 * -DBENCH_BEFORE_OPENBLAS builds it against the library before OpenBLAS (docs/PERFORMANCE.md). */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant.h"

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* CPU seconds of the whole process (all threads): on a machine shared with other work the wall
 * time of a part says little, its CPU time what it costs. */
static double cpu_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

static uint64_t rng_state = 1;

static double uniform(void) {
        /* splitmix64 */
        uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return ((double) ((z ^ (z >> 31)) >> 11) + 0.5) * 0x1p-53;
}

static float gauss(void) {
        return (float) (sqrt(-2.0 * log(uniform())) * cos(2.0 * M_PI * uniform()));
}

static float *alloc_f(size_t n) {
        float *p = malloc(n * sizeof(float));
        if (!p) {
                fprintf(stderr, "out of memory\n");
                exit(EXIT_FAILURE);
        }
        return p;
}

static float *random_weights(size_t rows, size_t cols) {
        float *w = alloc_f(rows * cols);
        for (size_t i = 0; i < rows * cols; i++)
                w[i] = 0.02f * gauss();
        return w;
}

/* Activations with uneven channel magnitudes (log-normal) and a few outlier channels, as the
 * inputs of LLM linears have. */
static float *random_tokens(size_t n, size_t cols) {
        float *x = alloc_f(n * cols), *sig = alloc_f(cols);
        for (size_t j = 0; j < cols; j++)
                sig[j] = (j % 97 == 3 ? 20.0f : 1.0f) * expf(0.5f * gauss());
        for (size_t t = 0; t < n; t++)
                for (size_t j = 0; j < cols; j++)
                        x[t * cols + j] = sig[j] * gauss();
        free(sig);
        return x;
}

static size_t scaled_rows(size_t rows, double frac) {
        size_t r = (size_t) ((double) rows * frac + 0.5);
        return r < 1 ? 1 : r;
}

static void die(const char *what, int r) {
        fprintf(stderr, "%s failed: %s\n", what, strerror(-r));
        exit(EXIT_FAILURE);
}

typedef struct Lin {
        const char *name;
        size_t rows;
        int site;    /* 0 attn_in, 1 attn_out, 2 ffn_in, 3 ffn_down */
} Lin;

static int bench_gptq(size_t E, size_t F, size_t kv, size_t n_tok, unsigned threads, double frac) {
        const size_t site_cols[4] = { E, E, E, F };
        const Lin lin[] = {
                { "attn_q", E, 0 }, { "attn_k", kv, 0 }, { "attn_v", kv, 0 }, { "attn_output", E, 1 },
                { "ffn_gate", F, 2 }, { "ffn_up", F, 2 }, { "ffn_down", E, 3 },
        };
        QdHessian *h[4] = {};
        double t_hess = 0.0, t_total = 0.0, c_total = 0.0;
        int r;

        for (int s = 0; s < 4; s++) {
                size_t c = site_cols[s];
                double t0 = now();
                float *x = random_tokens(n_tok, c), *gram = alloc_f(c * c);
                cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int) c, (int) n_tok, 1.0f, x, (int) c, 0.0f, gram,
                            (int) c);
                double t1 = now();
                if ((r = qd_hessian_new(c, &h[s])) < 0 || (r = qd_hessian_add_gram(h[s], gram, n_tok, threads)) < 0)
                        die("hessian", r);
                double t2 = now();
                printf("gptq hessian %-11s %5zu² from %zu random tokens: made in %.2f s (not counted), "
                       "taken from the f32 Gram matrix in %.3f s\n",
                       s == 0 ? "attn_in" : s == 1 ? "attn_out" : s == 2 ? "ffn_in" : "ffn_down", c, n_tok, t1 - t0,
                       t2 - t1);
                t_hess += t2 - t1;
                free(x);
                free(gram);
        }
        QdQuantParams p = { .type = QD_QTYPE_Q4_0, .group_size = 32, .range = QD_RANGE_CLIP };
        QdGptqOptions o = { .act_order = true, .n_threads = threads };
        for (size_t i = 0; i < sizeof(lin) / sizeof(lin[0]); i++) {
                size_t cols = site_cols[lin[i].site], rows = scaled_rows(lin[i].rows, frac), rs;
                float *w = random_weights(rows, cols);
                if ((r = qd_quant_row_size(p.type, p.group_size, cols, &rs)) < 0)
                        die("row size", r);
                void *dst = malloc(rows * rs);
                if (!dst)
                        die("malloc", -ENOMEM);
                bool first = i == 0 || lin[i - 1].site != lin[i].site;
                double t0 = now(), c0 = cpu_now();
                r = qd_gptq_quantize(&p, &o, w, rows, cols, h[lin[i].site], dst, NULL);
                double t = now() - t0, c = cpu_now() - c0;
                if (r < 0)
                        die("qd_gptq_quantize", r);
                printf("gptq %-12s %5zu × %-5zu %8.3f s %8.3f cpu-s%s\n", lin[i].name, rows, cols, t, c,
                       first ? " (with the factorisation of its Hessian)" : "");
                t_total += t;
                c_total += c;
                free(w);
                free(dst);
        }
        for (int s = 0; s < 4; s++)
                qd_hessian_free(h[s]);
        printf("gptq layer: %.3f s solve (%.3f cpu-s) + %.3f s Hessians = %.3f s\n", t_total, c_total, t_hess,
               t_total + t_hess);
        return 0;
}

static bool awq_fast;

static double awq_cpu;

static double bench_awq_group(const char *label, const float *x, size_t n_tok, size_t cols, const size_t *rows,
                              size_t n, unsigned threads, double frac) {
        QdQuantParams p = { .type = QD_QTYPE_Q4_0, .group_size = 32, .range = QD_RANGE_CLIP };
        QdAwqOptions o = { .clip = true, .n_threads = threads };
#ifndef BENCH_BEFORE_OPENBLAS
        o.fast_search = awq_fast;
#endif
        QdAwqLinear lin[3];
        QdAwqResult res;
        float *s = alloc_f(cols);
        size_t rs, total_rows = 0;
        int r;

        if ((r = qd_quant_row_size(p.type, p.group_size, cols, &rs)) < 0)
                die("row size", r);
        for (size_t i = 0; i < n; i++) {
                size_t nr = scaled_rows(rows[i], frac);
                lin[i] = (QdAwqLinear) { .w = random_weights(nr, cols), .rows = nr, .dst = malloc(nr * rs) };
                if (!lin[i].dst)
                        die("malloc", -ENOMEM);
                total_rows += nr;
        }
        double t0 = now(), c0 = cpu_now();
        r = qd_awq_quantize(&p, &o, x, n_tok, cols, lin, n, s, &res);
        double t = now() - t0, c = cpu_now() - c0;
        if (r < 0)
                die("qd_awq_quantize", r);
        awq_cpu += c;
        printf("awq  %-12s %5zu × %-5zu %8.3f s %8.3f cpu-s (alpha %.2f, output error / RTN's %.3f)\n", label,
               total_rows, cols, t, c, res.alpha, res.err_final / res.err_rtn);
        for (size_t i = 0; i < n; i++) {
                free((void *) lin[i].w);
                free(lin[i].dst);
        }
        free(s);
        return t;
}

static int bench_awq(size_t E, size_t F, size_t kv, size_t n_tok, unsigned threads, double frac) {
        float *xe = random_tokens(n_tok, E), *xf = random_tokens(n_tok, F);
        const size_t down[] = { E }, gate_up[] = { F, F }, qkv[] = { E, kv, kv };
        double t = 0.0;

        t += bench_awq_group("ffn_down", xf, n_tok, F, down, 1, threads, frac);
        t += bench_awq_group("ffn_gate/up", xe, n_tok, E, gate_up, 2, threads, frac);
        t += bench_awq_group("attn_q/k/v", xe, n_tok, E, qkv, 3, threads, frac);

        /* attn_output: clipped round to nearest, as quantd-quantize does in an AWQ file */
        QdQuantParams p = { .type = QD_QTYPE_Q4_0, .group_size = 32, .range = QD_RANGE_CLIP };
        size_t rows = scaled_rows(E, frac), rs;
        int r = qd_quant_row_size(p.type, p.group_size, E, &rs);
        if (r < 0)
                die("row size", r);
        float *w = random_weights(rows, E);
        void *dst = malloc(rows * rs);
        if (!dst)
                die("malloc", -ENOMEM);
        double t0 = now(), c0 = cpu_now();
        if ((r = qd_quant_matrix(&p, w, NULL, rows, E, threads, dst, NULL)) < 0)
                die("qd_quant_matrix", r);
        double to = now() - t0, co = cpu_now() - c0;
        printf("awq  %-12s %5zu × %-5zu %8.3f s %8.3f cpu-s (rtn-clip)\n", "attn_output", rows, E, to, co);
        printf("awq layer: %.3f s (%.3f cpu-s; %s α search)\n", t + to, awq_cpu + co,
               awq_fast ? "min-max, then exact around its minimum" : "exact");
        free(w);
        free(dst);
        free(xe);
        free(xf);
        return 0;
}

static void usage(FILE *f) {
        fputs("Usage: quantd-quant-bench [--threads N] [--only gptq|awq] [--rows-frac F]\n"
              "                          [--embd E] [--ff F] [--kv-rows K] [--hess-tokens N] [--awq-tokens N]\n"
              "                          [--awq-fast-search]\n"
              "One layer of GPTQ and AWQ (Q4_0) on random data, seconds per part. --rows-frac scales\n"
              "every matrix's rows (the per-row work) for a quick run; default: TinyLlama-1.1B's layer.\n",
              f);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "threads", required_argument, NULL, 't' }, { "only", required_argument, NULL, 'o' },
                { "rows-frac", required_argument, NULL, 'r' }, { "embd", required_argument, NULL, 'e' },
                { "ff", required_argument, NULL, 'f' }, { "kv-rows", required_argument, NULL, 'k' },
                { "hess-tokens", required_argument, NULL, 'H' }, { "awq-tokens", required_argument, NULL, 'A' },
                { "awq-fast-search", no_argument, NULL, 'X' }, { "help", no_argument, NULL, 'h' }, {},
        };
        unsigned threads = 1;
        size_t E = 2048, F = 5632, kv = 256, hess_tok = 8192, awq_tok = 512;
        double frac = 1.0;
        const char *only = NULL;
        int c;

#ifndef BENCH_BEFORE_OPENBLAS
        qd_blas_tune_process(argv);
#endif
        setvbuf(stdout, NULL, _IOLBF, 0); /* each part as it ends, also into a pipe */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0)
                switch (c) {
                case 't': threads = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'o': only = optarg; break;
                case 'r': frac = strtod(optarg, NULL); break;
                case 'e': E = strtoul(optarg, NULL, 10); break;
                case 'f': F = strtoul(optarg, NULL, 10); break;
                case 'k': kv = strtoul(optarg, NULL, 10); break;
                case 'H': hess_tok = strtoul(optarg, NULL, 10); break;
                case 'A': awq_tok = strtoul(optarg, NULL, 10); break;
                case 'X': awq_fast = true; break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return EXIT_FAILURE;
                }
        if (optind != argc || threads == 0 || !(frac > 0.0 && frac <= 1.0) || E % 32 || F % 32 || kv == 0 ||
            hess_tok == 0 || awq_tok == 0 || (only && strcmp(only, "gptq") && strcmp(only, "awq"))) {
                usage(stderr);
                return EXIT_FAILURE;
        }
        const char *ct = getenv("OPENBLAS_CORETYPE");
        printf("layer: n_embd %zu, n_ff %zu, k/v rows %zu, rows × %.3g; %u threads; OpenBLAS %s kernels%s\n", E, F, kv,
               frac, threads, openblas_get_corename(), ct ? " (OPENBLAS_CORETYPE)" : "");
        if (!only || !strcmp(only, "gptq"))
                bench_gptq(E, F, kv, hess_tok, threads, frac);
        if (!only || !strcmp(only, "awq"))
                bench_awq(E, F, kv, awq_tok, threads, frac);
        return 0;
}
