/* Matrix products Y = W·X: picks the kernel variant for the device (matrix-vector, batched
 * matrix-vector, tiled matrix-matrix, int-dot) and records its dispatches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "vk-internal.h"

#define MATVEC_MAX_COLS 8u
#define MAX_GROUPS_X 65535u
#define XQ_BLOCK_BYTES 40u   /* dot.glsl: 32 int8 values, scale and sum per block of 32 */

typedef struct MatPush {
        uint32_t m, k, n, gx;
} MatPush;

static const struct {
        const char *name;
        uint32_t block, bytes;   /* elements per block, bytes per block */
} wtypes[_QVK_W_MAX] = {
        [QVK_W_F32] = { "f32", 1, 4 },
        [QVK_W_F16] = { "f16", 1, 2 },
        [QVK_W_Q8_0] = { "q8_0", 32, 34 },
        [QVK_W_Q4_0] = { "q4_0", 32, 18 },
        [QVK_W_Q4_1] = { "q4_1", 32, 20 },
};

const char *qvk_weight_type_name(QvkWeightType t) {
        return t < _QVK_W_MAX ? wtypes[t].name : NULL;
}

uint64_t qvk_weight_row_bytes(QvkWeightType t, uint32_t k) {
        if (t >= _QVK_W_MAX)
                return 0;
        return (uint64_t) k / wtypes[t].block * wtypes[t].bytes;
}

static bool is_block_type(QvkWeightType t) {
        return wtypes[t].block > 1;
}

/* 8/16-bit storage for fp16 values and block bytes, else the _u32 variants. */
static bool fast_storage(QvkDevice *d) {
        return d->features.storage8 && d->features.storage16;
}

static bool use_int_dot(QvkDevice *d, QvkWeightType wt, uint32_t n) {
        return d->features.int_dot && is_block_type(wt) && n <= MATVEC_MAX_COLS;
}

static bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

static uint32_t env_u32(const char *name, uint32_t def) {
        const char *e = getenv(name);
        char *end;
        unsigned long v;

        if (!e || !*e)
                return def;
        v = strtoul(e, &end, 0);
        return *end || v == 0 || v > 1024 ? def : (uint32_t) v;
}

/* Workgroup size (power of two, for the shared-memory reduction) and rows per workgroup of
 * the matrix-vector kernels; $QUANTD_VK_MATVEC_WG / _ROWS override them for tuning. */
static void matvec_shape(uint32_t *ret_wg, uint32_t *ret_rows) {
        uint32_t wg = env_u32("QUANTD_VK_MATVEC_WG", 128), rows = env_u32("QUANTD_VK_MATVEC_ROWS", 2);

        if (wg & (wg - 1))
                wg = 128;
        *ret_wg = wg;
        *ret_rows = MIN(rows, 8u);
}

/* The same for the int-dot kernel: $QUANTD_VK_MATVEC_DOT_WG / _ROWS. */
static void matvec_dot_shape(uint32_t *ret_wg, uint32_t *ret_rows) {
        uint32_t wg = env_u32("QUANTD_VK_MATVEC_DOT_WG", 128), rows = env_u32("QUANTD_VK_MATVEC_DOT_ROWS", 2);

        if (wg & (wg - 1))
                wg = 128;
        *ret_wg = wg;
        *ret_rows = MIN(rows, 8u);
}

static void variant_name(QvkDevice *d, QvkWeightType wt, bool x_f16, uint32_t k, uint32_t n, char *buf,
                         size_t len, const char **ret_kind) {
        const char *st = fast_storage(d) ? "" : "_u32";
        const char *sg = d->subgroup_fast ? "" : "_nosg";

        if (n > MATVEC_MAX_COLS && d->coopmat) {
                /* _f: unconditional 16-byte loads, k % 8 == 0 only; _fn64: that with 128 x 64
                 * tiles (twice the workgroups), $QUANTD_VK_COOPMAT_TILE_N=64. On the H100 it wins
                 * where the grid is small (1024x4096x512: 91 vs 116 us) and loses where it fills
                 * the GPU (4096x4096x512: 184 vs 125 us); TODO: pick it by grid size. */
                bool n64 = env_u32("QUANTD_VK_COOPMAT_TILE_N", 128) == 64;
                const char *cm = k % 8 ? "" : n64 ? "_fn64" : "_f";
                snprintf(buf, len, "matmul_coopmat%s_%s_%s%s", cm, wtypes[wt].name, x_f16 ? "f16" : "f32",
                         st);
                *ret_kind = "matmul_coopmat";
        } else if (n > MATVEC_MAX_COLS) {
                snprintf(buf, len, "matmul_%s_%s%s", wtypes[wt].name, x_f16 ? "f16" : "f32", st);
                *ret_kind = "matmul";
        } else if (use_int_dot(d, wt, n)) {
                snprintf(buf, len, "matvec_dot_%s%s%s", wtypes[wt].name, st, sg);
                *ret_kind = "matvec_dot";
        } else {
                snprintf(buf, len, "matvec_%s_%s%s%s", wtypes[wt].name, x_f16 ? "f16" : "f32", st, sg);
                *ret_kind = "matvec";
        }
}

const char *qvk_matmul_kernel(QvkDevice *d, QvkWeightType wt, bool x_f16, uint32_t k, uint32_t n) {
        static _Thread_local char out[128];
        char name[96];
        const char *kind;

        if (wt >= _QVK_W_MAX || n == 0)
                return NULL;
        variant_name(d, wt, x_f16, k, n, name, sizeof(name), &kind);
        if (n > MATVEC_MAX_COLS)
                snprintf(out, sizeof(out), "%s", name);
        else
                snprintf(out, sizeof(out), "%s n=%u", name, n);
        return out;
}

uint64_t qvk_matmul_scratch_bytes(QvkDevice *d, uint32_t k, uint32_t n) {
        /* Enough for every call of up to n columns: callers size one buffer for a whole batch
         * and then also run shorter ones, which may take the int-dot path. */
        if (!d->features.int_dot)
                return 0;
        return (uint64_t) MIN(n, MATVEC_MAX_COLS) * DIV_ROUND_UP(k, 32u) * XQ_BLOCK_BYTES;
}

static void grid(uint32_t groups, uint32_t *ret_x, uint32_t *ret_y) {
        uint32_t gx = MIN(groups, MAX_GROUPS_X);

        *ret_x = gx;
        *ret_y = DIV_ROUND_UP(groups, gx);
}

/* The int-dot matrix-vector kernel over activations already quantized into xq. */
static int matvec_dot(QvkCmd *c, const char *name, QvkBinding w, uint32_t m, uint32_t k, QvkBinding xq,
                      uint32_t n, QvkBinding y) {
        QvkDevice *d = qvk_cmd_device(c);
        uint32_t wg, rows, gx, gy;
        QvkPipeline *p;
        int r;

        matvec_dot_shape(&wg, &rows);
        uint32_t spec[] = { wg, rows, n };
        MatPush push = { m, k, n, 0 };
        QvkBinding b[3] = { w, xq, y };
        r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), 3, sizeof(push), &p);
        if (r < 0)
                return r;
        grid(DIV_ROUND_UP(m, rows), &gx, &gy);
        push.gx = gx;
        return qvk_cmd_dispatch(c, p, b, 3, 1u << 2, &push, sizeof(push), gx, gy, 1);
}

int qvk_matmul(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k,
               QvkBinding x, bool x_f16, uint32_t n, QvkBinding y, QvkBinding scratch) {
        QvkDevice *d = qvk_cmd_device(c);
        QvkBinding b[3];
        QvkPipeline *p;
        MatPush push = { m, k, n, 0 };
        char name[96];
        const char *kind;
        uint32_t gx, gy;
        int r;

        if (wt >= _QVK_W_MAX || !w.buf || !x.buf || !y.buf)
                return -EINVAL;
        if (m == 0 || k == 0 || n == 0)
                return 0;
        if (is_block_type(wt) && k % 32)
                return -EINVAL;
        /* The kernels read weights, activations and scratch with 16-byte vector loads. */
        if (w.offset % 16 || x.offset % 16 || scratch.offset % 16)
                return -EINVAL;
        variant_name(d, wt, x_f16, k, n, name, sizeof(name), &kind);

        if (startswith(kind, "matmul")) {
                bool cm = streq(kind, "matmul_coopmat");
                uint32_t spec[] = { 256 }, tile = cm ? 128 : 64;
                uint32_t tile_n = cm && !strstr(name, "n64") ? 128 : 64;
                if (DIV_ROUND_UP(m, tile) > MAX_GROUPS_X || DIV_ROUND_UP(n, tile_n) > MAX_GROUPS_X)
                        return -E2BIG;
                r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), 3, sizeof(push), &p);
                if (r < 0)
                        return r;
                push.gx = DIV_ROUND_UP(m, tile);
                b[0] = w, b[1] = x, b[2] = y;
                return qvk_cmd_dispatch(c, p, b, 3, 1u << 2, &push, sizeof(push), push.gx,
                                        DIV_ROUND_UP(n, tile_n), 1);
        }

        if (streq(kind, "matvec_dot")) {
                if (!scratch.buf || qvk_buffer_size(scratch.buf) - scratch.offset <
                                            qvk_matmul_scratch_bytes(d, k, n))
                        return -ENOBUFS;
                r = qvk_quantize_act(c, x, x_f16, k, n, scratch);
                if (r < 0)
                        return r;
                return matvec_dot(c, name, w, m, k, scratch, n, y);
        }

        uint32_t wg, rows;
        matvec_shape(&wg, &rows);
        uint32_t spec[] = { wg, rows, n };
        b[0] = w, b[1] = x, b[2] = y;
        r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), 3, sizeof(push), &p);
        if (r < 0)
                return r;
        grid(DIV_ROUND_UP(m, rows), &gx, &gy);
        push.gx = gx;
        return qvk_cmd_dispatch(c, p, b, 3, 1u << 2, &push, sizeof(push), gx, gy, 1);
}

bool qvk_matmul_wants_q8(QvkDevice *d, QvkWeightType wt, uint32_t k, uint32_t n) {
        return wt < _QVK_W_MAX && n > 0 && k % 32 == 0 && use_int_dot(d, wt, n);
}

uint64_t qvk_q8_bytes(uint32_t k, uint32_t n) {
        return (uint64_t) n * DIV_ROUND_UP(k, 32u) * XQ_BLOCK_BYTES;
}

int qvk_quantize_act(QvkCmd *c, QvkBinding x, bool x_f16, uint32_t k, uint32_t n, QvkBinding xq) {
        QvkDevice *d = qvk_cmd_device(c);
        MatPush push = { 0, k, n, 0 };
        uint32_t spec[] = { 64 }, blocks = n * (k / 32), gx, gy;
        char name[64];
        QvkPipeline *p;
        int r;

        if (!x.buf || !xq.buf || k % 32 || x.offset % 16 || xq.offset % 16)
                return -EINVAL;
        snprintf(name, sizeof(name), "quantize_act_%s%s", x_f16 ? "f16" : "f32", fast_storage(d) ? "" : "_u32");
        r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), 2, sizeof(push), &p);
        if (r < 0)
                return r;
        grid(DIV_ROUND_UP(blocks, 64u), &gx, &gy);
        push.gx = gx;
        QvkBinding b[2] = { x, xq };
        return qvk_cmd_dispatch(c, p, b, 2, 1u << 1, &push, sizeof(push), gx, gy, 1);
}

int qvk_matmul_q8(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k, QvkBinding xq,
                  uint32_t n, QvkBinding y) {
        QvkDevice *d = qvk_cmd_device(c);
        char name[96];
        const char *kind;

        if (!w.buf || !xq.buf || !y.buf || !qvk_matmul_wants_q8(d, wt, k, n))
                return -EINVAL;
        if (w.offset % 16 || xq.offset % 16)
                return -EINVAL;
        if (m == 0)
                return 0;
        variant_name(d, wt, false, k, n, name, sizeof(name), &kind);
        return matvec_dot(c, name, w, m, k, xq, n, y);
}
