/* quantd's Vulkan core: one device, buffers, pipelines from the embedded SPIR-V, and command
 * recordings of many dispatches with barriers only where needed.
 * Environment: QUANTD_VK_DEVICE (index or name substring), QUANTD_VK_VALIDATION=1 (Khronos
 * validation layer, required then), QUANTD_VK_DISABLE_{F16,INT8,INTDOT,SUBGROUP,COOPMAT}=1 (turn
 * the feature off so that the fallback kernel variants run), QUANTD_VK_MATVEC_WG / _ROWS
 * (matrix-vector workgroup size, a power of two, and rows per workgroup; for tuning),
 * QUANTD_VK_MATVEC_DOT_WG / _ROWS the same for the int-dot matrix-vector kernel,
 * QUANTD_VK_MAX_STORAGE_RANGE / QUANTD_VK_MAX_ALLOCATION=bytes (lower the device's
 * maxStorageBufferRange / maxMemoryAllocationSize, never raise them, so that the splitting of
 * large tensors runs on any device, lavapipe in CI included), QUANTD_VK_BATCH_SPLIT_MAX=n
 * (products of 9..n columns as passes of 8 through the matrix-vector kernels; default 32 for
 * block formats on cooperative-matrix devices, else 8, i.e. off).
 * All functions return 0 or a negative errno (-ENODEV no device, -ENOMEM, -EIO for VkResult
 * failures, -EOPNOTSUPP for a missing feature); none of them logs above debug level. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct QvkDevice QvkDevice;
typedef struct QvkBuffer QvkBuffer;
typedef struct QvkPipeline QvkPipeline;
typedef struct QvkCmd QvkCmd;

typedef struct QvkFeatures {
        char name[256];
        char type[16];              /* "discrete", "integrated", "virtual", "cpu", "other" */
        char driver[128];
        uint32_t vendor_id, device_id, api_version;
        bool fp16;                  /* shaderFloat16 (and not disabled by QUANTD_VK_DISABLE_F16) */
        bool int8;                  /* shaderInt8 */
        bool storage8, storage16;   /* 8/16-bit storage buffer access */
        bool subgroup_arith;        /* subgroup arithmetic in compute */
        uint32_t subgroup_size;
        bool subgroup_size_control;
        bool int_dot;               /* shaderIntegerDotProduct */
        bool int_dot_accelerated;   /* 4x8-bit packed signed dot product accelerated */
        bool coopmat_khr, coopmat_nv;
        bool coopmat2_nv;           /* VK_NV_cooperative_matrix2 (workgroup scope) */
        bool memory_budget;         /* VK_EXT_memory_budget */
        uint32_t max_shared_memory;
        uint32_t max_workgroup_invocations; /* min(maxComputeWorkGroupInvocations, size[0]) */
        uint64_t max_storage_buffer_range, max_allocation_size;
        uint64_t device_local_bytes;
        double timestamp_period_ns;
} QvkFeatures;

/* select: index or name substring; NULL uses $QUANTD_VK_DEVICE, else the best device
 * (discrete > integrated > virtual > cpu). Validation layer on when $QUANTD_VK_VALIDATION=1. */
int qvk_device_new(const char *select, const char *pipeline_cache_dir, QvkDevice **ret);
QvkDevice *qvk_device_free(QvkDevice *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(QvkDevice *, qvk_device_free);
const QvkFeatures *qvk_device_features(QvkDevice *d);
/* Current budget and usage of device-local memory (from VK_EXT_memory_budget when present). */
void qvk_device_memory(QvkDevice *d, uint64_t *ret_budget, uint64_t *ret_used_by_us);
/* Waits until the queue has run everything submitted so far (before freeing buffers that a
 * submission nobody waits for may still use). */
int qvk_device_wait_idle(QvkDevice *d);
/* Number of validation-layer messages (warning or error) seen since start; tests assert 0. */
unsigned qvk_validation_messages(void);
/* Text of the last counted validation message, NULL when none (for test diagnostics). */
const char *qvk_validation_last_message(void);
/* Writes the pipeline cache to pipeline_cache_dir now (also done by qvk_device_free). */
int qvk_device_save_pipeline_cache(QvkDevice *d);

typedef enum QvkMemKind {
        QVK_MEM_DEVICE,             /* device-local; filled by upload */
        QVK_MEM_HOST,               /* host-visible, coherent, persistently mapped */
} QvkMemKind;

int qvk_buffer_new(QvkDevice *d, uint64_t size, QvkMemKind kind, QvkBuffer **ret);
QvkBuffer *qvk_buffer_free(QvkBuffer *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(QvkBuffer *, qvk_buffer_free);
uint64_t qvk_buffer_size(QvkBuffer *b);
void *qvk_buffer_map(QvkBuffer *b);  /* QVK_MEM_HOST only, else NULL */
/* Synchronous copies through a staging buffer (or directly when host-visible). */
int qvk_buffer_upload(QvkBuffer *dst, uint64_t offset, const void *src, uint64_t size);
int qvk_buffer_download(QvkBuffer *src, uint64_t offset, void *dst, uint64_t size);

/* A matrix of rows × row_bytes in as few allocations as maxMemoryAllocationSize allows (one
 * for all but the largest tensors): part i holds rows [i·part_rows, (i+1)·part_rows). */
typedef struct QvkSplit {
        QvkBuffer **parts;
        uint32_t n_parts;
        uint64_t rows, row_bytes, part_rows;
} QvkSplit;

int qvk_split_new(QvkDevice *d, uint64_t rows, uint64_t row_bytes, QvkMemKind kind, QvkSplit *ret);
void qvk_split_free(QvkSplit *s);  /* leaves *s empty; accepts an empty one */
/* Copies n rows from src into rows [row0, row0 + n). */
int qvk_split_upload(QvkSplit *s, uint64_t row0, const void *src, uint64_t n);

/* A range of a buffer bound to one binding of a dispatch. size 0 = to the end. */
typedef struct QvkBinding {
        QvkBuffer *buf;
        uint64_t offset, size;
} QvkBinding;

/* Compute pipeline for an embedded shader (shaders/shaders.h name), cached in the device by
 * (name, specialization constants). Constants are 32-bit values with ids 0..n_spec-1.
 * n_bindings storage buffers at set 0, bindings 0..n_bindings-1. Owned by the device. */
int qvk_pipeline_get(QvkDevice *d, const char *shader, const uint32_t *spec, size_t n_spec,
                     uint32_t n_bindings, uint32_t push_size, QvkPipeline **ret);

/* A recording of dispatches and copies into one command buffer. A barrier is inserted before a
 * dispatch only when it reads or writes a range written since the last barrier (or writes a
 * range read since then). After qvk_cmd_end() a recording can be submitted many times. */
int qvk_cmd_new(QvkDevice *d, QvkCmd **ret);
QvkCmd *qvk_cmd_free(QvkCmd *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(QvkCmd *, qvk_cmd_free);
int qvk_cmd_reset(QvkCmd *c);  /* back to an empty recording */
/* bindings[i] is read and written per writes_mask bit i (bit set = written). */
int qvk_cmd_dispatch(QvkCmd *c, QvkPipeline *p, const QvkBinding *bindings, size_t n,
                     uint32_t writes_mask, const void *push, uint32_t push_size,
                     uint32_t groups_x, uint32_t groups_y, uint32_t groups_z);
int qvk_cmd_copy(QvkCmd *c, QvkBuffer *src, uint64_t src_off, QvkBuffer *dst, uint64_t dst_off,
                 uint64_t size);
int qvk_cmd_fill(QvkCmd *c, QvkBuffer *dst, uint64_t off, uint64_t size, uint32_t value);
/* Timestamp query slots for profiling (index < 64); read after the submission finished. */
int qvk_cmd_timestamp(QvkCmd *c, uint32_t index);
int qvk_cmd_timestamps_read(QvkCmd *c, uint32_t first, uint32_t count, double *ret_ns);
int qvk_cmd_end(QvkCmd *c);
int qvk_cmd_submit(QvkCmd *c);  /* queue the recording */
int qvk_cmd_wait(QvkCmd *c);    /* wait for the last submission */
QvkDevice *qvk_cmd_device(QvkCmd *c);
/* Dispatches and pipeline barriers recorded since the last qvk_cmd_reset() (the barrier that
 * opens every recording included). */
void qvk_cmd_stats(QvkCmd *c, uint32_t *ret_dispatches, uint32_t *ret_barriers);
/* A device buffer of at least size bytes owned by the recording (until qvk_cmd_free), for
 * intermediate results; several requests may get the same buffer, the barriers keep the uses
 * apart. */
int qvk_cmd_temp(QvkCmd *c, uint64_t size, QvkBuffer **ret);

/* Weight formats read by the matrix kernels; block layouts byte-compatible with GGUF. */
typedef enum QvkWeightType {
        QVK_W_F32,
        QVK_W_F16,
        QVK_W_Q8_0,                 /* 34-byte blocks: fp16 d, 32 x int8 */
        QVK_W_Q4_0,                 /* 18-byte blocks: fp16 d, 16 bytes of nibbles (x - 8) */
        QVK_W_Q4_1,                 /* 20-byte blocks: fp16 d, fp16 m, 16 bytes of nibbles */
        /* Extended storage formats (docs/QUANTIZATION.md; vulkan/vk-matmul-ext.c): the same fields
         * with longer groups, NF4, and per-row-scale FP8 / INT8. k must be a multiple of the group
         * (of 32 for the per-row formats). Float kernels only, no int-dot path: matrix-vector
         * (n <= 8, fp32 sums) and a tiled fp32 matrix-matrix kernel, or on cooperative-matrix
         * devices an fp16 copy of W (a buffer of the recording) on the F16 cooperative-matrix
         * kernel for n > 8. */
        QVK_W_Q8_0_G64,             /* 66-byte blocks: fp16 d, 64 x int8 */
        QVK_W_Q8_0_G128,            /* 130-byte blocks: fp16 d, 128 x int8 */
        QVK_W_Q4_0_G64,             /* 34-byte blocks: fp16 d, 32 bytes of nibbles (x - 8) */
        QVK_W_Q4_0_G128,            /* 66-byte blocks: fp16 d, 64 bytes of nibbles (x - 8) */
        QVK_W_Q4_1_G64,             /* 36-byte blocks: fp16 d, fp16 m, 32 bytes of nibbles */
        QVK_W_Q4_1_G128,            /* 68-byte blocks: fp16 d, fp16 m, 64 bytes of nibbles */
        QVK_W_NF4_G32,              /* 18-byte blocks: fp16 absmax, 16 bytes of NF4 nibbles */
        QVK_W_NF4_G64,              /* 34-byte blocks: fp16 absmax, 32 bytes of NF4 nibbles */
        QVK_W_NF4_G128,             /* 66-byte blocks: fp16 absmax, 64 bytes of NF4 nibbles */
        /* Per-row scale: each row is a 16-byte header (the row's f32 scale, little-endian, then
         * 12 zero bytes) followed by its k code bytes; qvk_weight_row_bytes() is k + 16, so rows
         * stay 16-byte aligned and can be split and concatenated like any other format's. */
        QVK_W_FP8_ROW,              /* E4M3FN codes, w = scale_r * e4m3(q) */
        QVK_W_I8_ROW,               /* int8 codes -127..127, w = scale_r * q */
        /* ggml's K-quants, byte-compatible with GGUF (k a multiple of 256), and Q5_0 (k a multiple
         * of 32, Q4_K's stand-in where rows are not whole super-blocks): the tensors of
         * llama.cpp's Q4_K_M / Q4_K_S / Q6_K files, run as stored on the extended kernels. */
        QVK_W_Q4_K,                 /* 144-byte blocks of 256: fp16 d, dmin, 6-bit scales/mins, nibbles */
        QVK_W_Q6_K,                 /* 210-byte blocks of 256: 4+2-bit codes, int8 scales, fp16 d */
        QVK_W_Q5_0,                 /* 22-byte blocks of 32: fp16 d, 32 fifth bits, nibbles (x - 16) */
        /* Q5_K and its stand-in Q5_1: the tensors of llama.cpp's Q5_K_M files. */
        QVK_W_Q5_K,                 /* 176-byte blocks of 256: Q4_K's header, 32 bytes of fifth bits, nibbles */
        QVK_W_Q5_1,                 /* 24-byte blocks of 32: fp16 d, fp16 m, 32 fifth bits, nibbles */
        /* Q8_0 / Q4_0 / Q4_1 repacked at upload (vulkan/vk-repack.c, docs/QUANTIZATION.md): each
         * row holds first the quant bytes of its k/32 blocks (32 or 16 per block, in the GGUF
         * block's order), then the blocks' fp16 scales (Q4_1: scale and min pairs), padded to a
         * multiple of 16 bytes, so that every block's quant bytes are 16-byte aligned. The same
         * kernels and paths as the GGUF types (k a multiple of 32). */
        QVK_W_Q8_0_R,
        QVK_W_Q4_0_R,
        QVK_W_Q4_1_R,
        _QVK_W_MAX,
} QvkWeightType;

const char *qvk_weight_type_name(QvkWeightType t);
/* Bytes of one row of k weights (k a multiple of 32 for the block types; for the extended
 * types 0 when k is not a multiple of the group). */
uint64_t qvk_weight_row_bytes(QvkWeightType t, uint32_t k);

/* Repacked layouts (QVK_W_*_R). qvk_weight_base(): the GGUF type a repacked one holds (else t
 * itself). qvk_weight_repack_type(): the repacked type for a GGUF block type, t itself for the
 * others and where $QUANTD_VK_DISABLE_REPACK is set. qvk_weight_repack() writes rows GGUF rows
 * of qvk_weight_base(t) from src (qvk_weight_row_bytes(base, k) each) into dst in t's layout
 * (qvk_weight_row_bytes(t, k) each, padding zeroed); qvk_weight_unpack() is its inverse. Both
 * -EINVAL for a type that is not repacked or k not a multiple of 32. */
bool qvk_weight_repacked(QvkWeightType t);
QvkWeightType qvk_weight_base(QvkWeightType t);
QvkWeightType qvk_weight_repack_type(QvkWeightType t);
int qvk_weight_repack(QvkWeightType t, uint32_t k, const void *src, uint64_t rows, void *dst);
int qvk_weight_unpack(QvkWeightType t, uint32_t k, const void *src, uint64_t rows, void *dst);

/* Y = W·X. W is m rows × k columns, row-major in format wt. X holds n activation vectors of k
 * values (vector j at element j*k), fp32 or fp16 per x_f16. Y gets n vectors of m fp32 values
 * (vector j at element j*m). Picks matrix-vector (n = 1), batched matrix-vector (n ≤ 8) or
 * matrix-matrix kernels and the int-dot path where the device has it. scratch: a buffer the
 * launcher may use for quantized activations, at least qvk_matmul_scratch_bytes(k, n), which
 * covers every call with that k and up to n columns. The binding
 * offsets of w, x and scratch must be multiples of 16 bytes (16-byte loads); else -EINVAL.
 * Operands larger than maxStorageBufferRange are split: W by rows (each chunk's offset on the
 * 16-byte and storage-offset alignment), X by columns; the partial products go through a
 * buffer of the recording (qvk_cmd_temp) into Y where they cannot be bound in place. */
uint64_t qvk_matmul_scratch_bytes(QvkDevice *d, uint32_t k, uint32_t n);
int qvk_matmul(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k,
               QvkBinding x, bool x_f16, uint32_t n, QvkBinding y, QvkBinding scratch);
/* The same with W given as consecutive blocks of rows[i] rows in bindings w[i] (a tensor held in
 * several allocations, see QvkSplit); the rows add up to m. */
int qvk_matmul_parts(QvkCmd *c, QvkWeightType wt, const QvkBinding *w, const uint32_t *rows,
                     size_t n_parts, uint32_t m, uint32_t k, QvkBinding x, bool x_f16, uint32_t n,
                     QvkBinding y, QvkBinding scratch);
/* The int-dot path takes the activations as int8 blocks of 32 (shaders/dot.glsl's layout:
 * n*k/32 blocks of 32 bytes, then n*k/32 pairs of fp32 scale and sum; qvk_q8_bytes(k, n)
 * bytes). qvk_matmul() quantizes them into scratch first; a caller whose previous op can
 * write that form itself calls qvk_matmul_q8() where qvk_matmul_wants_q8() and saves the
 * quantization dispatch. qvk_quantize_act() is that dispatch on its own. */
bool qvk_matmul_wants_q8(QvkDevice *d, QvkWeightType wt, uint32_t k, uint32_t n);
uint64_t qvk_q8_bytes(uint32_t k, uint32_t n);
int qvk_quantize_act(QvkCmd *c, QvkBinding x, bool x_f16, uint32_t k, uint32_t n, QvkBinding xq);
int qvk_matmul_q8(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k, QvkBinding xq,
                  uint32_t n, QvkBinding y);
/* One column (the decode step) with the op after the product folded into it
 * (shaders/matvec-epi.glsl), on the kernel qvk_matmul() / qvk_matmul_q8() would run (x_q8:
 * x holds int8 blocks as for qvk_matmul_q8(), else fp32 values):
 *  QVK_EPI_GLU      w holds 2m rows, m gate rows then m up rows; y = silu(gate) * up (m values).
 *  QVK_EPI_GLU_Q8   that, and y as int8 blocks into extra[1]; extra[0]: m/32 counters (uint,
 *                   zero at the start; the kernel leaves them zero). m % 32 == 0.
 *  QVK_EPI_NORM     y = extra[0] + W x (a residual; y must not alias extra[0]), then, once all of
 *                   y is written, extra[2] = y / rms(y) * extra[1] (RMSNorm with eps); extra[3]:
 *                   one counter as above.
 *  QVK_EPI_NORM_Q8  that input as int8 blocks into extra[4] only (extra[2] is not written);
 *                   extra[3]: 2 * m/32 + 1 words, zero at the start. m % 32 == 0.
 * qvk_matvec_epi_ok() says whether the device and shape take it (fp32 or int8 activations
 * matching the kernel choice of qvk_matmul(), no extended format, 8/16-bit storage); else
 * qvk_matvec_epi() returns -EOPNOTSUPP and the caller runs the op on its own. */
typedef enum QvkMatvecEpi {
        QVK_EPI_GLU,
        QVK_EPI_GLU_Q8,
        QVK_EPI_NORM,
        QVK_EPI_NORM_Q8,
        _QVK_EPI_MAX,
} QvkMatvecEpi;
bool qvk_matvec_epi_ok(QvkDevice *d, QvkMatvecEpi e, QvkWeightType wt, uint32_t m, uint32_t k, bool x_q8);
int qvk_matvec_epi(QvkCmd *c, QvkMatvecEpi e, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k,
                   QvkBinding x, bool x_q8, QvkBinding y, const QvkBinding *extra, float eps);
/* The decode step's "blk" epilogues (shaders/matvec_blk.comp, vulkan/vk-matvec-blk.c): one
 * column of int8 input blocks xq (as for qvk_matmul_q8()) on repacked Q8_0/Q4_0/Q4_1 rows, or
 * of fp32 values on F16 rows (k % 8 == 0: no int8 blocks anywhere, u written as floats, GLU
 * without extra); each workgroup owns whole blocks of 32 outputs, so no counter or atomic joins
 * workgroups.
 *  QVK_BLK_NORM  y = extra[0] + W x (y must not alias extra[0]); extra[2]: u = y * extra[1] as
 *                int8 blocks scaled for u itself (the RMSNorm's 1/rms(y) is left to the next
 *                product: quantization commutes with a common scale), extra[3]: the blocks'
 *                sums of squares of y (m/32 floats), for that product's ps.
 *  QVK_BLK_GLU   w holds 2m rows, m gate rows then m up rows; y = silu(gate) * up, extra[0]: y
 *                as int8 blocks.
 * Where ps.buf is set, xq holds such unscaled blocks and ps their sums of squares (k/32
 * floats): the product is that of RMSNorm(x) with eps. m % 32 == 0; qvk_matvec_blk_ok() says
 * whether the device and type take it (else -EOPNOTSUPP). qvk_matmul_ps() is the plain product
 * of such input (the kernel of qvk_matmul_q8() / qvk_matmul() at n = 1 with the scale applied;
 * int8 blocks or, for F16, fp32 values). */
typedef enum QvkMatvecBlk {
        QVK_BLK_NORM,
        QVK_BLK_GLU,
        _QVK_BLK_MAX,
} QvkMatvecBlk;
bool qvk_matvec_blk_ok(QvkDevice *d, QvkWeightType wt, uint32_t m, uint32_t k);
int qvk_matvec_blk(QvkCmd *c, QvkMatvecBlk e, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k,
                   QvkBinding xq, QvkBinding ps, QvkBinding y, const QvkBinding *extra, float eps);
int qvk_matmul_ps(QvkCmd *c, QvkWeightType wt, QvkBinding w, uint32_t m, uint32_t k, QvkBinding x, QvkBinding ps,
                  float eps, QvkBinding y);
/* Y = W·X where W's rows are stored as blocks in different formats (a fused Q/K/V matrix of a
 * Q4_K_M file: Q4_K and Q6_K rows): block i holds rows m_0 + .. + m_(i-1) onward, Y has the
 * blocks' m rows in all per column. Extended formats and Q8_0/Q4_0/Q4_1 (through the extended
 * shaders: fp32 activations, never the int-dot path; -EOPNOTSUPP for F16/F32); no scratch.
 * A block's W is split by rows where it exceeds maxStorageBufferRange; X and Y must each fit in
 * it (-E2BIG). */
typedef struct QvkRowBlock {
        QvkWeightType wt;
        QvkBinding w;
        uint32_t m;
} QvkRowBlock;
int qvk_matmul_blocks(QvkCmd *c, const QvkRowBlock *b, size_t n_blocks, uint32_t k, QvkBinding x, bool x_f16,
                      uint32_t n, QvkBinding y);
/* The shader variant qvk_matmul() uses for these shapes, e.g. "matvec_dot_q4_0 n=1" (for
 * benchmarks and logs); the string is thread-local and valid until the next call. */
const char *qvk_matmul_kernel(QvkDevice *d, QvkWeightType wt, bool x_f16, uint32_t k, uint32_t n);
/* Whether d runs the cooperative-matrix kernels (GL_NV_cooperative_matrix 16x16x16 fp16 with
 * fp32 accumulation, 32-wide subgroups; off with QUANTD_VK_DISABLE_COOPMAT). */
bool qvk_device_coopmat(QvkDevice *d);
