/* GGUF metadata and tensor lookups over a validated file (see gguf-reader.c). */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/types.h>

#include "gguf-internal.h"
#include "gguf.h"
#include "macro.h"

uint32_t gguf_version(const Gguf *g) {
        return g->version;
}

uint32_t gguf_alignment(const Gguf *g) {
        return g->alignment;
}

uint64_t gguf_data_offset(const Gguf *g) {
        return g->data_offset;
}

size_t gguf_n_kv(const Gguf *g) {
        return g->n_kv;
}

const char *gguf_kv_key(const Gguf *g, size_t i) {
        return i < g->n_kv ? g->kvs[i].key : NULL;
}

GgufType gguf_kv_type(const Gguf *g, size_t i) {
        return i < g->n_kv ? g->kvs[i].type : _GGUF_TYPE_MAX;
}

/* Binary search for name among n items of size bytes from base, visited in the order of sorted[]
 * (their indices sorted by name); the name is the char * at name_off in each item. */
static ssize_t find_sorted(const void *base, size_t size, size_t name_off, const size_t *sorted, size_t n,
                           const char *name) {
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const char *other = *(const char *const *) ((const uint8_t *) base + sorted[mid] * size + name_off);
                int c = strcmp(name, other);
                if (c == 0)
                        return (ssize_t) sorted[mid];
                if (c < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return -1;
}

int gguf_find_key(const Gguf *g, const char *key) {
        ssize_t i = find_sorted(g->kvs, sizeof(GgufKv), offsetof(GgufKv, key), g->kv_sorted, g->n_kv, key);
        return i < 0 ? -ENOENT : (int) MIN((size_t) i, (size_t) INT32_MAX);
}

static const GgufKv *find_kv(const Gguf *g, const char *key) {
        int i = gguf_find_key(g, key);
        return i < 0 ? NULL : &g->kvs[i];
}

static bool type_is_signed(GgufType t) {
        return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
}

static bool type_is_unsigned(GgufType t) {
        return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
               t == GGUF_TYPE_UINT64;
}

static int get_int(const Gguf *g, const char *key, int64_t lo, uint64_t hi, bool want_signed,
                   uint64_t *ret_u, int64_t *ret_i) {
        const GgufKv *kv = find_kv(g, key);

        if (!kv)
                return -ENOENT;
        if (type_is_unsigned(kv->type)) {
                if (kv->v.u > hi)
                        return -ERANGE;
                if (want_signed)
                        *ret_i = (int64_t)kv->v.u;
                else
                        *ret_u = kv->v.u;
                return 0;
        }
        if (type_is_signed(kv->type)) {
                if (kv->v.i < lo || (kv->v.i > 0 && (uint64_t)kv->v.i > hi))
                        return -ERANGE;
                if (want_signed)
                        *ret_i = kv->v.i;
                else
                        *ret_u = (uint64_t)kv->v.i;
                return 0;
        }
        return -EMEDIUMTYPE;
}

int gguf_get_u32(const Gguf *g, const char *key, uint32_t *ret) {
        uint64_t u;
        int r = get_int(g, key, 0, UINT32_MAX, false, &u, NULL);
        if (r < 0)
                return r;
        *ret = (uint32_t)u;
        return 0;
}

int gguf_get_u64(const Gguf *g, const char *key, uint64_t *ret) {
        uint64_t u;
        int r = get_int(g, key, 0, UINT64_MAX, false, &u, NULL);
        if (r < 0)
                return r;
        *ret = u;
        return 0;
}

int gguf_get_i32(const Gguf *g, const char *key, int32_t *ret) {
        int64_t i;
        int r = get_int(g, key, INT32_MIN, INT32_MAX, true, NULL, &i);
        if (r < 0)
                return r;
        *ret = (int32_t)i;
        return 0;
}

int gguf_get_f32(const Gguf *g, const char *key, float *ret) {
        const GgufKv *kv = find_kv(g, key);

        if (!kv)
                return -ENOENT;
        if (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)
                return -EMEDIUMTYPE;
        *ret = (float)kv->v.f;
        return 0;
}

int gguf_get_bool(const Gguf *g, const char *key, bool *ret) {
        const GgufKv *kv = find_kv(g, key);

        if (!kv)
                return -ENOENT;
        if (kv->type != GGUF_TYPE_BOOL)
                return -EMEDIUMTYPE;
        *ret = kv->v.u != 0;
        return 0;
}

int gguf_get_string(const Gguf *g, const char *key, const char **ret, size_t *ret_len) {
        const GgufKv *kv = find_kv(g, key);

        if (!kv)
                return -ENOENT;
        if (kv->type != GGUF_TYPE_STRING)
                return -EMEDIUMTYPE;
        *ret = kv->str;
        if (ret_len)
                *ret_len = kv->str_len;
        return 0;
}

int gguf_get_array_info(const Gguf *g, const char *key, GgufType *ret_type, size_t *ret_n) {
        const GgufKv *kv = find_kv(g, key);

        if (!kv)
                return -ENOENT;
        if (kv->type != GGUF_TYPE_ARRAY)
                return -EMEDIUMTYPE;
        if (ret_type)
                *ret_type = kv->arr_type;
        if (ret_n)
                *ret_n = kv->arr_n;
        return 0;
}

int gguf_get_string_array(const Gguf *g, const char *key, const char *const **ret, const size_t **ret_lens,
                          size_t *ret_n) {
        const GgufKv *kv = find_kv(g, key);

        if (!kv)
                return -ENOENT;
        if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING)
                return -EMEDIUMTYPE;
        *ret = (const char *const *)kv->strs;
        if (ret_lens)
                *ret_lens = kv->lens;
        *ret_n = kv->arr_n;
        return 0;
}

/* Reads element i of a fixed-size array as int64, uint64 and double (the integer types exactly;
 * each clamped into the other integer's range). Files are little-endian, as the host. */
static void array_elem(const GgufKv *kv, size_t i, int64_t *ret_i, uint64_t *ret_u, double *ret_f) {
        size_t size = gguf_type_size(kv->arr_type);
        const uint8_t *p = kv->arr_data + i * size;
        uint64_t raw = 0;

        *ret_i = 0, *ret_u = 0, *ret_f = 0;
        if (kv->arr_type == GGUF_TYPE_FLOAT32) {
                float x;
                memcpy(&x, p, 4);
                *ret_f = x;
        } else if (kv->arr_type == GGUF_TYPE_FLOAT64)
                memcpy(ret_f, p, 8);
        else if (type_is_unsigned(kv->arr_type) || kv->arr_type == GGUF_TYPE_BOOL) {
                memcpy(&raw, p, size);
                *ret_u = raw;
                *ret_i = raw > INT64_MAX ? INT64_MAX : (int64_t) raw;
                *ret_f = (double) raw;
        } else if (type_is_signed(kv->arr_type)) {
                unsigned shift = 64 - 8 * (unsigned) size;
                memcpy(&raw, p, size);
                int64_t iv = (int64_t) (raw << shift) >> shift;  /* sign-extended */
                *ret_i = iv;
                *ret_u = iv < 0 ? 0 : (uint64_t) iv;
                *ret_f = (double) iv;
        }
}

int gguf_get_i32_array(const Gguf *g, const char *key, int32_t **ret, size_t *ret_n) {
        const GgufKv *kv = find_kv(g, key);

        if (!kv)
                return -ENOENT;
        if (kv->type != GGUF_TYPE_ARRAY ||
            !(type_is_signed(kv->arr_type) || type_is_unsigned(kv->arr_type) ||
              kv->arr_type == GGUF_TYPE_BOOL))
                return -EMEDIUMTYPE;
        _cleanup_free_ int32_t *a = malloc(MAX(kv->arr_n, 1u) * sizeof(int32_t));
        if (!a)
                return -ENOMEM;
        for (size_t i = 0; i < kv->arr_n; i++) {
                int64_t iv;
                uint64_t uv;
                double fv;
                array_elem(kv, i, &iv, &uv, &fv);
                if (iv < INT32_MIN || iv > INT32_MAX)
                        return -ERANGE;
                a[i] = (int32_t)iv;
        }
        *ret = TAKE_PTR(a);
        *ret_n = kv->arr_n;
        return 0;
}

int gguf_get_f32_array(const Gguf *g, const char *key, float **ret, size_t *ret_n) {
        const GgufKv *kv = find_kv(g, key);

        if (!kv)
                return -ENOENT;
        if (kv->type != GGUF_TYPE_ARRAY || gguf_type_size(kv->arr_type) == 0)
                return -EMEDIUMTYPE;
        _cleanup_free_ float *a = malloc(MAX(kv->arr_n, 1u) * sizeof(float));
        if (!a)
                return -ENOMEM;
        for (size_t i = 0; i < kv->arr_n; i++) {
                int64_t iv;
                uint64_t uv;
                double fv;
                array_elem(kv, i, &iv, &uv, &fv);
                a[i] = (float)fv;
        }
        *ret = TAKE_PTR(a);
        *ret_n = kv->arr_n;
        return 0;
}

size_t gguf_n_tensors(const Gguf *g) {
        return g->n_tensors;
}

const GgufTensor *gguf_tensor(const Gguf *g, size_t i) {
        return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const GgufTensor *gguf_find_tensor(const Gguf *g, const char *name) {
        ssize_t i = find_sorted(g->tensors, sizeof(GgufTensor), offsetof(GgufTensor, name), g->tensor_sorted,
                                g->n_tensors, name);
        return i < 0 ? NULL : &g->tensors[i];
}
