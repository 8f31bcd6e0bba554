/* Shared by gguf-reader.c, gguf-access.c and gguf-writer.c: the parsed file and the sizes of
 * GGUF value types. */
#pragma once

#include <stddef.h>

#include "gguf.h"

typedef struct GgufKv {
        char *key;
        GgufType type;
        union {
                uint64_t u;
                int64_t i;
                double f;
        } v;
        char *str; /* STRING */
        size_t str_len;
        GgufType arr_type; /* ARRAY */
        size_t arr_n;
        const uint8_t *arr_data; /* fixed-size elements, unaligned, in the file */
        char **strs;             /* array of strings */
        size_t *lens;
        char *strbuf;
} GgufKv;

struct Gguf {
        const uint8_t *base;
        size_t size;
        bool mapped;
        uint32_t version;
        uint32_t alignment;
        uint64_t data_offset;
        GgufKv *kvs;
        size_t n_kv;
        size_t *kv_sorted; /* indices sorted by key */
        GgufTensor *tensors;
        size_t n_tensors;
        size_t *tensor_sorted;
};

/* Size in bytes of a fixed-size GGUF type, 0 for STRING, ARRAY and unknown types. */
static inline size_t gguf_type_size(uint32_t t) {
        switch (t) {
        case GGUF_TYPE_UINT8:
        case GGUF_TYPE_INT8:
        case GGUF_TYPE_BOOL:
                return 1;
        case GGUF_TYPE_UINT16:
        case GGUF_TYPE_INT16:
                return 2;
        case GGUF_TYPE_UINT32:
        case GGUF_TYPE_INT32:
        case GGUF_TYPE_FLOAT32:
                return 4;
        case GGUF_TYPE_UINT64:
        case GGUF_TYPE_INT64:
        case GGUF_TYPE_FLOAT64:
                return 8;
        default:
                return 0;
        }
}
