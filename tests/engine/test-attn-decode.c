/* The decode step's attention (attention-decode.comp, the variant the engine runs: rotation of Q
 * and K, the KV store of the new position, split-K with the last workgroup combining, the output
 * also as int8 blocks) against a double-precision CPU reference on fresh random inputs (seed
 * printed; QUANTD_TEST_SEED repeats one): Llama-3 heads (GQA 32/8, head 128) at several
 * positions and split counts, NeoX order, heads of 256, 96, 64, 40 and 36 dimensions, the fp32
 * cache, and a second run of each dispatch (the per-head counters must have been reset by the
 * first).
 * --bench: time chains of dispatches (each waiting for the one before, as in the decode step)
 * over 32 layers' caches, after a warm-up: the attention at several positions and keys per
 * split, its variants without the int8 output and without the rotation, with the position in
 * device memory, and the smallest dispatch with and without a barrier before it (the floor). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-types.h"
#include "llama-vulkan-internal.h"
#include "macro.h"
#include "vk-test.h"

#define LAYERS 32u /* bench: caches cycled through, so that K/V come from memory as in a step */

typedef struct Case {
        uint32_t n_head, n_head_kv, head_dim, n_ctx, pos, kps; /* kps 0: the engine's choice */
        bool neox, kv_f16;
} Case;

typedef enum Kind { K_ROPE_Q8, K_ROPE, K_PLAIN } Kind;

static uint64_t rng;
static bool prm_device; /* bench: the position in device memory instead of host-visible */

static double urand(void) {
        return vk_test_urand(&rng);
}

static float kv_round(bool f16, double x) {
        return f16 ? qd_fp16_to_fp32(qd_fp32_to_fp16((float) x)) : (float) x;
}

/* Keys per split as llama_vk_seq_new() chooses them. */
static uint32_t engine_kps(uint32_t n_ctx) {
        return MAX(64u, ALIGN_TO(DIV_ROUND_UP(n_ctx, 128u), 32u));
}

typedef struct Bufs {
        QvkBuffer *qkv, *kc, *vc, *out, *prm, *part, *cnt, *freq, *xq, *sink;
} Bufs;

static void bufs_free(Bufs *b) {
        QvkBuffer **all[] = { &b->qkv, &b->kc, &b->vc, &b->out, &b->prm, &b->part, &b->cnt, &b->freq, &b->xq, &b->sink };
        for (size_t i = 0; i < ELEMENTSOF(all); i++)
                *all[i] = qvk_buffer_free(*all[i]);
}

static int pipeline(QvkDevice *d, const Case *cs, Kind k, QvkPipeline **ret) {
        char name[64];
        const char *kv = cs->kv_f16 ? "f16" : "f32";

        if (k == K_PLAIN)
                snprintf(name, sizeof(name), "attention_decode_kv%s", kv);
        else
                snprintf(name, sizeof(name), "attention_decode_rope_%s%s_kv%s", cs->neox ? "neox" : "norm",
                         k == K_ROPE_Q8 ? "_q8" : "", kv);
        return qvk_pipeline_get(d, name, &cs->head_dim, 1, k == K_PLAIN ? 7 : k == K_ROPE ? 9 : 10, 32, ret);
}

/* Records one attention dispatch of layer l (caches at l * kv_stride). */
static int record_one(QvkCmd *c, QvkPipeline *p, const Case *cs, Kind k, const Bufs *b, uint64_t kv_stride,
                      uint32_t l) {
        uint32_t hd = cs->head_dim, nq = cs->n_head * hd, nkv = cs->n_head_kv * hd;
        uint32_t kps = cs->kps ? cs->kps : engine_kps(cs->n_ctx), n_split = DIV_ROUND_UP(cs->n_ctx, kps);
        struct {
                uint32_t n_head, n_head_kv;
                float scale;
                uint32_t kps, n_split, n_rot, has_bias, n_ctx;
        } push = { cs->n_head, cs->n_head_kv, 1.0f / sqrtf((float) hd), kps, n_split, hd, 0, cs->n_ctx };
        QvkBinding bb[10] = {
                B(b->qkv, 0, (uint64_t) (nq + 2 * nkv) * 4), B(b->kc, l * kv_stride, kv_stride),
                B(b->vc, l * kv_stride, kv_stride),          B(b->out, 0, (uint64_t) nq * 4),
                B(b->prm, 0, 16),                            B(b->part, 0, 0),
                B(b->cnt, 0, 0),                             B(b->freq, 0, hd / 2 * 4),
                B(b->freq, 0, hd / 2 * 4),                   B(b->xq, 0, 0),
        };
        uint32_t nb = k == K_PLAIN ? 7 : k == K_ROPE ? 9 : 10;
        uint32_t writes = (1u << 3) | (1u << 5) | (1u << 6) | (k != K_PLAIN ? (1u << 1) | (1u << 2) : 0) |
                          (k == K_ROPE_Q8 ? 1u << 9 : 0);

        return qvk_cmd_dispatch(c, p, bb, nb, writes, &push, sizeof(push), cs->n_head, 1, n_split);
}

/* Random Q/K/V projection, caches and angles for cs, on the device and in ref_* (doubles;
 * caches as stored). */
static int setup(QvkDevice *d, const Case *cs, uint32_t layers, Bufs *b, float **ret_qkv, float **ret_k,
                 float **ret_v, float **ret_freq, uint64_t *ret_stride) {
        uint32_t hd = cs->head_dim, nq = cs->n_head * hd, nkv = cs->n_head_kv * hd;
        uint32_t kps = cs->kps ? cs->kps : engine_kps(cs->n_ctx), n_split = DIV_ROUND_UP(cs->n_ctx, kps);
        uint64_t n_kv = (uint64_t) cs->n_ctx * nkv, es = cs->kv_f16 ? 2 : 4;
        uint64_t stride = ALIGN_TO(n_kv * es, ALIGN);
        _cleanup_free_ float *qkv = malloc((nq + 2 * nkv) * 4), *k = malloc(n_kv * 4), *v = malloc(n_kv * 4);
        _cleanup_free_ float *freq = malloc(hd / 2 * 4);
        _cleanup_free_ uint8_t *hk = malloc(n_kv * es), *hv = malloc(n_kv * es);
        int r;

        if (!qkv || !k || !v || !freq || !hk || !hv)
                return -ENOMEM;
        for (uint32_t i = 0; i < nq + 2 * nkv; i++)
                qkv[i] = (float) (2.0 * urand());
        for (uint32_t i = 0; i < hd / 2; i++)
                freq[i] = powf(500000.0f, -2.0f * (float) i / (float) hd);
        for (uint64_t i = 0; i < n_kv; i++) {
                k[i] = kv_round(cs->kv_f16, urand());
                v[i] = kv_round(cs->kv_f16, urand());
                if (cs->kv_f16) {
                        ((uint16_t *) hk)[i] = qd_fp32_to_fp16(k[i]);
                        ((uint16_t *) hv)[i] = qd_fp32_to_fp16(v[i]);
                } else {
                        ((float *) hk)[i] = k[i];
                        ((float *) hv)[i] = v[i];
                }
        }
        if ((r = qvk_buffer_new(d, (nq + 2 * nkv) * 4, QVK_MEM_DEVICE, &b->qkv)) < 0 ||
            (r = qvk_buffer_new(d, stride * layers, QVK_MEM_DEVICE, &b->kc)) < 0 ||
            (r = qvk_buffer_new(d, stride * layers, QVK_MEM_DEVICE, &b->vc)) < 0 ||
            (r = qvk_buffer_new(d, nq * 4, QVK_MEM_DEVICE, &b->out)) < 0 ||
            (r = qvk_buffer_new(d, 256, prm_device ? QVK_MEM_DEVICE : QVK_MEM_HOST, &b->prm)) < 0 ||
            (r = qvk_buffer_new(d, (uint64_t) cs->n_head * n_split * (hd + 2) * 4, QVK_MEM_DEVICE, &b->part)) < 0 ||
            (r = qvk_buffer_new(d, cs->n_head * 4, QVK_MEM_DEVICE, &b->cnt)) < 0 ||
            (r = qvk_buffer_new(d, hd / 2 * 4, QVK_MEM_DEVICE, &b->freq)) < 0 ||
            (r = qvk_buffer_new(d, qvk_q8_bytes(nq, 1), QVK_MEM_DEVICE, &b->xq)) < 0 ||
            (r = qvk_buffer_new(d, 256 * 1024, QVK_MEM_DEVICE, &b->sink)) < 0 ||
            (r = qvk_buffer_upload(b->qkv, 0, qkv, (nq + 2 * nkv) * 4)) < 0 ||
            (r = qvk_buffer_upload(b->freq, 0, freq, hd / 2 * 4)) < 0)
                return r;
        for (uint32_t l = 0; l < layers; l++)
                if ((r = qvk_buffer_upload(b->kc, l * stride, hk, n_kv * es)) < 0 ||
                    (r = qvk_buffer_upload(b->vc, l * stride, hv, n_kv * es)) < 0)
                        return r;
        _cleanup_free_ uint32_t *zero = calloc(cs->n_head, 4);
        if (!zero)
                return -ENOMEM;
        if ((r = qvk_buffer_upload(b->cnt, 0, zero, cs->n_head * 4)) < 0)
                return r;
        uint32_t pm[4] = { cs->pos, 1 };
        if ((r = qvk_buffer_upload(b->prm, 0, pm, sizeof(pm))) < 0)
                return r;
        *ret_qkv = TAKE_PTR(qkv);
        *ret_k = TAKE_PTR(k);
        *ret_v = TAKE_PTR(v);
        *ret_freq = TAKE_PTR(freq);
        *ret_stride = stride;
        return 0;
}

/* Rotation of the pairs of one head (row x of head_dim) for position pos, as rope.comp does. */
static void rope_ref(const Case *cs, const float *x, const float *freq, uint32_t pos, double *y) {
        uint32_t hd = cs->head_dim;
        for (uint32_t i = 0; i < hd / 2; i++) {
                uint32_t a = cs->neox ? i : 2 * i, b = cs->neox ? i + hd / 2 : 2 * i + 1;
                double th = (double) pos * freq[i], c = cos(th), s = sin(th);
                y[a] = x[a] * c - x[b] * s;
                y[b] = x[a] * s + x[b] * c;
        }
}

static int check_case(QvkDevice *d, const Case *cs, Kind kind) {
        _cleanup_(qvk_cmd_freep) QvkCmd *c = NULL;
        _cleanup_free_ float *qkv = NULL, *k = NULL, *v = NULL, *freq = NULL;
        uint32_t hd = cs->head_dim, nq = cs->n_head * hd, nkv = cs->n_head_kv * hd, g = cs->n_head / cs->n_head_kv;
        uint64_t stride = 0;
        Bufs b = {};
        QvkPipeline *p;
        int r, bad = 0;

        r = setup(d, cs, 1, &b, &qkv, &k, &v, &freq, &stride);
        if (r >= 0)
                r = pipeline(d, cs, kind, &p);
        if (r >= 0)
                r = qvk_cmd_new(d, &c);
        if (r >= 0)
                r = qvk_cmd_fill(c, b.out, 0, nq * 4, 0x7fc00000u); /* NaN: poison */
        if (r >= 0)
                r = record_one(c, p, cs, kind, &b, stride, 0);
        if (r >= 0)
                r = qvk_cmd_end(c);
        for (int rep = 0; r >= 0 && rep < 2; rep++) /* the second run needs the counters reset */
                if ((r = qvk_cmd_submit(c)) >= 0)
                        r = qvk_cmd_wait(c);
        size_t es = cs->kv_f16 ? 2 : 4;
        _cleanup_free_ float *out = malloc(nq * 4);
        _cleanup_free_ uint8_t *xq = malloc(qvk_q8_bytes(nq, 1)), *kn = malloc(nkv * es), *vn = malloc(nkv * es);
        _cleanup_free_ double *q = malloc(nq * 8), *kr = malloc(nkv * 8), *s = malloc((cs->pos + 1) * 8);
        if (r >= 0 && (!out || !xq || !q || !kr || !s || !kn || !vn))
                r = -ENOMEM;
        if (r >= 0 && (r = qvk_buffer_download(b.out, 0, out, nq * 4)) >= 0 &&
            (r = qvk_buffer_download(b.xq, 0, xq, qvk_q8_bytes(nq, 1))) >= 0 &&
            (r = qvk_buffer_download(b.kc, (uint64_t) cs->pos * nkv * es, kn, nkv * es)) >= 0)
                r = qvk_buffer_download(b.vc, (uint64_t) cs->pos * nkv * es, vn, nkv * es);
        bufs_free(&b);
        if (r < 0)
                return r;

        /* reference: rotated q (or q as given), the new K/V stored as the cache holds them */
        for (uint32_t h = 0; h < cs->n_head; h++) {
                if (kind == K_PLAIN)
                        for (uint32_t e = 0; e < hd; e++)
                                q[h * hd + e] = qkv[h * hd + e];
                else
                        rope_ref(cs, qkv + h * hd, freq, cs->pos, q + h * hd);
        }
        if (kind != K_PLAIN) {
                for (uint32_t h = 0; h < cs->n_head_kv; h++)
                        rope_ref(cs, qkv + nq + h * hd, freq, cs->pos, kr + h * hd);
                for (uint32_t i = 0; i < nkv; i++) {
                        float kg = cs->kv_f16 ? qd_fp16_to_fp32(((uint16_t *) kn)[i]) : ((float *) kn)[i];
                        float vg = cs->kv_f16 ? qd_fp16_to_fp32(((uint16_t *) vn)[i]) : ((float *) vn)[i];
                        float vw = kv_round(cs->kv_f16, qkv[nq + nkv + i]);
                        /* K: the angle pos * freq in f32 is off by up to ~pos ulps, and the
                         * result rounds to a half */
                        double tol = fabs(kr[i]) * (cs->kv_f16 ? 1e-3 : 1e-6) + 2.0 * (cs->pos + 1) * 2.4e-7 + 1e-6;
                        if (fabs(kg - kr[i]) > tol || vg != vw) {
                                if (bad++ < 3)
                                        printf("    cache at %u [%u]: K %g want %g, V %g want %g\n", cs->pos, i, kg,
                                               kr[i], vg, vw);
                        }
                        k[(uint64_t) cs->pos * nkv + i] = kg;
                        v[(uint64_t) cs->pos * nkv + i] = vw;
                }
        }
        double err = 0, ref2 = 0, scale = 1.0 / sqrt((double) hd);
        for (uint32_t h = 0; h < cs->n_head; h++) {
                uint64_t ko = (uint64_t) (h / g) * hd;
                double mx = -INFINITY, sum = 0;
                for (uint32_t j = 0; j <= cs->pos; j++) {
                        double dot = 0;
                        for (uint32_t e = 0; e < hd; e++)
                                dot += q[h * hd + e] * k[(uint64_t) j * nkv + ko + e];
                        s[j] = dot * scale;
                        mx = MAX(mx, s[j]);
                }
                for (uint32_t j = 0; j <= cs->pos; j++)
                        sum += s[j] = exp(s[j] - mx);
                for (uint32_t e = 0; e < hd; e++) {
                        double o = 0;
                        for (uint32_t j = 0; j <= cs->pos; j++)
                                o += s[j] * v[(uint64_t) j * nkv + ko + e];
                        o /= sum;
                        double dv = out[h * hd + e] - o;
                        err += isfinite(dv) ? dv * dv : INFINITY;
                        ref2 += o * o;
                }
        }
        double nmse = err / MAX(ref2, 1e-30);
        /* int8 blocks of the output (dot.glsl layout): scale max|x| / 127, values within half a step */
        uint32_t nb = nq / 32, qbad = 0;
        for (uint32_t bi = 0; kind == K_ROPE_Q8 && bi < nb; bi++) {
                const int8_t *qv = (const int8_t *) xq + 32 * bi;
                const float *ds = (const float *) (xq + 32 * nb) + 2 * bi;
                float amax = 0;
                int sum = 0;
                for (uint32_t i = 0; i < 32; i++)
                        amax = fmaxf(amax, fabsf(out[32 * bi + i]));
                if (fabsf(ds[0] - amax / 127.0f) > 1e-6f * amax)
                        qbad++;
                for (uint32_t i = 0; i < 32; i++) {
                        sum += qv[i];
                        if (fabsf(qv[i] * ds[0] - out[32 * bi + i]) > 0.5001f * ds[0] + 1e-7f)
                                qbad++;
                }
                if (ds[1] != (float) sum)
                        qbad++;
        }
        bool ok = nmse < 2e-5 && bad == 0 && qbad == 0;
        printf("  %-7s heads %u/%u dim %u%s kv %s ctx %u pos %u kps %u: nmse %.3g, cache %s, int8 blocks %s%s\n",
               kind == K_PLAIN ? "plain" : kind == K_ROPE ? "rope" : "rope+q8", cs->n_head, cs->n_head_kv, hd,
               cs->neox ? " neox" : "", cs->kv_f16 ? "f16" : "f32", cs->n_ctx, cs->pos,
               cs->kps ? cs->kps : engine_kps(cs->n_ctx), nmse, bad ? "WRONG" : "ok",
               kind != K_ROPE_Q8 ? "-" : qbad ? "WRONG" : "ok", ok ? "" : "  FAILED");
        return ok ? 0 : 1;
}

/* Microseconds per dispatch of a chain of n (each waits for the one before), over layers' caches;
 * kind -1: the smallest dispatch (selftest_add of one element), -2: the same without barriers;
 * the best of 10 runs. */
static double bench_chain(QvkDevice *d, const Case *cs, int kind, uint32_t n) {
        _cleanup_(qvk_cmd_freep) QvkCmd *c = NULL;
        _cleanup_free_ float *qkv = NULL, *k = NULL, *v = NULL, *freq = NULL;
        uint64_t stride = 0;
        Bufs b = {};
        QvkPipeline *p = NULL;
        double best = INFINITY;
        int r;

        r = setup(d, cs, LAYERS, &b, &qkv, &k, &v, &freq, &stride);
        if (r >= 0)
                r = kind < 0 ? qvk_pipeline_get(d, "selftest_add", &(uint32_t) { 64 }, 1, 3, 4, &p)
                             : pipeline(d, cs, kind, &p);
        if (r >= 0)
                r = qvk_cmd_new(d, &c);
        if (r >= 0)
                r = qvk_cmd_timestamp(c, 0);
        for (uint32_t i = 0; r >= 0 && i < n; i++) {
                if (kind < 0) {
                        uint32_t one = 1;
                        /* -1: each writes the same range (a barrier between), -2: its own */
                        QvkBinding bb[] = { B(b.qkv, 0, 16), B(b.qkv, 16, 16),
                                            B(b.sink, kind == -1 ? 0 : (i % 256) * 1024, 1024) };
                        r = qvk_cmd_dispatch(c, p, bb, 3, 1u << 2, &one, 4, 1, 1, 1);
                } else
                        r = record_one(c, p, cs, kind, &b, stride, i % LAYERS);
        }
        if (r >= 0 && (r = qvk_cmd_timestamp(c, 1)) >= 0)
                r = qvk_cmd_end(c);
        for (int rep = 0; r >= 0 && rep < 11; rep++) {
                double ts[2];
                if ((r = qvk_cmd_submit(c)) >= 0 && (r = qvk_cmd_wait(c)) >= 0 &&
                    (r = qvk_cmd_timestamps_read(c, 0, 2, ts)) >= 0 && rep > 0)
                        best = MIN(best, (ts[1] - ts[0]) / 1e3 / n);
        }
        bufs_free(&b);
        return r < 0 ? r : best;
}

static void bench(QvkDevice *d) {
        static const struct {
                uint32_t n_ctx, pos, kps;
        } pts[] = {
                { 144, 64, 0 },   { 144, 127, 0 },   { 528, 512, 0 },   { 528, 512, 32 }, { 528, 512, 128 },
                { 528, 512, 256 }, { 528, 512, 528 }, { 4096, 2048, 0 }, { 4096, 4000, 0 }, { 4096, 4000, 256 },
        };
        Case cs = { 32, 8, 128, 0, 0, 0, false, true };

        Case e = { 32, 8, 128, 64, 0, 0, false, true }, warm = { 32, 8, 128, 4096, 4000, 0, false, true };

        /* the clocks of an idle GPU ramp up over the first milliseconds of work (negative
         * figures below are errnos) */
        for (int i = 0; i < 3; i++)
                (void) bench_chain(d, &warm, K_ROPE_Q8, 256);
        printf("bench (us per dispatch, chains of 256 over %u layers' caches, best of 10, after a warm-up; heads\n"
               "32/8, dim 128, f16 cache)\n", LAYERS);
        printf("  empty dispatch: %.2f with a barrier before each, %.2f without\n", bench_chain(d, &e, -1, 256),
               bench_chain(d, &e, -2, 256));
        for (size_t i = 0; i < ELEMENTSOF(pts); i++) {
                cs.n_ctx = pts[i].n_ctx, cs.pos = pts[i].pos, cs.kps = pts[i].kps;
                uint32_t kps = cs.kps ? cs.kps : engine_kps(cs.n_ctx);
                printf("  ctx %4u pos %4u kps %3u (splits %2u): rope+q8 %.2f", cs.n_ctx, cs.pos, kps,
                       DIV_ROUND_UP(cs.n_ctx, kps), bench_chain(d, &cs, K_ROPE_Q8, 256));
                if (i == 1 || i == 2) {
                        printf(", rope %.2f, plain %.2f", bench_chain(d, &cs, K_ROPE, 256),
                               bench_chain(d, &cs, K_PLAIN, 256));
                        prm_device = true;
                        printf(", rope+q8 with the position in device memory %.2f", bench_chain(d, &cs, K_ROPE_Q8, 256));
                        prm_device = false;
                }
                printf("\n");
        }
}

int main(int argc, char **argv) {
        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        static const struct {
                Case c;
                Kind k;
        } cases[] = {
                { { 32, 8, 128, 144, 0, 0, false, true }, K_ROPE_Q8 },    /* first position */
                { { 32, 8, 128, 144, 63, 0, false, true }, K_ROPE_Q8 },   /* last key of the first chunk */
                { { 32, 8, 128, 144, 64, 0, false, true }, K_ROPE_Q8 },   /* first key of a split */
                { { 32, 8, 128, 528, 512, 0, false, true }, K_ROPE_Q8 },  /* the profile's step */
                { { 32, 8, 128, 528, 300, 528, false, true }, K_ROPE_Q8 }, /* one split, several chunks */
                { { 32, 8, 128, 528, 527, 32, false, true }, K_ROPE_Q8 }, /* 17 splits, last position */
                { { 8, 2, 128, 4096, 3000, 0, false, true }, K_ROPE_Q8 }, /* long context */
                { { 16, 4, 128, 200, 150, 0, true, true }, K_ROPE_Q8 },   /* NeoX order */
                { { 8, 8, 64, 96, 70, 0, false, true }, K_ROPE_Q8 },      /* head 64, no GQA */
                { { 32, 8, 128, 528, 400, 0, false, true }, K_ROPE },     /* without the int8 output */
                { { 32, 8, 128, 528, 400, 0, false, true }, K_PLAIN },    /* q given (batched decode) */
                { { 8, 2, 128, 160, 100, 0, false, false }, K_ROPE_Q8 },  /* fp32 cache */
                { { 4, 2, 256, 130, 129, 0, false, true }, K_ROPE_Q8 },   /* head 256: two dimensions each */
                { { 6, 3, 96, 100, 90, 0, true, true }, K_ROPE },         /* head 96 */
                { { 4, 2, 40, 80, 75, 0, false, true }, K_ROPE },         /* head 40: not whole vectors */
                { { 4, 2, 40, 80, 75, 0, false, false }, K_PLAIN },       /* the same, fp32 cache */
                { { 4, 2, 36, 70, 69, 0, false, true }, K_ROPE },         /* head 36: the scalar path */
        };
        bool do_bench = argc > 1 && streq(argv[1], "--bench");
        int r, failures = 0;

        rng = vk_test_seed();
        r = vk_test_device_new(&d);
        if (r < 0) {
                fprintf(stderr, "device: %s\n", strerror(-r));
                return 1;
        }
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                if (cases[i].c.kv_f16 && !qvk_device_features(d)->storage16)
                        continue;
                r = check_case(d, &cases[i].c, cases[i].k);
                if (r < 0) {
                        fprintf(stderr, "case %zu: %s\n", i, strerror(-r));
                        return 1;
                }
                failures += r;
        }
        if (do_bench)
                bench(d);
        if (qvk_validation_messages() != 0) {
                fprintf(stderr, "%u validation messages, last: %s\n", qvk_validation_messages(),
                        strna(qvk_validation_last_message()));
                failures++;
        }
        printf("%s\n", failures ? "FAILED" : "ok");
        return failures ? 1 : 0;
}
