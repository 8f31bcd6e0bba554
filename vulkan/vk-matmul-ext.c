/* Matrix products for the extended weight formats (vk.h, docs/QUANTIZATION.md): Q8_0/Q4_0/Q4_1
 * with groups of 64/128, NF4 (g = 32/64/128), FP8 E4M3 and INT8 with one f32 scale per row, and
 * ggml's Q4_K / Q5_K / Q6_K (super-blocks of 256), Q5_0 and Q5_1.
 * Matrix-vector for n <= 8 (one pass over W for all columns) and a tiled matrix-matrix kernel
 * above, both dequantizing in registers with fp32 sums (shaders/{matvec,matmul}_ext.comp); on
 * cooperative-matrix devices n > 8 runs on an fp16 copy of W (dequant_ext.comp) and the F16
 * cooperative-matrix kernel. qvk_matmul_blocks(): a W made of row blocks in different formats. */
#include <stdio.h>
#include <stdlib.h>

#include "macro.h"
#include "vk-internal.h"
#include "vk-matmul-ext.h"

#define EXT_MATVEC_MAX_COLS 8u
#define EXT_MAX_GROUPS_X 65535u
#define EXT_TILE 64u

typedef struct ExtPush {
        uint32_t m, k, n, gx, ldy, y0;
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
        [QVK_W_Q5_0] = { "q5_0", "q5_0", 32, 22 },
        [QVK_W_Q5_K] = { "q5_k", "q5_k", 256, 176 },
        [QVK_W_Q5_1] = { "q5_1", "q5_1", 32, 24 },
};

/* The GGUF block types of vk-matmul.c, read by the same shaders with G = 32 where a row block of
 * a product in several formats (qvk_matmul_blocks) is one of them. */
static const struct {
        const char *shader;
        uint32_t group, bytes;
} rows_types[] = {
        [QVK_W_Q8_0] = { "q8_0", 32, 34 },
        [QVK_W_Q4_0] = { "q4_0", 32, 18 },
        [QVK_W_Q4_1] = { "q4_1", 32, 20 },
};

/* The shader format, group and block bytes of t for the kernels here; false where they do not
 * read it. */
static bool ext_format(QvkWeightType t, const char **ret_shader, uint32_t *ret_group, uint32_t *ret_bytes) {
        if (qvk_ext_type(t)) {
                *ret_shader = ext_types[t].shader;
                *ret_group = ext_types[t].group;
                *ret_bytes = ext_types[t].bytes;
                return true;
        }
        if (t < ELEMENTSOF(rows_types) && rows_types[t].shader) {
                *ret_shader = rows_types[t].shader;
                *ret_group = rows_types[t].group;
                *ret_bytes = rows_types[t].bytes;
                return true;
        }
        return false;
}

bool qvk_ext_type(QvkWeightType t) {
        return t < _QVK_W_MAX && ext_types[t].name;
}

const char *qvk_ext_type_name(QvkWeightType t) {
        return qvk_ext_type(t) ? ext_types[t].name : NULL;
}

/* Elements per group: the block, or 32 for the per-row formats (their 32-byte units). */
static uint32_t ext_group(QvkWeightType t) {
        const char *sh = NULL;
        uint32_t g = 0, bytes = 0;

        (void) ext_format(t, &sh, &g, &bytes);
        return g ? g : 32;
}

/* Row bytes of any format ext_format() knows. */
static uint64_t rows_row_bytes(QvkWeightType t, uint32_t k) {
        const char *sh = NULL;
        uint32_t g = 0, bytes = 0;

        if (!ext_format(t, &sh, &g, &bytes) || k % ext_group(t))
                return 0;
        if (g == 0)
                return (uint64_t) k + 16;  /* 16-byte header with the f32 scale, then the codes */
        return (uint64_t) k / g * bytes;
}

uint64_t qvk_ext_row_bytes(QvkWeightType t, uint32_t k) {
        return qvk_ext_type(t) ? rows_row_bytes(t, k) : 0;
}

/* Workgroup size (a power of two: the shared-memory reduction halves it) and rows per
 * workgroup; $QUANTD_VK_MATVEC_EXT_WG / _ROWS override them for tuning. Q4_K / Q6_K: 64
 * invocations (H100, 14336 × 4096 and 4096 × 14336, n = 1: 35.6 / 37.9 µs for Q4_K and 49.4 /
 * 51.7 for Q6_K against 36.6 / 38.1 and 53.5 / 52.5 at 128; 256 and 512 were slower). */
static void ext_matvec_shape(QvkWeightType wt, uint32_t *ret_wg, uint32_t *ret_rows) {
        uint32_t def = wt == QVK_W_Q4_K || wt == QVK_W_Q5_K || wt == QVK_W_Q6_K ? 64 : 128;
        uint32_t wg = qvk_env_u32("QUANTD_VK_MATVEC_EXT_WG", def, 1024);

        *ret_wg = wg & (wg - 1) ? def : wg;
        *ret_rows = qvk_env_u32("QUANTD_VK_MATVEC_EXT_ROWS", 2, 8);
}

static void ext_variant(QvkDevice *d, QvkWeightType wt, bool x_f16, uint32_t n, char *buf, size_t len) {
        const char *act = x_f16 ? "f16" : "f32", *shader = "";
        uint32_t g = 0, bytes = 0;

        (void) ext_format(wt, &shader, &g, &bytes);
        if (n > EXT_MATVEC_MAX_COLS)
                snprintf(buf, len, "matmul_ext_%s_%s", shader, act);
        else
                snprintf(buf, len, "matvec_ext_%s_%s%s", shader, act, d->subgroup_fast ? "" : "_nosg");
}

static bool use_coopmat(QvkDevice *d, uint32_t m, uint32_t k, uint32_t n);

const char *qvk_ext_kernel(QvkDevice *d, QvkWeightType wt, bool x_f16, uint32_t k, uint32_t n) {
        static _Thread_local char out[128];
        char name[64];

        if (!qvk_ext_type(wt) || n == 0)
                return NULL;
        ext_variant(d, wt, x_f16, n, name, sizeof(name));
        if (use_coopmat(d, 1, k, n))
                snprintf(out, sizeof(out), "dequant_ext_%s + %s", ext_types[wt].shader,
                         qvk_matmul_kernel(d, QVK_W_F16, x_f16, k, n));
        else if (n > EXT_MATVEC_MAX_COLS)
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

/* Y[j·ldy + y0 + i] for the m rows of W: the product, or one row block of it. */
static int matmul_ext_rows(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k, QvkBinding x,
                           bool x_f16, uint32_t n, QvkBinding y, uint32_t ldy, uint32_t y0) {
        QvkDevice *d = qvk_cmd_device(c);
        ExtPush push = { m, k, n, 0, ldy, y0 };
        QvkBinding b[3] = { w, x, y };
        QvkPipeline *p;
        uint64_t wbytes;
        char name[64];
        int r;

        if (!rows_row_bytes(wt, ext_group(wt)) || !w.buf || !x.buf || !y.buf)
                return -EINVAL;
        if (m == 0 || k == 0 || n == 0)
                return 0;
        if (k % ext_group(wt))
                return -EINVAL;
        /* 16-byte vector loads of activations and of the per-row formats' rows. */
        if (w.offset % 16 || x.offset % 16)
                return -EINVAL;
        wbytes = rows_row_bytes(wt, k) * m;
        uint64_t yend = (uint64_t) (n - 1) * ldy + y0 + m;  /* values of Y up to the last written */
        /* The shaders address bytes with 32-bit integers. */
        if (wbytes > UINT32_MAX || (uint64_t) n * k > UINT32_MAX / 2 || yend > UINT32_MAX)
                return -E2BIG;
        if (ldy < (uint64_t) y0 + m || binding_size(w) < wbytes ||
            binding_size(x) < (uint64_t) n * k * (x_f16 ? 2 : 4) || binding_size(y) < yend * 4)
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
        ext_matvec_shape(wt, &wg, &rows);
        uint32_t spec[] = { wg, rows, n, ext_group(wt) };
        uint32_t groups = DIV_ROUND_UP(m, rows), gx = MIN(groups, EXT_MAX_GROUPS_X);
        r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), 3, sizeof(push), &p);
        if (r < 0)
                return r;
        push.gx = gx;
        return qvk_cmd_dispatch(c, p, b, 3, 1u << 2, &push, sizeof(push), gx, DIV_ROUND_UP(groups, gx), 1);
}

/* n > 8 columns on a cooperative-matrix device: W in fp16 (dequant_ext.comp into a buffer of
 * the recording) times X on vk-matmul.c's F16 kernel. The plain tiled kernel runs at a few
 * TFLOP/s; this costs one pass writing 2 bytes per weight and m·k·2 bytes of device memory per
 * recording. $QUANTD_VK_EXT_DEQUANT=1 takes it on any device (the F16 kernel is then the tiled
 * one), so that lavapipe checks the dequantization too. */
static bool use_coopmat(QvkDevice *d, uint32_t m, uint32_t k, uint32_t n) {
        return (d->coopmat || qvk_env_u32("QUANTD_VK_EXT_DEQUANT", 0, 1)) && n > EXT_MATVEC_MAX_COLS &&
               k % 8 == 0 && (uint64_t) m * k * 2 <= d->features.max_storage_buffer_range;
}

static int dequant(QvkCmd *c, const QvkRowBlock *b, size_t n_blocks, uint32_t k, QvkBinding out) {
        QvkDevice *d = qvk_cmd_device(c);
        uint32_t y0 = 0;
        int r;

        for (size_t i = 0; i < n_blocks; y0 += b[i].m, i++) {
                const char *shader = "";
                uint32_t g = 0, bytes = 0;
                char name[64];
                QvkPipeline *p;
                (void) ext_format(b[i].wt, &shader, &g, &bytes);
                uint64_t units = (uint64_t) b[i].m * (k / 32);
                uint32_t spec[] = { 256, ext_group(b[i].wt) };
                uint32_t groups = (uint32_t) DIV_ROUND_UP(units, 256u), gx = MIN(groups, EXT_MAX_GROUPS_X);
                ExtPush push = { b[i].m, k, 0, gx, 0, y0 };
                QvkBinding bind[2] = { b[i].w, out };
                if (b[i].m == 0)
                        continue;
                snprintf(name, sizeof(name), "dequant_ext_%s", shader);
                r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), 2, sizeof(push), &p);
                if (r < 0)
                        return r;
                r = qvk_cmd_dispatch(c, p, bind, 2, 1u << 1, &push, sizeof(push), gx, DIV_ROUND_UP(groups, gx), 1);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int matmul_coopmat(QvkCmd *c, const QvkRowBlock *b, size_t n_blocks, uint32_t m, uint32_t k, QvkBinding x,
                          bool x_f16, uint32_t n, QvkBinding y) {
        uint64_t bytes = (uint64_t) m * k * 2;
        QvkBuffer *t;
        int r;

        r = qvk_cmd_temp(c, bytes, &t);
        if (r < 0)
                return r;
        r = dequant(c, b, n_blocks, k, (QvkBinding) { t, 0, bytes });
        if (r < 0)
                return r;
        return qvk_matmul(c, QVK_W_F16, (QvkBinding) { t, 0, bytes }, m, k, x, x_f16, n, y, (QvkBinding) {});
}

int qvk_matmul_ext(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k, QvkBinding x,
                   bool x_f16, uint32_t n, QvkBinding y) {
        if (qvk_ext_type(wt) && k % ext_group(wt) == 0 && w.buf && x.buf && y.buf && m > 0 &&
            use_coopmat(qvk_cmd_device(c), m, k, n)) {
                QvkRowBlock b = { wt, w, m };
                if (binding_size(w) < qvk_ext_row_bytes(wt, k) * m)
                        return -EINVAL;
                return matmul_coopmat(c, &b, 1, m, k, x, x_f16, n, y);
        }
        return matmul_ext_rows(c, wt, w, m, k, x, x_f16, n, y, m, 0);
}

/* Block b's rows into rows y0.. of Y, W split by rows where it exceeds the storage range. */
static int block_rows(QvkCmd *c, const QvkRowBlock *b, uint32_t k, QvkBinding x, bool x_f16, uint32_t n,
                      QvkBinding y, uint32_t ldy, uint32_t y0) {
        QvkDevice *d = qvk_cmd_device(c);
        uint64_t align = MAX(d->min_storage_align, (uint64_t) 16);
        uint64_t range = d->features.max_storage_buffer_range / align * align;
        uint64_t rb = rows_row_bytes(b->wt, k);
        /* chunks within the range whose offsets stay aligned */
        uint64_t q = ALIGN_COUNT(rb, align), chunk = range / rb / q * q;
        int r;

        if (chunk == 0)
                return -E2BIG;
        for (uint64_t r0 = 0; r0 < b->m; r0 += chunk) {
                uint32_t mr = (uint32_t) MIN(chunk, b->m - r0);
                QvkBinding wc = { b->w.buf, b->w.offset + r0 * rb, mr * rb };
                r = matmul_ext_rows(c, b->wt, wc, mr, k, x, x_f16, n, y, ldy, (uint32_t) (y0 + r0));
                if (r < 0)
                        return r;
        }
        return 0;
}

int qvk_matmul_blocks(QvkCmd *c, const QvkRowBlock *b, size_t n_blocks, uint32_t k, QvkBinding x, bool x_f16,
                      uint32_t n, QvkBinding y) {
        QvkDevice *d = qvk_cmd_device(c);
        uint64_t align = MAX(d->min_storage_align, (uint64_t) 16);
        uint64_t range = d->features.max_storage_buffer_range / align * align, m = 0;
        int r;

        if (!b || n_blocks == 0 || !x.buf || !y.buf)
                return -EINVAL;
        for (size_t i = 0; i < n_blocks; i++) {
                if (!rows_row_bytes(b[i].wt, ext_group(b[i].wt)))
                        return -EOPNOTSUPP;
                if (!b[i].w.buf || b[i].w.offset % 16 || !rows_row_bytes(b[i].wt, k))
                        return -EINVAL;
                m += b[i].m;
        }
        if (m == 0 || k == 0 || n == 0)
                return 0;
        if (m > UINT32_MAX)
                return -E2BIG;
        if ((uint64_t) n * k * (x_f16 ? 2 : 4) > range || (uint64_t) n * m * 4 > range)
                return -E2BIG;
        x.size = x.size ? x.size : MIN(qvk_buffer_size(x.buf) - MIN(x.offset, qvk_buffer_size(x.buf)), range);
        y.size = y.size ? y.size : MIN(qvk_buffer_size(y.buf) - MIN(y.offset, qvk_buffer_size(y.buf)), range);
        if (use_coopmat(d, (uint32_t) m, k, n)) {
                for (size_t i = 0; i < n_blocks; i++)
                        if (binding_size(b[i].w) < rows_row_bytes(b[i].wt, k) * b[i].m)
                                return -EINVAL;
                return matmul_coopmat(c, b, n_blocks, (uint32_t) m, k, x, x_f16, n, y);
        }
        for (size_t i = 0, y0 = 0; i < n_blocks; y0 += b[i].m, i++) {
                r = block_rows(c, &b[i], k, x, x_f16, n, y, (uint32_t) m, (uint32_t) y0);
                if (r < 0)
                        return r;
        }
        return 0;
}
