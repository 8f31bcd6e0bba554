/* Vulkan forward pass against the CPU reference on random fixtures: logits after a prompt
 * prefill and after several single-token decode steps, for llama and qwen2 fixtures with F16,
 * Q8_0 and Q4_0 weights (bounded normalised error per format), the requantized INT8/INT4
 * variants of an F16 file, and a precision switch in the middle of a generation. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine-fixture.h"
#include "engine.h"
#include "macro.h"
#include "vk.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(QdEngine *, qd_engine_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(QdModel *, qd_model_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(QdSequence *, qd_sequence_free);

#define N_PROMPT 70
#define N_DECODE 6

static int failures;

static void expect(bool ok, const char *what, double v, double bound) {
        printf("  %-44s %.3g (bound %.3g)%s\n", what, v, bound, ok ? "" : "  FAILED");
        if (!ok)
                failures++;
}

/* Runs the same tokens through the CPU reference and the device at precision p; compares. */
static void compare(QdEngine *cpu, QdEngine *gpu, const char *path, uint32_t V, QdPrecision p,
                    double bound, uint64_t seed) {
        _cleanup_(qd_model_freep) QdModel *mc = NULL, *mg = NULL;
        _cleanup_(qd_sequence_freep) QdSequence *sc = NULL, *sg = NULL;
        int32_t tok[N_PROMPT + N_DECODE];
        char what[96];
        double worst = 0;

        for (size_t i = 0; i < ELEMENTSOF(tok); i++)
                tok[i] = fixture_rand(&seed) % V;
        assert(qd_model_load(cpu, path, &mc) == 0);
        assert(qd_model_load(gpu, path, &mg) == 0);
        assert(qd_model_set_precision(mg, p) == 0);
        assert(qd_sequence_new(mc, 160, &sc) == 0);
        assert(qd_sequence_new(mg, 160, &sg) == 0);

        assert(qd_sequence_prefill(sc, tok, N_PROMPT) == 0);
        assert(qd_sequence_prefill(sg, tok, N_PROMPT) == 0);
        double e = fixture_nmse(qd_sequence_logits(sg), qd_sequence_logits(sc), V);
        snprintf(what, sizeof(what), "%s prefill nmse", qd_precision_to_string(p));
        expect(e < bound, what, e, bound);
        for (size_t i = N_PROMPT; i < ELEMENTSOF(tok); i++) {
                assert(qd_sequence_prefill(sc, &tok[i], 1) == 0);
                assert(qd_sequence_prefill(sg, &tok[i], 1) == 0);
                worst = MAX(worst, fixture_nmse(qd_sequence_logits(sg), qd_sequence_logits(sc), V));
        }
        snprintf(what, sizeof(what), "%s decode nmse (worst of %d)", qd_precision_to_string(p), N_DECODE);
        expect(worst < bound, what, worst, bound);

        /* Greedy step on the device: token and log-probability from the GPU's argmax. */
        const float *lg = qd_sequence_logits(sg);
        int32_t want = 0;
        for (uint32_t i = 1; i < V; i++)
                if (lg[i] > lg[want])
                        want = i;
        int32_t t;
        float lp;
        assert(qd_sequence_step(sg, NULL, &t, &lp) == 0);
        if (t != want) {
                printf("  greedy token %d != host argmax %d  FAILED\n", t, want);
                failures++;
        }

        /* Sampling downloads the logits: same tokens and log-probabilities from the CPU's
         * logits and the device's when both follow the same seeded sampler. */
        QdSampling smp;
        qd_sampling_init(&smp);
        smp.temperature = 0.9f;
        smp.top_k = 20;
        smp.seed = 5;
        assert(qd_sequence_prefill(sc, &t, 1) == 0);
        for (int i = 0; i < 3; i++) {
                int32_t tc, tg;
                float lc, lg2;
                assert(qd_sequence_step(sc, &smp, &tc, &lc) == 0);
                assert(qd_sequence_step(sg, &smp, &tg, &lg2) == 0);
                assert(tg >= 0 && (uint32_t) tg < V && lg2 <= 0);
                if (tc != tg)
                        break; /* logits differ slightly: the streams may part */
                if (bound < 1e-4) /* same weights: the probabilities agree closely */
                        assert(lc - lg2 < 1e-2 && lg2 - lc < 1e-2);
        }
}

static void check_switch(QdEngine *cpu, QdEngine *gpu, const char *path, uint32_t V) {
        _cleanup_(qd_model_freep) QdModel *mc = NULL, *mg = NULL;
        _cleanup_(qd_sequence_freep) QdSequence *sc = NULL, *sg = NULL;
        static const struct {
                QdPrecision p;
                double bound;
        } plan[] = {
                { QD_PRECISION_F16, 1e-5 }, { QD_PRECISION_INT8, 3e-3 },
                { QD_PRECISION_INT4, 1e-1 }, { QD_PRECISION_F16, 1e-2 },
        };
        uint64_t seed = 77;
        int32_t tok[8];
        QdModelInfo info;

        for (size_t i = 0; i < ELEMENTSOF(tok); i++)
                tok[i] = fixture_rand(&seed) % V;
        assert(qd_model_load(cpu, path, &mc) == 0);
        assert(qd_model_load(gpu, path, &mg) == 0);
        assert(qd_sequence_new(mc, 64, &sc) == 0);
        assert(qd_sequence_new(mg, 64, &sg) == 0);
        assert(qd_sequence_prefill(sc, tok, 8) == 0);
        assert(qd_sequence_prefill(sg, tok, 8) == 0);
        for (size_t k = 0; k < ELEMENTSOF(plan); k++) {
                char what[96];
                double worst = 0;
                assert(qd_model_set_precision(mg, plan[k].p) == 0);
                assert(qd_model_get_precision(mg) == plan[k].p);
                for (int i = 0; i < 3; i++) {
                        int32_t t;
                        /* the device chooses, the reference follows the same tokens */
                        assert(qd_sequence_step(sg, NULL, &t, NULL) == 0);
                        assert(qd_sequence_prefill(sc, &t, 1) == 0);
                        worst = MAX(worst, fixture_nmse(qd_sequence_logits(sg), qd_sequence_logits(sc), V));
                }
                snprintf(what, sizeof(what), "switch to %s, continue: nmse", qd_precision_to_string(plan[k].p));
                expect(worst < plan[k].bound, what, worst, plan[k].bound);
        }
        assert(qd_sequence_length(sg) == 8 + 3 * ELEMENTSOF(plan));
        qd_model_info(mg, &info);
        uint64_t all = info.device_bytes;
        assert(qd_model_drop_variants(mg, true) == 0);
        qd_model_info(mg, &info);
        printf("  device bytes with 3 variants %" PRIu64 ", after drop %" PRIu64 "\n", all, info.device_bytes);
        assert(info.device_bytes < all);
        assert(info.device_bytes >= qd_model_variant_bytes(mg, QD_PRECISION_F16));
}

int main(void) {
        _cleanup_(qd_engine_freep) QdEngine *cpu = NULL, *gpu = NULL;
        QdEngineOptions oc = { .cpu_only = true }, og = {};
        char *dir;
        int r;

        r = qd_engine_new(&og, &gpu);
        if (r < 0) {
                fprintf(stderr, "no Vulkan device: %s\n", strerror(-r));
                return 77;
        }
        assert(qd_engine_new(&oc, &cpu) == 0);
        dir = fixture_tmpdir();
        assert(dir);

        static const struct {
                GgmlType t;
                QdPrecision p;
                double bound;
        } formats[] = {
                { GGML_TYPE_F16, QD_PRECISION_F16, 1e-5 },
                { GGML_TYPE_Q8_0, QD_PRECISION_INT8, 2e-3 },
                { GGML_TYPE_Q4_0, QD_PRECISION_INT4, 2e-3 },
        };
        FixtureSpec specs[] = {
                { .arch = "llama", .n_vocab = 200, .n_embd = 128, .n_layer = 2, .n_head = 4,
                  .n_head_kv = 2, .n_ff = 224, .rope_freqs = true, .rope_base = 500000.0f, .seed = 11 },
                { .arch = "qwen2", .n_vocab = 151, .n_embd = 96, .n_layer = 3, .n_head = 6,
                  .n_head_kv = 2, .n_ff = 160, .tied = true, .seed = 12 },
                /* odd sizes: head_dim 20, n_ff not a multiple of 32 (F16 rows), MHA */
                { .arch = "llama", .n_vocab = 67, .n_embd = 80, .n_layer = 1, .n_head = 4,
                  .n_head_kv = 4, .n_ff = 72, .tied = true, .seed = 13 },
        };
        for (size_t s = 0; s < ELEMENTSOF(specs); s++)
                for (size_t f = 0; f < ELEMENTSOF(formats); f++) {
                        _cleanup_free_ char *path = NULL;
                        specs[s].wtype = formats[f].t;
                        assert(asprintf(&path, "%s/m%zu-%zu.gguf", dir, s, f) > 0);
                        assert(fixture_write(&specs[s], path) == 0);
                        printf("%s E=%u L=%u H=%u/%u ff=%u %s%s:\n", specs[s].arch, specs[s].n_embd,
                               specs[s].n_layer, specs[s].n_head, specs[s].n_head_kv, specs[s].n_ff,
                               ggml_type_name(formats[f].t), specs[s].tied ? " tied" : "");
                        compare(cpu, gpu, path, specs[s].n_vocab, formats[f].p, formats[f].bound, 100 + s);
                        if (formats[f].t == GGML_TYPE_F16) {
                                /* requantized from F16 by the engine: quantization error added */
                                compare(cpu, gpu, path, specs[s].n_vocab, QD_PRECISION_INT8, 3e-3, 200 + s);
                                compare(cpu, gpu, path, specs[s].n_vocab, QD_PRECISION_INT4, 1e-1, 300 + s);
                                if (s == 0)
                                        check_switch(cpu, gpu, path, specs[s].n_vocab);
                        }
                }

        fixture_rmdir(dir);
        unsigned msgs = qvk_validation_messages();
        if (msgs > 0) {
                printf("validation messages: %u, last: %s\n", msgs, strna(qvk_validation_last_message()));
                failures++;
        }
        return failures ? 1 : 0;
}
