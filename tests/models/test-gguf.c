/* GGUF reader/writer tests: a file with every value type and every supported tensor type written
 * and read back (from disk and memory), every truncation of it, and hand-crafted hostile files
 * that must be refused with a message naming the problem.
 * With --write-corpus DIR it writes the fuzz seed corpus (tests/models/corpus-gguf/). */
#include <fcntl.h>
#include <sys/stat.h>

#include "formats-fixtures.h"
#include "ggml-types.h"

typedef struct Buf {
        uint8_t *p;
        size_t n, alloc;
} Buf;

static void b_put(Buf *b, const void *data, size_t n) {
        if (b->n + n > b->alloc) {
                b->alloc = MAX(b->alloc * 2, b->n + n + 256);
                b->p = realloc(b->p, b->alloc);
                CHECK(b->p);
        }
        memcpy(b->p + b->n, data, n);
        b->n += n;
}

static void b_u32(Buf *b, uint32_t v) {
        b_put(b, &v, 4);
}

static void b_u64(Buf *b, uint64_t v) {
        b_put(b, &v, 8);
}

static void b_str(Buf *b, const char *s) {
        b_u64(b, strlen(s));
        b_put(b, s, strlen(s));
}

static void b_pad(Buf *b, size_t align) {
        static const uint8_t z[64];
        b_put(b, z, ALIGN_TO(b->n, align) - b->n);
}

static void b_header(Buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
        b_put(b, "GGUF", 4);
        b_u32(b, version);
        b_u64(b, n_tensors);
        b_u64(b, n_kv);
}

/* A tensor info followed by nothing: callers add padding and data. */
static void b_tensor(Buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                     uint64_t offset) {
        b_str(b, name);
        b_u32(b, n_dims);
        for (uint32_t i = 0; i < n_dims; i++)
                b_u64(b, ne[i]);
        b_u32(b, type);
        b_u64(b, offset);
}

/* ---- the full file ---- */

static const uint32_t full_types[] = {
        GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
        GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};

static uint8_t tensor_data[ELEMENTSOF(full_types)][512];

static void *build_full(size_t *ret_size, uint32_t alignment) {
        GgufWriter *w;
        void *buf;

        CHECK_OK(gguf_writer_new(&w));
        CHECK_OK(gguf_writer_add_string(w, "general.architecture", "llama"));
        CHECK_OK(gguf_writer_set_alignment(w, alignment));
        CHECK_OK(gguf_writer_add_u32(w, "llama.block_count", 2));
        CHECK_OK(gguf_writer_add_i32(w, "test.i32", -5));
        CHECK_OK(gguf_writer_add_u64(w, "test.u64", UINT64_C(1) << 40));
        CHECK_OK(gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f));
        CHECK_OK(gguf_writer_add_bool(w, "test.bool", true));
        uint8_t u8 = 200;
        CHECK_OK(gguf_writer_add_raw(w, "test.u8", GGUF_TYPE_UINT8, &u8, 1));
        int16_t i16 = -300;
        CHECK_OK(gguf_writer_add_raw(w, "test.i16", GGUF_TYPE_INT16, &i16, 2));
        double f64 = 0.125;
        CHECK_OK(gguf_writer_add_raw(w, "test.f64", GGUF_TYPE_FLOAT64, &f64, 8));
        int32_t ia[] = {1, -2, 3};
        CHECK_OK(gguf_writer_add_array(w, "test.i32_array", GGUF_TYPE_INT32, ia, 3));
        float fa[] = {0.5f, -1.5f};
        CHECK_OK(gguf_writer_add_array(w, "test.f32_array", GGUF_TYPE_FLOAT32, fa, 2));
        const char *sa[] = {"a", "", "\xe2\x96\x81x"};
        CHECK_OK(gguf_writer_add_string_array(w, "test.strings", sa, 3));
        /* nested: array of 2 arrays of strings: [["x", "yz"], []] */
        Buf nb = {};
        b_u32(&nb, GGUF_TYPE_ARRAY);
        b_u64(&nb, 2);
        b_u32(&nb, GGUF_TYPE_STRING);
        b_u64(&nb, 2);
        b_str(&nb, "x");
        b_str(&nb, "yz");
        b_u32(&nb, GGUF_TYPE_STRING);
        b_u64(&nb, 0);
        CHECK_OK(gguf_writer_add_raw(w, "test.nested", GGUF_TYPE_ARRAY, nb.p, nb.n));
        free(nb.p);
        CHECK(gguf_writer_add_u32(w, "test.i32", 1) == -EEXIST);

        for (size_t i = 0; i < ELEMENTSOF(full_types); i++) {
                const GgmlTypeInfo *info = ggml_type_info(full_types[i]);
                uint64_t ne[2] = {info->block_size == 1 ? 8 : info->block_size, 2};
                size_t size;
                char name[32];
                CHECK_OK(ggml_row_size(full_types[i], ne[0] * ne[1], &size));
                CHECK(size <= sizeof(tensor_data[i]));
                for (size_t j = 0; j < size; j++)
                        tensor_data[i][j] = (uint8_t)(j * 7 + i);
                snprintf(name, sizeof(name), "blk.%zu.%s", i, info->name);
                CHECK_OK(gguf_writer_add_tensor(w, name, full_types[i], 2, ne, tensor_data[i], size));
        }
        uint64_t ne1 = 31;
        CHECK(gguf_writer_add_tensor(w, "bad", GGML_TYPE_Q4_0, 1, &ne1, tensor_data[0], 18) == -EINVAL);
        CHECK_OK(gguf_writer_write_memory(w, &buf, ret_size));
        gguf_writer_free(w);
        return buf;
}

static void check_full(const Gguf *g, uint32_t alignment, const uint8_t *base) {
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        float f;
        bool b;
        const char *s;
        size_t len, n;

        CHECK(gguf_version(g) == 3 && gguf_alignment(g) == alignment);
        CHECK(gguf_get_string(g, "general.architecture", &s, &len) == 0 && streq(s, "llama") && len == 5);
        CHECK(gguf_get_u32(g, "llama.block_count", &u32) == 0 && u32 == 2);
        CHECK(gguf_get_i32(g, "test.i32", &i32) == 0 && i32 == -5);
        CHECK(gguf_get_u32(g, "test.i32", &u32) == -ERANGE);
        CHECK(gguf_get_u64(g, "test.u64", &u64) == 0 && u64 == UINT64_C(1) << 40);
        CHECK(gguf_get_u32(g, "test.u64", &u32) == -ERANGE);
        CHECK(gguf_get_f32(g, "llama.rope.freq_base", &f) == 0 && f == 10000.0f);
        CHECK(gguf_get_f32(g, "test.f64", &f) == 0 && f == 0.125f);
        CHECK(gguf_get_bool(g, "test.bool", &b) == 0 && b);
        CHECK(gguf_get_u32(g, "test.u8", &u32) == 0 && u32 == 200);
        CHECK(gguf_get_i32(g, "test.i16", &i32) == 0 && i32 == -300);
        CHECK(gguf_get_u32(g, "test.i16", &u32) == -ERANGE);
        CHECK(gguf_get_u32(g, "missing", &u32) == -ENOENT);
        CHECK(gguf_get_u32(g, "general.architecture", &u32) == -EMEDIUMTYPE);
        CHECK(gguf_get_string(g, "test.u8", &s, NULL) == -EMEDIUMTYPE);

        int32_t *ia;
        CHECK(gguf_get_i32_array(g, "test.i32_array", &ia, &n) == 0 && n == 3 && ia[0] == 1 && ia[1] == -2 &&
              ia[2] == 3);
        free(ia);
        float *fa;
        CHECK(gguf_get_f32_array(g, "test.f32_array", &fa, &n) == 0 && n == 2 && fa[0] == 0.5f &&
              fa[1] == -1.5f);
        free(fa);
        CHECK(gguf_get_i32_array(g, "test.f32_array", &ia, &n) == -EMEDIUMTYPE);
        const char *const *strs;
        const size_t *lens;
        CHECK(gguf_get_string_array(g, "test.strings", &strs, &lens, &n) == 0 && n == 3);
        CHECK(streq(strs[0], "a") && streq(strs[1], "") && lens[1] == 0 && streq(strs[2], "\xe2\x96\x81x") &&
              lens[2] == 4);
        GgufType et;
        CHECK(gguf_get_array_info(g, "test.nested", &et, &n) == 0 && et == GGUF_TYPE_ARRAY && n == 2);
        CHECK(gguf_get_string_array(g, "test.nested", &strs, NULL, &n) == -EMEDIUMTYPE);
        CHECK(gguf_find_key(g, "test.bool") >= 0);
        CHECK(streq(gguf_kv_key(g, 0), "general.architecture"));

        CHECK(gguf_n_tensors(g) == ELEMENTSOF(full_types));
        for (size_t i = 0; i < ELEMENTSOF(full_types); i++) {
                const GgmlTypeInfo *info = ggml_type_info(full_types[i]);
                char name[32];
                snprintf(name, sizeof(name), "blk.%zu.%s", i, info->name);
                const GgufTensor *t = gguf_find_tensor(g, name);
                CHECK(t && t == gguf_tensor(g, i) && streq(t->name, name));
                CHECK(t->type == full_types[i] && t->n_dims == 2);
                CHECK(t->ne[0] == (info->block_size == 1 ? 8 : info->block_size) && t->ne[1] == 2 &&
                      t->ne[2] == 1);
                CHECK(t->n_elements == t->ne[0] * 2);
                CHECK(t->size == t->n_elements / info->block_size * info->type_size);
                CHECK(memcmp(t->data, tensor_data[i], t->size) == 0);
                CHECK(((const uint8_t *)t->data - base) % alignment == 0);
        }
        CHECK(!gguf_find_tensor(g, "nope"));
}

static void test_full(void) {
        char dir[] = "/tmp/test-gguf-XXXXXX", path[64];
        size_t size;
        void *buf;
        Gguf *g = NULL;
        char *err = NULL;

        CHECK(mkdtemp(dir));
        buf = build_full(&size, 64);
        /* from memory */
        CHECK_OK(gguf_open_memory(buf, size, &g, &err));
        check_full(g, 64, buf);
        gguf_close(g);

        /* from disk, written atomically by the writer: same bytes */
        GgufWriter *w;
        CHECK_OK(gguf_writer_new(&w));
        CHECK_OK(gguf_writer_set_alignment(w, 64));
        CHECK(gguf_writer_set_alignment(w, 48) == -EINVAL);
        snprintf(path, sizeof(path), "%s/missing/empty.gguf", dir);
        CHECK(gguf_writer_write(w, path) == -ENOENT);
        snprintf(path, sizeof(path), "%s/empty.gguf", dir);
        CHECK_OK(gguf_writer_write(w, path));
        struct stat st;
        CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
        gguf_writer_free(w);
        CHECK_OK(gguf_open(path, &g, &err));
        CHECK(gguf_n_kv(g) == 1 && gguf_n_tensors(g) == 0 && gguf_alignment(g) == 64);
        gguf_close(g);
        CHECK(unlink(path) == 0);

        snprintf(path, sizeof(path), "%s/full.gguf", dir);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        CHECK(fd >= 0 && write(fd, buf, size) == (ssize_t)size && close(fd) == 0);
        CHECK_OK(gguf_open(path, &g, &err));
        /* tensor data is aligned in the file: check against the mapping */
        check_full(g, 64,
                   (const uint8_t *)gguf_tensor(g, 0)->data - gguf_data_offset(g) -
                           gguf_tensor(g, 0)->offset);
        gguf_close(g);
        CHECK(unlink(path) == 0);

        CHECK(gguf_open(path, &g, &err) == -ENOENT && err && strstr(err, path));
        free(err);
        err = NULL;
        CHECK(gguf_open(dir, &g, &err) < 0);
        free(err);
        CHECK(rmdir(dir) == 0);

        /* version 2 has the same layout */
        ((uint8_t *)buf)[4] = 2;
        CHECK_OK(gguf_open_memory(buf, size, &g, NULL));
        CHECK(gguf_version(g) == 2);
        gguf_close(g);
        ((uint8_t *)buf)[4] = 3;

        /* every truncation is refused with a message; none reads out of bounds (ASan) */
        for (size_t n = 0; n < size; n++) {
                uint8_t *copy = malloc(n ? n : 1);
                memcpy(copy, buf, n);
                err = NULL;
                g = NULL;
                int r = gguf_open_memory(copy, n, &g, &err);
                CHECK(r == -EBADMSG && !g && err && *err);
                free(err);
                free(copy);
        }
        free(buf);
}

/* ---- hostile files ---- */

typedef enum Hostile {
        H_MAGIC,
        H_V1,
        H_V99,
        H_BIGENDIAN,
        H_KV_COUNT,
        H_TENSOR_COUNT,
        H_STRLEN,
        H_VALUE_TYPE,
        H_ALIGN3,
        H_ALIGN_TYPE,
        H_ARRAY_LEN,
        H_NESTING,
        H_DIMS5,
        H_NE_OVERFLOW,
        H_NE_NEGATIVE,
        H_TYPE99,
        H_TYPE16,
        H_OFFSET_MISALIGNED,
        H_EXTENT,
        H_DUP_KEY,
        H_DUP_TENSOR,
        H_ROW_BLOCK,
        H_EMPTY_NAME,
        H_NE_ZERO,
        _H_MAX,
} Hostile;

static const char *const hostile_msg[_H_MAX] = {
        [H_MAGIC] = "bad magic",
        [H_V1] = "version 1",
        [H_V99] = "unknown GGUF version 99",
        [H_BIGENDIAN] = "big-endian",
        [H_KV_COUNT] = "metadata count",
        [H_TENSOR_COUNT] = "tensor count",
        [H_STRLEN] = "exceeds the file",
        [H_VALUE_TYPE] = "unknown value type 99",
        [H_ALIGN3] = "not a power of two",
        [H_ALIGN_TYPE] = "general.alignment is not a uint32",
        [H_ARRAY_LEN] = "elements exceeds the file",
        [H_NESTING] = "nested too deeply",
        [H_DIMS5] = "5 dimensions",
        [H_NE_OVERFLOW] = "element count overflows",
        [H_NE_NEGATIVE] = "negative",
        [H_TYPE99] = "unknown type 99",
        [H_TYPE16] = "type 16 (iq2_xxs) is not supported",
        [H_OFFSET_MISALIGNED] = "not aligned",
        [H_EXTENT] = "beyond the end of the file",
        [H_DUP_KEY] = "duplicate key 'a'",
        [H_DUP_TENSOR] = "duplicate tensor 'w'",
        [H_ROW_BLOCK] = "not a multiple of the q4_0 block size",
        [H_EMPTY_NAME] = "invalid name",
        [H_NE_ZERO] = "dimension 1 is zero",
};

static Buf build_hostile(Hostile h) {
        Buf b = {};
        uint64_t ne[4] = {8, 1, 1, 1};
        uint32_t type = GGML_TYPE_F32;
        uint64_t offset = 0;
        const char *name = "w";

        switch (h) {
        case H_MAGIC:
                b_put(&b, "GGUX", 4);
                b_u32(&b, 3);
                b_u64(&b, 0);
                b_u64(&b, 0);
                return b;
        case H_V1:
        case H_V99:
        case H_BIGENDIAN:
                b_header(&b, h == H_V1 ? 1 : h == H_V99 ? 99 : 0x03000000, 0, 0);
                return b;
        case H_KV_COUNT:
                b_header(&b, 3, 0, UINT64_C(1) << 60);
                return b;
        case H_TENSOR_COUNT:
                b_header(&b, 3, UINT64_C(1) << 50, 0);
                return b;
        case H_STRLEN:
                b_header(&b, 3, 0, 1);
                b_u64(&b, UINT64_C(1) << 63);
                b_put(&b, "key", 3);
                return b;
        case H_VALUE_TYPE:
                b_header(&b, 3, 0, 1);
                b_str(&b, "k");
                b_u32(&b, 99);
                b_u32(&b, 0);
                return b;
        case H_ALIGN3:
        case H_ALIGN_TYPE:
                b_header(&b, 3, 0, 1);
                b_str(&b, "general.alignment");
                if (h == H_ALIGN3) {
                        b_u32(&b, GGUF_TYPE_UINT32);
                        b_u32(&b, 3);
                } else {
                        b_u32(&b, GGUF_TYPE_UINT64);
                        b_u64(&b, 64);
                }
                return b;
        case H_ARRAY_LEN:
                b_header(&b, 3, 0, 1);
                b_str(&b, "arr");
                b_u32(&b, GGUF_TYPE_ARRAY);
                b_u32(&b, GGUF_TYPE_UINT32);
                b_u64(&b, UINT64_C(1) << 62);
                b_u32(&b, 1);
                return b;
        case H_NESTING:
                b_header(&b, 3, 0, 1);
                b_str(&b, "deep");
                b_u32(&b, GGUF_TYPE_ARRAY);
                for (int i = 0; i < 8; i++) {
                        b_u32(&b, GGUF_TYPE_ARRAY);
                        b_u64(&b, 1);
                }
                b_u32(&b, GGUF_TYPE_STRING);
                b_u64(&b, 0);
                b_put(&b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
                return b;
        case H_DUP_KEY:
                b_header(&b, 3, 0, 2);
                for (int i = 0; i < 2; i++) {
                        b_str(&b, "a");
                        b_u32(&b, GGUF_TYPE_UINT32);
                        b_u32(&b, 1);
                }
                return b;
        case H_DUP_TENSOR: {
                b_header(&b, 3, 2, 0);
                b_tensor(&b, "w", 1, ne, GGML_TYPE_F32, 0);
                b_tensor(&b, "w", 1, ne, GGML_TYPE_F32, 32);
                b_pad(&b, 32);
                float z[16] = {};
                b_put(&b, z, sizeof(z));
                return b;
        }
        case H_DIMS5:
                b_header(&b, 3, 1, 0);
                b_str(&b, "w");
                b_u32(&b, 5);
                for (int i = 0; i < 5; i++)
                        b_u64(&b, 1);
                b_u32(&b, 0);
                b_u64(&b, 0);
                b_pad(&b, 32);
                b_put(&b, ne, 8);
                return b;
        case H_NE_OVERFLOW:
                ne[0] = UINT64_C(1) << 40;
                ne[1] = UINT64_C(1) << 40;
                break;
        case H_NE_NEGATIVE:
                ne[0] = UINT64_C(1) << 63;
                break;
        case H_TYPE99:
                type = 99;
                break;
        case H_TYPE16:
                type = 16;
                ne[0] = 256;
                break;
        case H_OFFSET_MISALIGNED:
                offset = 4;
                break;
        case H_EXTENT:
                ne[0] = 1024;
                break;
        case H_ROW_BLOCK:
                type = GGML_TYPE_Q4_0;
                ne[0] = 31;
                break;
        case H_EMPTY_NAME:
                name = "";
                break;
        case H_NE_ZERO:
                ne[1] = 0;
                break;
        default:
                abort();
        }
        b_header(&b, 3, 1, 1);
        b_str(&b, "general.architecture");
        b_u32(&b, GGUF_TYPE_STRING);
        b_str(&b, "llama");
        b_tensor(&b, name, 2, ne, type, offset);
        b_pad(&b, 32);
        float z[16] = {};
        b_put(&b, z, sizeof(z));
        return b;
}

static void test_hostile(void) {
        for (Hostile h = 0; h < _H_MAX; h++) {
                Buf b = build_hostile(h);
                uint8_t *exact = malloc(b.n);
                memcpy(exact, b.p, b.n);
                Gguf *g = NULL;
                char *err = NULL;
                int r = gguf_open_memory(exact, b.n, &g, &err);
                if (r != -EBADMSG || !err || !strstr(err, hostile_msg[h]))
                        fprintf(stderr, "hostile %d: r=%d err='%s', expected '%s'\n", h, r, strna(err),
                                hostile_msg[h]);
                CHECK(r == -EBADMSG && !g && err && strstr(err, hostile_msg[h]));
                free(err);
                /* NULL error pointer is fine too */
                CHECK(gguf_open_memory(exact, b.n, &g, NULL) == -EBADMSG);
                free(exact);
                free(b.p);
        }
}

static int write_file(const char *dir, const char *name, const void *data, size_t size) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "we");
        if (!f)
                return -errno;
        fwrite(data, 1, size, f);
        return fclose(f) == 0 ? 0 : -EIO;
}

static int write_corpus(const char *dir) {
        size_t size;
        void *buf;

        buf = build_full(&size, 32);
        CHECK_OK(write_file(dir, "full-align32.gguf", buf, size));
        CHECK_OK(write_file(dir, "full-truncated-in-data.gguf", buf, size - 40));
        CHECK_OK(write_file(dir, "full-truncated-in-header.gguf", buf, 300));
        ((uint8_t *)buf)[4] = 2;
        CHECK_OK(write_file(dir, "full-v2.gguf", buf, size));
        free(buf);
        buf = build_full(&size, 64);
        CHECK_OK(write_file(dir, "full-align64.gguf", buf, size));
        free(buf);
        buf = fixture_spm_gguf(&size, "{% for m in messages %}<|im_start|>{% endfor %}");
        CHECK_OK(write_file(dir, "vocab-spm.gguf", buf, size));
        /* flip a byte inside the token array's first string length */
        ((uint8_t *)buf)[size / 2] ^= 0x80;
        CHECK_OK(write_file(dir, "vocab-spm-corrupt.gguf", buf, size));
        free(buf);
        buf = fixture_bpe_gguf(&size, "llama-bpe");
        CHECK_OK(write_file(dir, "vocab-bpe.gguf", buf, size));
        free(buf);
        static const struct {
                Hostile h;
                const char *name;
        } pick[] = {
                {H_STRLEN, "hostile-string-length.gguf"}, {H_ARRAY_LEN, "hostile-array-length.gguf"},
                {H_NESTING, "hostile-nesting.gguf"},      {H_TYPE16, "hostile-type-iq2_xxs.gguf"},
                {H_EXTENT, "hostile-extent.gguf"},        {H_NE_OVERFLOW, "hostile-element-count.gguf"},
        };
        for (size_t i = 0; i < ELEMENTSOF(pick); i++) {
                Buf b = build_hostile(pick[i].h);
                CHECK_OK(write_file(dir, pick[i].name, b.p, b.n));
                free(b.p);
        }
        return 0;
}

int main(int argc, char **argv) {
        if (argc == 3 && streq(argv[1], "--write-corpus"))
                return write_corpus(argv[2]) < 0;
        test_full();
        test_hostile();
        printf("gguf tests passed\n");
        return 0;
}
