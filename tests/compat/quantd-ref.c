/* quantd-ref: quantd's side of the compatibility tests (tests/compat), with the same output as
 * llama-ref so that tests/compat/compat.py compares the two line by line.
 *
 *   quantd-ref tokenize MODEL TEXT...          ids of each text, BOS as the model wants (JSON)
 *   quantd-ref greedy [--cpu] [--precision P] [--batch] [--logits FILE] MODEL N PROMPT...
 *                                              N greedy tokens after each prompt (JSON lines);
 *                                              FILE gets the f32 logits they were chosen from
 *
 * greedy runs the Vulkan engine (at P: fp16, int8, int4, or "file": the variant that the engine
 * picks for the file's weights at load; default fp16) or, with --cpu, the plain-C f32
 * reference; the prompts one after the other, or with --batch stepped together
 * (qd_model_step_batch(), as the daemon steps concurrent requests). With $QUANTD_VK_VALIDATION
 * set, a validation message fails the run. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "macro.h"
#include "vk.h"


static void print_ids(const int32_t *t, size_t n) {
        putchar('[');
        for (size_t i = 0; i < n; i++)
                printf("%s%d", i ? ", " : "", t[i]);
        putchar(']');
}

static int tokenize(QdModel *m, const char *text, int32_t **ret, size_t *ret_n) {
        /* add_bos: BOS when the file asks for it (tokenizer.ggml.add_bos_token), as
         * llama_tokenize(add_special = true) does. */
        return qd_model_tokenize(m, text, strlen(text), true, false, ret, ret_n);
}

typedef struct Gen {
        QdSequence *s;
        int32_t *prompt, *out;
        size_t n_prompt;
        float *logits; /* n_gen × n_vocab, or NULL */
} Gen;

static void gen_done(Gen *g) {
        qd_sequence_free(g->s);
        free(g->prompt);
        free(g->out);
        free(g->logits);
}

static int gen_start(QdModel *m, const char *prompt, int n_gen, uint32_t n_vocab, bool keep_logits,
                     Gen *g) {
        int r;

        r = tokenize(m, prompt, &g->prompt, &g->n_prompt);
        if (r < 0)
                return r;
        g->out = malloc(n_gen * sizeof(*g->out));
        if (keep_logits)
                g->logits = malloc((size_t) n_gen * n_vocab * sizeof(float));
        if (!g->out || (keep_logits && !g->logits))
                return -ENOMEM;
        r = qd_sequence_new(m, g->n_prompt + n_gen + 1, &g->s);
        if (r < 0)
                return r;
        return qd_sequence_prefill(g->s, g->prompt, g->n_prompt);
}

/* Greedy decoding of every prompt: one after the other with qd_sequence_step(), or (batch) all
 * together with qd_model_step_batch() as the daemon steps concurrent requests. */
static int greedy(QdModel *m, char **prompts, size_t n, int n_gen, bool batch, FILE *logits) {
        QdModelInfo info;
        Gen *g;
        int r = 0;

        qd_model_info(m, &info);
        g = calloc(n, sizeof(*g));
        _cleanup_free_ QdSequence **seqs = calloc(n, sizeof(*seqs));
        _cleanup_free_ int32_t *tok = calloc(n, sizeof(*tok));
        if (!g || !seqs || !tok) {
                free(g);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n && r >= 0; i++) {
                r = gen_start(m, prompts[i], n_gen, info.n_vocab, logits, &g[i]);
                seqs[i] = g[i].s;
        }
        for (size_t i0 = 0; i0 < n && r >= 0; i0 += batch ? n : 1) {
                size_t nb = batch ? n : 1;
                for (int k = 0; k < n_gen && r >= 0; k++) {
                        for (size_t i = i0; i < i0 + nb && logits; i++)
                                memcpy(g[i].logits + (size_t) k * info.n_vocab, qd_sequence_logits(g[i].s),
                                       info.n_vocab * sizeof(float));
                        r = qd_model_step_batch(m, seqs + i0, NULL, nb, tok, NULL);
                        for (size_t i = i0; i < i0 + nb && r >= 0; i++)
                                g[i].out[k] = tok[i - i0];
                }
        }
        for (size_t i = 0; i < n && r >= 0; i++) {
                printf("{\"prompt\": ");
                print_ids(g[i].prompt, g[i].n_prompt);
                printf(", \"tokens\": ");
                print_ids(g[i].out, n_gen);
                printf("}\n");
                if (logits && fwrite(g[i].logits, sizeof(float) * info.n_vocab, n_gen, logits) != (size_t) n_gen)
                        r = -EIO;
        }
        for (size_t i = 0; i < n; i++)
                gen_done(&g[i]);
        free(g);
        return r;
}

static int usage(void) {
        fputs("Usage: quantd-ref tokenize MODEL TEXT...\n"
              "       quantd-ref greedy [--cpu] [--precision fp16|int8|int4|file] [--batch] [--logits FILE]\n"
              "                         MODEL N PROMPT...\n",
              stderr);
        return 2;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "cpu", no_argument, NULL, 'c' },
                { "precision", required_argument, NULL, 'p' },
                { "logits", required_argument, NULL, 'l' },
                { "batch", no_argument, NULL, 'b' },
                {},
        };
        _cleanup_(qd_engine_freep) QdEngine *e = NULL;
        _cleanup_(qd_model_freep) QdModel *m = NULL;
        QdEngineOptions eo = {};
        QdPrecision prec = QD_PRECISION_F16;
        const char *logits_path = NULL;
        FILE *logits = NULL;
        bool batch = false, file_precision = false;
        int c, r;

        if (argc < 2)
                return usage();
        const char *cmd = argv[1];
        optind = 2;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0)
                switch (c) {
                case 'c':
                        eo.cpu_only = true;
                        break;
                case 'p':
                        file_precision = strcmp(optarg, "file") == 0;
                        if (file_precision)
                                break;
                        prec = qd_precision_from_string(optarg);
                        if (prec < 0 || prec >= _QD_PRECISION_MAX) {
                                fprintf(stderr, "quantd-ref: unknown precision '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 'l':
                        logits_path = optarg;
                        break;
                case 'b':
                        batch = true;
                        break;
                default:
                        return usage();
                }
        bool is_greedy = strcmp(cmd, "greedy") == 0;
        if (is_greedy ? argc - optind < 3 || atoi(argv[optind + 1]) <= 0
                      : strcmp(cmd, "tokenize") != 0 || argc - optind < 2)
                return usage();
        const char *path = argv[optind++];

        if (!is_greedy)
                eo.cpu_only = true; /* the tokenizer needs no device */
        r = qd_engine_new(&eo, &e);
        if (r < 0) {
                fprintf(stderr, "quantd-ref: no engine: %s\n", strerror(-r));
                return 77;
        }
        r = qd_model_load(e, path, &m);
        if (r < 0) {
                fprintf(stderr, "quantd-ref: cannot load %s: %s\n", path, strerror(-r));
                return 1;
        }

        if (!is_greedy) {
                for (; optind < argc; optind++) {
                        _cleanup_free_ int32_t *t = NULL;
                        size_t n;
                        r = tokenize(m, argv[optind], &t, &n);
                        if (r < 0) {
                                fprintf(stderr, "quantd-ref: tokenization failed: %s\n", strerror(-r));
                                return 1;
                        }
                        print_ids(t, n);
                        putchar('\n');
                }
                return 0;
        }

        int n_gen = atoi(argv[optind++]);
        r = file_precision ? 0 : qd_model_set_precision(m, prec);
        if (r < 0) {
                fprintf(stderr, "quantd-ref: precision %s: %s\n", qd_precision_to_string(prec), strerror(-r));
                return 1;
        }
        if (logits_path && !(logits = fopen(logits_path, "we"))) {
                fprintf(stderr, "quantd-ref: %s: %m\n", logits_path);
                return 1;
        }
        r = greedy(m, argv + optind, argc - optind, n_gen, batch, logits);
        if (logits && fclose(logits) != 0 && r >= 0)
                r = -EIO;
        if (r < 0) {
                fprintf(stderr, "quantd-ref: generation failed: %s\n", strerror(-r));
                return 1;
        }
        if (!eo.cpu_only && qvk_validation_messages() > 0) {
                fprintf(stderr, "quantd-ref: %u validation messages\n", qvk_validation_messages());
                return 1;
        }
        return 0;
}
