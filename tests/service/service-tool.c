/* Helper for the service tests: writes a tiny random llama model with a byte-level BPE vocabulary
 * and a ChatML template (make-model PATH), and runs a direct greedy generation through the
 * engine (greedy PATH PROMPT N) to compare with what the daemon streams. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "ggml-types.h"
#include "gguf.h"
#include "macro.h"

#define E 64
#define N_LAYER 2
#define N_HEAD 4
#define N_HEAD_KV 2
#define N_FF 128

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

static uint64_t rng = 0x5eed;

static float frand(void) {
        uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return (float) ((z ^ (z >> 31)) >> 40) / 16777216.0f * 2.0f - 1.0f;
}

static size_t byte_to_utf8(unsigned b, char *out) {
        unsigned cp, n = 0;
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
                cp = b;
        else {
                for (unsigned k = 0; k < b; k++)
                        if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255)))
                                n++;
                cp = 256 + n;
        }
        if (cp < 0x80) {
                out[0] = (char) cp;
                return 1;
        }
        out[0] = (char) (0xC0 | (cp >> 6));
        out[1] = (char) (0x80 | (cp & 0x3F));
        return 2;
}

static void *blobs[64];
static size_t n_blobs;

static int add(GgufWriter *w, const char *name, GgmlType type, uint64_t ne0, uint64_t ne1, float scale,
               float offset) {
        size_t rb;
        uint8_t *data;
        float row[1024];
        int r;

        r = ggml_row_size(type, ne0, &rb);
        if (r < 0)
                return r;
        data = malloc(rb * ne1);
        if (!data || n_blobs >= ELEMENTSOF(blobs))
                return -ENOMEM;
        blobs[n_blobs++] = data;
        for (uint64_t i = 0; i < ne1; i++) {
                for (uint64_t j = 0; j < ne0; j++)
                        row[j] = offset + scale * frand();
                r = ggml_quantize_row(type, row, data + i * rb, ne0);
                if (r < 0)
                        return r;
        }
        uint64_t ne[2] = { ne0, ne1 };
        return gguf_writer_add_tensor(w, name, type, ne1 > 1 ? 2 : 1, ne, data, rb * ne1);
}

static int make_model(const char *path) {
        GgufWriter *w = NULL;
        char *tok[N_VOCAB];
        int32_t types[N_VOCAB];
        float ws = 1.7f / sqrtf((float) E);
        int r;

        for (unsigned b = 0; b < 256; b++) {
                char s[4] = {};
                byte_to_utf8(b, s);
                tok[b] = strdup(s);
                types[b] = 1;
        }
        for (size_t i = 0; i < ELEMENTSOF(merged); i++) {
                tok[256 + i] = strdup(merged[i]);
                types[256 + i] = 1;
        }
        for (size_t i = 0; i < ELEMENTSOF(specials); i++) {
                tok[256 + ELEMENTSOF(merged) + i] = strdup(specials[i]);
                types[256 + ELEMENTSOF(merged) + i] = 3;
        }
        r = gguf_writer_new(&w);
        if (r < 0)
                return r;
        const uint32_t eos = 256 + ELEMENTSOF(merged);
        if ((r = gguf_writer_add_string(w, "general.architecture", "llama")) < 0 ||
            (r = gguf_writer_add_string(w, "general.name", "service-fixture")) < 0 ||
            (r = gguf_writer_add_u32(w, "llama.context_length", 512)) < 0 ||
            (r = gguf_writer_add_u32(w, "llama.embedding_length", E)) < 0 ||
            (r = gguf_writer_add_u32(w, "llama.block_count", N_LAYER)) < 0 ||
            (r = gguf_writer_add_u32(w, "llama.feed_forward_length", N_FF)) < 0 ||
            (r = gguf_writer_add_u32(w, "llama.attention.head_count", N_HEAD)) < 0 ||
            (r = gguf_writer_add_u32(w, "llama.attention.head_count_kv", N_HEAD_KV)) < 0 ||
            (r = gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)) < 0 ||
            (r = gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f)) < 0 ||
            (r = gguf_writer_add_string(w, "tokenizer.ggml.model", "gpt2")) < 0 ||
            (r = gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", (const char *const *) tok, N_VOCAB)) < 0 ||
            (r = gguf_writer_add_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, N_VOCAB)) < 0 ||
            (r = gguf_writer_add_string_array(w, "tokenizer.ggml.merges", merges, ELEMENTSOF(merges))) < 0 ||
            (r = gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", eos)) < 0 ||
            (r = gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", eos + 2)) < 0 ||
            (r = gguf_writer_add_string(w, "tokenizer.chat_template", chatml)) < 0)
                goto finish;

        r = add(w, "token_embd.weight", GGML_TYPE_F16, E, N_VOCAB, 1.0f, 0);
        if (r >= 0)
                r = add(w, "output_norm.weight", GGML_TYPE_F32, E, 1, 0.1f, 1.0f);
        if (r >= 0)
                r = add(w, "output.weight", GGML_TYPE_F16, E, N_VOCAB, ws * 3, 0);
        for (unsigned l = 0; r >= 0 && l < N_LAYER; l++) {
                const struct {
                        const char *n;
                        uint64_t ne0, ne1;
                        bool vec;
                } list[] = {
                        { "attn_norm.weight", E, 1, true },
                        { "attn_q.weight", E, E, false },
                        { "attn_k.weight", E, E / N_HEAD * N_HEAD_KV, false },
                        { "attn_v.weight", E, E / N_HEAD * N_HEAD_KV, false },
                        { "attn_output.weight", E, E, false },
                        { "ffn_norm.weight", E, 1, true },
                        { "ffn_gate.weight", E, N_FF, false },
                        { "ffn_up.weight", E, N_FF, false },
                        { "ffn_down.weight", N_FF, E, false },
                };
                for (size_t i = 0; r >= 0 && i < ELEMENTSOF(list); i++) {
                        char name[64];
                        snprintf(name, sizeof(name), "blk.%u.%s", l, list[i].n);
                        if (list[i].vec)
                                r = add(w, name, GGML_TYPE_F32, list[i].ne0, 1, 0.1f, 1.0f);
                        else
                                r = add(w, name, GGML_TYPE_F16, list[i].ne0, list[i].ne1,
                                        1.7f / sqrtf((float) list[i].ne0), 0);
                }
        }
        if (r >= 0)
                r = gguf_writer_write(w, path);
finish:
        gguf_writer_free(w);
        for (size_t i = 0; i < N_VOCAB; i++)
                free(tok[i]);
        for (size_t i = 0; i < n_blobs; i++)
                free(blobs[i]);
        return r;
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
