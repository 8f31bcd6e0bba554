/* Fuzz target: any bytes as a GGUF file. Everything the reader accepts is then read through the
 * public API (every KV, every tensor's first and last byte) and handed to the tokenizer loader. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Gguf *g = NULL;
        char *err = NULL;
        volatile uint8_t sink = 0;

        if (gguf_open_memory(data, size, &g, &err) < 0) {
                if (!err)
                        abort(); /* every refusal explains itself */
                free(err);
                return 0;
        }
        for (size_t i = 0; i < gguf_n_kv(g); i++) {
                const char *key = gguf_kv_key(g, i);
                uint32_t u32;
                int32_t i32;
                uint64_t u64;
                float f;
                bool b;
                const char *s;
                size_t n;
                GgufType t;
                (void)gguf_get_u32(g, key, &u32);
                (void)gguf_get_i32(g, key, &i32);
                (void)gguf_get_u64(g, key, &u64);
                (void)gguf_get_f32(g, key, &f);
                (void)gguf_get_bool(g, key, &b);
                if (gguf_get_string(g, key, &s, &n) == 0 && n > 0)
                        sink ^= (uint8_t)s[n - 1];
                (void)gguf_get_array_info(g, key, &t, &n);
                const char *const *strs;
                const size_t *lens;
                if (gguf_get_string_array(g, key, &strs, &lens, &n) == 0)
                        for (size_t j = 0; j < n; j++)
                                sink ^= (uint8_t)strs[j][lens[j]];
                int32_t *ia = NULL;
                float *fa = NULL;
                if (gguf_get_i32_array(g, key, &ia, &n) == 0)
                        free(ia);
                if (gguf_get_f32_array(g, key, &fa, &n) == 0)
                        free(fa);
        }
        for (size_t i = 0; i < gguf_n_tensors(g); i++) {
                const GgufTensor *t = gguf_tensor(g, i);
                if (gguf_find_tensor(g, t->name) != t)
                        abort();
                if (t->size > 0)
                        sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->size - 1];
                /* the first row through the dequantizer */
                if (t->ne[0] > 0 && t->ne[0] <= 4096 && t->n_elements >= t->ne[0]) {
                        float row[4096];
                        if (ggml_dequantize_row(t->type, t->data, row, t->ne[0]) < 0)
                                abort();
                        sink ^= (uint8_t)(row[0] != 0.0f);
                }
        }

        QdTokenizer *tok = NULL;
        if (qd_tokenizer_new_from_gguf(g, &tok, &err) == 0) {
                static const char text[] = "Hello w\xc3\xb6rld <s> 123 \xf0\x9f\x99\x82!";
                int32_t *v = NULL;
                size_t n;
                char *out = NULL;
                if (qd_tokenizer_tokenize(tok, text, sizeof(text) - 1, true, true, &v, &n) == 0) {
                        if (qd_tokenizer_detokenize(tok, v, n, false, &out, NULL) == 0)
                                free(out);
                        free(v);
                }
                qd_tokenizer_free(tok);
        } else
                free(err);
        (void)sink;
        gguf_close(g);
        return 0;
}
