/* K-quant mixes on the Vulkan device, run as stored: random fixtures quantized to llama.cpp's
 * Q4_K_M and Q5_K_M mixes (Q4_K / Q5_K, Q6_K in attn_v / ffn_down of some layers and the output
 * head, and where rows are not whole super-blocks the fallbacks Q5_0 / Q5_1 and Q8_0) give the CPU reference's logits (which
 * dequantizes the same bits) after a prompt and decode steps, with Q/K/V fused from row blocks of
 * different formats, and batched decode steps those of stepping alone; and the bundled model quantized the same way gives the CPU reference's
 * greedy tokens. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "eval.h"
#include "fixture-model.h"
#include "gguf.h"
#include "macro.h"
#include "vk.h"


#define N_PROMPT 40
#define N_DECODE 5
#define N_GREEDY 64
/* Same weights on both sides: only fp32 sums, the fp16 KV cache and embedding table differ
 * (an F16 model gives ~1e-6 with those); a wrong block or scale gives nmse of order 1. */
#define BOUND 1e-4

static int failures;

static void expect(bool ok, const char *what, double v, double bound) {
        printf("  %-44s %.3g (bound %.3g)%s\n", what, v, bound, ok ? "" : "  FAILED");
        if (!ok)
                failures++;
}

static int quantize_mix(QdKMix mix, const char *in, const char *out) {
        QdQuantizeOptions o = { .kmix = mix, .method = QD_QUANTIZE_RTN, .n_threads = 2 };
        _cleanup_free_ char *err = NULL;
        int r = qd_quantize_file(in, out, &o, &err);

        if (r < 0)
                fprintf(stderr, "quantize %s: %s\n", in, err ? err : strerror(-r));
        return r;
}

/* Tensors of path per ggml type; the types the mix must hold are asserted by the caller. */
static void count_types(const char *path, unsigned counts[static _GGML_TYPE_MAX]) {
        Gguf *g = NULL;
        _cleanup_free_ char *err = NULL;

        memset(counts, 0, sizeof(unsigned) * _GGML_TYPE_MAX);
        assert(gguf_open(path, &g, &err) == 0);
        for (size_t i = 0; i < gguf_n_tensors(g); i++) {
                const GgufTensor *t = gguf_tensor(g, i);
                if (t->n_dims >= 2 && t->type < _GGML_TYPE_MAX)
                        counts[t->type]++;
        }
        gguf_close(g);
        printf("  tensors: Q4_K %u, Q5_K %u, Q6_K %u, Q5_0 %u, Q5_1 %u, Q8_0 %u, F16 %u\n",
               counts[GGML_TYPE_Q4_K], counts[GGML_TYPE_Q5_K], counts[GGML_TYPE_Q6_K], counts[GGML_TYPE_Q5_0],
               counts[GGML_TYPE_Q5_1], counts[GGML_TYPE_Q8_0], counts[GGML_TYPE_F16]);
}

/* Prompt and decode logits of the device's default variant against the CPU reference. */
static void compare(QdEngine *cpu, QdEngine *gpu, const char *path, QdPrecision want, uint32_t V, uint64_t seed) {
        _cleanup_(qd_model_freep) QdModel *mc = NULL, *mg = NULL;
        _cleanup_(qd_sequence_freep) QdSequence *sc = NULL, *sg = NULL;
        int32_t tok[N_PROMPT + N_DECODE];
        double worst = 0;

        for (size_t i = 0; i < ELEMENTSOF(tok); i++)
                tok[i] = fixture_rand(&seed) % V;
        assert(qd_model_load(cpu, path, &mc) == 0);
        assert(qd_model_load(gpu, path, &mg) == 0);
        /* the mix's label (int4 for Q4_K_M, int8 for Q5_K_M), its tensors as stored */
        assert(qd_model_get_precision(mg) == want);
        assert(qd_sequence_new(mc, 64, &sc) == 0);
        assert(qd_sequence_new(mg, 64, &sg) == 0);
        assert(qd_sequence_prefill(sc, tok, N_PROMPT) == 0);
        assert(qd_sequence_prefill(sg, tok, N_PROMPT) == 0);
        double e = fixture_nmse(qd_sequence_logits(sg), qd_sequence_logits(sc), V);
        expect(e < BOUND, "prefill (matrix-matrix) nmse", e, BOUND);
        for (size_t i = N_PROMPT; i < ELEMENTSOF(tok); i++) {
                assert(qd_sequence_prefill(sc, &tok[i], 1) == 0);
                assert(qd_sequence_prefill(sg, &tok[i], 1) == 0);
                worst = MAX(worst, fixture_nmse(qd_sequence_logits(sg), qd_sequence_logits(sc), V));
        }
        expect(worst < BOUND, "decode (matrix-vector) nmse, worst", worst, BOUND);
}

#define N_BATCH 10

/* A batched decode of 3 and of 10 sequences (batched matrix-vector, then n > 8: the tiled or
 * the dequantize + cooperative-matrix route) gives the tokens and logits of stepping each alone. */
static void check_batch(QdEngine *gpu, const char *path, uint32_t V, uint64_t seed) {
        _cleanup_(qd_model_freep) QdModel *m = NULL;
        QdSequence *seqs[N_BATCH] = {}, *refs[N_BATCH] = {};
        int32_t tok[16], tb[N_BATCH], ts;
        float lb[N_BATCH], ls;
        double worst = 0;

        assert(qd_model_load(gpu, path, &m) == 0);
        for (size_t i = 0; i < N_BATCH; i++) {
                uint32_t n = 2 + i;
                for (uint32_t k = 0; k < n; k++)
                        tok[k] = fixture_rand(&seed) % V;
                assert(qd_sequence_new(m, 64, &seqs[i]) == 0);
                assert(qd_sequence_new(m, 64, &refs[i]) == 0);
                assert(qd_sequence_prefill(seqs[i], tok, n) == 0);
                assert(qd_sequence_prefill(refs[i], tok, n) == 0);
        }
        for (size_t n = 3; n <= N_BATCH; n += N_BATCH - 3)
                for (int step = 0; step < 2; step++) {
                        assert(qd_model_step_batch(m, seqs, NULL, n, tb, lb) == 0);
                        for (size_t i = 0; i < n; i++) {
                                assert(qd_sequence_step(refs[i], NULL, &ts, &ls) == 0);
                                if (tb[i] != ts) {
                                        printf("  batch of %zu, column %zu: token %d != alone %d  FAILED\n", n, i, tb[i], ts);
                                        failures++;
                                }
                                worst = MAX(worst, fixture_nmse(qd_sequence_logits(seqs[i]), qd_sequence_logits(refs[i]), V));
                        }
                }
        /* the cooperative-matrix route rounds activations and weights to fp16 (~1e-5) */
        expect(worst < BOUND, "batch of 3 and 10 vs alone: nmse", worst, BOUND);
        for (size_t i = 0; i < N_BATCH; i++) {
                qd_sequence_free(seqs[i]);
                qd_sequence_free(refs[i]);
        }
}

static int greedy(QdEngine *e, const char *path, int32_t *out) {
        _cleanup_(qd_model_freep) QdModel *m = NULL;
        _cleanup_(qd_sequence_freep) QdSequence *s = NULL;
        _cleanup_free_ int32_t *prompt = NULL;
        static const char text[] = "And it came to pass, when the king heard";
        size_t n = 0;
        int r;

        if ((r = qd_model_load(e, path, &m)) < 0 ||
            (r = qd_model_tokenize(m, text, strlen(text), true, false, &prompt, &n)) < 0 ||
            (r = qd_sequence_new(m, 128, &s)) < 0 || (r = qd_sequence_prefill(s, prompt, n)) < 0)
                return r;
        for (int i = 0; i < N_GREEDY; i++)
                if ((r = qd_sequence_step(s, NULL, &out[i], NULL)) < 0)
                        return r;
        return 0;
}

int main(void) {
        _cleanup_(qd_engine_freep) QdEngine *cpu = NULL, *gpu = NULL;
        unsigned counts[_GGML_TYPE_MAX];
        const char *root = getenv("QUANTD_SOURCE_ROOT");
        char *dir;

        if (!fixture_engines(&gpu, &cpu))
                return 77;
        dir = fixture_tmpdir();
        assert(dir);

        FixtureSpec specs[] = {
                /* rows of 256 / 512: Q4_K everywhere, Q6_K in layer 1's attn_v and ffn_down (Q/K/V
                 * fused from a Q4_K and a Q6_K block) and the output head */
                { .arch = "llama", .n_vocab = 120, .n_embd = 256, .n_layer = 2, .n_head = 4,
                  .n_head_kv = 2, .n_ff = 512, .rope_base = 10000.0f, .seed = 31 },
                /* rows of 160: the fallbacks Q5_0 (for Q4_K) and Q8_0 (for Q6_K: attn_v of layer 1,
                 * the output head), ffn_down's rows of 256 in Q4_K / Q6_K; qwen2 biases */
                { .arch = "qwen2", .n_vocab = 97, .n_embd = 160, .n_layer = 2, .n_head = 5,
                  .n_head_kv = 1, .n_ff = 256, .seed = 32 },
        };
        /* Q4_K_M: Q4_K and its fallback Q5_0; Q5_K_M: Q5_K and its fallback Q5_1 (int8 variant). */
        static const struct {
                QdKMix mix;
                const char *name;
                GgmlType base, fallback;
                QdPrecision precision;
        } mixes[] = {
                { QD_KMIX_Q4_K_M, "Q4_K_M", GGML_TYPE_Q4_K, GGML_TYPE_Q5_0, QD_PRECISION_INT4 },
                { QD_KMIX_Q5_K_M, "Q5_K_M", GGML_TYPE_Q5_K, GGML_TYPE_Q5_1, QD_PRECISION_INT8 },
        };
        for (size_t x = 0; x < ELEMENTSOF(mixes); x++)
                for (size_t s = 0; s < ELEMENTSOF(specs); s++) {
                        _cleanup_free_ char *f16 = NULL, *q = NULL;
                        specs[s].wtype = GGML_TYPE_F16;
                        assert(asprintf(&f16, "%s/f%zu.gguf", dir, s) > 0);
                        assert(asprintf(&q, "%s/q%zu-%zu.gguf", dir, x, s) > 0);
                        assert(fixture_write(&specs[s], f16) == 0);
                        assert(quantize_mix(mixes[x].mix, f16, q) == 0);
                        printf("%s E=%u ff=%u %s:\n", specs[s].arch, specs[s].n_embd, specs[s].n_ff, mixes[x].name);
                        count_types(q, counts);
                        assert(counts[mixes[x].base] > 0 && counts[GGML_TYPE_Q6_K] > 0);
                        if (specs[s].n_embd % 256)
                                assert(counts[mixes[x].fallback] > 0 && counts[GGML_TYPE_Q8_0] > 0);
                        compare(cpu, gpu, q, mixes[x].precision, specs[s].n_vocab, 600 + s);
                        check_batch(gpu, q, specs[s].n_vocab, 700 + s);
                        unlink(q);
                }

        /* The bundled model as `quantd-quantize --type q4_k_m` / `q5_k_m` writes it. */
        _cleanup_free_ char *src = NULL;
        assert(asprintf(&src, "%s/models/quantd-kjv.gguf", root ? root : ".") > 0);
        for (size_t x = 0; x < ELEMENTSOF(mixes) && access(src, R_OK) == 0; x++) {
                _cleanup_free_ char *q = NULL;
                int32_t a[N_GREEDY], b[N_GREEDY];
                int same = 0;
                assert(asprintf(&q, "%s/kjv-%s.gguf", dir, mixes[x].name) > 0);
                assert(quantize_mix(mixes[x].mix, src, q) == 0);
                printf("bundled model, %s:\n", mixes[x].name);
                count_types(q, counts);
                assert(greedy(cpu, q, a) == 0);
                assert(greedy(gpu, q, b) == 0);
                for (int i = 0; i < N_GREEDY; i++)
                        same += a[i] == b[i];
                printf("  identical greedy tokens: %d of %d\n", same, N_GREEDY);
                if (same != N_GREEDY) {
                        for (int i = 0; i < N_GREEDY; i++)
                                printf("%d:%d/%d%s", i, a[i], b[i], i % 8 == 7 ? "\n" : " ");
                        failures++;
                }
                unlink(q);
        }
        if (access(src, R_OK) != 0)
                printf("no bundled model at %s: greedy check skipped\n", src);

        fixture_rmdir(dir);
        failures += !fixture_validation_clean();
        return failures ? 1 : 0;
}
