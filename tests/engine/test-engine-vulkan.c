/* Vulkan forward pass against the CPU reference on random fixtures: logits after a prompt
 * prefill and after several single-token decode steps, for llama and qwen2 fixtures with F16,
 * Q8_0 and Q4_0 weights (bounded normalised error per format), the requantized INT8/INT4
 * variants of an F16 file, and a precision switch in the middle of a generation.
 * Batched decode (qd_model_step_batch): sequences of different prompt lengths and contexts
 * stepped together give the tokens and logits of stepping each alone, through a precision
 * switch, with sequences leaving the batch, a batch of 1, a sampled column, and more than 8
 * columns (matrix-matrix kernel). */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture-model.h"
#include "engine.h"
#include "macro.h"
#include "vk.h"


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

/* A context long enough (8448) that the decode attention takes more than one step of 64 keys
 * per split (96 keys each): prompt and decode against the CPU reference. */
static void check_long_context(QdEngine *cpu, QdEngine *gpu, const char *path, uint32_t V, double bound,
                               uint64_t seed) {
        _cleanup_(qd_model_freep) QdModel *mc = NULL, *mg = NULL;
        _cleanup_(qd_sequence_freep) QdSequence *sc = NULL, *sg = NULL;
        int32_t tok[N_PROMPT + N_DECODE];
        double worst = 0;

        for (size_t i = 0; i < ELEMENTSOF(tok); i++)
                tok[i] = fixture_rand(&seed) % V;
        assert(qd_model_load(cpu, path, &mc) == 0);
        assert(qd_model_load(gpu, path, &mg) == 0);
        assert(qd_sequence_new(mc, 8448, &sc) == 0);
        assert(qd_sequence_new(mg, 8448, &sg) == 0);
        assert(qd_sequence_prefill(sc, tok, N_PROMPT) == 0);
        assert(qd_sequence_prefill(sg, tok, N_PROMPT) == 0);
        for (size_t i = N_PROMPT; i < ELEMENTSOF(tok); i++) {
                assert(qd_sequence_prefill(sc, &tok[i], 1) == 0);
                assert(qd_sequence_prefill(sg, &tok[i], 1) == 0);
                worst = MAX(worst, fixture_nmse(qd_sequence_logits(sg), qd_sequence_logits(sc), V));
        }
        expect(worst < bound, "n_ctx 8448: decode nmse", worst, bound);
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


#define N_BATCH_MAX 10

/* At int8/int4 the decode step of one sequence quantizes its activations inside the op that
 * produces them (RMSNorm, attention, SiLU), a batch in a dispatch of its own. Lavapipe gives
 * both the same bits, but a compiler may contract the float arithmetic of two shader variants
 * differently (the H100's does), and one int8 step more or less in an activation moves the
 * logits by ~1e-4 nmse. Both paths are held to the CPU reference above; here, at a quantized
 * precision, they must give the same tokens and logits within these bounds. */
#define BATCH_Q_NMSE 1e-3
#define BATCH_Q_LOGPROB 5e-2f

/* Steps seqs[0..n) in one batch and refs[0..n) (the same prompts, same model) one by one;
 * tokens must be equal, log-probabilities within 1e-3 (BATCH_Q_LOGPROB at a quantized
 * precision or past 8 columns) and logits within bound. */
static void batch_vs_single(QdModel *m, QdSequence **seqs, QdSequence **refs, const QdSampling *const *smps,
                            size_t n, uint32_t V, double bound, double *worst) {
        /* more than 8 columns may take the cooperative-matrix kernel, which rounds the
         * activations to fp16: logits within 1e-5 nmse, log-probabilities within ~1e-2 */
        float lp_tol = qd_model_get_precision(m) == QD_PRECISION_F16 && n <= 8 ? 1e-3f : BATCH_Q_LOGPROB;
        int32_t tb[N_BATCH_MAX], ts;
        float lb[N_BATCH_MAX], ls;

        assert(n <= N_BATCH_MAX);
        assert(qd_model_step_batch(m, seqs, smps, n, tb, lb) == 0);
        for (size_t i = 0; i < n; i++) {
                assert(qd_sequence_step(refs[i], smps ? smps[i] : NULL, &ts, &ls) == 0);
                if (tb[i] != ts) {
                        printf("  batch of %zu, column %zu: token %d != alone %d  FAILED\n", n, i, tb[i], ts);
                        failures++;
                }
                if (!(lb[i] <= 0 && fabsf(lb[i] - ls) < lp_tol)) {
                        printf("  batch of %zu, column %zu: logprob %g != alone %g  FAILED\n", n, i, lb[i], ls);
                        failures++;
                }
                assert(qd_sequence_length(seqs[i]) == qd_sequence_length(refs[i]));
                *worst = MAX(*worst, fixture_nmse(qd_sequence_logits(seqs[i]), qd_sequence_logits(refs[i]), V));
        }
}

static void check_batch(QdEngine *gpu, const char *path, uint32_t V, double bound, uint64_t seed) {
        _cleanup_(qd_model_freep) QdModel *m = NULL;
        QdSequence *seqs[N_BATCH_MAX] = {}, *refs[N_BATCH_MAX] = {};
        /* n_ctx 64: attention in one split; 96, 160: split-K with the reduction */
        static const uint32_t prompt[] = { 5, 17, 2, 11 }, ctx[] = { 64, 96, 160, 96 };
        static const uint32_t finish[] = { 9, 4, 9, 6 }; /* steps before leaving the batch */
        const size_t NS = ELEMENTSOF(prompt);
        QdSequence *bs[N_BATCH_MAX], *br[N_BATCH_MAX];
        double worst = 0, qbound = MAX(bound, BATCH_Q_NMSE);
        char what[96];
        int32_t tok[32];

        assert(qd_model_load(gpu, path, &m) == 0);
        assert(qd_model_set_precision(m, QD_PRECISION_F16) == 0);
        for (size_t i = 0; i < NS; i++) {
                for (uint32_t k = 0; k < prompt[i]; k++)
                        tok[k] = fixture_rand(&seed) % V;
                assert(qd_sequence_new(m, ctx[i], &seqs[i]) == 0);
                assert(qd_sequence_new(m, ctx[i], &refs[i]) == 0);
                assert(qd_sequence_prefill(seqs[i], tok, prompt[i]) == 0);
                assert(qd_sequence_prefill(refs[i], tok, prompt[i]) == 0);
        }
        /* Greedy; sequences leave when their steps are done; fp16 -> int8 after step 3,
         * -> int4 after step 6. */
        for (uint32_t step = 0; step < 9; step++) {
                size_t n = 0;
                if (step == 3)
                        assert(qd_model_set_precision(m, QD_PRECISION_INT8) == 0);
                if (step == 6)
                        assert(qd_model_set_precision(m, QD_PRECISION_INT4) == 0);
                for (size_t i = 0; i < NS; i++)
                        if (step < finish[i]) {
                                bs[n] = seqs[i];
                                br[n++] = refs[i];
                        }
                batch_vs_single(m, bs, br, NULL, n, V, bound, &worst);
                if (step == 2) {
                        snprintf(what, sizeof(what), "batch of %zu vs alone, 3 fp16 steps: nmse", NS);
                        expect(worst < bound, what, worst, bound);
                        worst = 0;
                }
        }
        snprintf(what, sizeof(what), "batch vs alone, 6 int8/int4 steps: nmse");
        expect(worst < qbound, what, worst, qbound);

        /* A batch of 1 is a single step (int4 now). */
        worst = 0;
        batch_vs_single(m, &seqs[1], &refs[1], NULL, 1, V, bound, &worst);
        expect(worst < qbound, "batch of 1 vs alone: nmse", worst, qbound);

        /* A sampled column next to greedy ones: same seeded draw from the same logits. */
        QdSampling smp, greedy;
        qd_sampling_init(&smp);
        qd_sampling_init(&greedy);
        smp.temperature = 0.9f;
        smp.top_k = 20;
        smp.seed = 5;
        const QdSampling *smps[] = { &greedy, &smp, &greedy };
        worst = 0;
        for (int k = 0; k < 2; k++)
                batch_vs_single(m, seqs, refs, smps, 3, V, bound, &worst);
        expect(worst < qbound, "batch with a sampled column: nmse", worst, qbound);

        /* A repeated sequence or a full one is refused, nothing is stepped. */
        _cleanup_(qd_sequence_freep) QdSequence *full = NULL;
        uint32_t len0 = qd_sequence_length(seqs[0]);
        assert(qd_sequence_new(m, 4, &full) == 0);
        assert(qd_sequence_prefill(full, tok, 4) == 0);
        bs[0] = seqs[0];
        bs[1] = seqs[0];
        assert(qd_model_step_batch(m, bs, NULL, 2, NULL, NULL) == -EINVAL);
        bs[1] = full;
        assert(qd_model_step_batch(m, bs, NULL, 2, NULL, NULL) == -ENOSPC);
        assert(qd_sequence_length(seqs[0]) == len0 && qd_sequence_length(full) == 4);

        /* More than 8 columns: the matrix-matrix kernel (passes of 8 columns through the batched
         * matrix-vector kernels on cooperative-matrix devices). In fp16: the quantized formats'
         * matrix-vector kernels may quantize the activations (int-dot), the matrix-matrix
         * kernel does not, so only fp16 compares within the tight bound. */
        assert(qd_model_set_precision(m, QD_PRECISION_F16) == 0);
        for (size_t i = NS; i < N_BATCH_MAX; i++) {
                for (uint32_t k = 0; k < i; k++)
                        tok[k] = fixture_rand(&seed) % V;
                assert(qd_sequence_new(m, 64, &seqs[i]) == 0);
                assert(qd_sequence_new(m, 64, &refs[i]) == 0);
                assert(qd_sequence_prefill(seqs[i], tok, i) == 0);
                assert(qd_sequence_prefill(refs[i], tok, i) == 0);
        }
        worst = 0;
        for (int k = 0; k < 2; k++)
                batch_vs_single(m, seqs, refs, NULL, N_BATCH_MAX, V, bound, &worst);
        /* the cooperative-matrix kernel's fp16 activations: 0.95-1.0e-5 on the H100 */
        double cm_bound = MAX(bound, 3e-5);
        snprintf(what, sizeof(what), "batch of %d (fp16) vs alone: nmse", N_BATCH_MAX);
        expect(worst < cm_bound, what, worst, cm_bound);

        for (size_t i = 0; i < N_BATCH_MAX; i++) {
                qd_sequence_free(seqs[i]);
                qd_sequence_free(refs[i]);
        }
}

int main(void) {
        _cleanup_(qd_engine_freep) QdEngine *cpu = NULL, *gpu = NULL;
        char *dir;

        if (!fixture_engines(&gpu, &cpu))
                return 77;
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
                /* the decode norm over two workgroups, the second partial (544 = 512 + 32) */
                { .arch = "llama", .n_vocab = 100, .n_embd = 544, .n_layer = 2, .n_head = 17,
                  .n_head_kv = 1, .n_ff = 320, .seed = 14 },
                /* odd sizes: head_dim 20, n_ff not a multiple of 32 (F16 rows), MHA */
                { .arch = "llama", .n_vocab = 67, .n_embd = 80, .n_layer = 1, .n_head = 4,
                  .n_head_kv = 4, .n_ff = 72, .tied = true, .seed = 13 },
                /* head_dim 64 with GQA: the flash prompt kernel on cooperative-matrix devices */
                { .arch = "llama", .n_vocab = 90, .n_embd = 256, .n_layer = 1, .n_head = 4,
                  .n_head_kv = 2, .n_ff = 160, .seed = 14 },
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
                                if (s <= 1) /* rotation in normal and NeoX order */
                                        check_long_context(cpu, gpu, path, specs[s].n_vocab, formats[f].bound, 500 + s);
                                if (s <= 1) /* llama: columns bound in place; qwen2: copied */
                                        check_batch(gpu, path, specs[s].n_vocab, formats[f].bound, 400 + s);
                        }
                }

        fixture_rmdir(dir);
        failures += !fixture_validation_clean();
        return failures ? 1 : 0;
}
