/* quantd-engine-bench: prompt processing and decode speed of the Vulkan forward pass on a random
 * Llama-3-8B-shaped model built in memory (layers share their random source matrices, so no
 * 16 GB file is written), in F16, Q8_0 and Q4_0. Not a test: run by hand on the GPU machine.
 *   quantd-engine-bench [--layers N] [--embd N] [--ff N] [--heads N] [--kv-heads N]
 *                       [--vocab N] [--pp N] [--tg N] [--reps N] [--batch N] [--device SEL]
 *                       [--precision fp16|int8|int4] [--decode-only] [--fusion MODE[,MODE..]]
 *                       [--runahead on|off|both]
 * --batch N adds a batched decode measurement: N sequences stepped together for tg steps
 * (llama_vk_batch_eval), tokens/s summed over the N sequences. --kmix: the weights in llama.cpp's
 * Q4_K_M mix (Q4_K, Q6_K; bench_model_kmix), measured in their as-stored int4 variant only.
 * --decode-only: tg only (no pp measurement, no profile). --fusion: the decode step with its
 * fused epilogues on (as $QUANTD_VK_FUSION=1), silu-only, norm-only, blk (the epilogues of whole
 * int8 blocks, $QUANTD_VK_FUSION=blk) or off, or a comma-separated list of those, or both (on,
 * off) or each (all five), one after the other on the same weights (llama_vk_set_fusion); each
 * tg line also gives the dispatches and barriers of one decode step's recording. --runahead: the
 * greedy decode with the next step queued on the GPU's argmax before the host sees it
 * (llama_vk_seq_set_runahead), without, or both one after the other (default: off). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench-model.h"
#include "ggml-types.h"
#include "macro.h"
#include "model-llama.h"


static void bench_model_donep(BenchModel *m) {
        bench_model_done(m);
}

/* n sequences of one token each, then tg batched decode steps; tokens/s over all of them. */
static int bench_batch(LlamaVk *v, uint32_t n, uint32_t tg, uint32_t reps, uint32_t V, double *ret) {
        _cleanup_free_ LlamaVkSeq **seqs = calloc(n, sizeof(*seqs));
        _cleanup_free_ int32_t *tok = calloc(n, sizeof(int32_t));
        double sum = 0;
        int r = 0;

        if (!seqs || !tok)
                return -ENOMEM;
        for (uint32_t rep = 0; rep <= reps && r >= 0; rep++) { /* rep 0 warms up */
                for (uint32_t i = 0; i < n && r >= 0; i++) {
                        tok[i] = (i * 7919u + 1) % V;
                        r = llama_vk_seq_new(v, tg + 16, &seqs[i]);
                        if (r >= 0)
                                r = llama_vk_seq_eval(seqs[i], &tok[i], 1, false, NULL, &tok[i], NULL);
                }
                double a = bench_now();
                for (uint32_t i = 0; r >= 0 && i < tg; i++)
                        r = llama_vk_batch_eval(v, seqs, tok, n, tok, NULL);
                double b = bench_now();
                if (r >= 0 && rep > 0)
                        sum += (double) n * tg / (b - a);
                for (uint32_t i = 0; i < n; i++)
                        seqs[i] = llama_vk_seq_free(seqs[i]);
        }
        if (r < 0)
                return r;
        *ret = sum / reps;
        return 0;
}

/* Prompt processing of pp tokens and decode of tg tokens (another sequence), reps times after a
 * warm-up: the mean tokens/s of each. */
static int measure(LlamaVk *v, const int32_t *tokens, uint32_t pp, uint32_t tg, uint32_t reps, bool ahead,
                   double *ret_pp, double *ret_tg, uint32_t *ret_dispatches, uint32_t *ret_barriers) {
        double pp_sum = 0, tg_sum = 0;
        int r;

        for (uint32_t rep = 0; rep <= reps; rep++) { /* rep 0 warms up */
                _cleanup_(llama_vk_seq_freep) LlamaVkSeq *s1 = NULL, *s2 = NULL;
                int32_t tok;
                if ((r = llama_vk_seq_new(v, pp + tg + 16, &s1)) < 0 || (r = llama_vk_seq_new(v, tg + 16, &s2)) < 0)
                        return r;
                llama_vk_seq_set_runahead(s2, ahead);
                double a = bench_now();
                r = pp ? llama_vk_seq_eval(s1, tokens, pp, false, NULL, &tok, NULL) : 0;
                double b = bench_now();
                if (r < 0)
                        return r;
                tok = 1;
                r = llama_vk_seq_eval(s2, &tok, 1, false, NULL, &tok, NULL);
                double cstart = bench_now();
                for (uint32_t i = 0; r >= 0 && i < tg; i++)
                        r = llama_vk_seq_eval(s2, &tok, 1, false, NULL, &tok, NULL);
                double cend = bench_now();
                if (r < 0)
                        return r;
                if (rep > 0) {
                        pp_sum += pp / (b - a);
                        tg_sum += tg / (cend - cstart);
                }
                r = llama_vk_seq_stats(s2, true, ret_dispatches, ret_barriers);
                if (r < 0)
                        return r;
        }
        *ret_pp = pp_sum / reps;
        *ret_tg = tg_sum / reps;
        return 0;
}

int main(int argc, char **argv) {
        uint32_t L = 32, E = 4096, F = 14336, H = 32, HKV = 8, V = 128256, pp = 512, tg = 128, reps = 3, batch = 0;
        const char *dev = NULL, *only = NULL, *fusion = NULL, *runahead = NULL;
        bool kmix = false, decode_only = false;
        static const struct option opts[] = {
                { "layers", required_argument, NULL, 'l' }, { "embd", required_argument, NULL, 'e' },
                { "ff", required_argument, NULL, 'f' },     { "heads", required_argument, NULL, 'h' },
                { "kv-heads", required_argument, NULL, 'k' }, { "vocab", required_argument, NULL, 'v' },
                { "pp", required_argument, NULL, 'p' },     { "tg", required_argument, NULL, 't' },
                { "reps", required_argument, NULL, 'r' },   { "device", required_argument, NULL, 'd' },
                { "batch", required_argument, NULL, 'b' }, { "precision", required_argument, NULL, 'P' },
                { "kmix", no_argument, NULL, 'K' },         { "decode-only", no_argument, NULL, 'D' },
                { "fusion", required_argument, NULL, 'F' }, { "runahead", required_argument, NULL, 'R' },
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
                case 'b': batch = v; break;
                case 'P': only = optarg; break;
                case 'K': kmix = true; break;
                case 'D': decode_only = true; break;
                case 'F': fusion = optarg; break;
                case 'R': runahead = optarg; break;
                default: return 2;
                }
        }
        if (!L || !E || !F || !H || !HKV || !V || pp < 2 || !tg || !reps || E % H || H % HKV)
                return 2;
        static const struct {
                const char *name;
                unsigned which;
        } fmodes[] = {
                { "on", LLAMA_VK_FUSE_ALL },
                { "silu-only", LLAMA_VK_FUSE_GLU },
                { "norm-only", LLAMA_VK_FUSE_NORM },
                { "blk", LLAMA_VK_FUSE_BLK },
                { "off", 0 },
        };
        /* the modes of --fusion, in order (indices into fmodes) */
        size_t fsel[16], n_fsel = 0;
        if (!fusion)
                fsel[n_fsel++] = 0;
        else if (streq(fusion, "both"))
                fsel[n_fsel++] = 0, fsel[n_fsel++] = 4;
        else if (streq(fusion, "each"))
                for (size_t i = 0; i < ELEMENTSOF(fmodes); i++)
                        fsel[n_fsel++] = i;
        else
                for (const char *p = fusion; *p;) {
                        size_t len = strcspn(p, ","), i;
                        for (i = 0; i < ELEMENTSOF(fmodes); i++)
                                if (strlen(fmodes[i].name) == len && strncmp(p, fmodes[i].name, len) == 0)
                                        break;
                        if (i == ELEMENTSOF(fmodes) || n_fsel == ELEMENTSOF(fsel))
                                return fprintf(stderr, "--fusion takes on, silu-only, norm-only, blk, off (a "
                                                       "comma-separated list of them), both or each\n"), 2;
                        fsel[n_fsel++] = i;
                        p += len + (p[len] == ',');
                }

        /* the run-ahead modes of --runahead: [ra0, ra1) of off, on */
        int ra0 = 0, ra1 = 1;
        if (runahead && streq(runahead, "on"))
                ra0 = 1, ra1 = 2;
        else if (runahead && streq(runahead, "both"))
                ra1 = 2;
        else if (runahead && !streq(runahead, "off"))
                return fprintf(stderr, "--runahead takes on, off or both\n"), 2;

        _cleanup_(bench_model_donep) BenchModel bm = {};
        r = bench_model_init(&bm, L, E, F, H, HKV, V);
        if (r < 0)
                return fprintf(stderr, "out of memory\n"), 1;
        if (kmix) {
                double tq = bench_now();
                r = bench_model_kmix(&bm, 16);
                if (r < 0)
                        return fprintf(stderr, "Q4_K_M mix: %s\n", strerror(-r)), 1;
                printf("Q4_K_M mix quantized in %.1f s\n", bench_now() - tq);
        }

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
        double t0 = bench_now();
        r = llama_vk_new(d, &bm.w, &v);
        if (r < 0)
                return fprintf(stderr, "llama_vk_new: %s\n", strerror(-r)), 1;
        printf("common upload %.1f s\n", bench_now() - t0);

        int32_t *tokens = calloc(pp, sizeof(int32_t));
        if (!tokens)
                return 1;
        for (uint32_t i = 0; i < pp; i++)
                tokens[i] = (i * 7919u) % V;

        for (QdPrecision p = kmix ? QD_PRECISION_INT4 : QD_PRECISION_F16; p < _QD_PRECISION_MAX; p++) {
                if (only && !streq(only, qd_precision_to_string(p)))
                        continue;
                t0 = bench_now();
                r = llama_vk_set_precision(v, p);
                if (r < 0)
                        return fprintf(stderr, "set_precision %s: %s\n", qd_precision_to_string(p), strerror(-r)), 1;
                (void) llama_vk_drop_variants(v, true);
                QvkWeightType wt = kmix ? QVK_W_Q4_K
                                        : qvk_weight_repack_type(p == QD_PRECISION_F16    ? QVK_W_F16
                                                                 : p == QD_PRECISION_INT8 ? QVK_W_Q8_0
                                                                                          : QVK_W_Q4_0);
                printf("%s: weights %.2f GiB, built in %.1f s; kernels: n=1 %s", qd_precision_to_string(p),
                       llama_vk_variant_bytes(v, p) / 1073741824.0, bench_now() - t0, qvk_matmul_kernel(d, wt, false, E, 1));
                printf(", n=%u %s\n", pp, qvk_matmul_kernel(d, wt, false, E, pp));
                for (size_t fi = 0; fi < n_fsel; fi++) {
                        size_t fu = fsel[fi];
                        if (fusion)
                                llama_vk_set_fusion(v, fmodes[fu].which);
                        for (int ra = ra0; ra < ra1; ra++) {
                                double pp_tps, tg_tps;
                                uint32_t nd, nbar;
                                r = measure(v, tokens, decode_only ? 0 : pp, tg, reps, ra, &pp_tps, &tg_tps, &nd, &nbar);
                                if (r < 0)
                                        return fprintf(stderr, "pp/tg: %s\n", strerror(-r)), 1;
                                char fs[64] = "";
                                if (fusion)
                                        snprintf(fs, sizeof(fs), " fusion %s", fmodes[fu].name);
                                if (runahead)
                                        snprintf(fs + strlen(fs), sizeof(fs) - strlen(fs), " runahead %s", ra ? "on" : "off");
                                if (decode_only)
                                        printf("RESULT %s tg%u %.1f tok/s%s, decode step %u dispatches %u barriers\n",
                                               qd_precision_to_string(p), tg, tg_tps, fs, nd, nbar);
                                else
                                        printf("RESULT %s pp%u %.1f tok/s  tg%u %.1f tok/s%s, decode step %u dispatches %u barriers\n",
                                               qd_precision_to_string(p), pp, pp_tps, tg, tg_tps, fs, nd, nbar);
                                fflush(stdout);
                        }
                }
                if (batch > 0) {
                        double tps;
                        r = bench_batch(v, batch, tg, reps, V, &tps);
                        if (r < 0)
                                return fprintf(stderr, "batched decode: %s\n", strerror(-r)), 1;
                        printf("RESULT %s batch%u tg%u %.1f tok/s (summed over the sequences; kernel n=%u %s)\n",
                               qd_precision_to_string(p), batch, tg, tps, batch,
                               qvk_matmul_kernel(d, wt, false, E, batch));
                }
                /* Where the time goes: one profiled prefill and decode step, first layer per op. */
                if (!decode_only) {
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
