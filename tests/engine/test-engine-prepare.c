/* Background preparation of a precision variant (qd_model_prepare_precision): INT4 is built and
 * uploaded on a second thread while the main thread steps a sequence in F16; the switch
 * afterwards only switches, and the tokens and logits after it equal those of a model that
 * switched synchronously. Also the residency (qd_model_has_variant) and the device bytes of
 * both variants, then of one after qd_model_drop_variants, and the CPU path's no-op. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture-model.h"
#include "engine.h"
#include "macro.h"
#include "vk.h"


#define N_PROMPT 12
#define N_BEFORE_MIN 4  /* F16 steps at least, while and after the preparation runs */
#define N_AFTER 6       /* INT4 steps after the switch */

static int failures;

static void expect(bool ok, const char *what) {
        printf("  %-60s %s\n", what, ok ? "ok" : "FAILED");
        if (!ok)
                failures++;
}

typedef struct Prep {
        QdModel *m;
        QdPrecision p;
        int result;
        atomic_bool done;
} Prep;

static void *prep_main(void *userdata) {
        Prep *pr = userdata;
        pr->result = qd_model_prepare_precision(pr->m, pr->p);
        atomic_store(&pr->done, true);
        return NULL;
}

static uint64_t device_bytes(QdModel *m) {
        QdModelInfo info;
        qd_model_info(m, &info);
        return info.device_bytes;
}

static void check_prepare(QdEngine *gpu, const char *path, uint32_t V) {
        _cleanup_(qd_model_freep) QdModel *ma = NULL, *mb = NULL;
        _cleanup_(qd_sequence_freep) QdSequence *sa = NULL, *sb = NULL;
        int32_t prompt[N_PROMPT];
        uint64_t seed = 5, b0, b1, f16, int4;
        unsigned n_before = 0, n_concurrent = 0;
        Prep pr = {};
        pthread_t t;
        double worst = 0;
        bool same = true;

        for (size_t i = 0; i < N_PROMPT; i++)
                prompt[i] = fixture_rand(&seed) % V;
        assert(qd_model_load(gpu, path, &ma) == 0);
        assert(qd_model_load(gpu, path, &mb) == 0);
        assert(qd_model_set_precision(ma, QD_PRECISION_F16) == 0);
        assert(qd_model_set_precision(mb, QD_PRECISION_F16) == 0);
        assert(qd_model_drop_variants(ma, true) == 0);
        assert(qd_sequence_new(ma, 64, &sa) == 0);
        assert(qd_sequence_new(mb, 64, &sb) == 0);
        assert(qd_sequence_prefill(sa, prompt, N_PROMPT) == 0);
        assert(qd_sequence_prefill(sb, prompt, N_PROMPT) == 0);

        expect(qd_model_has_variant(ma, QD_PRECISION_F16), "F16 resident after load");
        expect(!qd_model_has_variant(ma, QD_PRECISION_INT4), "INT4 not resident before prepare");
        f16 = qd_model_variant_bytes(ma, QD_PRECISION_F16);
        int4 = qd_model_variant_bytes(ma, QD_PRECISION_INT4);
        b0 = device_bytes(ma);

        /* Prepare INT4 on a second thread; the main thread keeps stepping in F16 meanwhile. */
        pr = (Prep) { .m = ma, .p = QD_PRECISION_INT4 };
        assert(pthread_create(&t, NULL, prep_main, &pr) == 0);
        while (n_before < N_BEFORE_MIN || !atomic_load(&pr.done)) {
                bool running = !atomic_load(&pr.done);
                int32_t ta, tb;
                assert(qd_sequence_step(sa, NULL, &ta, NULL) == 0);
                assert(qd_model_get_precision(ma) == QD_PRECISION_F16);
                assert(qd_sequence_step(sb, NULL, &tb, NULL) == 0);
                same = same && ta == tb;
                worst = MAX(worst, fixture_nmse(qd_sequence_logits(sa), qd_sequence_logits(sb), V));
                n_concurrent += running && !atomic_load(&pr.done);
                n_before++;
                if (qd_sequence_length(sa) + N_AFTER >= 64)
                        break;
        }
        assert(pthread_join(t, NULL) == 0);
        printf("  %u F16 steps, %u of them while the preparation ran\n", n_before, n_concurrent);
        expect(pr.result == 0, "prepare INT4 on a second thread returns 0");
        expect(same && worst < 1e-5, "F16 steps during the preparation: same as alone");
        expect(qd_model_get_precision(ma) == QD_PRECISION_F16, "precision unchanged by prepare");
        expect(qd_model_has_variant(ma, QD_PRECISION_INT4), "INT4 resident after prepare");
        b1 = device_bytes(ma);
        printf("  device bytes: F16 only %" PRIu64 ", with INT4 %" PRIu64 " (INT4 variant %" PRIu64 ")\n",
               b0, b1, int4);
        expect(b1 == b0 + int4, "device bytes account for both variants");
        expect(qd_model_variant_bytes(ma, QD_PRECISION_INT4) == int4, "variant bytes of the prepared variant");
        expect(qd_model_prepare_precision(ma, QD_PRECISION_INT4) == 0 && device_bytes(ma) == b1,
               "prepare again: nothing built");

        /* The switch only switches: nothing is built (the bytes stay). */
        assert(qd_model_set_precision(ma, QD_PRECISION_INT4) == 0);
        expect(device_bytes(ma) == b1, "switch after prepare builds nothing");
        assert(qd_model_set_precision(mb, QD_PRECISION_INT4) == 0); /* synchronous build */
        expect(qd_model_get_precision(ma) == QD_PRECISION_INT4, "switched to INT4");

        worst = 0;
        same = true;
        for (int i = 0; i < N_AFTER; i++) {
                int32_t ta, tb;
                assert(qd_sequence_step(sa, NULL, &ta, NULL) == 0);
                assert(qd_sequence_step(sb, NULL, &tb, NULL) == 0);
                same = same && ta == tb;
                worst = MAX(worst, fixture_nmse(qd_sequence_logits(sa), qd_sequence_logits(sb), V));
        }
        printf("  after the switch: logits nmse %.3g (bound 1e-5)\n", worst);
        expect(same && worst < 1e-5, "tokens/logits after the switch = synchronous switch");

        assert(qd_model_drop_variants(ma, true) == 0);
        expect(!qd_model_has_variant(ma, QD_PRECISION_F16), "F16 dropped");
        expect(device_bytes(ma) == b0 - f16 + int4, "device bytes back to one variant after drop");
        expect(qd_model_variant_bytes(ma, QD_PRECISION_F16) == f16, "planned F16 bytes unchanged");
}

static void check_cpu(QdEngine *cpu, const char *path) {
        _cleanup_(qd_model_freep) QdModel *m = NULL;

        assert(qd_model_load(cpu, path, &m) == 0);
        expect(qd_model_prepare_precision(m, QD_PRECISION_INT8) == 0, "CPU: prepare is a no-op");
        expect(qd_model_has_variant(m, QD_PRECISION_INT4), "CPU: every variant available");
        expect(qd_model_prepare_precision(m, QD_PRECISION_AUTO) == -EINVAL, "prepare AUTO: -EINVAL");
        expect(device_bytes(m) == 0, "CPU: no device bytes");
}

int main(void) {
        _cleanup_(qd_engine_freep) QdEngine *cpu = NULL, *gpu = NULL;
        _cleanup_free_ char *path = NULL;
        char *dir;

        if (!fixture_engines(&gpu, &cpu))
                return 77;
        dir = fixture_tmpdir();
        assert(dir);
        /* Large enough that quantizing and uploading takes a while next to a step. */
        FixtureSpec spec = { .arch = "llama", .n_vocab = 1000, .n_embd = 256, .n_layer = 4, .n_head = 8,
                             .n_head_kv = 4, .n_ff = 640, .wtype = GGML_TYPE_F16, .rope_base = 10000.0f,
                             .seed = 21 };
        assert(asprintf(&path, "%s/prep.gguf", dir) > 0);
        assert(fixture_write(&spec, path) == 0);
        printf("llama E=%u L=%u ff=%u F16, INT4 prepared in the background:\n", spec.n_embd, spec.n_layer,
               spec.n_ff);
        check_prepare(gpu, path, spec.n_vocab);
        check_cpu(cpu, path);
        fixture_rmdir(dir);

        failures += !fixture_validation_clean();
        return failures ? 1 : 0;
}
