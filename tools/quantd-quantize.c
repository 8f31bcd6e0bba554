/* quantd-quantize: quantizes a GGUF model to Q8_0/Q4_0/Q4_1 (RTN, clipped RTN, GPTQ, AWQ) or to
 * llama.cpp's K-quant mixes (Q4_K_M, Q5_K_M, Q4_K, Q6_K), or evaluates one (perplexity, KL divergence and top-1 against a reference, per-tensor SQNR). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval.h"
#include "ggml-types.h"
#include "quant.h"

static void usage(FILE *f) {
        fputs("Usage: quantd-quantize IN.gguf OUT.gguf --type q8_0|q4_0|q4_1|q4_k_m|q5_k_m|q4_k|q6_k\n"
              "                       [--method rtn|rtn-clip|gptq|awq] [--calib FILE | --calib-random SEED]\n"
              "                       [--samples N] [--ctx L] [--device cpu|vulkan[:SELECT]]\n"
              "                       [--threads N] [--damp F] [--no-act-order] [--gptq-minmax]\n"
              "                       [--awq-fast-search]\n"
              "       quantd-quantize --eval MODEL.gguf --text FILE [--ref REF.gguf] [--ctx 512]\n"
              "                       [--chunks N] [--json]\n", f);
}

static int read_file(const char *path, char **ret, size_t *ret_len) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t n = 0, cap = 0;

        if (!f)
                return -errno;
        for (;;) {
                if (n + 65536 > cap) {
                        cap = (n + 65536) * 2;
                        char *b = realloc(buf, cap + 1);
                        if (!b) {
                                free(buf);
                                fclose(f);
                                return -ENOMEM;
                        }
                        buf = b;
                }
                size_t k = fread(buf + n, 1, cap - n, f);
                n += k;
                if (k == 0)
                        break;
        }
        bool err = ferror(f);
        fclose(f);
        if (err) {
                free(buf);
                return -EIO;
        }
        buf[n] = 0;
        *ret = buf;
        *ret_len = n;
        return 0;
}

static void log_stderr(void *userdata, const char *msg) {
        const struct timespec *t0 = userdata;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        fprintf(stderr, "[%7.1fs] %s\n", (t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) * 1e-9, msg);
}

/* A JSON string literal. */
static void json_string(const char *s) {
        putchar('"');
        for (; *s; s++) {
                unsigned char ch = *s;
                if (ch == '"' || ch == '\\')
                        printf("\\%c", ch);
                else if (ch < 0x20)
                        printf("\\u%04x", ch);
                else
                        putchar(ch);
        }
        putchar('"');
}

static void print_json(const char *model, const char *ref, const QdEvalReport *r, size_t n_ctx) {
        printf("{\n  \"model\": ");
        json_string(model);
        printf(",\n  \"ctx\": %zu,\n  \"file_bytes\": %llu,\n"
               "  \"weight_elements\": %llu,\n  \"weight_bytes\": %llu,\n  \"bits_per_weight\": %.4f,\n"
               "  \"windows\": %zu,\n  \"scored\": %zu,\n  \"ppl\": %.6f,\n  \"ppl_err\": %.6f,\n  \"nll\": %.6f",
               n_ctx, (unsigned long long) r->file_bytes, (unsigned long long) r->weight_elements,
               (unsigned long long) r->weight_bytes, r->bpw, r->ppl.n_windows, r->ppl.n_scored, r->ppl.ppl,
               r->ppl.ppl_err, r->ppl.nll_mean);
        if (r->has_ref) {
                printf(",\n  \"ref\": ");
                json_string(ref);
                printf(",\n  \"ref_ppl\": %.6f,\n  \"delta_ppl_percent\": %.4f,\n"
                       "  \"kl_mean\": %.6g,\n  \"kl_p99\": %.6g,\n  \"kl_max\": %.6g,\n  \"top1\": %.6f,\n"
                       "  \"tensors\": [",
                       r->ref_ppl.ppl, 100.0 * (r->ppl.ppl / r->ref_ppl.ppl - 1), r->dist.kl_mean,
                       r->dist.kl_p99, r->dist.kl_max, r->dist.top1);
                for (size_t i = 0; i < r->n_tensors; i++)
                        printf("%s\n    {\"name\": \"%s\", \"type\": \"%s\", \"sqnr_db\": %.3f, \"ideal_db\": %.2f}",
                               i ? "," : "", r->tensors[i].name, ggml_type_name(r->tensors[i].type),
                               r->tensors[i].sqnr_db, r->tensors[i].ideal_db);
                printf("\n  ]");
        }
        printf("\n}\n");
}

static void print_table(const char *model, const char *ref, const QdEvalReport *r, size_t n_ctx) {
        printf("model            %s\n", model);
        printf("size             %llu bytes; 2-D weights (without token_embd) %.3f bits/weight\n",
               (unsigned long long) r->file_bytes, r->bpw);
        printf("perplexity       %.4f ± %.4f  (ctx %zu, %zu windows, %zu tokens scored)\n", r->ppl.ppl,
               r->ppl.ppl_err, n_ctx, r->ppl.n_windows, r->ppl.n_scored);
        if (!r->has_ref)
                return;
        printf("reference        %s: perplexity %.4f, ΔPPL %+.3f%%\n", ref, r->ref_ppl.ppl,
               100.0 * (r->ppl.ppl / r->ref_ppl.ppl - 1));
        printf("KL divergence    mean %.6f, p99 %.6f, max %.6f nats\n", r->dist.kl_mean, r->dist.kl_p99,
               r->dist.kl_max);
        printf("top-1 agreement  %.4f\n\n", r->dist.top1);
        printf("%-28s %-6s %10s %10s %8s\n", "tensor", "type", "SQNR dB", "6.02b+1.76", "gap dB");
        for (size_t i = 0; i < r->n_tensors; i++) {
                const QdEvalTensor *e = &r->tensors[i];
                printf("%-28s %-6s %10.2f %10.2f %8.2f\n", e->name, ggml_type_name(e->type), e->sqnr_db,
                       e->ideal_db, e->sqnr_db - e->ideal_db);
        }
}

int main(int argc, char **argv) {
        enum { ARG_TYPE = 0x100, ARG_METHOD, ARG_CALIB, ARG_SAMPLES, ARG_CTX, ARG_EVAL, ARG_TEXT, ARG_REF,
               ARG_JSON, ARG_THREADS, ARG_CHUNKS, ARG_DAMP, ARG_NO_ACT_ORDER, ARG_GPTQ_MINMAX,
               ARG_CALIB_RANDOM, ARG_DEVICE, ARG_AWQ_FAST };
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "type", required_argument, NULL, ARG_TYPE },
                { "method", required_argument, NULL, ARG_METHOD },
                { "calib", required_argument, NULL, ARG_CALIB },
                { "calib-random", required_argument, NULL, ARG_CALIB_RANDOM },
                { "device", required_argument, NULL, ARG_DEVICE },
                { "samples", required_argument, NULL, ARG_SAMPLES },
                { "ctx", required_argument, NULL, ARG_CTX },
                { "threads", required_argument, NULL, ARG_THREADS },
                { "eval", required_argument, NULL, ARG_EVAL },
                { "text", required_argument, NULL, ARG_TEXT },
                { "ref", required_argument, NULL, ARG_REF },
                { "chunks", required_argument, NULL, ARG_CHUNKS },
                { "json", no_argument, NULL, ARG_JSON },
                { "damp", required_argument, NULL, ARG_DAMP },
                { "no-act-order", no_argument, NULL, ARG_NO_ACT_ORDER },
                { "gptq-minmax", no_argument, NULL, ARG_GPTQ_MINMAX },
                { "awq-fast-search", no_argument, NULL, ARG_AWQ_FAST },
                {}
        };
        const char *calib = NULL, *eval = NULL, *text = NULL, *ref = NULL;
        QdQuantizeOptions qo = { .type = QD_QTYPE_INVALID, .method = QD_QUANTIZE_RTN, .n_threads = 1 };
        size_t ctx = 0, chunks = 0;
        bool json = false;
        struct timespec t0;
        int c, r;

        qd_blas_tune_process(argv); /* GPTQ/AWQ: OpenBLAS's kernels for this CPU */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0)
                switch (c) {
                case 'h':
                        usage(stdout);
                        return 0;
                case ARG_TYPE:
                        qo.kmix = qd_kmix_from_string(optarg);
                        qo.type = qo.kmix != QD_KMIX_NONE ? QD_QTYPE_Q4_0 : qd_quant_type_from_string(optarg);
                        if (qo.type != QD_QTYPE_Q8_0 && qo.type != QD_QTYPE_Q4_0 && qo.type != QD_QTYPE_Q4_1) {
                                fprintf(stderr, "Unsupported --type '%s' (q8_0, q4_0, q4_1, q4_k_m, q5_k_m, q4_k, q6_k)\n",
                                        optarg);
                                return 2;
                        }
                        break;
                case ARG_DAMP:
                        qo.gptq_damp = strtof(optarg, NULL);
                        if (!(qo.gptq_damp > 0 && qo.gptq_damp < 10)) {
                                fprintf(stderr, "--damp wants a number in (0, 10)\n");
                                return 2;
                        }
                        break;
                case ARG_NO_ACT_ORDER: qo.gptq_no_act_order = true; break;
                case ARG_GPTQ_MINMAX: qo.gptq_minmax = true; break;
                case ARG_AWQ_FAST: qo.awq_fast_search = true; break;
                case ARG_METHOD:
                        qo.method = qd_quantize_method_from_string(optarg);
                        if (qo.method < 0) {
                                fprintf(stderr, "Unknown --method '%s' (rtn, rtn-clip, gptq, awq)\n", optarg);
                                return 2;
                        }
                        break;
                case ARG_CALIB: calib = optarg; break;
                case ARG_DEVICE: qo.calib_device = optarg; break;
                case ARG_CALIB_RANDOM:
                        qo.calib_random = true;
                        qo.calib_random_seed = strtoull(optarg, NULL, 0);
                        break;
                case ARG_SAMPLES: qo.n_samples = strtoul(optarg, NULL, 10); break;
                case ARG_CTX: ctx = strtoul(optarg, NULL, 10); break;
                case ARG_THREADS: qo.n_threads = strtoul(optarg, NULL, 10); break;
                case ARG_EVAL: eval = optarg; break;
                case ARG_TEXT: text = optarg; break;
                case ARG_REF: ref = optarg; break;
                case ARG_CHUNKS: chunks = strtoul(optarg, NULL, 10); break;
                case ARG_JSON: json = true; break;
                default:
                        usage(stderr);
                        return 2;
                }

        if (eval) {
                _cleanup_free_ char *buf = NULL;
                size_t len;
                QdEvalReport rep = {};
                QdEvalOptions eo = { .n_ctx = ctx ? ctx : 512, .max_windows = chunks, .log = log_stderr,
                                     .userdata = &t0 };

                if (!text || optind != argc) {
                        usage(stderr);
                        return 2;
                }
                r = read_file(text, &buf, &len);
                if (r < 0) {
                        fprintf(stderr, "Cannot read %s: %s\n", text, strerror(-r));
                        return 1;
                }
                log_stderr(&t0, "evaluating");
                r = qd_eval_text(eval, ref, buf, len, &eo, &rep);
                if (r < 0) {
                        fprintf(stderr, "Evaluation of %s failed: %s\n", eval, strerror(-r));
                        return 1;
                }
                log_stderr(&t0, "done");
                if (json)
                        print_json(eval, ref, &rep, eo.n_ctx);
                else
                        print_table(eval, ref, &rep, eo.n_ctx);
                qd_eval_report_done(&rep);
                return 0;
        }

        if (argc - optind != 2 || qo.type == QD_QTYPE_INVALID) {
                usage(stderr);
                return 2;
        }
        _cleanup_free_ char *cbuf = NULL, *err = NULL;
        if (calib) {
                r = read_file(calib, &cbuf, &qo.calib_len);
                if (r < 0) {
                        fprintf(stderr, "Cannot read %s: %s\n", calib, strerror(-r));
                        return 1;
                }
                qo.calib_text = cbuf;
        }
        qo.n_ctx = ctx;
        qo.log = log_stderr;
        qo.userdata = &t0;
        r = qd_quantize_file(argv[optind], argv[optind + 1], &qo, &err);
        if (r < 0) {
                fprintf(stderr, "Quantizing %s failed: %s%s%s\n", argv[optind], err ? err : "", err ? ": " : "",
                        strerror(-r));
                return 1;
        }
        return 0;
}
