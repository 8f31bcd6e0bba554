/* Prompt attention (models/llama-vulkan-attn.c) against a double-precision CPU reference on
 * fresh random queries and KV caches (seed printed; QUANTD_TEST_SEED repeats one): GQA and
 * plain multi-head shapes, ragged token counts (rows not a multiple of the workgroup's),
 * a prompt continuing at pos0 > 0, the fp16 and fp32 caches, the output poisoned before each
 * run. Runs whichever kernel the device takes (the flash kernel on cooperative-matrix devices,
 * also head sizes it does not take). --bench: time the Llama-3-8B shape (512 tokens). */
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

typedef struct Case {
        uint32_t n_head, n_head_kv, head_dim, n, pos0, n_ctx;
        bool kv_f16;
} Case;

static uint64_t rng;

static double urand(void) {
        return vk_test_urand(&rng);
}

/* Fills q, K, V; runs the device reps times; returns the normalised mean squared error against the
 * reference (or a negative errno), and the kernel's time from timestamps in *ret_us. */
static double run_case(QvkDevice *d, const Case *cs, int reps, double *ret_us) {
        _cleanup_(qvk_buffer_freep) QvkBuffer *q = NULL, *kc = NULL, *vc = NULL, *out = NULL, *prm = NULL,
                                              *part = NULL;
        _cleanup_(qvk_cmd_freep) QvkCmd *c = NULL;
        uint32_t hd = cs->head_dim, nkv = cs->n_head_kv * hd, nq = cs->n_head * hd;
        uint64_t n_q = (uint64_t) cs->n * nq, n_kv = (uint64_t) cs->n_ctx * nkv;
        size_t es = cs->kv_f16 ? 2 : 4;
        _cleanup_free_ float *hq = malloc(n_q * 4), *ho = malloc(n_q * 4);
        _cleanup_free_ double *k = malloc(n_kv * 8), *v = malloc(n_kv * 8), *s = NULL;
        _cleanup_free_ void *hk = malloc(n_kv * es), *hv = malloc(n_kv * es);
        double err = 0, ref2 = 0;
        int r;

        s = malloc((cs->pos0 + cs->n) * sizeof(double));
        if (!hq || !ho || !k || !v || !s || !hk || !hv)
                return -ENOMEM;
        for (uint64_t i = 0; i < n_q; i++)
                hq[i] = (float) (3.0 * urand());
        for (uint64_t i = 0; i < n_kv; i++) {
                float kf = (float) urand(), vf = (float) urand();
                if (cs->kv_f16) {
                        ((uint16_t *) hk)[i] = qd_fp32_to_fp16(kf);
                        ((uint16_t *) hv)[i] = qd_fp32_to_fp16(vf);
                        kf = qd_fp16_to_fp32(((uint16_t *) hk)[i]);
                        vf = qd_fp16_to_fp32(((uint16_t *) hv)[i]);
                } else {
                        ((float *) hk)[i] = kf;
                        ((float *) hv)[i] = vf;
                }
                k[i] = kf, v[i] = vf;
        }

        if ((r = qvk_buffer_new(d, n_q * 4, QVK_MEM_DEVICE, &q)) < 0 ||
            (r = qvk_buffer_new(d, n_kv * es, QVK_MEM_DEVICE, &kc)) < 0 ||
            (r = qvk_buffer_new(d, n_kv * es, QVK_MEM_DEVICE, &vc)) < 0 ||
            (r = qvk_buffer_new(d, n_q * 4, QVK_MEM_DEVICE, &out)) < 0 ||
            (r = qvk_buffer_new(d, 256, QVK_MEM_HOST, &prm)) < 0 ||
            (r = qvk_buffer_new(d, 256, QVK_MEM_DEVICE, &part)) < 0 ||
            (r = qvk_buffer_upload(q, 0, hq, n_q * 4)) < 0 ||
            (r = qvk_buffer_upload(kc, 0, hk, n_kv * es)) < 0 ||
            (r = qvk_buffer_upload(vc, 0, hv, n_kv * es)) < 0 || (r = qvk_cmd_new(d, &c)) < 0)
                return r;
        uint32_t *pm = qvk_buffer_map(prm);
        pm[0] = cs->pos0, pm[1] = cs->n;

        LlamaVkAttn a = {
                .q = B(q, 0, 0), .kc = B(kc, 0, 0), .vc = B(vc, 0, 0), .out = B(out, 0, 0),
                .params = B(prm, 0, 16), .part = B(part, 0, 0),
                .n_head = cs->n_head, .n_head_kv = cs->n_head_kv, .head_dim = hd, .n = cs->n,
                .n_ctx = cs->n_ctx, .kv_f16 = cs->kv_f16,
        };
        if ((r = qvk_cmd_fill(c, out, 0, n_q * 4, 0x7fc00000u)) < 0 || /* NaN: poison */
            (r = qvk_cmd_timestamp(c, 0)) < 0 || (r = llama_vk_attn_prompt_record(c, &a)) < 0 ||
            (r = qvk_cmd_timestamp(c, 1)) < 0 || (r = qvk_cmd_end(c)) < 0)
                return r;
        *ret_us = INFINITY;
        for (int rep = 0; rep < reps; rep++) {
                double ts[2];
                if ((r = qvk_cmd_submit(c)) < 0 || (r = qvk_cmd_wait(c)) < 0 ||
                    (r = qvk_cmd_timestamps_read(c, 0, 2, ts)) < 0)
                        return r;
                *ret_us = MIN(*ret_us, (ts[1] - ts[0]) / 1e3);
        }
        if ((r = qvk_buffer_download(out, 0, ho, n_q * 4)) < 0)
                return r;

        double scale = 1.0 / sqrt((double) hd);
        uint32_t g = cs->n_head / cs->n_head_kv;
        for (uint32_t t = 0; t < cs->n; t++)
                for (uint32_t h = 0; h < cs->n_head; h++) {
                        const float *qr = hq + ((uint64_t) t * cs->n_head + h) * hd;
                        uint64_t ko = (uint64_t) (h / g) * hd;
                        uint32_t nk = cs->pos0 + t + 1;
                        double mx = -INFINITY, sum = 0;
                        for (uint32_t j = 0; j < nk; j++) {
                                double dot = 0;
                                for (uint32_t e = 0; e < hd; e++)
                                        dot += (double) qr[e] * k[(uint64_t) j * nkv + ko + e];
                                s[j] = dot * scale;
                                mx = MAX(mx, s[j]);
                        }
                        for (uint32_t j = 0; j < nk; j++)
                                sum += s[j] = exp(s[j] - mx);
                        for (uint32_t e = 0; e < hd; e++) {
                                double o = 0;
                                for (uint32_t j = 0; j < nk; j++)
                                        o += s[j] * v[(uint64_t) j * nkv + ko + e];
                                o /= sum;
                                double dv = ho[((uint64_t) t * cs->n_head + h) * hd + e] - o;
                                err += isfinite(dv) ? dv * dv : INFINITY;
                                ref2 += o * o;
                        }
                }
        return err / MAX(ref2, 1e-30);
}

int main(int argc, char **argv) {
        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        static const Case cases[] = {
                { 32, 8, 128, 77, 0, 160, true },  /* Llama-3 heads, ragged rows */
                { 12, 4, 128, 130, 50, 200, true }, /* a second chunk of a prompt */
                { 8, 8, 64, 40, 13, 64, true },     /* no GQA, head 64, full context */
                { 6, 2, 64, 3, 0, 32, true },       /* fewer rows than a workgroup */
                { 4, 2, 32, 33, 5, 48, true },      /* head 32: the plain kernel */
                { 8, 2, 128, 45, 7, 64, false },    /* fp32 cache: the plain kernel */
        };
        bool bench = argc > 1 && streq(argv[1], "--bench");
        int r, failures = 0;

        rng = vk_test_seed();
        r = vk_test_device_new(&d);
        if (r < 0) {
                fprintf(stderr, "device: %s\n", strerror(-r));
                return 1;
        }
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const Case *cs = &cases[i];
                double us = 0, e = run_case(d, cs, 1, &us);
                bool flash = llama_vk_attn_prompt_flash(d, cs->head_dim, cs->kv_f16);
                bool ok = e >= 0 && e < 2e-5;
                printf("  heads %u/%u dim %u n %u pos0 %u kv %s %-6s nmse %.3g%s\n", cs->n_head,
                       cs->n_head_kv, cs->head_dim, cs->n, cs->pos0, cs->kv_f16 ? "f16" : "f32",
                       flash ? "flash" : "plain", e, ok ? "" : "  FAILED");
                failures += !ok;
        }
        if (bench) {
                Case cs = { 32, 8, 128, 512, 0, 512, true };
                double us = 0, e = run_case(d, &cs, 5, &us);
                printf("bench 512 tokens, 32/8 heads, dim 128 (%s): %.1f us, nmse %.3g\n",
                       llama_vk_attn_prompt_flash(d, 128, true) ? "flash" : "plain", us, e);
                failures += !(e >= 0 && e < 2e-5);
        }
        if (qvk_validation_messages() != 0) {
                fprintf(stderr, "%u validation messages, last: %s\n", qvk_validation_messages(),
                        strna(qvk_validation_last_message()));
                failures++;
        }
        printf("%s\n", failures ? "FAILED" : "ok");
        return failures ? 1 : 0;
}
