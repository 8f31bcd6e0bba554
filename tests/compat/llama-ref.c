/* llama-ref: llama.cpp's answers for the compatibility tests (tests/compat, docs/COMPAT.md), through
 * its C API in the prebuilt libraries that tools/llama-cpp/fetch downloads. Runs on the CPU.
 * The output of tokenize and greedy is that of quantd-ref, so tests/compat/compat.py compares them.
 *
 *   llama-ref tokenize MODEL TEXT...           ids of each text, BOS when the model adds it (JSON)
 *   llama-ref greedy [--logits FILE] MODEL N PROMPT...
 *                                              N greedy tokens after each prompt (JSON lines);
 *                                              FILE gets the f32 logits they were chosen from
 *   llama-ref logits MODEL PROMPT              logits after the prompt (JSON array)
 *   llama-ref ppl MODEL TEXTFILE [CTX [MAX_WINDOWS]]  perplexity, llama-perplexity's protocol (JSON)
 *   llama-ref quantize IN OUT q8_0|q4_0|q4_1|q4_k_m|q5_k_m   llama_model_quantize() with its defaults
 *
 * $LLAMA_REF_VERBOSE=1 shows llama.cpp's log; $LLAMA_CPP_LIBDIR overrides where the CPU backends
 * are looked for. */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

#ifndef LLAMA_CPP_LIBDIR
#error "LLAMA_CPP_LIBDIR: the directory of the ggml CPU backends"
#endif

static void log_cb(enum ggml_log_level level, const char *text, void *userdata) {
        static int verbose = -1;
        if (verbose < 0) {
                const char *v = getenv("LLAMA_REF_VERBOSE");
                verbose = v && *v && strcmp(v, "0") != 0;
        }
        if (verbose || level == GGML_LOG_LEVEL_ERROR)
                fputs(text, stderr);
}

static void print_ids(const llama_token *t, size_t n) {
        putchar('[');
        for (size_t i = 0; i < n; i++)
                printf("%s%d", i ? ", " : "", t[i]);
        putchar(']');
}

static struct llama_model *load(const char *path) {
        struct llama_model_params mp = llama_model_default_params();
        mp.n_gpu_layers = 0;
        struct llama_model *m = llama_model_load_from_file(path, mp);
        if (!m)
                fprintf(stderr, "llama-ref: cannot load %s\n", path);
        return m;
}

static struct llama_context *context(struct llama_model *m, uint32_t n_ctx) {
        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx = n_ctx;
        cp.n_batch = n_ctx;
        cp.n_ubatch = n_ctx;
        /* One thread: ggml's spinning workers ran 40 times slower (15 s instead of 0.4 s for 64
         * tokens) with two threads on a 2-core machine that other jobs share, as CI's is. */
        cp.n_threads = cp.n_threads_batch = 1;
        cp.no_perf = true;
        struct llama_context *c = llama_init_from_model(m, cp);
        if (!c)
                fprintf(stderr, "llama-ref: cannot create a context of %u tokens\n", n_ctx);
        return c;
}

/* Tokens of text (BOS as the model wants it) in a new array; NULL on failure. */
static llama_token *tokenize(const struct llama_model *m, const char *text, size_t len, int *ret_n) {
        const struct llama_vocab *v = llama_model_get_vocab(m);
        int cap = (int) len + 2;
        llama_token *t = malloc(cap * sizeof(*t));
        if (!t)
                return NULL;
        int n = llama_tokenize(v, text, (int32_t) len, t, cap, true, false);
        if (n < 0 && n != INT32_MIN) {
                /* -n is the number of tokens needed */
                llama_token *bigger = realloc(t, -n * sizeof(*t));
                if (!bigger) {
                        free(t);
                        return NULL;
                }
                t = bigger;
                n = llama_tokenize(v, text, (int32_t) len, t, -n, true, false);
        }
        if (n < 0) {
                fprintf(stderr, "llama-ref: tokenization failed (%d)\n", n);
                free(t);
                return NULL;
        }
        *ret_n = n;
        return t;
}

static int argmax(const float *x, int n) {
        int best = 0;
        for (int i = 1; i < n; i++)
                if (x[i] > x[best])
                        best = i;
        return best;
}

static int cmd_tokenize(struct llama_model *m, char **texts, int n_texts) {
        for (int i = 0; i < n_texts; i++) {
                int n;
                llama_token *t = tokenize(m, texts[i], strlen(texts[i]), &n);
                if (!t)
                        return 1;
                print_ids(t, n);
                putchar('\n');
                free(t);
        }
        return 0;
}

/* Greedy decoding, one token per llama_decode() after the prompt (as a server decodes). */
static int greedy(struct llama_model *m, const char *prompt, int n_gen, FILE *lf, bool only_logits) {
        const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(m));
        int n, rc = 1;
        llama_token *t = tokenize(m, prompt, strlen(prompt), &n);
        llama_token *out = malloc((n_gen + 1) * sizeof(*out));
        struct llama_context *c = NULL;

        if (!t || !out)
                goto done;
        c = context(m, n + n_gen + 1);
        if (!c)
                goto done;
        if (llama_decode(c, llama_batch_get_one(t, n)) != 0) {
                fprintf(stderr, "llama-ref: decoding the prompt failed\n");
                goto done;
        }
        for (int i = 0; i < n_gen; i++) {
                const float *l = llama_get_logits_ith(c, -1);
                if (only_logits) {
                        printf("[");
                        for (int k = 0; k < n_vocab; k++)
                                printf("%s%.9g", k ? ", " : "", l[k]);
                        printf("]\n");
                        rc = 0;
                        goto done;
                }
                if (lf && fwrite(l, sizeof(float), n_vocab, lf) != (size_t) n_vocab) {
                        fprintf(stderr, "llama-ref: writing the logits failed\n");
                        goto done;
                }
                out[i] = argmax(l, n_vocab);
                if (llama_decode(c, llama_batch_get_one(&out[i], 1)) != 0) {
                        fprintf(stderr, "llama-ref: decoding step %d failed\n", i);
                        goto done;
                }
        }
        printf("{\"prompt\": ");
        print_ids(t, n);
        printf(", \"tokens\": ");
        print_ids(out, n_gen);
        printf("}\n");
        rc = 0;
done:
        llama_free(c);
        free(out);
        free(t);
        return rc;
}

static char *read_file(const char *path, size_t *ret_len) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        long len;

        if (!f || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
            !(buf = malloc(len + 1)) || fread(buf, 1, len, f) != (size_t) len) {
                fprintf(stderr, "llama-ref: cannot read %s\n", path);
                free(buf);
                buf = NULL;
        } else {
                buf[len] = 0;
                *ret_len = len;
        }
        if (f)
                fclose(f);
        return buf;
}

/* llama-perplexity's default protocol: the text tokenized once (BOS first), cut into
 * non-overlapping windows of ctx tokens, the first token of each window replaced by BOS, the
 * second half of each window scored; a partial window at the end is dropped. */
static int cmd_ppl(struct llama_model *m, const char *path, int n_ctx, int max_windows) {
        const struct llama_vocab *v = llama_model_get_vocab(m);
        const int n_vocab = llama_vocab_n_tokens(v), first = n_ctx / 2;
        size_t len;
        int n, rc = 1;
        char *text = read_file(path, &len);
        llama_token *t = text ? tokenize(m, text, len, &n) : NULL;
        struct llama_context *c = NULL;
        struct llama_batch b = llama_batch_init(n_ctx, 0, 1);
        double nll = 0, nll2 = 0;
        long count = 0;

        if (!t)
                goto done;
        if (n_ctx < 4) {
                fprintf(stderr, "llama-ref: a context of %d tokens is too short\n", n_ctx);
                goto done;
        }
        int n_windows = n / n_ctx;
        if (max_windows > 0 && n_windows > max_windows)
                n_windows = max_windows;
        if (n_windows < 1) {
                fprintf(stderr, "llama-ref: %s has %d tokens, fewer than one window of %d\n", path, n, n_ctx);
                goto done;
        }
        c = context(m, n_ctx);
        if (!c)
                goto done;
        for (int w = 0; w < n_windows; w++) {
                const llama_token *win = t + (size_t) w * n_ctx;
                llama_memory_clear(llama_get_memory(c), true);
                b.n_tokens = n_ctx;
                for (int k = 0; k < n_ctx; k++) {
                        b.token[k] = k == 0 && llama_vocab_get_add_bos(v) ? llama_vocab_bos(v) : win[k];
                        b.pos[k] = k;
                        b.n_seq_id[k] = 1;
                        b.seq_id[k][0] = 0;
                        b.logits[k] = k >= first;
                }
                if (llama_decode(c, b) != 0) {
                        fprintf(stderr, "llama-ref: decoding window %d failed\n", w);
                        goto done;
                }
                for (int k = first; k < n_ctx - 1; k++) {
                        const float *l = llama_get_logits_ith(c, k);
                        float mx = l[argmax(l, n_vocab)];
                        double sum = 0;
                        for (int j = 0; j < n_vocab; j++)
                                sum += exp((double) l[j] - mx);
                        double x = log(sum) + mx - l[win[k + 1]];
                        nll += x;
                        nll2 += x * x;
                        count++;
                }
        }
        double mean = nll / count, var = nll2 / count - mean * mean;
        double err = var > 0 ? sqrt(var / (count - 1)) * exp(mean) : 0;
        printf("{\"tokens\": %d, \"ctx\": %d, \"windows\": %d, \"scored\": %ld, \"nll\": %.9f, "
               "\"ppl\": %.9f, \"ppl_err\": %.9f}\n",
               n, n_ctx, n_windows, count, mean, exp(mean), err);
        rc = 0;
done:
        llama_batch_free(b);
        llama_free(c);
        free(t);
        free(text);
        return rc;
}

static int cmd_quantize(const char *in, const char *out, const char *type) {
        static const struct {
                const char *name;
                enum llama_ftype ftype;
        } types[] = {
                { "q8_0", LLAMA_FTYPE_MOSTLY_Q8_0 },
                { "q4_0", LLAMA_FTYPE_MOSTLY_Q4_0 },
                { "q4_1", LLAMA_FTYPE_MOSTLY_Q4_1 },
                { "q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M },
                { "q5_k_m", LLAMA_FTYPE_MOSTLY_Q5_K_M },
        };
        llama_model_quantize_params p = llama_model_quantize_default_params();
        p.nthread = 2;
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
                if (strcmp(type, types[i].name) == 0) {
                        p.ftype = types[i].ftype;
                        if (llama_model_quantize(in, out, &p) != 0) {
                                fprintf(stderr, "llama-ref: quantizing %s to %s failed\n", in, type);
                                return 1;
                        }
                        return 0;
                }
        fprintf(stderr, "llama-ref: unknown type '%s' (q8_0, q4_0, q4_1, q4_k_m, q5_k_m)\n", type);
        return 2;
}

static int cmd_greedy(struct llama_model *m, char **prompts, int n_prompts, int n_gen,
                      const char *logits_path) {
        FILE *lf = NULL;
        int rc = 0;

        if (logits_path && !(lf = fopen(logits_path, "we"))) {
                fprintf(stderr, "llama-ref: %s: %s\n", logits_path, strerror(errno));
                return 1;
        }
        for (int i = 0; i < n_prompts && rc == 0; i++)
                rc = greedy(m, prompts[i], n_gen, lf, false);
        if (lf && fclose(lf) != 0)
                rc = 1;
        return rc;
}

static int usage(void) {
        fputs("Usage: llama-ref tokenize MODEL TEXT...\n"
              "       llama-ref greedy [--logits FILE] MODEL N PROMPT...\n"
              "       llama-ref logits MODEL PROMPT\n"
              "       llama-ref ppl MODEL TEXTFILE [CTX [MAX_WINDOWS]]\n"
              "       llama-ref quantize IN OUT q8_0|q4_0|q4_1|q4_k_m|q5_k_m\n", stderr);
        return 2;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "logits", required_argument, NULL, 'l' },
                {},
        };
        struct llama_model *m = NULL;
        const char *logits_path = NULL;
        int c, rc;

        if (argc < 2)
                return usage();
        const char *cmd = argv[1];
        optind = 2;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                if (c != 'l')
                        return usage();
                logits_path = optarg;
        }
        char **args = argv + optind;
        int n_args = argc - optind;
        if (n_args < 2 || (strcmp(cmd, "tokenize") != 0 && strcmp(cmd, "greedy") != 0 &&
                           strcmp(cmd, "logits") != 0 && strcmp(cmd, "ppl") != 0 &&
                           strcmp(cmd, "quantize") != 0))
                return usage();

        llama_log_set(log_cb, NULL);
        const char *libdir = getenv("LLAMA_CPP_LIBDIR");
        if (!libdir || !*libdir)
                libdir = LLAMA_CPP_LIBDIR;
        ggml_backend_load_all_from_path(libdir);
        if (ggml_backend_dev_count() == 0) {
                fprintf(stderr, "llama-ref: no ggml backend in %s\n", libdir);
                return 1;
        }
        llama_backend_init();

        if (strcmp(cmd, "quantize") == 0) {
                rc = n_args == 3 ? cmd_quantize(args[0], args[1], args[2]) : usage();
                goto done;
        }
        m = load(args[0]);
        if (!m) {
                rc = 1;
                goto done;
        }
        if (strcmp(cmd, "tokenize") == 0)
                rc = cmd_tokenize(m, args + 1, n_args - 1);
        else if (strcmp(cmd, "greedy") == 0 && n_args >= 3 && atoi(args[1]) > 0)
                rc = cmd_greedy(m, args + 2, n_args - 2, atoi(args[1]), logits_path);
        else if (strcmp(cmd, "logits") == 0 && n_args == 2)
                rc = greedy(m, args[1], 1, NULL, true);
        else if (strcmp(cmd, "ppl") == 0 && n_args <= 4)
                rc = cmd_ppl(m, args[1], n_args >= 3 ? atoi(args[2]) : 512, n_args == 4 ? atoi(args[3]) : 0);
        else
                rc = usage();
done:
        llama_model_free(m);
        llama_backend_free();
        return rc;
}
