/* Tensor splitting in the engine: with maxStorageBufferRange forced down (weights, partial
 * products and the embedding table in range-sized chunks) and then also maxMemoryAllocationSize
 * (each tensor in its own allocations, the large ones over several), the logits after a prefill
 * and after decode steps are those of the unsplit engine on the same device, for F16, INT8 and
 * INT4 weights, and after batched decode steps of three sequences. Each chunk runs the same
 * kernel on the same rows, so they must match exactly. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture-model.h"
#include "engine.h"
#include "macro.h"
#include "vk.h"


#define N_PROMPT 16
#define N_DECODE 4
#define N_CTX 32

static int failures;

/* Logits after the prompt and after each decode step, N_DECODE + 1 rows of V. */
static int run(QdEngine *e, const char *path, QdPrecision p, const int32_t *tok, uint32_t V, float *ret) {
        _cleanup_(qd_model_freep) QdModel *m = NULL;
        _cleanup_(qd_sequence_freep) QdSequence *s = NULL;
        int r;

        if ((r = qd_model_load(e, path, &m)) < 0 || (r = qd_model_set_precision(m, p)) < 0 ||
            (r = qd_sequence_new(m, N_CTX, &s)) < 0 || (r = qd_sequence_prefill(s, tok, N_PROMPT)) < 0)
                return r;
        memcpy(ret, qd_sequence_logits(s), V * sizeof(float));
        for (uint32_t i = 0; i < N_DECODE; i++) {
                r = qd_sequence_prefill(s, &tok[N_PROMPT + i], 1);
                if (r < 0)
                        return r;
                memcpy(ret + (i + 1) * V, qd_sequence_logits(s), V * sizeof(float));
        }
        return 0;
}

static void compare(QdEngine *whole, QdEngine *split, const char *mode, const char *path, uint32_t V) {
        static const QdPrecision precisions[] = { QD_PRECISION_F16, QD_PRECISION_INT8, QD_PRECISION_INT4 };
        uint64_t seed = 7;
        int32_t tok[N_PROMPT + N_DECODE];
        _cleanup_free_ float *a = calloc((N_DECODE + 1) * V, sizeof(float));
        _cleanup_free_ float *b = calloc((N_DECODE + 1) * V, sizeof(float));

        assert(a && b);
        for (size_t i = 0; i < ELEMENTSOF(tok); i++)
                tok[i] = fixture_rand(&seed) % V;
        for (size_t i = 0; i < ELEMENTSOF(precisions); i++) {
                int ra = run(whole, path, precisions[i], tok, V, a);
                int rb = run(split, path, precisions[i], tok, V, b);
                size_t diff = 0;

                for (size_t j = 0; ra >= 0 && rb >= 0 && j < (N_DECODE + 1) * (size_t) V; j++)
                        diff += memcmp(&a[j], &b[j], sizeof(float)) != 0;
                bool ok = ra >= 0 && rb >= 0 && diff == 0;
                printf("%-32s %-5s %s (%zu of %u logits differ)%s\n", mode, qd_precision_to_string(precisions[i]),
                       ra < 0 || rb < 0 ? strerror(-(ra < 0 ? ra : rb)) : "ran", diff, (N_DECODE + 1) * V,
                       ok ? "" : "  FAILED");
                failures += !ok;
        }
}

/* Three sequences of different lengths stepped together (batched decode): tokens and logits. */
static int run_batch(QdEngine *e, const char *path, const int32_t *tok, uint32_t V, int32_t *ret_tok, float *ret) {
        _cleanup_(qd_model_freep) QdModel *m = NULL;
        QdSequence *s[3] = {};
        static const size_t len[3] = { 5, 9, N_PROMPT };
        int r;

        r = qd_model_load(e, path, &m);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(s); i++)
                if ((r = qd_sequence_new(m, N_CTX, &s[i])) >= 0)
                        r = qd_sequence_prefill(s[i], tok + i, len[i]);
        for (uint32_t step = 0; r >= 0 && step < N_DECODE; step++)
                r = qd_model_step_batch(m, s, NULL, ELEMENTSOF(s), ret_tok + step * ELEMENTSOF(s), NULL);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(s); i++)
                memcpy(ret + i * V, qd_sequence_logits(s[i]), V * sizeof(float));
        for (size_t i = 0; i < ELEMENTSOF(s); i++)
                qd_sequence_free(s[i]);
        return r;
}

static void compare_batch(QdEngine *whole, QdEngine *split, const char *mode, const char *path, uint32_t V) {
        uint64_t seed = 9;
        int32_t tok[N_PROMPT + 2], ta[3 * N_DECODE], tb[3 * N_DECODE];
        _cleanup_free_ float *a = calloc(3 * V, sizeof(float));
        _cleanup_free_ float *b = calloc(3 * V, sizeof(float));

        assert(a && b);
        for (size_t i = 0; i < ELEMENTSOF(tok); i++)
                tok[i] = fixture_rand(&seed) % V;
        int ra = run_batch(whole, path, tok, V, ta, a), rb = run_batch(split, path, tok, V, tb, b);
        bool ok = ra >= 0 && rb >= 0 && memcmp(ta, tb, sizeof(ta)) == 0 && memcmp(a, b, 3 * V * sizeof(float)) == 0;
        printf("%-32s batch of 3, %d steps: %s%s\n", mode, N_DECODE,
               ra < 0 || rb < 0 ? strerror(-(ra < 0 ? ra : rb)) : "ran", ok ? ", same tokens and logits" : "  FAILED");
        failures += !ok;
}

static int engine_with(const char *range, const char *alloc, QdEngine **ret) {
        QdEngineOptions o = {};

        /* Read when the device is created. */
        if (setenv("QUANTD_VK_MAX_STORAGE_RANGE", range, 1) < 0)
                return -errno;
        if (alloc ? setenv("QUANTD_VK_MAX_ALLOCATION", alloc, 1) < 0 : unsetenv("QUANTD_VK_MAX_ALLOCATION") < 0)
                return -errno;
        return qd_engine_new(&o, ret);
}

int main(void) {
        _cleanup_(qd_engine_freep) QdEngine *whole = NULL, *ranged = NULL, *allocs = NULL;
        _cleanup_free_ char *path = NULL;
        char *dir;

        /* Layers of ~270 KiB (the largest tensor, gate+up in F16, 112 KiB), a 75 KiB table. */
        FixtureSpec spec = { .arch = "llama", .n_vocab = 300, .n_embd = 128, .n_layer = 2, .n_head = 4,
                             .n_head_kv = 2, .n_ff = 224, .rope_base = 10000.0f, .wtype = GGML_TYPE_F16,
                             .seed = 21 };

        if (!fixture_engines(&whole, NULL))
                return 77;
        /* 32 KiB: every weight matrix and the table in chunks; the activations of 16 tokens fit. */
        assert(engine_with("32768", NULL, &ranged) == 0);
        /* And 60 KiB allocations: each tensor on its own, gate+up and the F16 output head over
         * several allocations, the table in two. */
        assert(engine_with("32768", "61440", &allocs) == 0);
        dir = fixture_tmpdir();
        assert(dir);
        assert(asprintf(&path, "%s/split.gguf", dir) > 0);
        assert(fixture_write(&spec, path) == 0);

        compare(whole, ranged, "storage range 32 KiB", path, spec.n_vocab);
        compare(whole, allocs, "+ allocations of 60 KiB", path, spec.n_vocab);
        compare_batch(whole, ranged, "storage range 32 KiB", path, spec.n_vocab);
        compare_batch(whole, allocs, "+ allocations of 60 KiB", path, spec.n_vocab);

        fixture_rmdir(dir);
        failures += !fixture_validation_clean();
        return failures ? 1 : 0;
}
