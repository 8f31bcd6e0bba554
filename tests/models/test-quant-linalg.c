/* The blocked, tiled paths of GPTQ and AWQ against the straightforward math in double precision on
 * fresh random inputs: the Cholesky factor and the upper factor of the inverse Hessian (edge
 * tiles included, the same bits on 1 and 3 threads, -EDOM for an indefinite matrix), GPTQ's lazy
 * block updates as matrix products against column-by-column GPTQ in double, the RTN clipping
 * search's candidate batch against one-by-one errors, the fast clipping search against the
 * straightforward one (the same scales), and AWQ's error through XᵀX (more tokens
 * than channels) against the error from the written blocks. The seed is printed;
 * QUANTD_TEST_SEED repeats a run. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-types.h"
#include "quant-internal.h"
#include "quant.h"
#include "test-quant-common.h"

static uint64_t seed;

/* A fresh SPD matrix: XᵀX/T of T = 2n correlated tokens with uneven channels, plus 1e-3·I. */
static double *random_spd(Rng *rng, size_t n) {
        size_t T = 2 * n;
        float *x = malloc(T * n * sizeof(float)), *sc = malloc(n * sizeof(float));
        double *h = calloc(n * n, sizeof(double));
        check(x && sc && h);
        for (size_t j = 0; j < n; j++)
                sc[j] = expf(0.5f * rng_gauss(rng));
        for (size_t t = 0; t < T; t++) {
                float common = rng_gauss(rng);
                for (size_t j = 0; j < n; j++)
                        x[t * n + j] = sc[j] * (rng_gauss(rng) + 0.5f * common);
        }
        for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k <= i; k++) {
                        double s = 0.0;
                        for (size_t t = 0; t < T; t++)
                                s += (double) x[t * n + i] * x[t * n + k];
                        h[i * n + k] = h[k * n + i] = s / (double) T + (i == k ? 1e-3 : 0.0);
                }
        free(x);
        free(sc);
        return h;
}

/* Unblocked lower Cholesky in double, in place on the lower triangle. */
static void ref_cholesky(double *a, size_t n) {
        for (size_t j = 0; j < n; j++) {
                double s = a[j * n + j];
                for (size_t k = 0; k < j; k++)
                        s -= a[j * n + k] * a[j * n + k];
                check(s > 0);
                a[j * n + j] = sqrt(s);
                for (size_t i = j + 1; i < n; i++) {
                        double t = a[i * n + j];
                        for (size_t k = 0; k < j; k++)
                                t -= a[i * n + k] * a[j * n + k];
                        a[i * n + j] = t / a[j * n + j];
                }
        }
}

/* U upper with H⁻¹ = UᵀU the textbook way: H⁻¹ by Gauss-Jordan, then U = Lᵀ for its lower
 * Cholesky factor L. */
static double *ref_hinv_upper(const double *h, size_t n) {
        double *m = malloc(n * 2 * n * sizeof(double)), *r = malloc(n * n * sizeof(double));
        check(m && r);
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < 2 * n; j++)
                        m[i * 2 * n + j] = j < n ? h[i * n + j] : (j - n == i ? 1.0 : 0.0);
        for (size_t c = 0; c < n; c++) {
                size_t p = c;
                for (size_t i = c + 1; i < n; i++)
                        if (fabs(m[i * 2 * n + c]) > fabs(m[p * 2 * n + c]))
                                p = i;
                for (size_t j = 0; j < 2 * n; j++) {
                        double t = m[c * 2 * n + j];
                        m[c * 2 * n + j] = m[p * 2 * n + j];
                        m[p * 2 * n + j] = t;
                }
                double d = m[c * 2 * n + c];
                for (size_t j = 0; j < 2 * n; j++)
                        m[c * 2 * n + j] /= d;
                for (size_t i = 0; i < n; i++)
                        if (i != c) {
                                double f = m[i * 2 * n + c];
                                for (size_t j = 0; j < 2 * n; j++)
                                        m[i * 2 * n + j] -= f * m[c * 2 * n + j];
                        }
        }
        /* H⁻¹ = L·Lᵀ, U = Lᵀ */
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < n; j++)
                        r[i * n + j] = m[i * 2 * n + n + j];
        ref_cholesky(r, n);
        double *u = calloc(n * n, sizeof(double));
        check(u);
        for (size_t i = 0; i < n; i++)
                for (size_t j = i; j < n; j++)
                        u[i * n + j] = r[j * n + i];
        free(m);
        free(r);
        return u;
}

static void test_factorisation(size_t n) {
        Rng rng = { seed + 1000 + n };
        double *h = random_spd(&rng, n), *a = malloc(n * n * sizeof(double)), *b = malloc(n * n * sizeof(double));
        float *u1 = malloc(n * n * sizeof(float)), *u3 = malloc(n * n * sizeof(float));
        check(a && b && u1 && u3);

        /* Cholesky: L·Lᵀ against H, and against the unblocked factor */
        memcpy(a, h, n * n * sizeof(double));
        check(qd_chol_lower(a, n, 3) == 0);
        memcpy(b, h, n * n * sizeof(double));
        ref_cholesky(b, n);
        double worst = 0.0, lmax = 0.0;
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j <= i; j++) {
                        worst = fmax(worst, fabs(a[i * n + j] - b[i * n + j]));
                        lmax = fmax(lmax, fabs(b[i * n + j]));
                }
        check(worst <= 1e-10 * lmax);

        /* U of H⁻¹ from the index-reversed H, in floats */
        for (int k = 0; k < 2; k++) {
                for (size_t i = 0; i < n; i++)
                        for (size_t j = 0; j < n; j++)
                                a[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
                check(qd_hinv_upper(a, n, k ? 3 : 1, k ? u3 : u1) == 0);
        }
        check(memcmp(u1, u3, n * n * sizeof(float)) == 0);
        double *ur = ref_hinv_upper(h, n);
        double umax = 0.0;
        worst = 0.0;
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < n; j++) {
                        check(j >= i || u1[i * n + j] == 0.0f);
                        worst = fmax(worst, fabs(u1[i * n + j] - ur[i * n + j]));
                        umax = fmax(umax, fabs(ur[i * n + j]));
                }
        printf("n %zu: |U - U_ref| %.2g of max|U|\n", n, worst / umax);
        check(worst <= 1e-5 * umax);

        /* indefinite: -EDOM */
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < n; j++)
                        a[i * n + j] = h[i * n + j];
        a[(n - 1) * n + (n - 1)] = -1.0;
        check(qd_chol_lower(a, n, 2) == -EDOM);
        free(h);
        free(a);
        free(b);
        free(u1);
        free(u3);
        free(ur);
}

/* GPTQ column by column in double (no blocks, no act-order, min-max groups): codes and output
 * error against qd_gptq_quantize()'s lazy block updates in f32 matrix products. */
static void test_gptq_vs_plain(void) {
        enum { ROWS = 80, N = 320, G = 32 };
        Rng rng = { seed + 77 };
        double *h = random_spd(&rng, N);
        float *w = malloc(ROWS * N * sizeof(float)), *deq = malloc(ROWS * N * sizeof(float));
        float *deq_ref = malloc(ROWS * N * sizeof(float)), *x = malloc(N * N * sizeof(float));
        double *wr = malloc(N * sizeof(double));
        uint8_t *q = malloc(ROWS * N);
        check(w && deq && deq_ref && x && wr && q);
        fill_gauss(&rng, w, ROWS * N, 0.02f);

        /* The Hessian through the public API: the columns of h's Cholesky factor times √(N/2) as
         * N samples, so that 2/N · Σ x xᵀ = h. */
        double *l = malloc(N * N * sizeof(double));
        check(l);
        memcpy(l, h, N * N * sizeof(double));
        ref_cholesky(l, N);
        for (size_t t = 0; t < N; t++)
                for (size_t i = 0; i < N; i++)
                        x[t * N + i] = i >= t ? (float) (l[i * N + t] * sqrt(N / 2.0)) : 0.0f;
        _cleanup_(qd_hessian_freep) QdHessian *hs = NULL;
        check(qd_hessian_new(N, &hs) == 0);
        check(qd_hessian_add(hs, x, N, 2) == 0);
        const double *H = qd_hessian_data(hs);
        double mean = 0.0;
        for (size_t i = 0; i < N; i++)
                mean += H[i * N + i];
        mean /= N;

        QdQuantParams p = { .type = QD_QTYPE_Q4_0, .group_size = G };
        QdGptqOptions o = { .act_order = false, .damp = 0.01f, .block = 64, .n_threads = 3 };
        check(qd_gptq_quantize(&p, &o, w, ROWS, N, hs, q, deq) == 0);

        /* reference: U of the dampened H in double, then column by column */
        double *hd = malloc(N * N * sizeof(double));
        check(hd);
        memcpy(hd, H, N * N * sizeof(double));
        for (size_t i = 0; i < N; i++)
                hd[i * N + i] += (double) 0.01f * mean;
        double *u = ref_hinv_upper(hd, N);
        size_t same = 0;
        for (size_t r = 0; r < ROWS; r++) {
                QdGroupScale s = {};
                for (size_t j = 0; j < N; j++)
                        wr[j] = w[r * N + j];
                for (size_t i = 0; i < N; i++) {
                        if (i % G == 0) {
                                float gv[G];
                                for (size_t k = 0; k < G; k++)
                                        gv[k] = (float) wr[i + k];
                                check(qd_quant_group_scale(&p, gv, NULL, G, &s) == 0);
                        }
                        int c = qd_quant_code(p.type, &s, (float) wr[i]);
                        double v = qd_quant_code_value(p.type, &s, c);
                        deq_ref[r * N + i] = (float) v;
                        same += deq[r * N + i] == (float) v;
                        double e = (wr[i] - v) / u[i * N + i];
                        for (size_t k = i + 1; k < N; k++)
                                wr[k] -= e * u[i * N + k];
                }
        }
        double e_ref, e_new;
        check(qd_hessian_output_error(hs, w, deq_ref, ROWS, &e_ref) == 0);
        check(qd_hessian_output_error(hs, w, deq, ROWS, &e_new) == 0);
        printf("GPTQ blocked f32 vs column-by-column double: %.4f%% of the values equal, output error %.5g vs %.5g\n",
               100.0 * same / (ROWS * N), e_new, e_ref);
        check(same >= 0.99 * ROWS * N);
        check(fabs(e_new - e_ref) <= 0.02 * e_ref);
        free(h);
        free(hd);
        free(l);
        free(u);
        free(w);
        free(deq);
        free(deq_ref);
        free(x);
        free(wr);
        free(q);
}

/* The clipping search scores its candidates in one batch: its choice has the least error among
 * the grid it searches, each error computed one by one in double. */
static void test_clip_batch(void) {
        Rng rng = { seed + 5 };
        for (int ti = 0; ti < 2; ti++) {
                QdQuantType t = ti ? QD_QTYPE_Q8_0 : QD_QTYPE_Q4_0;
                QdQuantParams p = { .type = t, .group_size = 32, .range = QD_RANGE_CLIP, .clip_grid = 20 };
                for (int k = 0; k < 200; k++) {
                        float x[32], wt[32];
                        for (size_t i = 0; i < 32; i++) {
                                x[i] = (k % 3 == 0 && i == 7 ? 8.0f : 1.0f) * rng_gauss(&rng);
                                wt[i] = 0.1f + (float) rng_uniform(&rng);
                        }
                        QdGroupScale s;
                        check(qd_quant_group_scale(&p, x, wt, 32, &s) == 0);
                        double best = 0.0;
                        for (size_t i = 0; i < 32; i++) {
                                double r = x[i] - qd_quant_code_value(t, &s, qd_quant_code(t, &s, x[i]));
                                best += wt[i] * r * r;
                        }
                        float ext = 0.0f;
                        for (size_t i = 0; i < 32; i++)
                                if (fabsf(x[i]) > fabsf(ext))
                                        ext = x[i];
                        for (unsigned g = 0; g <= 20; g++) {
                                float f = 1.0f - 0.5f * (float) g / 20.0f;
                                QdGroupScale c = { qd_fp16_to_fp32(qd_fp32_to_fp16(t == QD_QTYPE_Q8_0 ? fabsf(ext) * f / 127.0f
                                                                                            : ext * f / -8.0f)) };
                                double e = 0.0;
                                for (size_t i = 0; i < 32; i++) {
                                        double r = x[i] - qd_quant_code_value(t, &c, qd_quant_code(t, &c, x[i]));
                                        e += wt[i] * r * r;
                                }
                                check(best <= e * (1 + 1e-6));
                        }
                }
        }
}

/* The fast clipping search (candidate lanes, blocks that cannot win cut short, the vectorised
 * polish) returns exactly the scale of the straightforward one (every candidate scored in full
 * by itself, the generic polish) on fresh random groups: Q4_0 and Q8_0, groups of 32/64/128,
 * with and without weights, several grids, Gaussian groups, groups with an outlier, groups
 * clamped to ±T as AWQ's clip search makes them (ties between candidates), and tiny ones (down
 * to scales that fp16 flushes to subnormals or zero). */
static void test_clip_fast_vs_ref(void) {
        static const unsigned grids[] = { 20, 7, 40 }, sizes[] = { 32, 64, 128 };
        Rng rng = { seed + 7 };
        size_t n_checked = 0;
        for (int ti = 0; ti < 2; ti++)
                for (size_t gi = 0; gi < ELEMENTSOF(grids); gi++)
                        for (size_t si = 0; si < ELEMENTSOF(sizes); si++)
                                for (int k = 0; k < 400; k++) {
                                        QdQuantType t = ti ? QD_QTYPE_Q8_0 : QD_QTYPE_Q4_0;
                                        unsigned n = sizes[si];
                                        QdQuantParams p = { .type = t, .group_size = n, .range = QD_RANGE_CLIP,
                                                            .clip_grid = grids[gi] };
                                        float x[128], wt[128], amax = 0.0f;
                                        float sc = k % 7 == 0 ? 1e-3f : k % 7 == 1 ? 50.0f : k % 7 == 2 ? 1e-6f : 0.02f;
                                        for (size_t i = 0; i < n; i++) {
                                                x[i] = sc * (k % 4 == 1 && i == (size_t) k % n ? 8.0f : 1.0f) *
                                                       rng_gauss(&rng);
                                                wt[i] = 0.1f + (float) rng_uniform(&rng);
                                                amax = fmaxf(amax, fabsf(x[i]));
                                        }
                                        if (k % 4 == 2) { /* AWQ's clip candidates: clamped to ±T */
                                                float T = amax * (1.0f - (float) (k % 11) / 20.0f);
                                                for (size_t i = 0; i < n; i++)
                                                        x[i] = fminf(fmaxf(x[i], -T), T);
                                        }
                                        const float *w = k % 2 ? wt : NULL;
                                        QdGroupScale a, b;
                                        check(qd_quant_group_scale(&p, x, w, n, &a) == 0);
                                        check(qd_quant_group_scale_ref(&p, x, w, n, &b) == 0);
                                        if (memcmp(&a, &b, sizeof(a)) != 0) {
                                                printf("clip search: fast d %a, straightforward %a (type %d, n %u, grid %u, "
                                                       "group %d)\n", a.d, b.d, (int) t, n, grids[gi], k);
                                                check(false);
                                        }
                                        n_checked++;
                                }
        printf("clip search: fast == straightforward on %zu groups\n", n_checked);
}

/* AWQ with more tokens than channels takes its errors from XᵀX: err_final equals the error of
 * the written blocks computed from the tokens in double. */
static void test_awq_gram_path(void) {
        enum { ROWS = 48, COLS = 128, NS = 400 };
        Rng rng = { seed + 9 };
        float *x = malloc(NS * COLS * sizeof(float)), *w = malloc(ROWS * COLS * sizeof(float));
        float *deq = malloc(ROWS * COLS * sizeof(float)), s[COLS], sig[COLS];
        uint8_t *q = malloc(ROWS * COLS);
        check(x && w && deq && q);
        for (size_t j = 0; j < COLS; j++)
                sig[j] = j % 29 == 3 ? 15.0f : 0.5f + (float) rng_uniform(&rng);
        for (size_t t = 0; t < NS; t++)
                for (size_t j = 0; j < COLS; j++)
                        x[t * COLS + j] = sig[j] * rng_gauss(&rng);
        fill_gauss(&rng, w, ROWS * COLS, 0.02f);
        QdQuantParams p = { .type = QD_QTYPE_Q4_0, .group_size = 32 };
        QdAwqLinear lin = { .w = w, .rows = ROWS, .dst = q };
        QdAwqOptions o = { .clip = true, .n_threads = 2 };
        QdAwqResult res;
        check(qd_awq_quantize(&p, &o, x, NS, COLS, &lin, 1, s, &res) == 0);
        size_t rs;
        check(qd_quant_row_size(p.type, 32, COLS, &rs) == 0);
        for (size_t r = 0; r < ROWS; r++) {
                check(qd_dequant_row(p.type, 32, q + r * rs, deq + r * COLS, COLS) == 0);
                for (size_t j = 0; j < COLS; j++)
                        deq[r * COLS + j] /= s[j];
        }
        double e = output_error(x, NS, COLS, w, deq, ROWS);
        printf("AWQ through XᵀX: err_final %.6g, from the blocks %.6g; alpha %.2f, AWQ/RTN %.3f\n", res.err_final, e,
               res.alpha, res.err_final / res.err_rtn);
        check(fabs(res.err_final - e) <= 1e-5 * e);
        check(res.err_final < res.err_rtn);
        free(x);
        free(w);
        free(deq);
        free(q);
}

int main(void) {
        static const size_t sizes[] = { 1, 7, 128, 129, 300 };
        const char *env = getenv("QUANTD_TEST_SEED");
        seed = env ? strtoull(env, NULL, 0) : (uint64_t) time(NULL);
        printf("seed %llu\n", (unsigned long long) seed);
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
                test_factorisation(sizes[i]);
        test_gptq_vs_plain();
        test_clip_batch();
        test_clip_fast_vs_ref();
        test_awq_gram_path();
        printf("ok\n");
        return 0;
}
