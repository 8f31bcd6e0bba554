/* Tensor element types, byte-compatible with ggml: the type numbers used in GGUF files, the block
 * layouts of the quantized types, fp16/bf16 conversion, and row (de)quantization on the CPU.
 *
 * A "row" is n consecutive elements; for block types n must be a multiple of the block size
 * (32 for Q8_0/Q4_0/Q4_1/Q5_0/Q5_1, 256 for Q4_K/Q5_K/Q6_K). All functions are thread-safe.
 * Q5_0, Q5_1 and Q5_K are supported because llama.cpp's Q4_K_M files of models whose rows are not
 * a multiple of 256 (SmolLM, Qwen2-0.5B) fall back to them; quantd also writes Q5_1/Q5_K (the Q5_K_M mix). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ggml's type numbers (ggml.h enum ggml_type); only those marked supported can be loaded. */
typedef enum GgmlType {
        GGML_TYPE_F32 = 0,  /* supported */
        GGML_TYPE_F16 = 1,  /* supported */
        GGML_TYPE_Q4_0 = 2, /* supported */
        GGML_TYPE_Q4_1 = 3, /* supported */
        GGML_TYPE_Q5_0 = 6,  /* supported (llama.cpp's fallback for K-quants on odd row lengths) */
        GGML_TYPE_Q5_1 = 7,  /* supported */
        GGML_TYPE_Q8_0 = 8, /* supported */
        GGML_TYPE_Q8_1 = 9,
        GGML_TYPE_Q2_K = 10,
        GGML_TYPE_Q3_K = 11,
        GGML_TYPE_Q4_K = 12, /* supported */
        GGML_TYPE_Q5_K = 13, /* supported */
        GGML_TYPE_Q6_K = 14, /* supported */
        GGML_TYPE_Q8_K = 15,
        GGML_TYPE_BF16 = 30, /* supported */
        _GGML_TYPE_MAX = 40,
} GgmlType;

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef uint16_t ggml_half; /* IEEE binary16 bits */

typedef struct GgmlBlockQ8_0 {
        ggml_half d; /* scale: x = d * qs[i] */
        int8_t qs[QK8_0];
} GgmlBlockQ8_0; /* 34 bytes */

typedef struct GgmlBlockQ4_0 {
        ggml_half d;           /* x = d * (q - 8) */
        uint8_t qs[QK4_0 / 2]; /* element j in low nibble of qs[j], element j+16 in high nibble */
} GgmlBlockQ4_0;               /* 18 bytes */

typedef struct GgmlBlockQ4_1 {
        ggml_half d; /* x = d * q + m */
        ggml_half m;
        uint8_t qs[QK4_1 / 2]; /* nibble order as Q4_0 */
} GgmlBlockQ4_1;               /* 20 bytes */

typedef struct GgmlBlockQ5_0 {
        ggml_half d;            /* x = d * (q - 16) */
        uint8_t qh[4];          /* bit j: 5th bit of element j (0..31) */
        uint8_t qs[QK5_0 / 2];  /* low 4 bits, nibble order as Q4_0 */
} GgmlBlockQ5_0;                /* 22 bytes */

typedef struct GgmlBlockQ5_1 {
        ggml_half d;            /* x = d * q + m */
        ggml_half m;
        uint8_t qh[4];
        uint8_t qs[QK5_1 / 2];
} GgmlBlockQ5_1;                /* 24 bytes */

typedef struct GgmlBlockQ4_K {
        ggml_half d;                  /* super-block scale for the 6-bit scales */
        ggml_half dmin;               /* super-block scale for the 6-bit mins */
        uint8_t scales[K_SCALE_SIZE]; /* 8 scales + 8 mins, 6 bits each, packed */
        uint8_t qs[QK_K / 2];         /* 4-bit quants */
} GgmlBlockQ4_K;                      /* 144 bytes */

typedef struct GgmlBlockQ5_K {
        ggml_half d;
        ggml_half dmin;
        uint8_t scales[K_SCALE_SIZE]; /* as Q4_K */
        uint8_t qh[QK_K / 8];   /* 5th bits */
        uint8_t qs[QK_K / 2];   /* low 4 bits */
} GgmlBlockQ5_K;                /* 176 bytes */

typedef struct GgmlBlockQ6_K {
        uint8_t ql[QK_K / 2];     /* low 4 bits of the quants */
        uint8_t qh[QK_K / 4];     /* high 2 bits */
        int8_t scales[QK_K / 16]; /* 8-bit scales of 16 sub-blocks */
        ggml_half d;              /* super-block scale */
} GgmlBlockQ6_K;                  /* 210 bytes */

_Static_assert(sizeof(GgmlBlockQ8_0) == 34, "Q8_0 layout");
_Static_assert(sizeof(GgmlBlockQ4_0) == 18, "Q4_0 layout");
_Static_assert(sizeof(GgmlBlockQ4_1) == 20, "Q4_1 layout");
_Static_assert(sizeof(GgmlBlockQ5_0) == 22, "Q5_0 layout");
_Static_assert(sizeof(GgmlBlockQ5_1) == 24, "Q5_1 layout");
_Static_assert(sizeof(GgmlBlockQ4_K) == 144, "Q4_K layout");
_Static_assert(sizeof(GgmlBlockQ5_K) == 176, "Q5_K layout");
_Static_assert(sizeof(GgmlBlockQ6_K) == 210, "Q6_K layout");

typedef struct GgmlTypeInfo {
        const char *name;    /* ggml's name: "f32", "f16", "q4_0", "q4_K", "bf16", ... */
        uint32_t block_size; /* elements per block (1 for float types) */
        uint32_t type_size;  /* bytes per block */
        bool supported;      /* loadable by quantd */
} GgmlTypeInfo;

/* Info for any type number ggml has defined, or NULL for a number it never used. */
const GgmlTypeInfo *ggml_type_info(uint32_t type);
/* ggml's name of the type, or "unknown". */
const char *ggml_type_name(uint32_t type);
bool ggml_type_supported(uint32_t type);
/* Bytes of n elements of a supported type: -EINVAL when n is not a multiple of the block size
 * or the type is unsupported, -EOVERFLOW on overflow. */
int ggml_row_size(uint32_t type, uint64_t n, size_t *ret);

/* Conversions (round to nearest even, like ggml's ggml_fp32_to_fp16 / ggml_fp32_to_bf16). */
float qd_fp16_to_fp32(uint16_t h);
uint16_t qd_fp32_to_fp16(float f);
float qd_bf16_to_fp32(uint16_t h);
uint16_t qd_fp32_to_bf16(float f);

/* Dequantizes n elements of any supported type to f32. -EINVAL for a bad n or type. */
int ggml_dequantize_row(uint32_t type, const void *src, float *dst, size_t n);
/* Round-to-nearest quantization of n f32 values to F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q4_K, Q5_K or Q6_K — ggml's quantize_row_*_ref algorithms (the K-quants with their scale
 * searches, see ggml-kquants.c). -EINVAL for a bad n. */
int ggml_quantize_row(uint32_t type, const float *src, void *dst, size_t n);
