/* GGUF writer: collects metadata and tensors, then writes an aligned v3 file atomically. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf-internal.h"
#include "gguf.h"
#include "macro.h"

typedef struct WriterKv {
        char *key;
        GgufType type;
        void *value; /* serialised value */
        size_t size;
} WriterKv;

typedef struct WriterTensor {
        char *name;
        GgmlType type;
        uint32_t n_dims;
        uint64_t ne[GGUF_MAX_DIMS];
        const void *data;
        size_t size;
} WriterTensor;

struct GgufWriter {
        uint32_t alignment;
        WriterKv *kvs;
        size_t n_kv;
        WriterTensor *tensors;
        size_t n_tensors;
};

int gguf_writer_new(GgufWriter **ret) {
        GgufWriter *w = calloc(1, sizeof(GgufWriter));
        if (!w)
                return -ENOMEM;
        w->alignment = GGUF_DEFAULT_ALIGNMENT;
        *ret = w;
        return 0;
}

GgufWriter *gguf_writer_free(GgufWriter *w) {
        if (!w)
                return NULL;
        for (size_t i = 0; i < w->n_kv; i++) {
                free(w->kvs[i].key);
                free(w->kvs[i].value);
        }
        free(w->kvs);
        for (size_t i = 0; i < w->n_tensors; i++)
                free(w->tensors[i].name);
        free(w->tensors);
        return mfree(w);
}

static WriterKv *find_kv(GgufWriter *w, const char *key) {
        for (size_t i = 0; i < w->n_kv; i++)
                if (streq(w->kvs[i].key, key))
                        return &w->kvs[i];
        return NULL;
}

int gguf_writer_add_raw(GgufWriter *w, const char *key, GgufType type, const void *value, size_t size) {
        if (!key || !*key || (size > 0 && !value))
                return -EINVAL;
        if (find_kv(w, key))
                return -EEXIST;
        WriterKv *kvs = reallocarray(w->kvs, w->n_kv + 1, sizeof(WriterKv));
        if (!kvs)
                return -ENOMEM;
        w->kvs = kvs;
        _cleanup_free_ char *k = strdup(key);
        _cleanup_free_ void *v = malloc(size ? size : 1);
        if (!k || !v)
                return -ENOMEM;
        if (size)
                memcpy(v, value, size);
        w->kvs[w->n_kv++] = (WriterKv){
                .key = TAKE_PTR(k),
                .type = type,
                .value = TAKE_PTR(v),
                .size = size,
        };
        return 0;
}

int gguf_writer_set_alignment(GgufWriter *w, uint32_t alignment) {
        if (alignment == 0 || (alignment & (alignment - 1)) != 0)
                return -EINVAL;
        w->alignment = alignment;
        WriterKv *kv = find_kv(w, "general.alignment");
        if (kv) {
                memcpy(kv->value, &alignment, 4);
                return 0;
        }
        if (alignment == GGUF_DEFAULT_ALIGNMENT)
                return 0;
        return gguf_writer_add_raw(w, "general.alignment", GGUF_TYPE_UINT32, &alignment, 4);
}

int gguf_writer_add_u32(GgufWriter *w, const char *key, uint32_t v) {
        return gguf_writer_add_raw(w, key, GGUF_TYPE_UINT32, &v, 4);
}

int gguf_writer_add_i32(GgufWriter *w, const char *key, int32_t v) {
        return gguf_writer_add_raw(w, key, GGUF_TYPE_INT32, &v, 4);
}

int gguf_writer_add_u64(GgufWriter *w, const char *key, uint64_t v) {
        return gguf_writer_add_raw(w, key, GGUF_TYPE_UINT64, &v, 8);
}

int gguf_writer_add_f32(GgufWriter *w, const char *key, float v) {
        return gguf_writer_add_raw(w, key, GGUF_TYPE_FLOAT32, &v, 4);
}

int gguf_writer_add_bool(GgufWriter *w, const char *key, bool v) {
        uint8_t b = v;
        return gguf_writer_add_raw(w, key, GGUF_TYPE_BOOL, &b, 1);
}

int gguf_writer_add_string(GgufWriter *w, const char *key, const char *s) {
        uint64_t len = strlen(s);
        _cleanup_free_ uint8_t *buf = malloc(8 + len);
        if (!buf)
                return -ENOMEM;
        memcpy(buf, &len, 8);
        memcpy(buf + 8, s, len);
        return gguf_writer_add_raw(w, key, GGUF_TYPE_STRING, buf, 8 + len);
}

int gguf_writer_add_array(GgufWriter *w, const char *key, GgufType elem_type, const void *data, size_t n) {
        size_t es = gguf_type_size(elem_type), bytes;
        if (es == 0)
                return -EINVAL;
        if (size_mul_overflow(es, n, &bytes) || size_add_overflow(bytes, 12, &bytes))
                return -EOVERFLOW;
        _cleanup_free_ uint8_t *buf = malloc(bytes);
        if (!buf)
                return -ENOMEM;
        uint32_t t = elem_type;
        uint64_t n64 = n;
        memcpy(buf, &t, 4);
        memcpy(buf + 4, &n64, 8);
        if (n)
                memcpy(buf + 12, data, n * es);
        return gguf_writer_add_raw(w, key, GGUF_TYPE_ARRAY, buf, bytes);
}

int gguf_writer_add_string_array(GgufWriter *w, const char *key, const char *const *strs, size_t n) {
        size_t bytes = 12;
        for (size_t i = 0; i < n; i++)
                if (size_add_overflow(bytes, 8 + strlen(strs[i]), &bytes))
                        return -EOVERFLOW;
        _cleanup_free_ uint8_t *buf = malloc(bytes);
        if (!buf)
                return -ENOMEM;
        uint32_t t = GGUF_TYPE_STRING;
        uint64_t n64 = n;
        memcpy(buf, &t, 4);
        memcpy(buf + 4, &n64, 8);
        uint8_t *p = buf + 12;
        for (size_t i = 0; i < n; i++) {
                uint64_t len = strlen(strs[i]);
                memcpy(p, &len, 8);
                memcpy(p + 8, strs[i], len);
                p += 8 + len;
        }
        return gguf_writer_add_raw(w, key, GGUF_TYPE_ARRAY, buf, bytes);
}

int gguf_writer_add_tensor(GgufWriter *w, const char *name, GgmlType type, uint32_t n_dims,
                           const uint64_t *ne, const void *data, size_t size) {
        uint64_t total = 1;
        size_t expect;
        int r;

        if (!name || !*name || strlen(name) >= 64 || n_dims == 0 || n_dims > GGUF_MAX_DIMS)
                return -EINVAL;
        for (size_t i = 0; i < w->n_tensors; i++)
                if (streq(w->tensors[i].name, name))
                        return -EEXIST;
        for (uint32_t i = 0; i < n_dims; i++)
                if (__builtin_mul_overflow(total, ne[i], &total))
                        return -EOVERFLOW;
        const GgmlTypeInfo *info = ggml_type_info(type);
        if (!info || !info->supported || ne[0] % info->block_size != 0)
                return -EINVAL;
        r = ggml_row_size(type, total, &expect);
        if (r < 0)
                return r;
        if (expect != size || (size > 0 && !data))
                return -EINVAL;
        WriterTensor *ts = reallocarray(w->tensors, w->n_tensors + 1, sizeof(WriterTensor));
        if (!ts)
                return -ENOMEM;
        w->tensors = ts;
        WriterTensor *t = &w->tensors[w->n_tensors];
        *t = (WriterTensor){.type = type, .n_dims = n_dims, .data = data, .size = size};
        for (unsigned i = 0; i < GGUF_MAX_DIMS; i++)
                t->ne[i] = i < n_dims ? ne[i] : 1;
        t->name = strdup(name);
        if (!t->name)
                return -ENOMEM;
        w->n_tensors++;
        return 0;
}

static int put(FILE *f, const void *p, size_t n) {
        if (n > 0 && fwrite(p, 1, n, f) != n)
                return -EIO;
        return 0;
}

static int put_string(FILE *f, const char *s) {
        uint64_t len = strlen(s);
        int r = put(f, &len, 8);
        return r < 0 ? r : put(f, s, len);
}

static int pad(FILE *f, uint64_t *pos, uint32_t alignment) {
        static const uint8_t zeros[256];
        uint64_t target = ALIGN_TO(*pos, (uint64_t)alignment);
        while (*pos < target) {
                size_t n = (size_t)MIN(target - *pos, (uint64_t)sizeof(zeros));
                int r = put(f, zeros, n);
                if (r < 0)
                        return r;
                *pos += n;
        }
        return 0;
}

static int emit(GgufWriter *w, FILE *f) {
        uint32_t version = 3;
        uint64_t n_tensors = w->n_tensors, n_kv = w->n_kv, pos, offset = 0;
        int r;

        if ((r = put(f, GGUF_MAGIC, 4)) < 0 || (r = put(f, &version, 4)) < 0 ||
            (r = put(f, &n_tensors, 8)) < 0 || (r = put(f, &n_kv, 8)) < 0)
                return r;
        pos = 24;
        for (size_t i = 0; i < w->n_kv; i++) {
                uint32_t t = w->kvs[i].type;
                if ((r = put_string(f, w->kvs[i].key)) < 0 || (r = put(f, &t, 4)) < 0 ||
                    (r = put(f, w->kvs[i].value, w->kvs[i].size)) < 0)
                        return r;
                pos += 8 + strlen(w->kvs[i].key) + 4 + w->kvs[i].size;
        }
        for (size_t i = 0; i < w->n_tensors; i++) {
                const WriterTensor *t = &w->tensors[i];
                uint32_t type = t->type;
                if ((r = put_string(f, t->name)) < 0 || (r = put(f, &t->n_dims, 4)) < 0 ||
                    (r = put(f, t->ne, 8 * t->n_dims)) < 0 || (r = put(f, &type, 4)) < 0 ||
                    (r = put(f, &offset, 8)) < 0)
                        return r;
                pos += 8 + strlen(t->name) + 4 + 8 * t->n_dims + 4 + 8;
                offset = ALIGN_TO(offset + t->size, (uint64_t)w->alignment);
        }
        for (size_t i = 0; i < w->n_tensors; i++) {
                r = pad(f, &pos, w->alignment);
                if (r < 0)
                        return r;
                r = put(f, w->tensors[i].data, w->tensors[i].size);
                if (r < 0)
                        return r;
                pos += w->tensors[i].size;
        }
        return 0;
}

int gguf_writer_write_memory(GgufWriter *w, void **ret, size_t *ret_size) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f;
        int r;

        f = open_memstream(&buf, &size);
        if (!f)
                return -errno;
        r = emit(w, f);
        if (fclose(f) != 0 && r >= 0)
                r = -EIO;
        if (r < 0) {
                free(buf);
                return r;
        }
        *ret = buf;
        *ret_size = size;
        return 0;
}

int gguf_writer_write(GgufWriter *w, const char *path) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        int fd, r;

        if (asprintf(&tmp, "%s.XXXXXX", path) < 0)
                return -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        f = fdopen(fd, "w");
        if (!f) {
                r = -errno;
                (void)close(fd);
                goto fail;
        }
        r = emit(w, f);
        if (r < 0)
                goto fail;
        if (fflush(f) != 0 || fsync(fileno(f)) < 0 || fchmod(fileno(f), 0644) < 0) {
                r = -errno;
                goto fail;
        }
        if (rename(tmp, path) < 0) {
                r = -errno;
                goto fail;
        }
        return 0;
fail:
        (void)unlink(tmp);
        return r;
}
