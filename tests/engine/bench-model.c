/* Benchmarks: the random in-memory Llama-shaped model (see bench-model.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-model.h"
#include "ggml-types.h"
#include "macro.h"

double bench_now(void) {
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

void bench_model_done(BenchModel *m) {
        if (!m)
                return;
        free(m->wa);
        free(m->wb);
        free(m->wc);
        free(m->wd);
        free(m->emb);
        free(m->ones);
        free(m->layers);
        memset(m, 0, sizeof(*m));
}

int bench_model_init(BenchModel *m, uint32_t L, uint32_t E, uint32_t F, uint32_t H, uint32_t HKV, uint32_t V) {
        if (!L || !E || !F || !H || !HKV || !V || E % H || H % HKV)
                return -EINVAL;

        uint32_t hd = E / H, nkv = HKV * hd;
        *m = (BenchModel) {
                .wa = random_f16((uint64_t) E * E, 0.03f, 1),
                .wb = random_f16((uint64_t) E * nkv, 0.03f, 2),
                .wc = random_f16((uint64_t) E * F, 0.03f, 3),
                .wd = random_f16((uint64_t) F * E, 0.015f, 4),
                .emb = random_f16((uint64_t) V * E, 0.5f, 5),
                .ones = malloc(E * sizeof(float)),
                .layers = calloc(L, sizeof(LlamaLayer)),
        };
        if (!m->wa || !m->wb || !m->wc || !m->wd || !m->emb || !m->ones || !m->layers) {
                bench_model_done(m);
                return -ENOMEM;
        }
        for (uint32_t i = 0; i < E; i++)
                m->ones[i] = 1.0f;
        LlamaTensor norm = { .type = GGML_TYPE_F32, .ne0 = E, .ne1 = 1, .data = m->ones, .row_bytes = E * 4 };
        for (uint32_t l = 0; l < L; l++)
                m->layers[l] = (LlamaLayer) {
                        .attn_norm = norm, .ffn_norm = norm,
                        .wq = mat(m->wa, E, E), .wk = mat(m->wb, E, nkv), .wv = mat(m->wb, E, nkv),
                        .wo = mat(m->wa, E, E),
                        .gate = mat(m->wc, E, F), .up = mat(m->wc, E, F), .down = mat(m->wd, F, E),
                };
        m->w = (LlamaWeights) {
                .hp = { .arch = "llama", .n_vocab = V, .n_ctx_train = 8192, .n_embd = E, .n_layer = L,
                        .n_head = H, .n_head_kv = HKV, .n_ff = F, .head_dim = hd, .n_rot = hd,
                        .eps = 1e-5f, .rope_base = 500000.0f, .rope_freq_scale = 1.0f },
                .token_embd = mat(m->emb, E, V),
                .output_norm = norm,
                .output = mat(m->emb, E, V),
                .layers = m->layers,
        };
        return 0;
}
