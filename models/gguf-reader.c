/* GGUF reader: maps a file and validates every count, offset and extent before exposing it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "gguf-internal.h"
#include "gguf.h"
#include "macro.h"

#define GGUF_MAX_NAME 64 /* ggml's GGML_MAX_NAME, terminator included */
#define GGUF_MAX_NESTING 4

typedef struct Cursor {
        const uint8_t *base;
        size_t size, pos;
        char *error;
} Cursor;

_printf_(2, 3) static int fail(Cursor *c, const char *fmt, ...) {
        va_list ap;

        if (!c->error) {
                va_start(ap, fmt);
                if (vasprintf(&c->error, fmt, ap) < 0)
                        c->error = NULL;
                va_end(ap);
        }
        return -EBADMSG;
}

static int read_bytes(Cursor *c, void *dst, size_t n, const char *what) {
        memset(dst, 0, n); /* defined even on failure (keeps -Wmaybe-uninitialized quiet) */
        if (c->size - c->pos < n)
                return fail(c, "truncated file: %s at offset %zu needs %zu bytes, %zu left", what, c->pos, n,
                            c->size - c->pos);
        memcpy(dst, c->base + c->pos, n);
        c->pos += n;
        return 0;
}

static int read_u32(Cursor *c, uint32_t *ret, const char *what) {
        return read_bytes(c, ret, 4, what);
}

static int read_u64(Cursor *c, uint64_t *ret, const char *what) {
        return read_bytes(c, ret, 8, what);
}

/* Reads a length-prefixed string; *ret points into the file (not NUL-terminated). */
static int read_string(Cursor *c, const char **ret, size_t *ret_len, const char *what) {
        uint64_t len;
        int r;

        *ret = NULL;
        *ret_len = 0;
        r = read_u64(c, &len, what);
        if (r < 0)
                return r;
        if (len > c->size - c->pos)
                return fail(c, "%s at offset %zu: string length %" PRIu64 " exceeds the file", what,
                            c->pos - 8, len);
        *ret = (const char *)c->base + c->pos;
        *ret_len = (size_t)len;
        c->pos += len;
        return 0;
}

static int skip_value(Cursor *c, uint32_t type, unsigned depth, const char *key);

static int skip_array(Cursor *c, unsigned depth, const char *key, uint32_t *ret_type, uint64_t *ret_n) {
        uint32_t et;
        uint64_t n;
        int r;

        r = read_u32(c, &et, "array type");
        if (r < 0)
                return r;
        r = read_u64(c, &n, "array length");
        if (r < 0)
                return r;
        if (et >= _GGUF_TYPE_MAX)
                return fail(c, "key '%s': array of unknown type %" PRIu32, key, et);
        size_t es = gguf_type_size(et);
        if (es > 0) {
                if (n > (c->size - c->pos) / es)
                        return fail(c, "key '%s': array of %" PRIu64 " elements exceeds the file", key, n);
                c->pos += (size_t)n * es;
        } else {
                /* every string or array element takes at least 8 bytes */
                if (n > (c->size - c->pos) / 8)
                        return fail(c, "key '%s': array of %" PRIu64 " elements exceeds the file", key, n);
                if (et == GGUF_TYPE_ARRAY && depth + 1 > GGUF_MAX_NESTING)
                        return fail(c, "key '%s': arrays nested too deeply", key);
                for (uint64_t i = 0; i < n; i++) {
                        r = skip_value(c, et, depth + 1, key);
                        if (r < 0)
                                return r;
                }
        }
        if (ret_type)
                *ret_type = et;
        if (ret_n)
                *ret_n = n;
        return 0;
}

static int skip_value(Cursor *c, uint32_t type, unsigned depth, const char *key) {
        const char *s;
        size_t len;

        if (type == GGUF_TYPE_STRING)
                return read_string(c, &s, &len, "string value");
        if (type == GGUF_TYPE_ARRAY)
                return skip_array(c, depth, key, NULL, NULL);
        size_t sz = gguf_type_size(type);
        if (sz == 0)
                return fail(c, "key '%s': unknown value type %" PRIu32, key, type);
        if (c->size - c->pos < sz)
                return fail(c, "truncated file: value of key '%s'", key);
        c->pos += sz;
        return 0;
}

static char *memdup_nul(const char *s, size_t len) {
        char *p = malloc(len + 1);
        if (!p)
                return NULL;
        memcpy(p, s, len);
        p[len] = 0;
        return p;
}

static int parse_string_array(Cursor *c, GgufKv *kv, size_t start) {
        size_t total = 0, pos = c->pos;
        int r;

        c->pos = start;
        kv->strs = calloc(kv->arr_n ? kv->arr_n : 1, sizeof(char *));
        kv->lens = calloc(kv->arr_n ? kv->arr_n : 1, sizeof(size_t));
        if (!kv->strs || !kv->lens)
                return -ENOMEM;
        /* first pass: lengths (already validated by skip_array) */
        for (size_t i = 0; i < kv->arr_n; i++) {
                const char *s;
                r = read_string(c, &s, &kv->lens[i], "string");
                if (r < 0)
                        return r;
                total += kv->lens[i] + 1;
        }
        kv->strbuf = malloc(total ? total : 1);
        if (!kv->strbuf)
                return -ENOMEM;
        c->pos = start;
        char *p = kv->strbuf;
        for (size_t i = 0; i < kv->arr_n; i++) {
                const char *s;
                size_t len;
                r = read_string(c, &s, &len, "string");
                if (r < 0)
                        return r;
                memcpy(p, s, len);
                p[len] = 0;
                kv->strs[i] = p;
                p += len + 1;
        }
        c->pos = pos;
        return 0;
}

static int parse_kv(Cursor *c, GgufKv *kv) {
        const char *k;
        size_t klen;
        uint32_t type;
        int r;

        r = read_string(c, &k, &klen, "key");
        if (r < 0)
                return r;
        if (klen == 0)
                return fail(c, "empty key at offset %zu", c->pos - 8);
        if (memchr(k, 0, klen))
                return fail(c, "key at offset %zu contains a NUL byte", c->pos - 8 - klen);
        kv->key = memdup_nul(k, klen);
        if (!kv->key)
                return -ENOMEM;
        r = read_u32(c, &type, "value type");
        if (r < 0)
                return r;
        if (type >= _GGUF_TYPE_MAX)
                return fail(c, "key '%s': unknown value type %" PRIu32, kv->key, type);
        kv->type = type;

        switch (type) {
        case GGUF_TYPE_STRING: {
                const char *s;
                r = read_string(c, &s, &kv->str_len, "string value");
                if (r < 0)
                        return r;
                kv->str = memdup_nul(s, kv->str_len);
                if (!kv->str)
                        return -ENOMEM;
                return 0;
        }
        case GGUF_TYPE_ARRAY: {
                uint32_t et;
                uint64_t n;
                size_t start = c->pos + 12;
                r = skip_array(c, 0, kv->key, &et, &n);
                if (r < 0)
                        return r;
                kv->arr_type = et;
                kv->arr_n = (size_t)n;
                if (gguf_type_size(et) > 0)
                        kv->arr_data = c->base + start;
                else if (et == GGUF_TYPE_STRING)
                        return parse_string_array(c, kv, start);
                return 0;
        }
        default: {
                uint8_t b[8] = {};
                size_t sz = gguf_type_size(type);
                r = read_bytes(c, b, sz, "value");
                if (r < 0)
                        return r;
                switch (type) {
                case GGUF_TYPE_UINT8:
                case GGUF_TYPE_BOOL:
                        kv->v.u = b[0];
                        break;
                case GGUF_TYPE_INT8:
                        kv->v.i = (int8_t)b[0];
                        break;
                case GGUF_TYPE_UINT16: {
                        uint16_t x;
                        memcpy(&x, b, 2);
                        kv->v.u = x;
                        break;
                }
                case GGUF_TYPE_INT16: {
                        int16_t x;
                        memcpy(&x, b, 2);
                        kv->v.i = x;
                        break;
                }
                case GGUF_TYPE_UINT32: {
                        uint32_t x;
                        memcpy(&x, b, 4);
                        kv->v.u = x;
                        break;
                }
                case GGUF_TYPE_INT32: {
                        int32_t x;
                        memcpy(&x, b, 4);
                        kv->v.i = x;
                        break;
                }
                case GGUF_TYPE_FLOAT32: {
                        float x;
                        memcpy(&x, b, 4);
                        kv->v.f = x;
                        break;
                }
                case GGUF_TYPE_UINT64:
                        memcpy(&kv->v.u, b, 8);
                        break;
                case GGUF_TYPE_INT64:
                        memcpy(&kv->v.i, b, 8);
                        break;
                case GGUF_TYPE_FLOAT64:
                        memcpy(&kv->v.f, b, 8);
                        break;
                }
                return 0;
        }
        }
}

static int parse_tensor_info(Cursor *c, GgufTensor *t, size_t idx) {
        const char *name;
        size_t len;
        uint32_t n_dims, type;
        int r;

        r = read_string(c, &name, &len, "tensor name");
        if (r < 0)
                return r;
        if (len == 0 || len >= GGUF_MAX_NAME || memchr(name, 0, len))
                return fail(c, "tensor %zu: invalid name (length %zu)", idx, len);
        t->name = memdup_nul(name, len);
        if (!t->name)
                return -ENOMEM;
        r = read_u32(c, &n_dims, "tensor dimensions");
        if (r < 0)
                return r;
        if (n_dims == 0 || n_dims > GGUF_MAX_DIMS)
                return fail(c, "tensor '%s': %" PRIu32 " dimensions (1-%d allowed)", t->name, n_dims,
                            GGUF_MAX_DIMS);
        t->n_dims = n_dims;
        uint64_t total = 1;
        for (unsigned i = 0; i < GGUF_MAX_DIMS; i++) {
                uint64_t ne = 1;
                if (i < n_dims) {
                        r = read_u64(c, &ne, "tensor shape");
                        if (r < 0)
                                return r;
                        if (ne > INT64_MAX)
                                return fail(c, "tensor '%s': dimension %u is negative", t->name, i);
                        if (ne == 0)
                                return fail(c, "tensor '%s': dimension %u is zero", t->name, i);
                }
                t->ne[i] = ne;
                if (__builtin_mul_overflow(total, ne, &total) || total > INT64_MAX)
                        return fail(c, "tensor '%s': element count overflows", t->name);
        }
        t->n_elements = total;
        r = read_u32(c, &type, "tensor type");
        if (r < 0)
                return r;
        const GgmlTypeInfo *info = ggml_type_info(type);
        if (!info)
                return fail(c, "tensor '%s': unknown type %" PRIu32, t->name, type);
        if (!info->supported)
                return fail(c, "tensor '%s': type %" PRIu32 " (%s) is not supported", t->name, type,
                            info->name);
        t->type = type;
        if (t->ne[0] % info->block_size != 0)
                return fail(c,
                            "tensor '%s': row length %" PRIu64
                            " is not a multiple of the %s block size %" PRIu32,
                            t->name, t->ne[0], info->name, info->block_size);
        r = ggml_row_size(type, total, &t->size);
        if (r < 0)
                return fail(c, "tensor '%s': byte size overflows", t->name);
        r = read_u64(c, &t->offset, "tensor offset");
        if (r < 0)
                return r;
        return 0;
}

static int cmp_kv(const void *a, const void *b, void *userdata) {
        const GgufKv *kvs = userdata;
        return strcmp(kvs[*(const size_t *)a].key, kvs[*(const size_t *)b].key);
}

static int cmp_tensor(const void *a, const void *b, void *userdata) {
        const GgufTensor *ts = userdata;
        return strcmp(ts[*(const size_t *)a].name, ts[*(const size_t *)b].name);
}

static int parse(Gguf *g, Cursor *c) {
        char magic[4];
        uint64_t n_tensors, n_kv;
        int r;

        r = read_bytes(c, magic, 4, "magic");
        if (r < 0)
                return r;
        if (memcmp(magic, GGUF_MAGIC, 4) != 0)
                return fail(c, "not a GGUF file (bad magic)");
        r = read_u32(c, &g->version, "version");
        if (r < 0)
                return r;
        if (g->version == 1)
                return fail(c, "GGUF version 1 is not supported");
        if (g->version != 2 && g->version != 3) {
                if ((g->version & 0xFFFF) == 0)
                        return fail(c, "big-endian GGUF files are not supported");
                return fail(c, "unknown GGUF version %" PRIu32, g->version);
        }
        r = read_u64(c, &n_tensors, "tensor count");
        if (r < 0)
                return r;
        r = read_u64(c, &n_kv, "metadata count");
        if (r < 0)
                return r;
        /* a KV takes at least 13 bytes, a tensor info at least 29: cheap bound before allocating */
        if (n_kv > (c->size - c->pos) / 13)
                return fail(c, "metadata count %" PRIu64 " exceeds the file", n_kv);
        if (n_tensors > (c->size - c->pos) / 29)
                return fail(c, "tensor count %" PRIu64 " exceeds the file", n_tensors);

        g->kvs = calloc(n_kv ? n_kv : 1, sizeof(GgufKv));
        g->kv_sorted = calloc(n_kv ? n_kv : 1, sizeof(size_t));
        if (!g->kvs || !g->kv_sorted)
                return -ENOMEM;
        g->alignment = GGUF_DEFAULT_ALIGNMENT;
        for (size_t i = 0; i < n_kv; i++) {
                g->n_kv = i + 1;
                r = parse_kv(c, &g->kvs[i]);
                if (r < 0)
                        return r;
                g->kv_sorted[i] = i;
        }
        qsort_r(g->kv_sorted, g->n_kv, sizeof(size_t), cmp_kv, g->kvs);
        for (size_t i = 1; i < g->n_kv; i++)
                if (streq(g->kvs[g->kv_sorted[i]].key, g->kvs[g->kv_sorted[i - 1]].key))
                        return fail(c, "duplicate key '%s'", g->kvs[g->kv_sorted[i]].key);

        int ai = gguf_find_key(g, "general.alignment");
        if (ai >= 0) {
                const GgufKv *kv = &g->kvs[ai];
                if (kv->type != GGUF_TYPE_UINT32)
                        return fail(c, "general.alignment is not a uint32");
                if (kv->v.u == 0 || (kv->v.u & (kv->v.u - 1)) != 0)
                        return fail(c, "general.alignment %" PRIu64 " is not a power of two", kv->v.u);
                g->alignment = (uint32_t)kv->v.u;
        }

        g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof(GgufTensor));
        g->tensor_sorted = calloc(n_tensors ? n_tensors : 1, sizeof(size_t));
        if (!g->tensors || !g->tensor_sorted)
                return -ENOMEM;
        for (size_t i = 0; i < n_tensors; i++) {
                g->n_tensors = i + 1;
                r = parse_tensor_info(c, &g->tensors[i], i);
                if (r < 0)
                        return r;
                g->tensor_sorted[i] = i;
        }
        qsort_r(g->tensor_sorted, g->n_tensors, sizeof(size_t), cmp_tensor, g->tensors);
        for (size_t i = 1; i < g->n_tensors; i++)
                if (streq(g->tensors[g->tensor_sorted[i]].name, g->tensors[g->tensor_sorted[i - 1]].name))
                        return fail(c, "duplicate tensor '%s'", g->tensors[g->tensor_sorted[i]].name);

        uint64_t data_offset = ALIGN_TO((uint64_t)c->pos, (uint64_t)g->alignment);
        if (n_tensors > 0 && data_offset > c->size)
                return fail(c, "truncated file: data section at %" PRIu64 " beyond the end (%zu bytes)",
                            data_offset, c->size);
        g->data_offset = data_offset;
        for (size_t i = 0; i < g->n_tensors; i++) {
                GgufTensor *t = &g->tensors[i];
                if (t->offset % g->alignment != 0)
                        return fail(c, "tensor '%s': offset %" PRIu64 " is not aligned to %" PRIu32, t->name,
                                    t->offset, g->alignment);
                if (t->offset > c->size - data_offset || t->size > c->size - data_offset - t->offset)
                        return fail(c,
                                    "tensor '%s': data (%zu bytes at %" PRIu64
                                    ") extends beyond the end of the file (%zu bytes)",
                                    t->name, t->size, data_offset + t->offset, c->size);
                t->data = c->base + data_offset + t->offset;
        }
        return 0;
}

Gguf *gguf_close(Gguf *g) {
        if (!g)
                return NULL;
        for (size_t i = 0; i < g->n_kv; i++) {
                free(g->kvs[i].key);
                free(g->kvs[i].str);
                free(g->kvs[i].strs);
                free(g->kvs[i].lens);
                free(g->kvs[i].strbuf);
        }
        free(g->kvs);
        free(g->kv_sorted);
        for (size_t i = 0; i < g->n_tensors; i++)
                free((char *)g->tensors[i].name);
        free(g->tensors);
        free(g->tensor_sorted);
        if (g->mapped && g->base)
                (void)munmap((void *)g->base, g->size);
        return mfree(g);
}


static int open_common(Gguf *g, Gguf **ret, char **ret_error) {
        Cursor c = {.base = g->base, .size = g->size};
        int r;

        r = parse(g, &c);
        if (r < 0) {
                if (ret_error)
                        *ret_error = c.error ? c.error : strdup(strerror(-r));
                else
                        free(c.error);
                return r;
        }
        free(c.error);
        *ret = g;
        return 0;
}

int gguf_open_memory(const void *data, size_t size, Gguf **ret, char **ret_error) {
        _cleanup_(gguf_closep) Gguf *g = NULL;
        int r;

        if (!data && size > 0)
                return -EINVAL;
        g = calloc(1, sizeof(Gguf));
        if (!g)
                return -ENOMEM;
        g->base = data;
        g->size = size;
        r = open_common(g, ret, ret_error);
        if (r < 0)
                return r;
        TAKE_PTR(g);
        return 0;
}

static int set_error(char **ret_error, int r, const char *what, const char *path) {
        if (ret_error && asprintf(ret_error, "%s: %s%s%s", path, what, *what ? ": " : "", strerror(-r)) < 0)
                *ret_error = NULL;
        return r;
}

int gguf_open(const char *path, Gguf **ret, char **ret_error) {
        _cleanup_(gguf_closep) Gguf *g = NULL;
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return set_error(ret_error, -errno, "", path);
        if (fstat(fd, &st) < 0)
                return set_error(ret_error, -errno, "", path);
        if (!S_ISREG(st.st_mode))
                return set_error(ret_error, -EBADMSG, "not a regular file", path);
        if (st.st_size < 24 || (uint64_t)st.st_size > SIZE_MAX)
                return set_error(ret_error, -EBADMSG, "too small for a GGUF file", path);
        g = calloc(1, sizeof(Gguf));
        if (!g)
                return -ENOMEM;
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
                return set_error(ret_error, -errno, "mmap", path);
        g->base = p;
        g->size = (size_t)st.st_size;
        g->mapped = true;
        r = open_common(g, ret, ret_error);
        if (r < 0)
                return r;
        TAKE_PTR(g);
        return 0;
}
