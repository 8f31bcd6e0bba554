/* The decode step's blk epilogues (qvk_matvec_blk, qvk_matmul_ps; shaders/matvec_blk.comp) on
 * fresh random inputs against a double-precision reference: for repacked Q8_0/Q4_0/Q4_1 rows
 * (int8 input blocks) and F16 rows (fp32 input), NORM (the residual, u = y * nw as int8 blocks
 * or floats, the blocks' sums of squares), GLU (silu(gate) * up, its int8 blocks), each with
 * and without the prescale of its input, and the plain prescaled product; k of 17 blocks (rows
 * of 17 units of 16 bytes: not a multiple of the 16 invocations per row). */
#include <math.h>

#include "vk-test.h"

#define K 544u
#define NB (K / 32u)
#define M 96u     /* NORM rows: 3 blocks */
#define MG 64u    /* GLU outputs: 2 blocks, 128 weight rows */
#define EPS 1e-5f

static int failures;

/* i / 1024 for |i| <= 1024 as fp16 bits (exact). */
static uint16_t half_of(int i) {
        uint16_t sign = i < 0 ? 0x8000u : 0;
        uint32_t m = (uint32_t) abs(i), e = 0;

        if (m == 0)
                return sign;
        while ((m >> (e + 1)) != 0)
                e++;
        return (uint16_t) (sign | ((e - 10 + 15) << 10) | ((m << (10 - e)) & 0x3ffu));
}

static int irand(uint64_t *s, int lo, int hi) {
        return lo + (int) ((vk_test_urand(s) + 1.0) / 2.0 * (hi - lo + 1) * 0.999999);
}

static void put16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) v;
        p[1] = (uint8_t) (v >> 8);
}

/* rows x K random weights of type base (F16 or a GGUF block type) into g, their values into w. */
static size_t make_weights(QvkWeightType base, uint32_t rows, uint64_t *s, uint8_t *g, double *w) {
        size_t o = 0;

        for (uint32_t r = 0; r < rows; r++)
                for (uint32_t b = 0; b < NB; b++) {
                        double *v = w + (size_t) r * K + 32 * b;
                        if (base == QVK_W_F16) {
                                for (int i = 0; i < 32; i++) {
                                        int q = irand(s, -1024, 1024);
                                        put16(g + o, half_of(q));
                                        o += 2;
                                        v[i] = q / 1024.0;
                                }
                                continue;
                        }
                        int di = irand(s, 8, 64);  /* d = di / 1024 */
                        double d = di / 1024.0, mn = irand(s, -64, 64) / 1024.0;
                        put16(g + o, half_of(di));
                        o += 2;
                        if (base == QVK_W_Q4_1) {
                                put16(g + o, half_of((int) lround(mn * 1024)));
                                o += 2;
                        }
                        if (base == QVK_W_Q8_0) {
                                for (int i = 0; i < 32; i++) {
                                        int q = irand(s, -127, 127);
                                        g[o++] = (uint8_t) (int8_t) q;
                                        v[i] = d * q;
                                }
                        } else {
                                for (int i = 0; i < 16; i++) {
                                        int lo = irand(s, 0, 15), hi = irand(s, 0, 15);
                                        g[o++] = (uint8_t) (lo | hi << 4);
                                        v[i] = base == QVK_W_Q4_0 ? d * (lo - 8) : d * lo + mn;
                                        v[i + 16] = base == QVK_W_Q4_0 ? d * (hi - 8) : d * hi + mn;
                                }
                        }
                }
        return o;
}

/* Random input of K values: int8 blocks (quant8.glsl's layout) into xq, or floats into xf; the
 * values into x. */
static void make_input(bool q8, uint64_t *s, uint8_t *xq, float *xf, double *x) {
        for (uint32_t b = 0; b < NB; b++) {
                float d = (float) (0.01 + 0.02 * (vk_test_urand(s) + 1.0));
                int sum = 0;
                for (int i = 0; i < 32; i++) {
                        if (q8) {
                                int q = irand(s, -127, 127);
                                xq[32 * b + i] = (uint8_t) (int8_t) q;
                                sum += q;
                                x[32 * b + i] = (double) d * q;
                        } else {
                                xf[32 * b + i] = (float) vk_test_urand(s);
                                x[32 * b + i] = xf[32 * b + i];
                        }
                }
                if (q8) {
                        float ds[2] = { d, (float) sum };
                        memcpy(xq + 32 * NB + 8 * b, ds, 8);
                }
        }
}

static bool near(double got, double want, double scale, double tol) {
        return fabs(got - want) <= tol * scale + 1e-7;
}

/* Block b of int8 values (quant8 layout, nb blocks) against the values u it quantizes. */
static bool block_ok(const uint8_t *q, uint32_t nb, uint32_t b, const float *u) {
        float ds[2];
        double amax = 0;
        int sum = 0;

        memcpy(ds, q + 32 * nb + 8 * b, 8);
        for (int i = 0; i < 32; i++)
                amax = fmax(amax, fabs(u[i]));
        if (!near(ds[0], amax / 127, amax / 127, 1e-5))
                return false;
        for (int i = 0; i < 32; i++) {
                int v = (int8_t) q[32 * b + i];
                sum += v;
                if (fabs(v * (double) ds[0] - u[i]) > 0.5001 * ds[0] + 1e-7)
                        return false;
        }
        return ds[1] == (float) sum;
}

static double silu(double g) {
        return g / (1 + exp(-g));
}

/* One weight type: NORM and GLU with and without prescale, and the plain prescaled product. */
static int check_type(QvkDevice *d, QvkWeightType wt, uint64_t *s) {
        QvkWeightType base = qvk_weight_base(wt);
        bool q8 = wt != QVK_W_F16;
        uint32_t rows = 2 * MG;  /* the most rows: GLU's */
        uint64_t gb = qvk_weight_row_bytes(base, K) * rows, rb = qvk_weight_row_bytes(wt, K);
        _cleanup_free_ uint8_t *g = malloc(gb), *wp = malloc(rb * rows), *xq = calloc(NB, 40);
        _cleanup_free_ double *w = malloc(sizeof(double) * rows * K), *x = malloc(sizeof(double) * K);
        _cleanup_free_ float *xf = malloc(4 * K);
        float xin[M], nw[M], ps[NB], y[M], ss[M / 32], uf[M];
        uint8_t oq[M * 40];
        ASSERT(g && wp && xq && w && x && xf);

        make_weights(base, rows, s, g, w);
        if (q8)
                ASSERT(qvk_weight_repack(wt, K, g, rows, wp) == 0);
        else
                memcpy(wp, g, gb);
        make_input(q8, s, xq, xf, x);
        double pss = 0;
        for (uint32_t b = 0; b < NB; b++)
                pss += ps[b] = (float) (K / NB * (0.5 + (vk_test_urand(s) + 1.0)));
        double sc = 1.0 / sqrt(pss / K + EPS);
        for (uint32_t i = 0; i < M; i++) {
                xin[i] = (float) vk_test_urand(s);
                nw[i] = (float) (1.0 + 0.5 * vk_test_urand(s));
        }
        /* the reference products, |terms| sums for the tolerance */
        double ref[2 * MG], mag[2 * MG];
        for (uint32_t r = 0; r < rows; r++) {
                ref[r] = mag[r] = 0;
                for (uint32_t i = 0; i < K; i++) {
                        ref[r] += w[(size_t) r * K + i] * x[i];
                        mag[r] += fabs(w[(size_t) r * K + i] * x[i]);
                }
        }

        _cleanup_(qvk_buffer_freep) QvkBuffer *bw = NULL, *bx = NULL, *by = NULL, *bin = NULL, *bnw = NULL,
                                              *bo = NULL, *bss = NULL, *bps = NULL;
        uint64_t xbytes = q8 ? (uint64_t) NB * 40 : 4 * K;
        CHECK(qvk_buffer_new(d, rb * rows, QVK_MEM_DEVICE, &bw));
        CHECK(qvk_buffer_new(d, xbytes, QVK_MEM_DEVICE, &bx));
        CHECK(qvk_buffer_new(d, 4 * 2 * MG, QVK_MEM_DEVICE, &by));
        CHECK(qvk_buffer_new(d, 4 * M, QVK_MEM_DEVICE, &bin));
        CHECK(qvk_buffer_new(d, 4 * M, QVK_MEM_DEVICE, &bnw));
        CHECK(qvk_buffer_new(d, 40 * M, QVK_MEM_DEVICE, &bo));
        CHECK(qvk_buffer_new(d, 4 * M / 32, QVK_MEM_DEVICE, &bss));
        CHECK(qvk_buffer_new(d, 4 * NB, QVK_MEM_DEVICE, &bps));
        CHECK(qvk_buffer_upload(bw, 0, wp, rb * rows));
        CHECK(qvk_buffer_upload(bx, 0, q8 ? (const void *) xq : (const void *) xf, xbytes));
        CHECK(qvk_buffer_upload(bin, 0, xin, sizeof(xin)));
        CHECK(qvk_buffer_upload(bnw, 0, nw, sizeof(nw)));
        CHECK(qvk_buffer_upload(bps, 0, ps, sizeof(ps)));
        QvkBinding W = { bw, 0, 0 }, X = { bx, 0, xbytes }, Y = { by, 0, 0 }, PS = { bps, 0, 4 * NB };

        for (int mode = 0; mode < 5; mode++) {
                /* 0/1 NORM without / with prescale, 2/3 GLU, 4 the plain prescaled product */
                bool pre = mode % 2 == 1 || mode == 4, glu = mode == 2 || mode == 3;
                double f = pre ? sc : 1.0;
                uint32_t m = glu ? MG : M;
                _cleanup_(qvk_cmd_freep) QvkCmd *c = NULL;
                CHECK(qvk_cmd_new(d, &c));
                if (mode == 4)
                        CHECK(qvk_matmul_ps(c, wt, W, M, K, X, PS, EPS, Y));
                else if (glu) {
                        QvkBinding extra[1] = { { bo, 0, 40 * MG } };
                        CHECK(qvk_matvec_blk(c, QVK_BLK_GLU, wt, W, MG, K, X, pre ? PS : (QvkBinding) {}, Y, extra, EPS));
                } else {
                        QvkBinding extra[4] = { { bin, 0, 0 }, { bnw, 0, 0 },
                                                { bo, 0, q8 ? 40 * M : 4 * M }, { bss, 0, 0 } };
                        CHECK(qvk_matvec_blk(c, QVK_BLK_NORM, wt, W, M, K, X, pre ? PS : (QvkBinding) {}, Y, extra, EPS));
                }
                CHECK(qvk_cmd_end(c));
                CHECK(qvk_cmd_submit(c));
                CHECK(qvk_cmd_wait(c));
                CHECK(qvk_buffer_download(by, 0, y, 4 * m));
                bool ok = true;
                if (mode == 4)
                        for (uint32_t r = 0; r < M; r++)
                                ok &= near(y[r], f * ref[r], f * mag[r], 1e-5);
                else if (glu) {
                        for (uint32_t r = 0; r < MG; r++) {
                                double gg = f * ref[r], up = f * ref[MG + r];
                                double tol = (fabs(gg) + f * mag[r]) * (fabs(up) + f * mag[MG + r]);
                                ok &= near(y[r], silu(gg) * up, tol, 1e-5);
                        }
                        if (q8) {
                                CHECK(qvk_buffer_download(bo, 0, oq, 40 * MG));
                                for (uint32_t b = 0; b < MG / 32; b++)
                                        ok &= block_ok(oq, MG / 32, b, y + 32 * b);
                        }
                } else {
                        CHECK(qvk_buffer_download(bss, 0, ss, sizeof(ss)));
                        for (uint32_t r = 0; r < M; r++)
                                ok &= near(y[r], xin[r] + f * ref[r], 1 + f * mag[r], 1e-5);
                        for (uint32_t b = 0; b < M / 32; b++) {
                                double want = 0;
                                float u[32];
                                for (int i = 0; i < 32; i++) {
                                        want += (double) y[32 * b + i] * y[32 * b + i];
                                        u[i] = y[32 * b + i] * nw[32 * b + i];
                                }
                                ok &= near(ss[b], want, want, 1e-5);
                                if (q8) {
                                        CHECK(qvk_buffer_download(bo, 0, oq, 40 * M));
                                        ok &= block_ok(oq, M / 32, b, u);
                                } else {
                                        CHECK(qvk_buffer_download(bo, 0, uf, sizeof(uf)));
                                        for (int i = 0; i < 32; i++)
                                                ok &= near(uf[32 * b + i], u[i], fabs(u[i]), 1e-6);
                                }
                        }
                }
                static const char *const names[] = { "norm", "norm prescaled", "glu", "glu prescaled",
                                                     "product prescaled" };
                printf("  %-6s %-18s %s\n", qvk_weight_type_name(wt), names[mode], ok ? "ok" : "FAILED");
                failures += !ok;
        }
        return 0;
}

int main(void) {
        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        uint64_t s = vk_test_seed();

        CHECK(vk_test_device_new(&d));
        static const QvkWeightType types[] = { QVK_W_Q8_0_R, QVK_W_Q4_0_R, QVK_W_Q4_1_R, QVK_W_F16 };
        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                if (!qvk_matvec_blk_ok(d, types[i], M, K)) {
                        printf("  %-6s not taken by this device (no int-dot path)\n", qvk_weight_type_name(types[i]));
                        continue;
                }
                if (check_type(d, types[i], &s) != 0)
                        return EXIT_FAILURE;
        }
        /* argument errors */
        ASSERT(!qvk_matvec_blk_ok(d, QVK_W_Q4_0, M, K));      /* not repacked */
        ASSERT(!qvk_matvec_blk_ok(d, QVK_W_Q4_0_R, M + 8, K)); /* m % 32 */
        ASSERT(!qvk_matvec_blk_ok(d, QVK_W_F16, M, K + 4));    /* k % 8 */
        if (qvk_validation_messages() != 0) {
                fprintf(stderr, "%u validation messages, last: %s\n", qvk_validation_messages(),
                        strna(qvk_validation_last_message()));
                return EXIT_FAILURE;
        }
        return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
