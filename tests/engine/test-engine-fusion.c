/* The decode step with and without its fused epilogues (SiLU·up in the gate/up product, the
 * residual add + RMSNorm (+ int8 blocks) in the wo and down products; qvk_matvec_epi) against
 * the f32 CPU reference, on random fixtures: F16, Q8_0, Q4_0 and Q4_1 weights, each on the
 * int-dot path with repacked rows, with the GGUF layout ($QUANTD_VK_DISABLE_REPACK) and on the
 * float kernels ($QUANTD_VK_DISABLE_INTDOT), and with the shared-memory reductions
 * ($QUANTD_VK_DISABLE_SUBGROUP); shapes whose n_embd / n_ff are not multiples of a
 * workgroup's rows (rows per workgroup forced to 3 and 8 through $QUANTD_VK_MATVEC_ROWS and
 * _DOT_ROWS) and an n_embd of several workgroups of rows. With fusion on, every layer must
 * record exactly three dispatches fewer than with it off, 5 instead of 8 (nothing fell back
 * unnoticed). The "blk" mode (LLAMA_VK_FUSE_BLK, qvk_matvec_blk: whole int8 blocks per
 * workgroup, the RMSNorm's scale applied by the next product) the same way where it applies
 * (F16 rows or repacked int-dot rows, n_embd and n_ff multiples of 32): 3 dispatches fewer per layer but
 * one (the last layer's down keeps its norm), also with other thread shapes ($QUANTD_VK_BLK_WG,
 * _T); elsewhere exactly the unfused step. `test-engine-fusion --default-only`: the default
 * kernels only. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture-model.h"
#include "gguf.h"
#include "macro.h"
#include "model-llama.h"
#include "vk.h"


#define N_PROMPT 9
#define N_DECODE 5
#define N_CTX 32

static int failures;

/* Logits of the decode steps (N_DECODE rows of V) of the CPU reference. */
static int run_cpu(const LlamaWeights *w, const int32_t *tok, float *ret) {
        _cleanup_(llama_cpu_freep) LlamaCpu *c = NULL;
        uint32_t V = w->hp.n_vocab;
        int r;

        if ((r = llama_cpu_new(w, N_CTX, &c)) < 0 || (r = llama_cpu_eval(c, tok, N_PROMPT, ret, NULL)) < 0)
                return r;
        for (uint32_t i = 0; i < N_DECODE; i++)
                if ((r = llama_cpu_eval(c, &tok[N_PROMPT + i], 1, ret + i * V, NULL)) < 0)
                        return r;
        return 0;
}

/* The same on the device at precision p, fusion on or off; the decode step's dispatches. */
static int run_vk(LlamaVk *v, unsigned fusion, const int32_t *tok, uint32_t V, float *ret, uint32_t *ret_dispatches) {
        _cleanup_(llama_vk_seq_freep) LlamaVkSeq *s = NULL;
        uint32_t barriers;
        int r;

        llama_vk_set_fusion(v, fusion);
        if ((r = llama_vk_seq_new(v, N_CTX, &s)) < 0 ||
            (r = llama_vk_seq_eval(s, tok, N_PROMPT, false, NULL, NULL, NULL)) < 0)
                return r;
        for (uint32_t i = 0; i < N_DECODE; i++)
                if ((r = llama_vk_seq_eval(s, &tok[N_PROMPT + i], 1, true, ret + i * V, NULL, NULL)) < 0)
                        return r;
        return llama_vk_seq_stats(s, true, ret_dispatches, &barriers);
}

static double worst_nmse(const float *a, const float *b, uint32_t V) {
        double worst = 0;

        for (uint32_t i = 0; i < N_DECODE; i++)
                worst = MAX(worst, fixture_nmse(a + i * V, b + i * V, V));
        return worst;
}

/* blk: whether the blk kernels take the step (else it must be the unfused one) */
static void check(const char *path, QdPrecision p, double bound, const char *what, uint64_t seed, bool blk) {
        _cleanup_(gguf_closep) Gguf *g = NULL;
        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        _cleanup_(llama_vk_freep) LlamaVk *v = NULL;
        _cleanup_free_ char *err = NULL;
        LlamaWeights w = {};
        int32_t tok[N_PROMPT + N_DECODE];
        uint32_t n_on = 0, n_off = 0, n_blk = 0;

        assert(gguf_open(path, &g, &err) == 0);
        assert(llama_weights_load(g, &w, &err) == 0);
        uint32_t V = w.hp.n_vocab, L = w.hp.n_layer;
        _cleanup_free_ float *ref = calloc((size_t) N_DECODE * V, sizeof(float));
        _cleanup_free_ float *on = calloc((size_t) N_DECODE * V, sizeof(float));
        _cleanup_free_ float *off = calloc((size_t) N_DECODE * V, sizeof(float));
        _cleanup_free_ float *fb = calloc((size_t) N_DECODE * V, sizeof(float));
        assert(ref && on && off && fb);
        for (size_t i = 0; i < ELEMENTSOF(tok); i++)
                tok[i] = fixture_rand(&seed) % V;

        int r = run_cpu(&w, tok, ref);
        if (r >= 0)
                r = qvk_device_new(NULL, NULL, &d);
        if (r >= 0 && (r = llama_vk_new(d, &w, &v)) >= 0 && (r = llama_vk_set_precision(v, p)) >= 0 &&
            (r = run_vk(v, LLAMA_VK_FUSE_ALL, tok, V, on, &n_on)) >= 0 &&
            (r = run_vk(v, 0, tok, V, off, &n_off)) >= 0)
                r = run_vk(v, LLAMA_VK_FUSE_BLK, tok, V, fb, &n_blk);
        if (r < 0) {
                printf("  %-24s %s  FAILED\n", what, strerror(-r));
                failures++;
        } else {
                double e_on = worst_nmse(on, ref, V), e_off = worst_nmse(off, ref, V), e_blk = worst_nmse(fb, ref, V);
                double blk_off = worst_nmse(fb, off, V);
                /* blk: the same step as unfused where it does not apply */
                bool ok_blk = blk ? e_blk < bound && n_off == n_blk + 3 * L - 1 : blk_off == 0 && n_blk == n_off;
                bool ok = e_on < bound && e_off < bound && n_off == n_on + 3 * L && ok_blk;
                printf("  %-24s nmse fused %.3g, unfused %.3g, blk %.3g (bound %.3g), between %.2g / %.2g; "
                       "dispatches %u / %u / %u%s\n",
                       what, e_on, e_off, e_blk, bound, worst_nmse(on, off, V), blk_off, n_on, n_off, n_blk,
                       ok ? "" : "  FAILED");
                failures += !ok;
        }
        v = llama_vk_free(v);
        llama_weights_done(&w);
}

int main(int argc, char **argv) {
        /* --default-only: the default kernels only (a quick check on a GPU machine) */
        bool quick = argc > 1 && streq(argv[1], "--default-only");
        char *dir;

        {
                _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
                int r = qvk_device_new(NULL, NULL, &d);
                if (r == -ENODEV)
                        return printf("no Vulkan device, skipping\n"), 77;
                assert(r == 0);
                if (!qvk_device_features(d)->storage8 || !qvk_device_features(d)->storage16)
                        return printf("no 8/16-bit storage (the fused kernels need it), skipping\n"), 77;
        }
        dir = fixture_tmpdir();
        assert(dir);

        static const struct {
                GgmlType t;
                QdPrecision p;
                double bound;
        } formats[] = {
                { GGML_TYPE_F16, QD_PRECISION_F16, 1e-5 },
                { GGML_TYPE_Q8_0, QD_PRECISION_INT8, 3e-3 },
                { GGML_TYPE_Q4_0, QD_PRECISION_INT4, 3e-3 },
                { GGML_TYPE_Q4_1, QD_PRECISION_INT4, 3e-3 },
        };
        FixtureSpec specs[] = {
                { .arch = "llama", .n_vocab = 120, .n_embd = 128, .n_layer = 2, .n_head = 4,
                  .n_head_kv = 2, .n_ff = 224, .rope_base = 10000.0f, .seed = 31 },
                /* n_embd 80 and n_ff 90: not multiples of 3 or 8 rows, nor of 32 (F16 rows) */
                { .arch = "qwen2", .n_vocab = 70, .n_embd = 80, .n_layer = 2, .n_head = 4,
                  .n_head_kv = 2, .n_ff = 90, .tied = true, .seed = 32 },
                /* the norm's last workgroup over 544 = 17 blocks of 32, 320 = 10 blocks of n_ff (blk: 17 and
                 * 10 workgroups, rows of 17 and 10 units of 16 bytes (Q4_x), T 16) */
                { .arch = "llama", .n_vocab = 60, .n_embd = 544, .n_layer = 2, .n_head = 17,
                  .n_head_kv = 1, .n_ff = 320, .seed = 33 },
        };
        static const struct {
                const char *name, *env[3][2];  /* (variable, value) */
        } modes[] = {
                { "default", {} },
                { "3 rows", { { "QUANTD_VK_MATVEC_ROWS", "3" }, { "QUANTD_VK_MATVEC_DOT_ROWS", "3" } } },
                { "8 rows", { { "QUANTD_VK_MATVEC_ROWS", "8" }, { "QUANTD_VK_MATVEC_DOT_ROWS", "8" } } },
                { "no subgroups (_nosg)", { { "QUANTD_VK_DISABLE_SUBGROUP", "1" } } },
                { "GGUF layout", { { "QUANTD_VK_DISABLE_REPACK", "1" } } },
                { "float kernels", { { "QUANTD_VK_DISABLE_INTDOT", "1" } } },
                /* the blk kernels' other thread shapes (the default: up to 1024 x T32, 2 units): 4 or 16 invocations per row, 1 or 8 units in flight */
                { "blk 64 x T4, 1 unit",
                  { { "QUANTD_VK_BLK_WG", "64" }, { "QUANTD_VK_BLK_T", "4" }, { "QUANTD_VK_BLK_UN", "1" } } },
                { "blk 256 x T16, 8 units",
                  { { "QUANTD_VK_BLK_WG", "256" }, { "QUANTD_VK_BLK_T", "16" }, { "QUANTD_VK_BLK_UN", "8" } } },
        };
        for (size_t s = 0; s < ELEMENTSOF(specs); s++)
                for (size_t f = 0; f < ELEMENTSOF(formats); f++) {
                        _cleanup_free_ char *path = NULL;
                        specs[s].wtype = formats[f].t;
                        assert(asprintf(&path, "%s/m%zu-%zu.gguf", dir, s, f) > 0);
                        assert(fixture_write(&specs[s], path) == 0);
                        printf("%s E=%u ff=%u L=%u %s:\n", specs[s].arch, specs[s].n_embd, specs[s].n_ff,
                               specs[s].n_layer, ggml_type_name(formats[f].t));
                        for (size_t m = 0; m < ELEMENTSOF(modes); m++) {
                                /* the layout and float modes matter for the block formats only */
                                if (((m == 4 || m == 5) && formats[f].t == GGML_TYPE_F16) || (quick && m > 0))
                                        continue;
                                /* blk: F16 rows, or repacked rows on the int-dot path */
                                bool blk = m != 4 && m != 5 && specs[s].n_embd % 32 == 0 && specs[s].n_ff % 32 == 0;
                                for (size_t e = 0; e < 3 && modes[m].env[e][0]; e++)
                                        assert(setenv(modes[m].env[e][0], modes[m].env[e][1], 1) == 0);
                                check(path, formats[f].p, formats[f].bound, modes[m].name, 40 + s, blk);
                                for (size_t e = 0; e < 3 && modes[m].env[e][0]; e++)
                                        assert(unsetenv(modes[m].env[e][0]) == 0);
                        }
                }

        fixture_rmdir(dir);
        failures += !fixture_validation_clean();
        return failures ? 1 : 0;
}
