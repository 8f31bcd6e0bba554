/* Benchmarks: the random in-memory Llama-shaped model (see bench-model.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-model.h"
#include "ggml-types.h"
#include "macro.h"
#include "quant.h"

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
        for (size_t i = 0; i < ELEMENTSOF(m->kq); i++)
                free(m->kq[i]);
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

/* The F16 matrix src [rows x cols] in type, converted in slices of rows (bounded f32 memory). */
static int kquantize(const uint16_t *src, uint64_t rows, uint64_t cols, uint32_t type, unsigned n_threads,
                     void **ret) {
        const uint64_t slice = 4096;
        size_t rb;
        int r = ggml_row_size(type, cols, &rb);
        if (r < 0)
                return r;
        _cleanup_free_ float *f = malloc(slice * cols * sizeof(float));
        uint8_t *out = malloc(rows * rb);
        if (!f || !out) {
                free(out);
                return -ENOMEM;
        }
        for (uint64_t r0 = 0; r0 < rows; r0 += slice) {
                uint64_t n = MIN(slice, rows - r0);
                for (uint64_t i = 0; i < n * cols; i++)
                        f[i] = qd_fp16_to_fp32(src[r0 * cols + i]);
                r = qd_ggml_quantize_matrix(type, f, n, cols, n_threads, out + r0 * rb);
                if (r < 0) {
                        free(out);
                        return r;
                }
        }
        *ret = out;
        return 0;
}

int bench_model_kmix(BenchModel *m, unsigned n_threads) {
        const LlamaHParams *hp = &m->w.hp;
        uint32_t E = hp->n_embd, F = hp->n_ff, nkv = hp->n_head_kv * hp->head_dim, L = hp->n_layer;
        /* wa, wb, wc, wd in Q4_K; wb, wd, emb in Q6_K */
        const struct {
                const uint16_t *src;
                uint64_t rows, cols;
                uint32_t type;
        } q[ELEMENTSOF(m->kq)] = {
                { m->wa, E, E, GGML_TYPE_Q4_K },   { m->wb, nkv, E, GGML_TYPE_Q4_K },
                { m->wc, F, E, GGML_TYPE_Q4_K },   { m->wd, E, F, GGML_TYPE_Q4_K },
                { m->wb, nkv, E, GGML_TYPE_Q6_K }, { m->wd, E, F, GGML_TYPE_Q6_K },
                { m->emb, hp->n_vocab, E, GGML_TYPE_Q6_K },
        };
        int r;

        if (E % 256 || F % 256)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(q); i++)
                if ((r = kquantize(q[i].src, q[i].rows, q[i].cols, q[i].type, n_threads, &m->kq[i])) < 0)
                        return r;
#define KT(i, ne0_, ne1_) ((LlamaTensor) { .type = q[i].type, .ne0 = (ne0_), .ne1 = (ne1_), .data = m->kq[i], \
                                           .row_bytes = (ne0_) / 256 * (q[i].type == GGML_TYPE_Q4_K ? 144 : 210) })
        for (uint32_t l = 0; l < L; l++) {
                LlamaLayer *ly = &m->layers[l];
                bool more = qd_kmix_more_bits(l, L);
                ly->wq = KT(0, E, E);
                ly->wk = KT(1, E, nkv);
                ly->wv = more ? KT(4, E, nkv) : KT(1, E, nkv);
                ly->wo = KT(0, E, E);
                ly->gate = KT(2, E, F);
                ly->up = KT(2, E, F);
                ly->down = more ? KT(5, F, E) : KT(3, F, E);
        }
        m->w.output = KT(6, E, hp->n_vocab);
#undef KT
        m->w.kquant_mix = true;
        m->w.file_type = GGML_TYPE_Q4_K;
        return 0;
}
