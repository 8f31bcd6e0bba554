/* The bundled model (a .gguf file under models/): greedy decoding of 64 tokens on the Vulkan device at F16
 * gives the same tokens as the CPU reference. Skipped when no model is bundled or no device. */
#include <assert.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "macro.h"
#include "vk.h"


#define N_STEPS 64

static int generate(QdEngine *e, const char *path, int32_t *out) {
        _cleanup_(qd_model_freep) QdModel *m = NULL;
        _cleanup_(qd_sequence_freep) QdSequence *s = NULL;
        _cleanup_free_ int32_t *prompt = NULL;
        static const char text[] = "Once upon a time, in a quiet village by the sea,";
        size_t n = 0;
        int r;

        r = qd_model_load(e, path, &m);
        if (r < 0)
                return r;
        r = qd_model_set_precision(m, QD_PRECISION_F16);
        if (r < 0)
                return r;
        r = qd_model_tokenize(m, text, strlen(text), true, false, &prompt, &n);
        if (r < 0)
                return r;
        r = qd_sequence_new(m, 256, &s);
        if (r < 0)
                return r;
        r = qd_sequence_prefill(s, prompt, n);
        if (r < 0)
                return r;
        for (int i = 0; i < N_STEPS; i++) {
                r = qd_sequence_step(s, NULL, &out[i], NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

int main(void) {
        _cleanup_(qd_engine_freep) QdEngine *cpu = NULL, *gpu = NULL;
        QdEngineOptions oc = { .cpu_only = true }, og = {};
        const char *root = getenv("QUANTD_SOURCE_ROOT");
        char pattern[4096];
        glob_t gl = {};
        int32_t a[N_STEPS], b[N_STEPS];
        int r, same = 0;

        snprintf(pattern, sizeof(pattern), "%s/models/*.gguf", root ? root : ".");
        if (glob(pattern, 0, NULL, &gl) != 0 || gl.gl_pathc == 0) {
                fprintf(stderr, "no bundled model at %s\n", pattern);
                globfree(&gl);
                return 77;
        }
        r = qd_engine_new(&og, &gpu);
        if (r < 0) {
                fprintf(stderr, "no Vulkan device: %s\n", strerror(-r));
                globfree(&gl);
                return 77;
        }
        assert(qd_engine_new(&oc, &cpu) == 0);
        printf("model %s\n", gl.gl_pathv[0]);
        r = generate(cpu, gl.gl_pathv[0], a);
        assert(r == 0);
        r = generate(gpu, gl.gl_pathv[0], b);
        assert(r == 0);
        for (int i = 0; i < N_STEPS; i++) {
                printf("%d:%d/%d%s", i, a[i], b[i], i % 8 == 7 ? "\n" : " ");
                same += a[i] == b[i];
        }
        globfree(&gl);
        printf("identical greedy tokens: %d of %d\n", same, N_STEPS);
        assert(qvk_validation_messages() == 0);
        return same == N_STEPS ? 0 : 1;
}
