/* Helper for the service tests: writes a tiny random llama model with a byte-level BPE vocabulary
 * and a ChatML template (make-model PATH), and runs a direct greedy generation through the
 * engine (greedy PATH PROMPT N) to compare with what the daemon streams. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "fixture-model.h"
#include "macro.h"

static const char *const merged[] = {
        "he", "ll", "hell", "hello", "\xc4\xa0w", "or", "\xc4\xa0wor", "ld", "th", "\xc4\xa0t", "in",
};
static const char *const merges[] = {
        "h e", "l l", "he ll", "hell o", "\xc4\xa0 w", "o r", "\xc4\xa0w or", "l d", "t h", "\xc4\xa0 t", "i n",
};
static const char *const specials[] = { "<|endoftext|>", "<|im_start|>", "<|im_end|>" };
#define N_VOCAB (256 + ELEMENTSOF(merged) + ELEMENTSOF(specials))

static const char chatml[] =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* A 2-layer llama (E 64, 4/2 heads, F16) with the vocabulary above: <|endoftext|> is BOS,
 * <|im_end|> EOS. */
static int make_model(const char *path) {
        static const FixtureVocab vocab = {
                .merged = merged, .n_merged = ELEMENTSOF(merged),
                .merges = merges, .n_merges = ELEMENTSOF(merges),
                .specials = specials, .n_specials = ELEMENTSOF(specials),
                .bos = 256 + ELEMENTSOF(merged), .eos = 256 + ELEMENTSOF(merged) + 2,
                .chat_template = chatml,
        };
        FixtureSpec spec = {
                .arch = "llama", .n_vocab = N_VOCAB, .n_embd = 64, .n_layer = 2, .n_head = 4,
                .n_head_kv = 2, .n_ff = 128, .wtype = GGML_TYPE_F16, .seed = 0x5eed,
                .vocab = &vocab, .name = "service-fixture", .n_ctx_train = 512, .output_gain = 3.0f,
        };

        return fixture_write(&spec, path);
}

/* Prints the token ids of a greedy run, as the daemon would stream them (EOG not included). */
static int greedy(const char *path, const char *prompt, int n) {
        const char *cpu = getenv("QUANTD_TEST_CPU");
        QdEngineOptions o = { .cpu_only = cpu && streq(cpu, "1") };
        QdEngine *e = NULL;
        QdModel *m = NULL;
        QdSequence *s = NULL;
        QdSampling smp;
        int32_t *toks = NULL;
        size_t nt = 0;
        int r;

        r = qd_engine_new(&o, &e);
        if (r < 0 && !o.cpu_only) {
                o.cpu_only = true;
                r = qd_engine_new(&o, &e);
        }
        if (r >= 0)
                r = qd_model_load(e, path, &m);
        if (r >= 0)
                r = qd_model_tokenize(m, prompt, strlen(prompt), true, false, &toks, &nt);
        if (r >= 0)
                r = qd_sequence_new(m, (uint32_t) (nt + (size_t) n), &s);
        if (r >= 0)
                r = qd_sequence_prefill(s, toks, nt);
        qd_sampling_init(&smp);
        struct timespec t0, t1;
        int done = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; r >= 0 && i < n; i++) {
                int32_t t;
                r = qd_sequence_step(s, &smp, &t, NULL);
                if (r < 0 || qd_model_token_is_eog(m, t))
                        break;
                printf("%s%d", i ? " " : "", t);
                done++;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("\n");
        if (done > 0) {
                double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
                fprintf(stderr, "direct: %d tokens in %.1f ms, %.2f ms/token, %.1f tok/s\n", done, ms, ms / done,
                        done / ms * 1e3);
        }
        free(toks);
        qd_sequence_free(s);
        qd_model_free(m);
        qd_engine_free(e);
        return r;
}

int main(int argc, char *argv[]) {
        int r;

        if (argc == 3 && streq(argv[1], "make-model"))
                r = make_model(argv[2]);
        else if (argc == 5 && streq(argv[1], "greedy"))
                r = greedy(argv[2], argv[3], atoi(argv[4]));
        else {
                fprintf(stderr, "usage: service-tool make-model PATH | greedy PATH PROMPT N\n");
                return 2;
        }
        if (r < 0) {
                fprintf(stderr, "service-tool: %s\n", strerror(-r));
                return 1;
        }
        return 0;
}
