/* Activation range calibration: absmax, histogram percentile, and TensorRT's entropy (KL
 * divergence) threshold search over a streaming histogram of |x|. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "quant.h"

struct QdCalib {
        double bins[QD_CALIB_BINS];
        float range;            /* bins cover [0, range]; 0 until a non-zero value arrived */
        float absmax;
        uint64_t count;
};

int qd_calib_new(QdCalib **ret) {
        QdCalib *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *ret = c;
        return 0;
}

QdCalib *qd_calib_free(QdCalib *c) {
        free(c);
        return NULL;
}

float qd_calib_absmax(const QdCalib *c) {
        return c ? c->absmax : 0.0f;
}

/* Doubles the range until it covers m: bin k takes bins 2k and 2k+1 (ONNX Runtime re-bins
 * likewise), so counts already collected stay exact at the coarser resolution. */
static void widen(QdCalib *c, float m) {
        if (c->range == 0.0f) {
                c->range = m;
                return;
        }
        while (c->range < m) {
                for (size_t k = 0; k < QD_CALIB_BINS / 2; k++)
                        c->bins[k] = c->bins[2 * k] + c->bins[2 * k + 1];
                memset(c->bins + QD_CALIB_BINS / 2, 0, sizeof(double) * (QD_CALIB_BINS / 2));
                c->range *= 2.0f;
        }
}

int qd_calib_add(QdCalib *c, const float *x, size_t n) {
        if (!c || (!x && n > 0))
                return -EINVAL;
        float m = 0.0f;
        for (size_t i = 0; i < n; i++) {
                if (!isfinite(x[i]))
                        return -EINVAL;
                m = MAX(m, fabsf(x[i]));
        }
        c->absmax = MAX(c->absmax, m);
        if (m > c->range)
                widen(c, m);
        c->count += n;
        if (c->range == 0.0f) {
                c->bins[0] += (double) n;
                return 0;
        }
        float scale = QD_CALIB_BINS / c->range;
        for (size_t i = 0; i < n; i++) {
                size_t b = (size_t) (fabsf(x[i]) * scale);
                c->bins[MIN(b, (size_t) QD_CALIB_BINS - 1)] += 1.0;
        }
        return 0;
}

static float percentile_threshold(const QdCalib *c, double pc) {
        double total = 0.0;
        for (size_t k = 0; k < QD_CALIB_BINS; k++)
                total += c->bins[k];
        double want = pc / 100.0 * total, cum = 0.0;
        float width = c->range / QD_CALIB_BINS;
        for (size_t k = 0; k < QD_CALIB_BINS; k++) {
                cum += c->bins[k];
                if (cum >= want)
                        return MIN((float) (k + 1) * width, c->absmax);
        }
        return c->absmax;
}

/* KL(P‖Q) for the first i bins, as NVIDIA's pytorch-quantization computes it for TensorRT:
 * P = hist[0..i) with all counts beyond folded into bin i-1; Q = hist[0..i) merged into `levels`
 * equal-width groups, each group's mass spread evenly over its non-empty bins. */
static double kl_candidate(const double *h, size_t i, unsigned levels, double outliers, double *p,
                           double *q) {
        double psum = 0.0;
        for (size_t k = 0; k < i; k++)
                psum += (p[k] = h[k]);
        p[i - 1] += outliers;
        psum += outliers;

        for (unsigned l = 0; l < levels; l++) {
                size_t b0 = (size_t) ((double) l * i / levels);
                size_t b1 = (size_t) ((double) (l + 1) * i / levels);
                if (l == levels - 1)
                        b1 = i;
                double mass = 0.0;
                size_t nz = 0;
                for (size_t k = b0; k < b1; k++)
                        if (h[k] != 0.0) {
                                mass += h[k];
                                nz++;
                        }
                for (size_t k = b0; k < b1; k++)
                        q[k] = h[k] != 0.0 ? mass / (double) nz : 0.0;
        }
        double qsum = 0.0;
        for (size_t k = 0; k < i; k++)
                qsum += q[k];
        if (psum <= 0.0 || qsum <= 0.0)
                return INFINITY;

        double kl = 0.0;
        for (size_t k = 0; k < i; k++) {
                if (p[k] == 0.0)
                        continue;
                if (q[k] == 0.0)
                        return INFINITY;
                double pk = p[k] / psum, qk = q[k] / qsum;
                kl += pk * log(pk / qk);
        }
        return kl;
}

static int entropy_threshold(const QdCalib *c, unsigned levels, float *ret) {
        if (levels < 2 || levels > QD_CALIB_BINS)
                return -EINVAL;
        double p[QD_CALIB_BINS], q[QD_CALIB_BINS];
        double suffix = 0.0;
        double best = INFINITY;
        size_t best_i = QD_CALIB_BINS;

        /* Walk i downwards so the outlier mass beyond i is a running sum. */
        for (size_t i = QD_CALIB_BINS; i >= levels; i--) {
                double kl = kl_candidate(c->bins, i, levels, suffix, p, q);
                if (kl < best) {
                        best = kl;
                        best_i = i;
                }
                suffix += c->bins[i - 1];
        }
        /* The upper edge of the last bin kept, as pytorch-quantization's calib_amax. */
        *ret = MIN((float) best_i * c->range / QD_CALIB_BINS, c->absmax);
        return 0;
}

int qd_calib_threshold(const QdCalib *c, QdCalibMethod m, double percentile, unsigned levels,
                       float *ret) {
        if (!c || !ret)
                return -EINVAL;
        if (c->count == 0)
                return -ENODATA;
        if (c->absmax == 0.0f) {
                *ret = 0.0f;
                return 0;
        }
        switch (m) {
        case QD_CALIB_MINMAX:
                *ret = c->absmax;
                return 0;
        case QD_CALIB_PERCENTILE: {
                double pc = percentile > 0 ? percentile : 99.99;
                if (!(pc > 0.0 && pc <= 100.0))
                        return -EINVAL;
                *ret = percentile_threshold(c, pc);
                return 0;
        }
        case QD_CALIB_ENTROPY:
                return entropy_threshold(c, levels ? levels : 128, ret);
        default:
                return -EINVAL;
        }
}
