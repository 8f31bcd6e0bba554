/* Matrix products Y = W·X: picks the kernel variant for the device (matrix-vector, batched
 * matrix-vector, tiled matrix-matrix, int-dot) and records its dispatches; operands beyond
 * maxStorageBufferRange are split into products that fit (qvk_matmul_parts). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "vk-internal.h"
#include "vk-matmul-ext.h"

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
        /* vk-repack.c: the same bytes per block, rows padded to 16 bytes */
        [QVK_W_Q8_0_R] = { "q8_0r", 32, 34 },
        [QVK_W_Q4_0_R] = { "q4_0r", 32, 18 },
        [QVK_W_Q4_1_R] = { "q4_1r", 32, 20 },
};

const char *qvk_weight_type_name(QvkWeightType t) {
        if (qvk_ext_type(t)) return qvk_ext_type_name(t);
        return t < _QVK_W_MAX ? wtypes[t].name : NULL;
}

uint64_t qvk_weight_row_bytes(QvkWeightType t, uint32_t k) {
        if (qvk_ext_type(t)) return qvk_ext_row_bytes(t, k);
        if (t >= _QVK_W_MAX)
                return 0;
        if (qvk_weight_repacked(t))
                return k % 32 ? 0 : ALIGN_TO((uint64_t) k / 32 * wtypes[t].bytes, 16);
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

/* Workgroup size (power of two, for the shared-memory reduction) and rows per workgroup of
 * the matrix-vector kernels; $QUANTD_VK_MATVEC_WG / _ROWS override them for tuning, and
 * $QUANTD_VK_MATVEC_DOT_WG / _ROWS those of the int-dot kernel. */
static void matvec_shape(bool dot, QvkWeightType wt, uint32_t k, uint32_t *ret_wg, uint32_t *ret_rows) {
        bool packed = qvk_weight_repacked(wt);
        uint32_t def_wg = 128, def_rows = 2;

        if (dot && packed) {
                /* One row per workgroup, about two 16-byte units of the row per invocation: on
                 * the H100 (docs/PERFORMANCE.md) 64 for Q4_0 at k = 4096 (128 units), 128 above. */
                uint32_t units = k / 32 * (qvk_weight_base(wt) == QVK_W_Q8_0 ? 2 : 1);
                def_wg = units <= 128 ? 64 : 128;
                def_rows = 1;
        }
        uint32_t wg = qvk_env_u32(dot ? "QUANTD_VK_MATVEC_DOT_WG" : "QUANTD_VK_MATVEC_WG", def_wg, 1024);
        uint32_t rows = qvk_env_u32(dot ? "QUANTD_VK_MATVEC_DOT_ROWS" : "QUANTD_VK_MATVEC_ROWS", def_rows, 1024);

        if (wg & (wg - 1))
                wg = 128;
        *ret_wg = wg;
        *ret_rows = MIN(rows, 8u);
}

/* Columns up to which a product of block-format weights on a cooperative-matrix device runs as
 * batched matrix-vector passes of at most MATVEC_MAX_COLS columns (weights read once per pass)
 * instead of the matrix-matrix kernel, whose time at small n is that of n = 512 (it is
 * latency-bound): a batched decode of 9-32 sequences. $QUANTD_VK_BATCH_SPLIT_MAX overrides it on any device (8 turns it
 * off; tests set it on lavapipe, which has no cooperative matrices). */
static uint32_t batch_split_max(QvkDevice *d, QvkWeightType wt) {
        if (qvk_ext_type(wt))
                return MATVEC_MAX_COLS;
        /* Block formats only by default: on the H100 a batched decode of 16 went from 412 to 757
         * tok/s (Q8_0) and 424 to 893 (Q4_0), but F16 fell from 498 to 387. */
        uint32_t def = d->coopmat && is_block_type(wt) ? 32 : MATVEC_MAX_COLS;

        return qvk_env_u32("QUANTD_VK_BATCH_SPLIT_MAX", def, 1024);
}

/* Columns per pass (MATVEC_MAX_COLS, the last pass takes the rest), or 0 where n is not split.
 * Groups of 8 keep every group's X and Y offsets at multiples of 32 bytes. */
static uint32_t batch_split_cols(QvkDevice *d, QvkWeightType wt, uint32_t n) {
        if (n <= MATVEC_MAX_COLS || n > batch_split_max(d, wt))
                return 0;
        return MATVEC_MAX_COLS;
}

#define CM2_BM 128u
#define CM2_BN 128u
#define CM2_BK 64u

/* Columns of a product that shaders/matmul_coopmat2.comp takes (full 128 x 128 tiles of F16
 * weights, k a multiple of 64), the rest going to the other kernels; 0 where it does not apply.
 * On the H100 it runs 4096x4096x512 in 82 us against matmul_coopmat's 125 (fp32 activations). */
static uint32_t coopmat2_cols(QvkDevice *d, QvkWeightType wt, uint32_t m, uint32_t k, uint32_t n) {
        if (!d->coopmat2 || wt != QVK_W_F16 || m % CM2_BM || k % CM2_BK || n < CM2_BN)
                return 0;
        return n / CM2_BN * CM2_BN;
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
                bool n64 = qvk_env_u32("QUANTD_VK_COOPMAT_TILE_N", 128, 1024) == 64;
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
        static _Thread_local char out[256];
        char name[96];
        const char *kind;

        if (qvk_ext_type(wt))
                return qvk_ext_kernel(d, wt, x_f16, k, n);
        if (wt >= _QVK_W_MAX || n == 0)
                return NULL;
        /* Split as matmul_column_groups() does for bindings at offset 0 (whatever m is, where
         * the storage-buffer alignment is at most 32 bytes). */
        uint32_t g = batch_split_cols(d, wt, n);
        if (g && (MAX(d->min_storage_align, (uint64_t) 16) > 32 ||
                  ((uint64_t) g * k * (x_f16 ? 2 : 4)) % MAX(d->min_storage_align, (uint64_t) 16)))
                g = 0;
        variant_name(d, wt, x_f16, k, g ? g : n, name, sizeof(name), &kind);
        /* m is not known here: report the workgroup-scope kernel where the shape may take it. */
        uint32_t c2 = g ? 0 : coopmat2_cols(d, wt, CM2_BM, k, n);
        if (c2) {
                char cm2[64];
                snprintf(cm2, sizeof(cm2), "matmul_coopmat2_f16_%s", x_f16 ? "f16" : "f32");
                if (c2 < n)
                        snprintf(out, sizeof(out), "%s n=%u + %s n=%u", cm2, c2, name, n - c2);
                else
                        snprintf(out, sizeof(out), "%s", cm2);
        } else if (g)
                snprintf(out, sizeof(out), "%s n=%u x%u passes", name, g, DIV_ROUND_UP(n, g));
        else if (n > MATVEC_MAX_COLS)
                snprintf(out, sizeof(out), "%s", name);
        else
                snprintf(out, sizeof(out), "%s n=%u", name, n);
        return out;
}

bool qvk_device_coopmat(QvkDevice *d) {
        return d->coopmat;
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

/* A matrix-vector kernel over x, or for the int-dot kernel (dot) over activations already
 * quantized into x. */
static int matvec(QvkCmd *c, const char *name, bool dot, QvkWeightType wt, QvkBinding w, uint32_t m,
                  uint32_t k, QvkBinding x, uint32_t n, QvkBinding y) {
        QvkDevice *d = qvk_cmd_device(c);
        uint32_t wg, rows, gx, gy;
        QvkPipeline *p;
        int r;

        matvec_shape(dot, wt, k, &wg, &rows);
        uint32_t spec[] = { wg, rows, n };
        MatPush push = { m, k, n, 0 };
        QvkBinding b[3] = { w, x, y };
        r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), 3, sizeof(push), &p);
        if (r < 0)
                return r;
        grid(DIV_ROUND_UP(m, rows), &gx, &gy);
        push.gx = gx;
        return qvk_cmd_dispatch(c, p, b, 3, 1u << 2, &push, sizeof(push), gx, gy, 1);
}

static int matmul_one(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k,
                      QvkBinding x, bool x_f16, uint32_t n, QvkBinding y, QvkBinding scratch);

/* The product as passes over groups of g columns; -EAGAIN where a group's X or Y offset would
 * break the binding alignment (the caller then takes the matrix-matrix kernel). */
static int matmul_column_groups(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k,
                                QvkBinding x, bool x_f16, uint32_t n, QvkBinding y, QvkBinding scratch,
                                uint32_t g) {
        QvkDevice *d = qvk_cmd_device(c);
        uint64_t align = MAX(d->min_storage_align, (uint64_t) 16), xcol = (uint64_t) k * (x_f16 ? 2 : 4);
        int r;

        if (x.offset % align || y.offset % align || (g * xcol) % align || ((uint64_t) g * m * 4) % align)
                return -EAGAIN;
        for (uint32_t j0 = 0; j0 < n; j0 += g) {
                uint32_t cols = MIN(g, n - j0);
                QvkBinding xg = { x.buf, x.offset + j0 * xcol, cols * xcol };
                QvkBinding yg = { y.buf, y.offset + (uint64_t) j0 * m * 4, (uint64_t) cols * m * 4 };
                r = matmul_one(c, wt, w, m, k, xg, x_f16, cols, yg, scratch);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* One product whose bindings each fit in maxStorageBufferRange. */
static int matmul_one(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k,
                      QvkBinding x, bool x_f16, uint32_t n, QvkBinding y, QvkBinding scratch) {
        QvkDevice *d = qvk_cmd_device(c);
        QvkBinding b[3];
        QvkPipeline *p;
        MatPush push = { m, k, n, 0 };
        char name[96];
        const char *kind;
        int r;

        if (qvk_ext_type(wt))
                return qvk_matmul_ext(c, wt, w, m, k, x, x_f16, n, y);
        if (wt >= _QVK_W_MAX || !w.buf || !x.buf || !y.buf)
                return -EINVAL;
        if (m == 0 || k == 0 || n == 0)
                return 0;
        if (is_block_type(wt) && k % 32)
                return -EINVAL;
        /* The kernels read weights, activations and scratch with 16-byte vector loads. */
        if (w.offset % 16 || x.offset % 16 || scratch.offset % 16)
                return -EINVAL;
        uint32_t g = batch_split_cols(d, wt, n);
        if (g > 0) {
                r = matmul_column_groups(c, wt, w, m, k, x, x_f16, n, y, scratch, g);
                if (r != -EAGAIN)
                        return r;
        }
        uint32_t c2 = coopmat2_cols(d, wt, m, k, n);
        if (c2 > 0) {
                uint64_t xcol = (uint64_t) k * (x_f16 ? 2 : 4), align = MAX(d->min_storage_align, (uint64_t) 16);
                if (c2 == n || ((c2 * xcol) % align == 0 && ((uint64_t) c2 * m * 4) % align == 0)) {
                        snprintf(name, sizeof(name), "matmul_coopmat2_f16_%s", x_f16 ? "f16" : "f32");
                        r = qvk_pipeline_get(d, name, NULL, 0, 3, sizeof(push), &p);
                        if (r < 0)
                                return r;
                        if (m / CM2_BM > MAX_GROUPS_X || c2 / CM2_BN > MAX_GROUPS_X)
                                return -E2BIG;
                        push.gx = m / CM2_BM;
                        b[0] = w, b[1] = x, b[2] = y;
                        r = qvk_cmd_dispatch(c, p, b, 3, 1u << 2, &push, sizeof(push), push.gx,
                                             c2 / CM2_BN, 1);
                        if (r < 0 || c2 == n)
                                return r;
                        /* The last n - c2 columns (fewer than one tile) on the other kernels. */
                        QvkBinding xr = { x.buf, x.offset + c2 * xcol, x.size ? x.size - c2 * xcol : 0 };
                        QvkBinding yr = { y.buf, y.offset + (uint64_t) c2 * m * 4,
                                          y.size ? y.size - (uint64_t) c2 * m * 4 : 0 };
                        return matmul_one(c, wt, w, m, k, xr, x_f16, n - c2, yr, scratch);
                }
        }
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
                return matvec(c, name, true, wt, w, m, k, scratch, n, y);
        }
        return matvec(c, name, false, wt, w, m, k, x, n, y);
}

/* size bytes of buf from offset, as far as the buffer goes (a bad range fails at dispatch). */
static QvkBinding sub(QvkBuffer *buf, uint64_t offset, uint64_t size) {
        uint64_t total = qvk_buffer_size(buf);
        return (QvkBinding) { .buf = buf, .offset = offset, .size = offset < total ? MIN(size, total - offset) : size };
}

/* A product split into tiles: rows of W (chunks of the parts) × groups of columns of X. */
typedef struct Split {
        QvkCmd *c;
        QvkWeightType wt;
        uint32_t m, k, n;
        uint64_t rb, xcol, align;
        QvkBinding x, y, scratch;
        bool x_f16;
        QvkBuffer *tmp;  /* partial products that cannot be bound in Y */
        uint64_t toff;
} Split;

typedef enum Pass { PASS_SIZE, PASS_PRODUCTS, PASS_COPIES } Pass;

/* Y holds column j at element j·m, so only a one-column tile is contiguous in Y; it is bound in
 * place when its offset meets the storage-buffer alignment. */
static bool in_place(const Split *s, uint32_t r0, uint32_t g) {
        return s->n == 1 && g == 1 && (s->y.offset + (uint64_t) r0 * 4) % s->align == 0;
}

/* Rows [r0, r0 + mr) of W (row lr of binding w) times columns [j0, j0 + g) of X. */
static int tile(Split *s, Pass pass, QvkBinding w, uint64_t lr, uint32_t r0, uint32_t mr, uint32_t j0,
                uint32_t g) {
        QvkBinding wb = sub(w.buf, w.offset + lr * s->rb, mr * s->rb);
        QvkBinding xb = sub(s->x.buf, s->x.offset + j0 * s->xcol, g * s->xcol);
        uint64_t bytes = (uint64_t) g * mr * 4;
        int r = 0;

        if (in_place(s, r0, g))
                return pass == PASS_PRODUCTS ? matmul_one(s->c, s->wt, wb, mr, s->k, xb, s->x_f16, g,
                                                          sub(s->y.buf, s->y.offset + (uint64_t) r0 * 4, mr * 4),
                                                          s->scratch)
                                             : 0;
        if (pass == PASS_PRODUCTS)
                r = matmul_one(s->c, s->wt, wb, mr, s->k, xb, s->x_f16, g, sub(s->tmp, s->toff, bytes), s->scratch);
        else if (pass == PASS_COPIES)
                for (uint32_t j = 0; j < g && r >= 0; j++)
                        r = qvk_cmd_copy(s->c, s->tmp, s->toff + (uint64_t) j * mr * 4, s->y.buf,
                                         s->y.offset + ((uint64_t) (j0 + j) * s->m + r0) * 4, mr * 4);
        s->toff += ALIGN_TO(bytes, s->align);
        return r;
}

static int walk(Split *s, Pass pass, const QvkBinding *w, const uint32_t *rows, size_t n_parts,
                uint32_t chunk, uint32_t group) {
        uint32_t r0 = 0;
        int r;

        s->toff = 0;
        for (size_t p = 0; p < n_parts; r0 += rows[p], p++)
                for (uint32_t lr = 0; lr < rows[p]; lr += chunk)
                        for (uint32_t j0 = 0; j0 < s->n; j0 += group) {
                                r = tile(s, pass, w[p], lr, r0 + lr, MIN(chunk, rows[p] - lr), j0,
                                         MIN(group, s->n - j0));
                                if (r < 0)
                                        return r;
                        }
        return 0;
}

int qvk_matmul_parts(QvkCmd *c, QvkWeightType wt, const QvkBinding *w, const uint32_t *rows,
                     size_t n_parts, uint32_t m, uint32_t k, QvkBinding x, bool x_f16, uint32_t n,
                     QvkBinding y, QvkBinding scratch) {
        QvkDevice *d = qvk_cmd_device(c);
        Split s = { .c = c, .wt = wt, .m = m, .k = k, .n = n, .x = x, .y = y, .scratch = scratch,
                    .x_f16 = x_f16 };
        uint64_t range, sum = 0;
        uint32_t chunk, group;
        bool fits;
        int r;

        if (wt >= _QVK_W_MAX || !w || n_parts == 0 || !x.buf || !y.buf)
                return -EINVAL;
        for (size_t p = 0; p < n_parts; p++) {
                if (!w[p].buf || w[p].offset % 16)
                        return -EINVAL;
                sum += rows[p];
        }
        if (sum != m || (is_block_type(wt) && k % 32))
                return -EINVAL;
        if (m == 0 || k == 0 || n == 0)
                return 0;
        s.rb = qvk_weight_row_bytes(wt, k);
        s.xcol = (uint64_t) k * (x_f16 ? 2 : 4);
        s.align = MAX(d->min_storage_align, (uint64_t) 16);
        range = d->features.max_storage_buffer_range / s.align * s.align;

        fits = n_parts == 1 && ALIGN_TO((uint64_t) m * s.rb, 16) <= range && n * s.xcol <= range &&
               (uint64_t) n * m * 4 <= range;
        if (fits) {
                /* A binding "to the end" of a buffer larger than the range: bind what is used. */
                QvkBinding b[3] = { w[0], x, y };
                uint64_t used[3] = { m * s.rb, n * s.xcol, (uint64_t) n * m * 4 };
                for (int i = 0; i < 3; i++)
                        if (!b[i].size && b[i].offset < qvk_buffer_size(b[i].buf) &&
                            qvk_buffer_size(b[i].buf) - b[i].offset > range)
                                b[i] = sub(b[i].buf, b[i].offset, used[i]);
                return matmul_one(c, wt, b[0], m, k, b[1], x_f16, n, b[2], scratch);
        }

        /* Columns per group: X's binding within the range, group offsets aligned. */
        uint64_t qx = ALIGN_COUNT(s.xcol, s.align);
        group = n * s.xcol <= range ? n : (uint32_t) MIN((uint64_t) n, range / s.xcol / qx * qx);
        if (group == 0)
                return -E2BIG;  /* one column beyond the range (k is never that large in practice) */
        if (group < n) {
                /* Even groups: a short last one would pick another kernel (matrix-vector or
                 * int-dot for up to 8 columns) than the whole product. */
                uint64_t even = ALIGN_TO(DIV_ROUND_UP(n, DIV_ROUND_UP(n, group)), qx);
                group = (uint32_t) MIN((uint64_t) group, even);
        }
        /* Rows per chunk: W's and the partial product's bindings within the range, chunk offsets
         * aligned in W and (for in-place products) in Y. */
        uint64_t qw = ALIGN_COUNT(s.rb, s.align), q = MAX(qw, ALIGN_COUNT(4, s.align));
        uint64_t most = MIN(range / s.rb, range / (4ull * group));
        if (most < q)
                q = qw;  /* the partial products then go through the temporary buffer */
        chunk = (uint32_t) MIN((uint64_t) m, most / q * q);
        if (chunk == 0)
                return -E2BIG;  /* one row beyond the range */

        r = walk(&s, PASS_SIZE, w, rows, n_parts, chunk, group);
        if (r >= 0 && s.toff > 0)
                r = qvk_cmd_temp(c, s.toff, &s.tmp);
        /* All products first, then all copies: one barrier between them. */
        if (r >= 0)
                r = walk(&s, PASS_PRODUCTS, w, rows, n_parts, chunk, group);
        if (r >= 0 && s.tmp)
                r = walk(&s, PASS_COPIES, w, rows, n_parts, chunk, group);
        return r;
}

int qvk_matmul(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k, QvkBinding x,
               bool x_f16, uint32_t n, QvkBinding y, QvkBinding scratch) {
        return qvk_matmul_parts(c, wt, &w, &m, 1, m, k, x, x_f16, n, y, scratch);
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
        return matvec(c, name, true, wt, w, m, k, xq, n, y);
}

int qvk_matmul_ps(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k, QvkBinding x, QvkBinding ps,
                  float eps, QvkBinding y) {
        QvkDevice *d = qvk_cmd_device(c);
        struct {
                MatPush mp;
                float eps;
        } push = { { m, k, 1, 0 }, eps };
        bool dot = wt != QVK_W_F16;  /* int8 blocks, else fp32 values */
        uint32_t wg, rows, gx, gy;
        QvkPipeline *p;
        char name[64];
        int r;

        if (!qvk_matvec_blk_ok(d, wt, 32, k) || (dot && !qvk_matmul_wants_q8(d, wt, k, 1)))
                return -EOPNOTSUPP;
        if (!w.buf || !x.buf || !ps.buf || !y.buf || w.offset % 16 || x.offset % 16)
                return -EINVAL;
        if (m == 0)
                return 0;
        matvec_shape(dot, wt, k, &wg, &rows);
        snprintf(name, sizeof(name), "matvec_%sps_%s%s", dot ? "dot_" : "", wtypes[wt].name,
                 d->subgroup_fast ? "" : "_nosg");
        uint32_t spec[] = { wg, rows, 1 };
        r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), 4, sizeof(push), &p);
        if (r < 0)
                return r;
        grid(DIV_ROUND_UP(m, rows), &gx, &gy);
        push.mp.gx = gx;
        QvkBinding b[4] = { w, x, y, ps };
        return qvk_cmd_dispatch(c, p, b, 4, 1u << 2, &push, sizeof(push), gx, gy, 1);
}

bool qvk_matvec_epi_ok(QvkDevice *d, QvkMatvecEpi e, QvkWeightType wt, uint32_t m, uint32_t k, bool x_q8) {
        /* the extended formats (K-quants, g64/g128, NF4, FP8, INT8 rows) keep their own kernels */
        if (e < 0 || e >= _QVK_EPI_MAX || wt >= _QVK_W_MAX || qvk_ext_type(wt) || m == 0 || k == 0 ||
            !fast_storage(d))
                return false;
        if ((e == QVK_EPI_GLU_Q8 || e == QVK_EPI_NORM_Q8) && m % 32)
                return false;
        if (is_block_type(wt) && k % 32)
                return false;
        uint32_t wg, rows;
        matvec_shape(x_q8, wt, k, &wg, &rows);
        if (wg < 16)  /* NORM_Q8 finishes a block with 8 invocations each for two blocks */
                return false;
        /* the kernel qvk_matmul() would pick for fp32 input, or qvk_matmul_q8() for int8 */
        return x_q8 ? qvk_matmul_wants_q8(d, wt, k, 1) : !use_int_dot(d, wt, 1);
}

int qvk_matvec_epi(QvkCmd *c, QvkMatvecEpi e, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k,
                   QvkBinding x, bool x_q8, QvkBinding y, const QvkBinding *extra, float eps) {
        static const struct {
                const char *suffix;
                uint32_t n_extra, writes;  /* extra bindings (from 3) and which of them are written */
        } epis[_QVK_EPI_MAX] = {
                [QVK_EPI_GLU] = { "_glu", 0, 0 },
                [QVK_EPI_GLU_Q8] = { "_glu_q8", 2, 3 },
                [QVK_EPI_NORM] = { "_norm", 4, 12 },
                [QVK_EPI_NORM_Q8] = { "_norm_q8", 5, 28 },
        };
        QvkDevice *d = qvk_cmd_device(c);
        struct {
                MatPush mp;
                float eps;
        } push = { { m, k, 1, 0 }, eps };
        bool norm = e == QVK_EPI_NORM || e == QVK_EPI_NORM_Q8;
        uint32_t wg, rows, gx, gy, rows_out;
        QvkBinding b[8] = { w, x, y };
        char name[96];
        const char *kind;
        QvkPipeline *p;
        int r;

        if (!qvk_matvec_epi_ok(d, e, wt, m, k, x_q8))
                return -EOPNOTSUPP;
        if (!w.buf || !x.buf || !y.buf || w.offset % 16 || x.offset % 16)
                return -EINVAL;
        for (uint32_t i = 0; i < epis[e].n_extra; i++) {
                if (!extra[i].buf)
                        return -EINVAL;
                b[3 + i] = extra[i];
        }
        matvec_shape(x_q8, wt, k, &wg, &rows);
        if (!norm)  /* an even number of rows: NR/2 gate rows and the same up rows */
                rows = 2 * MAX(rows / 2, 1u);
        rows_out = norm ? rows : rows / 2;
        variant_name(d, wt, false, k, 1, name, sizeof(name), &kind);
        if (strlen(name) + strlen(epis[e].suffix) >= sizeof(name))
                return -EINVAL;
        strcat(name, epis[e].suffix);
        uint32_t spec[] = { wg, rows, 1 };
        r = qvk_pipeline_get(d, name, spec, ELEMENTSOF(spec), 3 + epis[e].n_extra,
                             norm ? sizeof(push) : sizeof(MatPush), &p);
        if (r < 0)
                return r;
        grid(DIV_ROUND_UP(m, rows_out), &gx, &gy);
        push.mp.gx = gx;
        return qvk_cmd_dispatch(c, p, b, 3 + epis[e].n_extra, (1u << 2) | (epis[e].writes << 3), &push,
                                norm ? sizeof(push) : sizeof(MatPush), gx, gy, 1);
}
