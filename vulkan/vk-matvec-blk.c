/* The decode step's "blk" epilogues (vk.h, shaders/matvec_blk.comp): matrix-vector products
 * on repacked int-dot rows (and F16 rows) whose workgroups each own whole blocks of 32 outputs, so that
 * the residual add + RMSNorm and SiLU·up after them need neither a dispatch of their own nor a
 * counter between workgroups. */
#include <stdio.h>

#include "macro.h"
#include "vk-internal.h"

#define BLK_MAX_GROUPS_X 65535u

bool qvk_matvec_blk_ok(QvkDevice *d, QvkWeightType wt, uint32_t m, uint32_t k) {
        if (m == 0 || m % 32 || k == 0)
                return false;
        if (wt == QVK_W_F16)
                return k % 8 == 0;
        return d->features.int_dot && wt < _QVK_W_MAX && qvk_weight_repacked(wt) && k % 32 == 0;
}

/* Invocations per workgroup and per row, and 16-byte units of each of its rows an invocation
 * loads before using them: $QUANTD_VK_BLK_WG and $QUANTD_VK_BLK_T (each invocation takes every
 * T-th unit of its rows, WG / T rows at a time); powers of two with WG / T dividing 32 and WG >=
 * 32, else the defaults: as many invocations as the device allows up to 1024, so that a
 * workgroup runs its block's 32 rows at once (1024 x 32 on the H100: a subgroup per row).
 * $QUANTD_VK_BLK_UN (1-8, default 2). On the H100 (docs/PERFORMANCE.md) 1024 x 32 x 2 decoded
 * Q4_0 at 382 tok/s where 256 x 16 x 4/2 gave 290 and 512 x 16 x 4 369: wo / down have only
 * 4096 / 32 = 128 workgroups, one per SM, which must keep a whole block's rows in flight. */
static void blk_shape(QvkDevice *d, uint32_t *ret_wg, uint32_t *ret_t, uint32_t *ret_un) {
        uint32_t wg0 = 32;
        while (wg0 < 1024 && wg0 * 2 <= d->features.max_workgroup_invocations)
                wg0 *= 2;
        uint32_t wg = qvk_env_u32("QUANTD_VK_BLK_WG", wg0, 1024), t = qvk_env_u32("QUANTD_VK_BLK_T", wg / 32, 1024);
        uint32_t un = qvk_env_u32("QUANTD_VK_BLK_UN", 2, 8);

        if (wg < 32 || wg > d->features.max_workgroup_invocations || (wg & (wg - 1)) || t == 0 || (t & (t - 1)) ||
            t > wg || wg / t > 32)
                wg = wg0, t = wg0 / 32;
        *ret_wg = wg;
        *ret_t = t;
        *ret_un = MAX(un, 1u);
}

int qvk_matvec_blk(QvkCmd *c, QvkMatvecBlk e, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k,
                   QvkBinding xq, QvkBinding ps, QvkBinding y, const QvkBinding *extra, float eps) {
        QvkDevice *d = qvk_cmd_device(c);
        struct {
                uint32_t m, k, n, gx;
                float eps;
        } push = { m, k, 1, 0, eps };
        bool norm = e == QVK_BLK_NORM, f16 = wt == QVK_W_F16;
        uint32_t n_extra = norm ? 4 : f16 ? 0 : 1, nb = 3, writes = 1u << 2, wg, t, un;
        QvkBinding b[8] = { w, xq, y };
        QvkPipeline *p;
        char name[64];
        int r;

        if (e < 0 || e >= _QVK_BLK_MAX || !qvk_matvec_blk_ok(d, wt, m, k))
                return -EOPNOTSUPP;
        if (!w.buf || !xq.buf || !y.buf || (n_extra && !extra) || w.offset % 16 || xq.offset % 16)
                return -EINVAL;
        for (uint32_t i = 0; i < n_extra; i++) {
                if (!extra[i].buf)
                        return -EINVAL;
                b[nb++] = extra[i];
        }
        writes |= norm ? (1u << 5) | (1u << 6) : f16 ? 0 : 1u << 3;
        if (ps.buf)
                b[nb++] = ps;
        blk_shape(d, &wg, &t, &un);
        snprintf(name, sizeof(name), "matvec_blk_%s_%s%s", qvk_weight_type_name(wt), norm ? "norm" : "glu",
                 ps.buf ? "_ps" : "");
        uint32_t spec[] = { wg, t, un };
        r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), nb, sizeof(push), &p);
        if (r < 0)
                return r;
        uint32_t groups = m / 32, gx = MIN(groups, BLK_MAX_GROUPS_X);
        push.gx = gx;
        return qvk_cmd_dispatch(c, p, b, nb, writes, &push, sizeof(push), gx, DIV_ROUND_UP(groups, gx), 1);
}
