/* GGUF files (v2 and v3): a checked, memory-mapped reader and an in-memory writer.
 *
 * Reader: every offset, count, string, array, dimension and tensor extent is checked against the
 * file before use. A bad file gets -EBADMSG (or -ENOMEM/-EIO/-errno from the OS) and, when
 * ret_error is not NULL, a newly allocated message naming the problem ("tensor 'x': type 16
 * (iq2_xxs) is not supported"). Metadata strings are copied NUL-terminated at open; tensor data
 * pointers point into the map (or into the caller's buffer for gguf_open_memory()).
 * Refused: bad magic, versions other than 2/3, big-endian files, counts or lengths beyond the
 * file, unknown value types, arrays nested deeper than 4, duplicate keys or tensor names, keys or
 * names with NUL bytes, tensor names of 64 bytes or more, 0 or more than 4 dimensions, a zero
 * dimension, element counts or byte sizes that overflow, row lengths that are not a multiple of
 * the block size, unknown or unsupported tensor types (named), general.alignment that is not a
 * uint32 power of two, tensor offsets not aligned to it, and tensor data beyond the end.
 *
 * Writer: collect KVs and tensors, then write a v3 file with aligned tensor data, atomically
 * (temporary file in the same folder + rename), or into a malloc'ed buffer. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ggml-types.h"
#include "macro.h"

typedef enum GgufType {
        GGUF_TYPE_UINT8 = 0,
        GGUF_TYPE_INT8 = 1,
        GGUF_TYPE_UINT16 = 2,
        GGUF_TYPE_INT16 = 3,
        GGUF_TYPE_UINT32 = 4,
        GGUF_TYPE_INT32 = 5,
        GGUF_TYPE_FLOAT32 = 6,
        GGUF_TYPE_BOOL = 7,
        GGUF_TYPE_STRING = 8,
        GGUF_TYPE_ARRAY = 9,
        GGUF_TYPE_UINT64 = 10,
        GGUF_TYPE_INT64 = 11,
        GGUF_TYPE_FLOAT64 = 12,
        _GGUF_TYPE_MAX,
} GgufType;

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

typedef struct Gguf Gguf;

typedef struct GgufTensor {
        const char *name;           /* NUL-terminated */
        GgmlType type;              /* always a supported type */
        uint32_t n_dims;            /* 1..4 */
        uint64_t ne[GGUF_MAX_DIMS]; /* ggml order: ne[0] is the row length; unused dims are 1 */
        uint64_t n_elements;
        uint64_t offset;  /* from the start of the data section */
        size_t size;      /* bytes */
        const void *data; /* into the mapping; aligned to the file's alignment */
} GgufTensor;

/* Opens and validates a file (mmap'ed read-only). */
int gguf_open(const char *path, Gguf **ret, char **ret_error);
/* Same over a caller's buffer, which must outlive the returned object (fuzzing, tests). */
int gguf_open_memory(const void *data, size_t size, Gguf **ret, char **ret_error);
Gguf *gguf_close(Gguf *g);
DEFINE_TRIVIAL_CLEANUP_FUNC(Gguf *, gguf_close);

uint32_t gguf_version(const Gguf *g);
uint32_t gguf_alignment(const Gguf *g);
/* Offset of the tensor data section within the file. */
uint64_t gguf_data_offset(const Gguf *g);

/* Metadata. Keys are looked up by exact name. */
size_t gguf_n_kv(const Gguf *g);
const char *gguf_kv_key(const Gguf *g, size_t i);
GgufType gguf_kv_type(const Gguf *g, size_t i);
/* Index of the key, or -ENOENT. */
int gguf_find_key(const Gguf *g, const char *key);

/* Typed getters: 0 on success, -ENOENT if the key is missing, -EMEDIUMTYPE if it has another
 * type, -ERANGE if an integer does not fit. Integer getters accept any integer type whose value
 * fits; gguf_get_f32 accepts FLOAT32 and FLOAT64. */
int gguf_get_u32(const Gguf *g, const char *key, uint32_t *ret);
int gguf_get_i32(const Gguf *g, const char *key, int32_t *ret);
int gguf_get_u64(const Gguf *g, const char *key, uint64_t *ret);
int gguf_get_f32(const Gguf *g, const char *key, float *ret);
int gguf_get_bool(const Gguf *g, const char *key, bool *ret);
/* The string stays owned by g; ret_len may be NULL. Strings may contain NUL bytes: use the length
 * where that matters. */
int gguf_get_string(const Gguf *g, const char *key, const char **ret, size_t *ret_len);

/* Arrays. gguf_get_array_info() gives the element type and count (for nested arrays the element
 * type is GGUF_TYPE_ARRAY; their content is validated but not exposed). */
int gguf_get_array_info(const Gguf *g, const char *key, GgufType *ret_type, size_t *ret_n);
/* Array of strings: ret gets an array of n NUL-terminated strings owned by g; ret_lens (may be
 * NULL) their lengths. */
int gguf_get_string_array(const Gguf *g, const char *key, const char *const **ret, const size_t **ret_lens,
                          size_t *ret_n);
/* Numeric arrays, converted into newly allocated arrays: i32 accepts any integer element type
 * whose values fit; f32 accepts FLOAT32/FLOAT64 (and integers). */
int gguf_get_i32_array(const Gguf *g, const char *key, int32_t **ret, size_t *ret_n);
int gguf_get_f32_array(const Gguf *g, const char *key, float **ret, size_t *ret_n);

/* Tensors. */
size_t gguf_n_tensors(const Gguf *g);
const GgufTensor *gguf_tensor(const Gguf *g, size_t i);
/* NULL when absent. */
const GgufTensor *gguf_find_tensor(const Gguf *g, const char *name);

/* ---- Writer ---- */
typedef struct GgufWriter GgufWriter;

int gguf_writer_new(GgufWriter **ret);
GgufWriter *gguf_writer_free(GgufWriter *w);
/* Power of two; also written as general.alignment when not 32. */
int gguf_writer_set_alignment(GgufWriter *w, uint32_t alignment);

/* KVs are written in the order added; adding an existing key returns -EEXIST. */
int gguf_writer_add_u32(GgufWriter *w, const char *key, uint32_t v);
int gguf_writer_add_i32(GgufWriter *w, const char *key, int32_t v);
int gguf_writer_add_u64(GgufWriter *w, const char *key, uint64_t v);
int gguf_writer_add_f32(GgufWriter *w, const char *key, float v);
int gguf_writer_add_bool(GgufWriter *w, const char *key, bool v);
int gguf_writer_add_string(GgufWriter *w, const char *key, const char *s);
/* Array of n elements of a fixed-size type (not STRING/ARRAY), data in host (little-endian) order. */
int gguf_writer_add_array(GgufWriter *w, const char *key, GgufType elem_type, const void *data, size_t n);
int gguf_writer_add_string_array(GgufWriter *w, const char *key, const char *const *strs, size_t n);
/* A KV of any type from its raw serialised value (everything after the type field), for tests
 * that need nested arrays or hostile content. Not validated. */
int gguf_writer_add_raw(GgufWriter *w, const char *key, GgufType type, const void *value, size_t size);

/* Adds a tensor. ne[0] is the row length (ggml order). data is NOT copied: it must stay valid
 * until the file is written. size must equal the tensor's byte size. */
int gguf_writer_add_tensor(GgufWriter *w, const char *name, GgmlType type, uint32_t n_dims,
                           const uint64_t *ne, const void *data, size_t size);

/* Writes the file atomically (tmp file + fsync + rename); mode 0644. */
int gguf_writer_write(GgufWriter *w, const char *path);
/* Serialises into a newly allocated buffer. */
int gguf_writer_write_memory(GgufWriter *w, void **ret, size_t *ret_size);
