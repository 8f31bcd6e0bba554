/* Round-to-nearest quantization of weight groups: min-max, clipping search and percentile ranges,
 * packing into Q8_0/Q4_0/Q4_1/NF4 blocks of 32 (GGUF) or 64/128 elements. */
#include <errno.h>
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ggml-types.h"
#include "macro.h"
#include "quant-internal.h"
#include "quant.h"

static const char *const type_names[_QD_QTYPE_MAX] = {
        [QD_QTYPE_Q8_0] = "q8_0",
        [QD_QTYPE_Q4_0] = "q4_0",
        [QD_QTYPE_Q4_1] = "q4_1",
        [QD_QTYPE_NF4] = "nf4",
};

/* QLoRA (Dettmers et al. 2023), bitsandbytes' NF4 table. */
const float qd_nf4_levels[16] = {
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

const char *qd_quant_type_to_string(QdQuantType t) {
        if (t < 0 || t >= _QD_QTYPE_MAX)
                return NULL;
        return type_names[t];
}

QdQuantType qd_quant_type_from_string(const char *s) {
        if (!s)
                return QD_QTYPE_INVALID;
        for (int t = 0; t < _QD_QTYPE_MAX; t++)
                if (strcasecmp(s, type_names[t]) == 0)
                        return t;
        return QD_QTYPE_INVALID;
}

static bool type_valid(QdQuantType t) {
        return t >= 0 && t < _QD_QTYPE_MAX;
}

bool qd_quant_group_size_valid(QdQuantType t, unsigned group_size) {
        return type_valid(t) && (group_size == 32 || group_size == 64 || group_size == 128);
}

static size_t header_bytes(QdQuantType t) {
        return t == QD_QTYPE_Q4_1 ? 4 : 2;
}

size_t qd_quant_block_bytes(QdQuantType t, unsigned group_size) {
        if (!qd_quant_group_size_valid(t, group_size))
                return 0;
        return header_bytes(t) + (t == QD_QTYPE_Q8_0 ? group_size : group_size / 2);
}

double qd_quant_bits_per_weight(QdQuantType t, unsigned group_size) {
        size_t b = qd_quant_block_bytes(t, group_size);
        return b ? 8.0 * (double) b / group_size : 0.0;
}

unsigned qd_quant_levels(QdQuantType t) {
        return t == QD_QTYPE_Q8_0 ? 256 : 16;
}

int qd_quant_row_size(QdQuantType t, unsigned group_size, size_t n, size_t *ret) {
        size_t b = qd_quant_block_bytes(t, group_size);
        if (b == 0 || n % group_size != 0)
                return -EINVAL;
        *ret = n / group_size * b;
        return 0;
}

static float fp16_round(float f) {
        return qd_fp16_to_fp32(qd_fp32_to_fp16(f));
}

/* fp16_round() of n values: by F16C's round-to-nearest-even conversions where the CPU has them
 * (the same values as ggml's bit manipulation, which is IEEE rounding too). */
__attribute__((target("avx,f16c"))) static void fp16_round_f16c(float *v, size_t n) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8)
                _mm256_storeu_ps(v + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(v + i), _MM_FROUND_TO_NEAREST_INT)));
        for (; i < n; i++)
                v[i] = _cvtsh_ss(_cvtss_sh(v[i], _MM_FROUND_TO_NEAREST_INT));
}

static void fp16_round_n(float *v, size_t n) {
        if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx")) {
                fp16_round_f16c(v, n);
                return;
        }
        for (size_t i = 0; i < n; i++)
                v[i] = fp16_round(v[i]);
}

static int nf4_code(float y) {
        /* Nearest level: binary search over the midpoints. */
        int lo = 0, hi = 15;
        while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (y > 0.5f * (qd_nf4_levels[mid] + qd_nf4_levels[mid + 1]))
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

/* Round half to even for |v| <= 2^22 without a libm call: adding 1.5·2^23 leaves no fraction
 * bits, so the FPU's default rounding does the work (valid without -ffast-math, which the build
 * never uses). */
static inline float round_ne(float v) {
        return (v + 0x1.8p23f) - 0x1.8p23f;
}

/* The code of x for a group with inverse step id = 1/d (0 when d = 0). Every path goes through
 * here, so the row quantizer, the range search and GPTQ agree bit for bit. */
static inline int code_of(QdQuantType t, float id, float d, float m, float x) {
        switch (t) {
        case QD_QTYPE_Q8_0:
                /* -128 is avoided: ggml's x86 kernels take |q| with sign tricks. */
                return (int) round_ne(CLAMP(x * id, -127.0f, 127.0f));
        case QD_QTYPE_Q4_0:
                return (int) round_ne(CLAMP(x * id, -8.0f, 7.0f));
        case QD_QTYPE_Q4_1:
                return (int) round_ne(CLAMP((x - m) * id, 0.0f, 15.0f));
        case QD_QTYPE_NF4:
                return d == 0.0f ? 7 : nf4_code(x * id);
        default:
                return 0;
        }
}

static inline float inv(float d) {
        return d == 0.0f ? 0.0f : 1.0f / d;
}

int qd_quant_code(QdQuantType t, const QdGroupScale *s, float x) {
        return code_of(t, inv(s->d), s->d, s->m, x);
}

float qd_quant_code_value(QdQuantType t, const QdGroupScale *s, int c) {
        if (t == QD_QTYPE_NF4)
                return s->d * qd_nf4_levels[c & 15];
        return s->d * (float) c + s->m;
}

static inline __attribute__((always_inline)) double
group_error_impl(QdQuantType t, const QdGroupScale *s, const float *x, const float *w, size_t n) {
        float id = inv(s->d);
        double e = 0.0;
        for (size_t i = 0; i < n; i++) {
                float r = x[i] - qd_quant_code_value(t, s, code_of(t, id, s->d, s->m, x[i]));
                e += (w ? w[i] : 1.0f) * r * r;
        }
        return e;
}

/* Squared error of a group under s; one specialised loop per type (the range search calls this
 * for every candidate). */
static double group_error(QdQuantType t, const QdGroupScale *s, const float *x, const float *w,
                          size_t n) {
        switch (t) {
        case QD_QTYPE_Q8_0:
                return group_error_impl(QD_QTYPE_Q8_0, s, x, w, n);
        case QD_QTYPE_Q4_0:
                return group_error_impl(QD_QTYPE_Q4_0, s, x, w, n);
        case QD_QTYPE_Q4_1:
                return group_error_impl(QD_QTYPE_Q4_1, s, x, w, n);
        default:
                return group_error_impl(t, s, x, w, n);
        }
}

#define MAX_CANDIDATES 96

/* 16 candidates' errors over elements [i0, i1), added to acc[]: each lane sums in index order
 * with group_error()'s operations (its "+ m" with m = 0 and its weight 1 dropped: they change at
 * most the sign of a zero r, never r², so not a bit of the sum). */
static inline __attribute__((always_inline)) void
lanes_add(const float *id, const float *dp, float lo, float hi, const float *x, const float *w, size_t i0,
          size_t i1, double *acc) {
        for (size_t i = i0; i < i1; i++) {
                float xi = x[i], wi = w ? w[i] : 1.0f;
                /* a loop for the vectorizer: -O3 would unroll it into scalar code */
#pragma GCC unroll 1
                for (size_t k = 0; k < 16; k++) {
                        float c = round_ne(CLAMP(xi * id[k], lo, hi));
                        float r = xi - dp[k] * c;
                        acc[k] += w ? wi * r * r : r * r;
                }
        }
}

/* Elements scored between two checks of the bound below. */
#define PRUNE_STEP 4

/* group_error() of nc candidate scales d[] of Q8_0/Q4_0 (m = 0) at once: lanes are candidates,
 * and each lane sums its group in index order with the same operations, so every error equals
 * group_error()'s bit for bit while the candidates share the loads and the vector units (the
 * range search's whole cost; GPTQ and AWQ run it for every group). nc ≤ MAX_CANDIDATES.
 *
 * Candidates come in blocks of 16 in index order. A lane's partial sum never decreases (its terms
 * are ≥ 0 and rounding is monotone), so once every lane of a later block has a partial sum ≥ the
 * least complete error of the blocks before it, none of them can win (a tie goes to the lower
 * index): the block stops there and its errors are returned as +∞. Callers that take the first
 * least error get the same winner as from the full sums. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void group_errors_symmetric(QdQuantType t, const float *d, size_t nc, const float *x, const float *w,
                                   size_t n, double *ret) {
        float id[MAX_CANDIDATES], lo = t == QD_QTYPE_Q8_0 ? -127.0f : -8.0f, hi = t == QD_QTYPE_Q8_0 ? 127.0f : 7.0f;
        size_t np = ALIGN_TO(nc, (size_t) 16);
        float dp[MAX_CANDIDATES];
        double best = INFINITY;
        for (size_t k = 0; k < np; k++) {
                dp[k] = k < nc ? d[k] : 0.0f;
                id[k] = inv(dp[k]);
        }
        /* 16 lanes at a time, their sums in registers through the whole group */
        for (size_t k0 = 0; k0 < np; k0 += 16) {
                double acc[16] = {};
                size_t nl = MIN(nc - k0, (size_t) 16);
                bool pruned = false;
                for (size_t i0 = 0; i0 < n && !pruned; i0 += PRUNE_STEP) {
                        size_t i1 = MIN(i0 + PRUNE_STEP, n);
                        if (w)
                                lanes_add(id + k0, dp + k0, lo, hi, x, w, i0, i1, acc);
                        else
                                lanes_add(id + k0, dp + k0, lo, hi, x, NULL, i0, i1, acc);
                        if (i1 < n && best < INFINITY) {
                                pruned = true;
                                for (size_t k = 0; k < nl && pruned; k++)
                                        pruned = acc[k] >= best;
                        }
                }
                for (size_t k = 0; k < nl; k++) {
                        ret[k0 + k] = pruned ? INFINITY : acc[k];
                        best = MIN(best, ret[k0 + k]);
                }
        }
}

/* Weighted least-squares refit of (d, m) for the codes that s gives; m only for Q4_1. */
static bool refit(QdQuantType t, const QdGroupScale *s, const float *x, const float *w, size_t n,
                  QdGroupScale *ret) {
        double sc2 = 0, sc = 0, s1 = 0, sxc = 0, sx = 0;
        float id = inv(s->d);
        for (size_t i = 0; i < n; i++) {
                int c = code_of(t, id, s->d, s->m, x[i]);
                double cv = t == QD_QTYPE_NF4 ? qd_nf4_levels[c] : c;
                double wi = w ? w[i] : 1.0;
                sc2 += wi * cv * cv;
                sc += wi * cv;
                s1 += wi;
                sxc += wi * x[i] * cv;
                sx += wi * x[i];
        }
        if (t == QD_QTYPE_Q4_1) {
                double det = sc2 * s1 - sc * sc;
                if (!(fabs(det) > 1e-30))
                        return false;
                double d = (sxc * s1 - sc * sx) / det;
                double m = (sc2 * sx - sc * sxc) / det;
                if (!(d > 0))
                        return false;
                *ret = (QdGroupScale) { fp16_round((float) d), fp16_round((float) m) };
                return ret->d > 0.0f;
        }
        if (!(sc2 > 0))
                return false;
        *ret = (QdGroupScale) { fp16_round((float) (sxc / sc2)), 0.0f };
        if (t == QD_QTYPE_NF4 && ret->d < 0.0f)
                return false;
        return ret->d != 0.0f;
}

static void consider(QdQuantType t, const QdGroupScale *cand, const float *x, const float *w,
                     size_t n, QdGroupScale *best, double *best_err) {
        double e = group_error(t, cand, x, w, n);
        if (e < *best_err) {
                *best_err = e;
                *best = *cand;
        }
}

/* Least-squares refits of the winner until they stop helping (at most 3). */
static void polish(QdQuantType t, const float *x, const float *w, size_t n, QdGroupScale *best,
                   double *best_err) {
        for (int k = 0; k < 3; k++) {
                QdGroupScale r;
                if (!refit(t, best, x, w, n, &r))
                        return;
                double e = group_error(t, &r, x, w, n);
                if (!(e < *best_err))
                        return;
                *best_err = e;
                *best = r;
        }
}

/* Whether every partial sum of the n doubles v[i]·c[i] (c NULL: all 1) is exact in double, so that
 * any order of summation gives the sequential sum's bits. v[i] = k·2^(E−150) with k < 2^24 (E
 * the exponent field, 1 for subnormals): with u = 2^(Emin−150) every term is an integer multiple
 * of u and |Σ| < n·|c|max·2^(24+Emax−Emin)·u; n·|c|max ≤ 2^cbits, so Emax − Emin ≤
 * 53 − 24 − cbits keeps every partial sum an integer multiple of u below 2^53·u. */
static inline __attribute__((always_inline)) bool
sum_exact(const float *v, const float *c, size_t n, int cbits) {
        /* branch-free, for the vectorizer: zeros (terms c[i] = 0 included) wrap to UINT32_MAX in
         * b − 1, out of the minimum */
        uint32_t mx = 0, mn1 = UINT32_MAX;
        for (size_t i = 0; i < n; i++) {
                uint32_t b;
                memcpy(&b, v + i, 4);
                b &= 0x7fffffffu;
                if (c)
                        b &= -(uint32_t) (c[i] != 0.0f);
                mx = b > mx ? b : mx;
                mn1 = b - 1 < mn1 ? b - 1 : mn1;
        }
        if (mn1 == UINT32_MAX)
                return true;
        int emax = (int) (mx >> 23), emin = MAX((int) ((mn1 + 1) >> 23), 1);
        return emax - emin <= 53 - 24 - cbits;
}

/* Σ v[i]·c[i] (c NULL: Σ v[i]) in double, in index order, or, where sum_exact() says every order
 * gives the same bits, in 8 lanes. n ≤ 128. */
static inline __attribute__((always_inline)) double
sum_double(const float *v, const float *c, size_t n, int cbits) {
        double s = 0.0;
        if (!sum_exact(v, c, n, cbits)) {
                for (size_t i = 0; i < n; i++)
                        s += c ? (double) v[i] * c[i] : (double) v[i];
                return s;
        }
        double acc[8] = {};
        size_t i = 0;
        for (; i + 8 <= n; i += 8)
                for (size_t k = 0; k < 8; k++)
                        acc[k] += c ? (double) v[i + k] * c[i + k] : (double) v[i + k];
        for (; i < n; i++)
                s += c ? (double) v[i] * c[i] : (double) v[i];
        for (size_t k = 0; k < 8; k++)
                s += acc[k];
        return s;
}

/* group_error() of one Q8_0/Q4_0 scale: the terms in vector lanes, their sum by sum_double(). */
static inline __attribute__((always_inline)) double group_error_symmetric(QdQuantType t, float d, const float *x,
                                                                         const float *w, size_t n) {
        float lo = t == QD_QTYPE_Q8_0 ? -127.0f : -8.0f, hi = t == QD_QTYPE_Q8_0 ? 127.0f : 7.0f, id = inv(d);
        float r2[128];
        for (size_t i = 0; i < n; i++) {
                float c = round_ne(CLAMP(x[i] * id, lo, hi));
                float r = x[i] - d * c;
                r2[i] = w ? w[i] * r * r : r * r;
        }
        return sum_double(r2, NULL, n, 7);
}

/* polish() for Q8_0/Q4_0 and n ≤ 128, with refit()'s arithmetic: the codes in vector lanes; Σc²
 * unweighted as an integer (exact, as refit()'s double sum of integers is); Σx·c by sum_double()
 * (|c| ≤ 8 or 127). */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void polish_symmetric(QdQuantType t, const float *x, const float *w, size_t n, QdGroupScale *best,
                             double *best_err) {
        float lo = t == QD_QTYPE_Q8_0 ? -127.0f : -8.0f, hi = t == QD_QTYPE_Q8_0 ? 127.0f : 7.0f;
        int cbits = 7 + (t == QD_QTYPE_Q8_0 ? 7 : 3);
        float c[128];
        for (int k = 0; k < 3; k++) {
                float id = inv(best->d);
                for (size_t i = 0; i < n; i++)
                        c[i] = round_ne(CLAMP(x[i] * id, lo, hi));
                double sc2 = 0.0, sxc = 0.0;
                if (w) {
                        for (size_t i = 0; i < n; i++) {
                                sc2 += (double) w[i] * c[i] * c[i];
                                sxc += (double) w[i] * x[i] * c[i];
                        }
                } else {
                        int isc2 = 0;
                        for (size_t i = 0; i < n; i++)
                                isc2 += (int) c[i] * (int) c[i];
                        sc2 = isc2;
                        sxc = sum_double(x, c, n, cbits);
                }
                if (!(sc2 > 0))
                        return;
                float d = (float) (sxc / sc2);
                fp16_round_n(&d, 1);
                if (d == 0.0f)
                        return;
                double e = group_error_symmetric(t, d, x, w, n);
                if (!(e < *best_err))
                        return;
                *best_err = e;
                *best = (QdGroupScale) { d, 0.0f };
        }
}

/* Scale for a symmetric range [-T, T] (signed_extreme: the extreme value with its sign, so that
 * Q4_0 maps it onto -8 as ggml does). */
static QdGroupScale scale_symmetric(QdQuantType t, float signed_extreme, float f) {
        switch (t) {
        case QD_QTYPE_Q8_0:
                return (QdGroupScale) { fp16_round(fabsf(signed_extreme) * f / 127.0f), 0.0f };
        case QD_QTYPE_Q4_0:
                return (QdGroupScale) { fp16_round(signed_extreme * f / -8.0f), 0.0f };
        case QD_QTYPE_NF4:
                return (QdGroupScale) { fp16_round(fabsf(signed_extreme) * f), 0.0f };
        default:
                return (QdGroupScale) { 0.0f, 0.0f };
        }
}

static QdGroupScale scale_asymmetric(float lo, float hi) {
        if (!(hi > lo))
                return (QdGroupScale) { 0.0f, fp16_round(lo) };
        return (QdGroupScale) { fp16_round((hi - lo) / 15.0f), fp16_round(lo) };
}

/* Groups are at most 128 long: insertion sort beats qsort's calls. */
static void sort_floats(float *v, size_t n) {
        for (size_t i = 1; i < n; i++) {
                float t = v[i];
                size_t j = i;
                for (; j > 0 && v[j - 1] > t; j--)
                        v[j] = v[j - 1];
                v[j] = t;
        }
}

/* Linear interpolation between order statistics of a sorted array, q in [0, 1]. */
static float quantile_sorted(const float *v, size_t n, double q) {
        double pos = q * (double) (n - 1);
        size_t i = (size_t) floor(pos);
        if (i + 1 >= n)
                return v[n - 1];
        double fr = pos - (double) i;
        return (float) ((1.0 - fr) * v[i] + fr * v[i + 1]);
}

/* max |x[i]| of a group as the bits of a float: |x| orders as its bits do, so an integer maximum in
 * vector lanes; ≥ 0x7f800000 when some x[i] is not finite. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static uint32_t absmax_bits(const float *x, size_t n) {
        uint32_t m = 0;
        for (size_t i = 0; i < n; i++) {
                uint32_t b;
                memcpy(&b, x + i, 4);
                b &= 0x7fffffffu;
                m = b > m ? b : m;
        }
        return m;
}

/* fast: Q8_0/Q4_0 by group_errors_symmetric() and polish_symmetric(); else every candidate by
 * group_error() and polish(), the straightforward search that the fast one must match. */
static int group_scale(const QdQuantParams *p, const float *x, const float *w, size_t n, QdGroupScale *ret,
                       bool fast) {
        if (!p || !x || !ret || n == 0 || !type_valid(p->type) || p->range < 0 ||
            p->range >= _QD_RANGE_MAX)
                return -EINVAL;

        QdQuantType t = p->type;
        float lo = x[0], hi = x[0], ext = x[0];
        if (fast && t != QD_QTYPE_Q4_1) {
                /* only ext counts: the first x[i] of greatest |x[i]| */
                uint32_t m = absmax_bits(x, n);
                if (m >= 0x7f800000u)
                        return -EINVAL;
                for (size_t i = 0; i < n; i++) {
                        uint32_t b;
                        memcpy(&b, x + i, 4);
                        if ((b & 0x7fffffffu) == m) {
                                ext = x[i];
                                break;
                        }
                }
        } else
                for (size_t i = 0; i < n; i++) {
                        if (!isfinite(x[i]))
                                return -EINVAL;
                        lo = MIN(lo, x[i]);
                        hi = MAX(hi, x[i]);
                        if (fabsf(x[i]) > fabsf(ext))
                                ext = x[i];
                }

        QdGroupScale s = t == QD_QTYPE_Q4_1 ? scale_asymmetric(lo, hi) : scale_symmetric(t, ext, 1.0f);
        if (p->range == QD_RANGE_MINMAX || (hi == lo && t == QD_QTYPE_Q4_1) || ext == 0.0f) {
                *ret = s;
                return 0;
        }

        if (p->range == QD_RANGE_PERCENTILE) {
                double pc = p->percentile > 0 ? p->percentile : 99.0;
                if (!(pc > 50.0 && pc <= 100.0))
                        return -EINVAL;
                float v[128];
                if (n > ELEMENTSOF(v))
                        return -EINVAL;
                if (t == QD_QTYPE_Q4_1) {
                        memcpy(v, x, n * sizeof(float));
                        sort_floats(v, n);
                        s = scale_asymmetric(quantile_sorted(v, n, 1.0 - pc / 100.0),
                                             quantile_sorted(v, n, pc / 100.0));
                } else {
                        for (size_t i = 0; i < n; i++)
                                v[i] = fabsf(x[i]);
                        sort_floats(v, n);
                        float T = quantile_sorted(v, n, pc / 100.0);
                        s = scale_symmetric(t, ext, T / fabsf(ext));
                }
                *ret = s;
                return 0;
        }

        /* QD_RANGE_CLIP: min-max is the first candidate, so the result is never worse. */
        unsigned grid = p->clip_grid ? p->clip_grid : 20;
        float fmin = p->clip_min > 0 ? p->clip_min : 0.5f;
        if (!(fmin < 1.0f))
                return -EINVAL;
        QdGroupScale best = s;
        bool batch = fast && (t == QD_QTYPE_Q4_0 || t == QD_QTYPE_Q8_0) && 2 * (grid + 1) <= MAX_CANDIDATES &&
                     n <= 128;
        /* the batch scores min-max as its first candidate (f = 1) */
        double best_err = batch ? INFINITY : group_error(t, &s, x, w, n);

        if (t == QD_QTYPE_Q4_1) {
                /* Coordinate search: shrink both ends together, then each end alone from the
                 * best pair, by up to (1 - fmin)/2 of the span (3·(grid/2) candidates instead of
                 * the (grid/2)² of a full 2-D grid, for nearly the same error). */
                float span = hi - lo, maxcut = 0.5f * (1.0f - fmin) * span;
                unsigned steps = MAX(grid / 2, 1u);
                float cut_lo = 0.0f, cut_hi = 0.0f;
                for (int pass = 0; pass < 3; pass++) {
                        float base_lo = cut_lo, base_hi = cut_hi;
                        for (unsigned a = 1; a <= steps; a++) {
                                float c = maxcut * (float) a / (float) steps;
                                float cl = pass == 2 ? base_lo : c, ch = pass == 1 ? base_hi : c;
                                if (pass == 1)
                                        cl = base_lo + c * 0.5f;
                                if (pass == 2)
                                        ch = base_hi + c * 0.5f;
                                QdGroupScale cand = scale_asymmetric(lo + cl, hi - ch);
                                double before = best_err;
                                if (cand.d > 0.0f)
                                        consider(t, &cand, x, w, n, &best, &best_err);
                                if (best_err < before) {
                                        cut_lo = cl;
                                        cut_hi = ch;
                                }
                        }
                }
        } else if (batch) {
                /* The same candidates in the same order as the loop below, errors all at once;
                 * the first (f = 1) is min-max, s. */
                float d[MAX_CANDIDATES];
                double err[MAX_CANDIDATES];
                size_t nc = 0;
                for (unsigned i = 0; i <= grid; i++) {
                        float f = 1.0f - (1.0f - fmin) * (float) i / (float) grid;
                        d[nc++] = t == QD_QTYPE_Q8_0 ? fabsf(ext) * f / 127.0f : ext * f / -8.0f;
                        if (t == QD_QTYPE_Q4_0)
                                d[nc++] = ext * f / 7.0f;
                }
                fp16_round_n(d, nc);
                /* errors of blocks that cannot win come back as +∞: the first least one is the
                 * same */
                group_errors_symmetric(t, d, nc, x, w, n, err);
                best_err = err[0];
                for (size_t k = 1; k < nc; k++)
                        if (err[k] < best_err) {
                                best_err = err[k];
                                best = (QdGroupScale) { d[k], 0.0f };
                        }
        } else {
                for (unsigned i = 0; i <= grid; i++) {
                        float f = 1.0f - (1.0f - fmin) * (float) i / (float) grid;
                        QdGroupScale c = scale_symmetric(t, ext, f);
                        consider(t, &c, x, w, n, &best, &best_err);
                        if (t == QD_QTYPE_Q4_0) {
                                /* The extreme may also land on +7 instead of -8. */
                                c = (QdGroupScale) { fp16_round(ext * f / 7.0f), 0.0f };
                                consider(t, &c, x, w, n, &best, &best_err);
                        }
                }
        }
        if (batch)
                polish_symmetric(t, x, w, n, &best, &best_err);
        else
                polish(t, x, w, n, &best, &best_err);
        *ret = best;
        return 0;
}

int qd_quant_group_scale(const QdQuantParams *p, const float *x, const float *w, size_t n,
                         QdGroupScale *ret) {
        return group_scale(p, x, w, n, ret, true);
}

int qd_quant_group_scale_ref(const QdQuantParams *p, const float *x, const float *w, size_t n,
                             QdGroupScale *ret) {
        return group_scale(p, x, w, n, ret, false);
}

void qd_quant_pack_block(QdQuantType t, unsigned group_size, const QdGroupScale *s,
                         const int8_t *codes, void *dst) {
        uint8_t *b = dst;
        uint16_t d = qd_fp32_to_fp16(s->d);
        memcpy(b, &d, 2);
        if (t == QD_QTYPE_Q4_1) {
                uint16_t m = qd_fp32_to_fp16(s->m);
                memcpy(b + 2, &m, 2);
        }
        uint8_t *qs = b + header_bytes(t);
        if (t == QD_QTYPE_Q8_0) {
                memcpy(qs, codes, group_size);
                return;
        }
        int off = t == QD_QTYPE_Q4_0 ? 8 : 0;
        unsigned h = group_size / 2;
        for (unsigned j = 0; j < h; j++)
                qs[j] = (uint8_t) ((codes[j] + off) | ((codes[j + h] + off) << 4));
}

/* ggml's truncating nibble: MIN(15, (int8_t) v) for v >= 0. */
static inline int ggml_nibble(float v) {
        if (!(v >= 0.0f))
                return 0;
        return MIN(15, (int) MIN(v, 127.0f));
}

/* MINMAX exactly as ggml's quantize_row_{q8_0,q4_0,q4_1}_ref, for any group size: the codes are
 * taken with the f32 scale before it is rounded to fp16 (and Q8_0 rounds half away from zero,
 * the 4-bit types truncate v + 0.5), so g = 32 gives llama-quantize's bytes. Codes here may
 * differ from qd_quant_code() on the stored scale in rare near-ties. */
static void ggml_minmax_codes(QdQuantType t, const float *x, unsigned g, QdGroupScale *ret,
                              int8_t *codes) {
        float amax = 0.0f, max = 0.0f, lo = x[0], hi = x[0];
        for (unsigned j = 0; j < g; j++) {
                if (amax < fabsf(x[j])) {
                        amax = fabsf(x[j]);
                        max = x[j];
                }
                lo = MIN(lo, x[j]);
                hi = MAX(hi, x[j]);
        }
        float d, id;
        switch (t) {
        case QD_QTYPE_Q8_0:
                d = amax / 127;
                id = d != 0.0f ? 1.0f / d : 0.0f;
                for (unsigned j = 0; j < g; j++)
                        codes[j] = (int8_t) CLAMP(roundf(x[j] * id), -127.0f, 127.0f);
                *ret = (QdGroupScale) { fp16_round(d), 0.0f };
                return;
        case QD_QTYPE_Q4_0:
                d = max / -8;
                id = d != 0.0f ? 1.0f / d : 0.0f;
                for (unsigned j = 0; j < g; j++)
                        codes[j] = (int8_t) (ggml_nibble(x[j] * id + 8.5f) - 8);
                *ret = (QdGroupScale) { fp16_round(d), 0.0f };
                return;
        default: /* Q4_1 */
                d = (hi - lo) / 15;
                id = d != 0.0f ? 1.0f / d : 0.0f;
                for (unsigned j = 0; j < g; j++)
                        codes[j] = (int8_t) ggml_nibble((x[j] - lo) * id + 0.5f);
                *ret = (QdGroupScale) { fp16_round(d), fp16_round(lo) };
                return;
        }
}

int qd_quant_row(const QdQuantParams *p, const float *x, const float *w, size_t n, void *dst) {
        if (!p || !x || !dst)
                return -EINVAL;
        unsigned g = p->group_size ? p->group_size : 32;
        size_t bb = qd_quant_block_bytes(p->type, g);
        if (bb == 0 || n % g != 0)
                return -EINVAL;

        int8_t codes[128];
        for (size_t k = 0; k < n / g; k++) {
                const float *xg = x + k * g;
                QdGroupScale s;
                if (p->range == QD_RANGE_MINMAX && p->type != QD_QTYPE_NF4) {
                        for (unsigned j = 0; j < g; j++)
                                if (!isfinite(xg[j]))
                                        return -EINVAL;
                        ggml_minmax_codes(p->type, xg, g, &s, codes);
                        qd_quant_pack_block(p->type, g, &s, codes, (uint8_t *) dst + k * bb);
                        continue;
                }
                int r = qd_quant_group_scale(p, xg, w ? w + k * g : NULL, g, &s);
                if (r < 0)
                        return r;
                float id = inv(s.d);
                for (unsigned j = 0; j < g; j++)
                        codes[j] = (int8_t) code_of(p->type, id, s.d, s.m, xg[j]);
                qd_quant_pack_block(p->type, g, &s, codes, (uint8_t *) dst + k * bb);
        }
        return 0;
}

static int ggml_type_of(QdQuantType t) {
        switch (t) {
        case QD_QTYPE_Q8_0:
                return GGML_TYPE_Q8_0;
        case QD_QTYPE_Q4_0:
                return GGML_TYPE_Q4_0;
        case QD_QTYPE_Q4_1:
                return GGML_TYPE_Q4_1;
        default:
                return -1;
        }
}

int qd_dequant_row(QdQuantType t, unsigned group_size, const void *src, float *dst, size_t n) {
        if (!src || !dst)
                return -EINVAL;
        size_t bb = qd_quant_block_bytes(t, group_size);
        if (bb == 0 || n % group_size != 0)
                return -EINVAL;
        if (group_size == 32 && ggml_type_of(t) >= 0)
                return ggml_dequantize_row((uint32_t) ggml_type_of(t), src, dst, n);

        /* quantd's longer groups and NF4: same fields as the GGUF blocks, longer qs. */
        const uint8_t *b = src;
        unsigned h = group_size / 2;
        for (size_t k = 0; k < n / group_size; k++, b += bb) {
                uint16_t dh, mh = 0;
                memcpy(&dh, b, 2);
                if (t == QD_QTYPE_Q4_1)
                        memcpy(&mh, b + 2, 2);
                QdGroupScale s = { qd_fp16_to_fp32(dh), qd_fp16_to_fp32(mh) };
                const uint8_t *qs = b + header_bytes(t);
                float *y = dst + k * group_size;
                if (t == QD_QTYPE_Q8_0) {
                        for (unsigned j = 0; j < group_size; j++)
                                y[j] = s.d * (float) (int8_t) qs[j];
                        continue;
                }
                int off = t == QD_QTYPE_Q4_0 ? 8 : 0;
                for (unsigned j = 0; j < h; j++) {
                        y[j] = qd_quant_code_value(t, &s, (qs[j] & 15) - off);
                        y[j + h] = qd_quant_code_value(t, &s, (qs[j] >> 4) - off);
                }
        }
        return 0;
}

typedef struct MatrixJob {
        const QdQuantParams *p;
        const float *w, *importance;
        size_t rows, cols, row_bytes;
        unsigned g;
        uint8_t *dst;
        float *deq;
} MatrixJob;

#define MATRIX_TILE 16

static int matrix_tile(void *userdata, size_t tile) {
        MatrixJob *j = userdata;
        size_t end = MIN((tile + 1) * MATRIX_TILE, j->rows);
        for (size_t i = tile * MATRIX_TILE; i < end; i++) {
                uint8_t *q = j->dst + i * j->row_bytes;
                int r = qd_quant_row(j->p, j->w + i * j->cols, j->importance, j->cols, q);
                if (r < 0)
                        return r;
                if (j->deq) {
                        r = qd_dequant_row(j->p->type, j->g, q, j->deq + i * j->cols, j->cols);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int qd_quant_matrix(const QdQuantParams *p, const float *w_in, const float *importance,
                    size_t rows, size_t cols, unsigned n_threads, void *dst, float *ret_deq) {
        if (!p || !w_in || !dst)
                return -EINVAL;
        MatrixJob j = {
                .p = p,
                .w = w_in,
                .importance = importance,
                .rows = rows,
                .cols = cols,
                .g = p->group_size ? p->group_size : 32,
                .dst = dst,
                .deq = ret_deq,
        };
        int r = qd_quant_row_size(p->type, j.g, cols, &j.row_bytes);
        if (r < 0)
                return r;
        return qd_parallel_for(DIV_ROUND_UP(rows, MATRIX_TILE), n_threads, matrix_tile, &j);
}
