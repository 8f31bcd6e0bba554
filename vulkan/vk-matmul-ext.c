/* Matrix products for the extended weight formats (vk.h, docs/QUANTIZATION.md): Q8_0/Q4_0/Q4_1
 * with groups of 64/128, NF4 (g = 32/64/128), FP8 E4M3 and INT8 with one f32 scale per row, and
 * ggml's K-quants Q4_K / Q6_K (super-blocks of 256).
 * Matrix-vector for n <= 8 (one pass over W for all columns) and a tiled matrix-matrix kernel
 * above, both dequantizing in registers with fp32 sums (shaders/{matvec,matmul}_ext.comp). */
#include <stdio.h>
#include <stdlib.h>

#include "macro.h"
#include "vk-internal.h"
#include "vk-matmul-ext.h"

#define EXT_MATVEC_MAX_COLS 8u
#define EXT_MAX_GROUPS_X 65535u
#define EXT_TILE 64u

typedef struct ExtPush {
        uint32_t m, k, n, gx;
} ExtPush;

static const struct {
        const char *name;     /* qvk_weight_type_name() */
        const char *shader;   /* shader format: matvec_ext_<shader>_... */
        uint32_t group;       /* elements per block; 0 = per-row scale */
        uint32_t bytes;       /* bytes per block */
} ext_types[_QVK_W_MAX] = {
        [QVK_W_Q8_0_G64] = { "q8_0_g64", "q8_0", 64, 66 },
        [QVK_W_Q8_0_G128] = { "q8_0_g128", "q8_0", 128, 130 },
        [QVK_W_Q4_0_G64] = { "q4_0_g64", "q4_0", 64, 34 },
        [QVK_W_Q4_0_G128] = { "q4_0_g128", "q4_0", 128, 66 },
        [QVK_W_Q4_1_G64] = { "q4_1_g64", "q4_1", 64, 36 },
        [QVK_W_Q4_1_G128] = { "q4_1_g128", "q4_1", 128, 68 },
        [QVK_W_NF4_G32] = { "nf4_g32", "nf4", 32, 18 },
        [QVK_W_NF4_G64] = { "nf4_g64", "nf4", 64, 34 },
        [QVK_W_NF4_G128] = { "nf4_g128", "nf4", 128, 66 },
        [QVK_W_FP8_ROW] = { "fp8_row", "fp8", 0, 0 },
        [QVK_W_I8_ROW] = { "i8_row", "i8", 0, 0 },
        [QVK_W_Q4_K] = { "q4_k", "q4_k", 256, 144 },
        [QVK_W_Q6_K] = { "q6_k", "q6_k", 256, 210 },
};

bool qvk_ext_type(QvkWeightType t) {
        return t < _QVK_W_MAX && ext_types[t].name;
}

const char *qvk_ext_type_name(QvkWeightType t) {
        return qvk_ext_type(t) ? ext_types[t].name : NULL;
}

/* Elements per group: the block, or 32 for the per-row formats (their 32-byte units). */
static uint32_t ext_group(QvkWeightType t) {
        return ext_types[t].group ? ext_types[t].group : 32;
}

uint64_t qvk_ext_row_bytes(QvkWeightType t, uint32_t k) {
        if (!qvk_ext_type(t) || k % ext_group(t))
                return 0;
        if (ext_types[t].group == 0)
                return (uint64_t) k + 16;  /* 16-byte header with the f32 scale, then the codes */
        return (uint64_t) k / ext_types[t].group * ext_types[t].bytes;
}

/* Workgroup size (a power of two: the shared-memory reduction halves it) and rows per
 * workgroup; $QUANTD_VK_MATVEC_EXT_WG / _ROWS override them for tuning. */
static void ext_matvec_shape(uint32_t *ret_wg, uint32_t *ret_rows) {
        uint32_t wg = qvk_env_u32("QUANTD_VK_MATVEC_EXT_WG", 128, 1024);

        *ret_wg = wg & (wg - 1) ? 128 : wg;
        *ret_rows = qvk_env_u32("QUANTD_VK_MATVEC_EXT_ROWS", 2, 8);
}

static void ext_variant(QvkDevice *d, QvkWeightType wt, bool x_f16, uint32_t n, char *buf, size_t len) {
        const char *act = x_f16 ? "f16" : "f32";

        if (n > EXT_MATVEC_MAX_COLS)
                snprintf(buf, len, "matmul_ext_%s_%s", ext_types[wt].shader, act);
        else
                snprintf(buf, len, "matvec_ext_%s_%s%s", ext_types[wt].shader, act,
                         d->subgroup_fast ? "" : "_nosg");
}

const char *qvk_ext_kernel(QvkDevice *d, QvkWeightType wt, bool x_f16, uint32_t k, uint32_t n) {
        static _Thread_local char out[128];
        char name[64];

        if (!qvk_ext_type(wt) || n == 0)
                return NULL;
        ext_variant(d, wt, x_f16, n, name, sizeof(name));
        if (n > EXT_MATVEC_MAX_COLS)
                snprintf(out, sizeof(out), "%s g=%u", name, ext_group(wt));
        else
                snprintf(out, sizeof(out), "%s g=%u n=%u", name, ext_group(wt), n);
        return out;
}

static uint64_t binding_size(QvkBinding b) {
        uint64_t total = qvk_buffer_size(b.buf);

        if (b.offset > total)
                return 0;
        return b.size ? MIN(b.size, total - b.offset) : total - b.offset;
}

int qvk_matmul_ext(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k, QvkBinding x,
                   bool x_f16, uint32_t n, QvkBinding y) {
        QvkDevice *d = qvk_cmd_device(c);
        ExtPush push = { m, k, n, 0 };
        QvkBinding b[3] = { w, x, y };
        QvkPipeline *p;
        uint64_t wbytes;
        char name[64];
        int r;

        if (!qvk_ext_type(wt) || !w.buf || !x.buf || !y.buf)
                return -EINVAL;
        if (m == 0 || k == 0 || n == 0)
                return 0;
        if (k % ext_group(wt))
                return -EINVAL;
        /* 16-byte vector loads of activations and of the per-row formats' rows. */
        if (w.offset % 16 || x.offset % 16)
                return -EINVAL;
        wbytes = qvk_ext_row_bytes(wt, k) * m;
        /* The shaders address bytes with 32-bit integers. */
        if (wbytes > UINT32_MAX || (uint64_t) n * k > UINT32_MAX / 2 || (uint64_t) n * m > UINT32_MAX)
                return -E2BIG;
        if (binding_size(w) < wbytes || binding_size(x) < (uint64_t) n * k * (x_f16 ? 2 : 4) ||
            binding_size(y) < (uint64_t) n * m * 4)
                return -EINVAL;
        ext_variant(d, wt, x_f16, n, name, sizeof(name));

        if (n > EXT_MATVEC_MAX_COLS) {
                uint32_t spec[] = { 256, ext_group(wt) };
                if (DIV_ROUND_UP(m, EXT_TILE) > EXT_MAX_GROUPS_X || DIV_ROUND_UP(n, EXT_TILE) > EXT_MAX_GROUPS_X)
                        return -E2BIG;
                r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), 3, sizeof(push), &p);
                if (r < 0)
                        return r;
                push.gx = DIV_ROUND_UP(m, EXT_TILE);
                return qvk_cmd_dispatch(c, p, b, 3, 1u << 2, &push, sizeof(push), push.gx,
                                        DIV_ROUND_UP(n, EXT_TILE), 1);
        }

        uint32_t wg, rows;
        ext_matvec_shape(&wg, &rows);
        uint32_t spec[] = { wg, rows, n, ext_group(wt) };
        uint32_t groups = DIV_ROUND_UP(m, rows), gx = MIN(groups, EXT_MAX_GROUPS_X);
        r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), 3, sizeof(push), &p);
        if (r < 0)
                return r;
        push.gx = gx;
        return qvk_cmd_dispatch(c, p, b, 3, 1u << 2, &push, sizeof(push), gx, DIV_ROUND_UP(groups, gx), 1);
}
