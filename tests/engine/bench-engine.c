/* quantd-engine-bench: prompt processing and decode speed of the Vulkan forward pass on a random
 * Llama-3-8B-shaped model built in memory (layers share their random source matrices, so no
 * 16 GB file is written), in F16, Q8_0 and Q4_0. Not a test: run by hand on the GPU machine.
 *   quantd-engine-bench [--layers N] [--embd N] [--ff N] [--heads N] [--kv-heads N]
 *                       [--vocab N] [--pp N] [--tg N] [--reps N] [--device SEL] */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-types.h"
#include "macro.h"
#include "model-llama.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(QvkDevice *, qvk_device_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(LlamaVk *, llama_vk_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(LlamaVkSeq *, llama_vk_seq_free);

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint16_t *random_f16(uint64_t n, float scale, uint64_t seed) {
        uint16_t *p = malloc(n * sizeof(uint16_t));
        uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
        if (!p)
                return NULL;
        for (uint64_t i = 0; i < n; i++) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                float f = ((float) (s >> 40) / (float) (1 << 24) * 2.0f - 1.0f) * scale;
                p[i] = qd_fp32_to_fp16(f);
        }
        return p;
}

static LlamaTensor mat(const void *data, uint64_t ne0, uint64_t ne1) {
        return (LlamaTensor) { .type = GGML_TYPE_F16, .ne0 = ne0, .ne1 = ne1, .data = data, .row_bytes = ne0 * 2 };
}

int main(int argc, char **argv) {
        uint32_t L = 32, E = 4096, F = 14336, H = 32, HKV = 8, V = 128256, pp = 512, tg = 128, reps = 3;
        const char *dev = NULL;
        static const struct option opts[] = {
                { "layers", required_argument, NULL, 'l' }, { "embd", required_argument, NULL, 'e' },
                { "ff", required_argument, NULL, 'f' },     { "heads", required_argument, NULL, 'h' },
                { "kv-heads", required_argument, NULL, 'k' }, { "vocab", required_argument, NULL, 'v' },
                { "pp", required_argument, NULL, 'p' },     { "tg", required_argument, NULL, 't' },
                { "reps", required_argument, NULL, 'r' },   { "device", required_argument, NULL, 'd' },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                uint32_t v = optarg ? (uint32_t) strtoul(optarg, NULL, 10) : 0;
                switch (c) {
                case 'l': L = v; break;
                case 'e': E = v; break;
                case 'f': F = v; break;
                case 'h': H = v; break;
                case 'k': HKV = v; break;
                case 'v': V = v; break;
                case 'p': pp = v; break;
                case 't': tg = v; break;
                case 'r': reps = v; break;
                case 'd': dev = optarg; break;
                default: return 2;
                }
        }
        if (!L || !E || !F || !H || !HKV || !V || pp < 2 || !tg || !reps || E % H || H % HKV)
                return 2;

        uint32_t hd = E / H, nkv = HKV * hd;
        _cleanup_free_ uint16_t *wa = random_f16((uint64_t) E * E, 0.03f, 1);
        _cleanup_free_ uint16_t *wb = random_f16((uint64_t) E * nkv, 0.03f, 2);
        _cleanup_free_ uint16_t *wc = random_f16((uint64_t) E * F, 0.03f, 3);
        _cleanup_free_ uint16_t *wd = random_f16((uint64_t) F * E, 0.015f, 4);
        _cleanup_free_ uint16_t *emb = random_f16((uint64_t) V * E, 0.5f, 5);
        _cleanup_free_ float *ones = malloc(E * sizeof(float));
        _cleanup_free_ LlamaLayer *layers = calloc(L, sizeof(LlamaLayer));
        if (!wa || !wb || !wc || !wd || !emb || !ones || !layers)
                return fprintf(stderr, "out of memory\n"), 1;
        for (uint32_t i = 0; i < E; i++)
                ones[i] = 1.0f;
        LlamaTensor norm = { .type = GGML_TYPE_F32, .ne0 = E, .ne1 = 1, .data = ones, .row_bytes = E * 4 };
        for (uint32_t l = 0; l < L; l++)
                layers[l] = (LlamaLayer) {
                        .attn_norm = norm, .ffn_norm = norm,
                        .wq = mat(wa, E, E), .wk = mat(wb, E, nkv), .wv = mat(wb, E, nkv), .wo = mat(wa, E, E),
                        .gate = mat(wc, E, F), .up = mat(wc, E, F), .down = mat(wd, F, E),
                };
        LlamaWeights w = {
                .hp = { .arch = "llama", .n_vocab = V, .n_ctx_train = 8192, .n_embd = E, .n_layer = L,
                        .n_head = H, .n_head_kv = HKV, .n_ff = F, .head_dim = hd, .n_rot = hd,
                        .eps = 1e-5f, .rope_base = 500000.0f, .rope_freq_scale = 1.0f },
                .token_embd = mat(emb, E, V),
                .output_norm = norm,
                .output = mat(emb, E, V),
                .layers = layers,
        };

        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        _cleanup_(llama_vk_freep) LlamaVk *v = NULL;
        r = qvk_device_new(dev, NULL, &d);
        if (r < 0)
                return fprintf(stderr, "no Vulkan device: %s\n", strerror(-r)), 77;
        const QvkFeatures *f = qvk_device_features(d);
        printf("device: %s (%s), fp16 %d, int_dot %d/%d, coopmat %d/%d, subgroup %u\n", f->name, f->driver,
               f->fp16, f->int_dot, f->int_dot_accelerated, f->coopmat_khr, f->coopmat_nv, f->subgroup_size);
        printf("model: layers %u, embd %u, ff %u, heads %u/%u, vocab %u; pp%u, tg%u, %u reps\n", L, E, F, H,
               HKV, V, pp, tg, reps);
        double t0 = now();
        r = llama_vk_new(d, &w, &v);
        if (r < 0)
                return fprintf(stderr, "llama_vk_new: %s\n", strerror(-r)), 1;
        printf("common upload %.1f s\n", now() - t0);

        int32_t *tokens = calloc(pp, sizeof(int32_t));
        if (!tokens)
                return 1;
        for (uint32_t i = 0; i < pp; i++)
                tokens[i] = (i * 7919u) % V;

        for (QdPrecision p = QD_PRECISION_F16; p < _QD_PRECISION_MAX; p++) {
                t0 = now();
                r = llama_vk_set_precision(v, p);
                if (r < 0)
                        return fprintf(stderr, "set_precision %s: %s\n", qd_precision_to_string(p), strerror(-r)), 1;
                (void) llama_vk_drop_variants(v, true);
                QvkWeightType wt = p == QD_PRECISION_F16 ? QVK_W_F16 : p == QD_PRECISION_INT8 ? QVK_W_Q8_0 : QVK_W_Q4_0;
                printf("%s: weights %.2f GiB, built in %.1f s; kernels: n=1 %s", qd_precision_to_string(p),
                       llama_vk_variant_bytes(v, p) / 1073741824.0, now() - t0, qvk_matmul_kernel(d, wt, false, E, 1));
                printf(", n=%u %s\n", pp, qvk_matmul_kernel(d, wt, false, E, pp));
                double pp_sum = 0, tg_sum = 0;
                for (uint32_t rep = 0; rep <= reps; rep++) { /* rep 0 warms up */
                        _cleanup_(llama_vk_seq_freep) LlamaVkSeq *s1 = NULL, *s2 = NULL;
                        int32_t tok;
                        if ((r = llama_vk_seq_new(v, pp + tg + 16, &s1)) < 0 ||
                            (r = llama_vk_seq_new(v, tg + 16, &s2)) < 0)
                                return fprintf(stderr, "seq: %s\n", strerror(-r)), 1;
                        double a = now();
                        r = llama_vk_seq_eval(s1, tokens, pp, false, NULL, &tok, NULL);
                        double b = now();
                        if (r < 0)
                                return fprintf(stderr, "prefill: %s\n", strerror(-r)), 1;
                        tok = 1;
                        r = llama_vk_seq_eval(s2, &tok, 1, false, NULL, &tok, NULL);
                        double cstart = now();
                        for (uint32_t i = 0; r >= 0 && i < tg; i++)
                                r = llama_vk_seq_eval(s2, &tok, 1, false, NULL, &tok, NULL);
                        double cend = now();
                        if (r < 0)
                                return fprintf(stderr, "decode: %s\n", strerror(-r)), 1;
                        if (rep > 0) {
                                pp_sum += pp / (b - a);
                                tg_sum += tg / (cend - cstart);
                        }
                }
                printf("RESULT %s pp%u %.1f tok/s  tg%u %.1f tok/s\n", qd_precision_to_string(p), pp,
                       pp_sum / reps, tg, tg_sum / reps);
                /* Where the time goes: one profiled prefill and decode step, first layer per op. */
                {
                        _cleanup_(llama_vk_seq_freep) LlamaVkSeq *sp = NULL;
                        const char *const *names;
                        double ns[32];
                        int32_t tok;
                        if (llama_vk_seq_new(v, pp + 16, &sp) >= 0) {
                                llama_vk_seq_set_profile(sp, true);
                                for (int dec = 0; dec <= 1; dec++) {
                                        r = dec ? llama_vk_seq_eval(sp, &tok, 1, false, NULL, &tok, NULL)
                                                : llama_vk_seq_eval(sp, tokens, pp, false, NULL, &tok, NULL);
                                        int n = r < 0 ? r : llama_vk_seq_profile(sp, dec, &names, ns);
                                        if (n < 0)
                                                break;
                                        printf("  profile %s (us):", dec ? "decode step" : "prefill");
                                        for (int i = 1; i < n; i++)
                                                printf(" %s %.1f%s", names[i], (ns[i] - ns[i - 1]) / 1000.0, i + 1 < n ? "," : "");
                                        printf("; total %.1f\n", (ns[n - 1] - ns[0]) / 1000.0);
                                }
                        }
                }
                fflush(stdout);
        }
        free(tokens);
        return 0;
}
