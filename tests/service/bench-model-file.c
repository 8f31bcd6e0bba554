/* quantd-bench-model-file PATH [LAYERS]: writes a random Llama-3-8B-shaped GGUF file in Q4_0 for the
 * service benchmark: the matrices of tests/engine/bench-model.c (n_embd 4096, 32/8 heads, ffn
 * 14336, vocabulary 128256), quantized once and shared by every layer in memory but written out
 * in full (the file has the bytes of a real 8B Q4_0 model: ~4.6 GB at 32 layers), token_embd in
 * F16, output in Q4_0, and a byte-level BPE vocabulary (256 byte tokens, the rest " w<id>"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench-model.h"
#include "fixture-vocab.h"
#include "ggml-types.h"
#include "gguf.h"
#include "macro.h"

#define E 4096
#define F 14336
#define H 32
#define HKV 8
#define V 128256

/* F16 [ne1][ne0] to Q4_0; NULL on failure. */
static void *to_q4_0(const uint16_t *src, uint64_t ne0, uint64_t ne1, size_t *ret_size) {
        size_t rb;
        float *row = malloc(ne0 * sizeof(float));
        uint8_t *out = NULL;

        if (row && ggml_row_size(GGML_TYPE_Q4_0, ne0, &rb) >= 0)
                out = malloc(rb * ne1);
        for (uint64_t i = 0; out && i < ne1; i++) {
                for (uint64_t j = 0; j < ne0; j++)
                        row[j] = qd_fp16_to_fp32(src[i * ne0 + j]);
                if (ggml_quantize_row(GGML_TYPE_Q4_0, row, out + i * rb, ne0) < 0)
                        out = mfree(out);
        }
        free(row);
        *ret_size = out ? rb * ne1 : 0;
        return out;
}

int main(int argc, char *argv[]) {
        uint32_t layers = argc > 2 ? (uint32_t) atoi(argv[2]) : 32;
        BenchModel m;
        GgufWriter *w = NULL;
        void *qa, *qb, *qc, *qd, *qout;
        size_t sa, sb, sc, sd, sout;
        char **tok = calloc(V, sizeof(char *));
        int32_t *types = calloc(V, sizeof(int32_t));
        int r;

        if (argc < 2 || argc > 3 || layers == 0 || !tok || !types) {
                fprintf(stderr, "usage: quantd-bench-model-file PATH [LAYERS]\n");
                return 2;
        }
        r = bench_model_init(&m, layers, E, F, H, HKV, V);
        if (r < 0) {
                fprintf(stderr, "bench_model_init: %s\n", strerror(-r));
                return 1;
        }
        qa = to_q4_0(m.wa, E, E, &sa);
        qb = to_q4_0(m.wb, E, E / H * HKV, &sb);
        qc = to_q4_0(m.wc, E, F, &sc);
        qd = to_q4_0(m.wd, F, E, &sd);
        qout = to_q4_0(m.emb, E, V, &sout);
        if (!qa || !qb || !qc || !qd || !qout) {
                fprintf(stderr, "quantization failed\n");
                return 1;
        }
        for (unsigned i = 0; i < V; i++) {
                char s[32] = {};
                if (i < 256)
                        fixture_gpt2_byte(i, s);
                else
                        snprintf(s, sizeof(s), "\xc4\xa0w%u", i);
                tok[i] = strdup(s);
                types[i] = i == V - 1 ? 3 : 1;
        }
        r = gguf_writer_new(&w);
        if (r < 0 || (r = gguf_writer_add_string(w, "general.architecture", "llama")) < 0 ||
                       (r = gguf_writer_add_string(w, "general.name", "bench-llama3-8b-q4_0-random")) < 0 ||
                       (r = gguf_writer_add_u32(w, "general.file_type", 2)) < 0 ||
                       (r = gguf_writer_add_u32(w, "llama.context_length", 8192)) < 0 ||
                       (r = gguf_writer_add_u32(w, "llama.embedding_length", E)) < 0 ||
                       (r = gguf_writer_add_u32(w, "llama.block_count", layers)) < 0 ||
                       (r = gguf_writer_add_u32(w, "llama.feed_forward_length", F)) < 0 ||
                       (r = gguf_writer_add_u32(w, "llama.attention.head_count", H)) < 0 ||
                       (r = gguf_writer_add_u32(w, "llama.attention.head_count_kv", HKV)) < 0 ||
                       (r = gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)) < 0 ||
                       (r = gguf_writer_add_f32(w, "llama.rope.freq_base", 500000.0f)) < 0 ||
                       (r = gguf_writer_add_string(w, "tokenizer.ggml.model", "gpt2")) < 0 ||
                       (r = gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", (const char *const *) tok, V)) < 0 ||
                       (r = gguf_writer_add_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, V)) < 0 ||
                       (r = gguf_writer_add_string_array(w, "tokenizer.ggml.merges", NULL, 0)) < 0 ||
                       (r = gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1)) < 0 ||
                       (r = gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", V - 1)) < 0)
                goto finish;
        uint64_t ne_emb[2] = { E, V }, ne_norm[1] = { E };
        if (r >= 0)
                r = gguf_writer_add_tensor(w, "token_embd.weight", GGML_TYPE_F16, 2, ne_emb, m.emb, (size_t) E * V * 2);
        if (r >= 0)
                r = gguf_writer_add_tensor(w, "output_norm.weight", GGML_TYPE_F32, 1, ne_norm, m.ones, E * 4);
        if (r >= 0)
                r = gguf_writer_add_tensor(w, "output.weight", GGML_TYPE_Q4_0, 2, ne_emb, qout, sout);
        for (uint32_t l = 0; r >= 0 && l < layers; l++) {
                const struct {
                        const char *n;
                        uint64_t ne0, ne1;
                        const void *data;
                        size_t size;
                } list[] = {
                        { "attn_q.weight", E, E, qa, sa },
                        { "attn_k.weight", E, E / H * HKV, qb, sb },
                        { "attn_v.weight", E, E / H * HKV, qb, sb },
                        { "attn_output.weight", E, E, qa, sa },
                        { "ffn_gate.weight", E, F, qc, sc },
                        { "ffn_up.weight", E, F, qc, sc },
                        { "ffn_down.weight", F, E, qd, sd },
                };
                char name[64];
                snprintf(name, sizeof(name), "blk.%u.attn_norm.weight", l);
                r = gguf_writer_add_tensor(w, name, GGML_TYPE_F32, 1, ne_norm, m.ones, E * 4);
                snprintf(name, sizeof(name), "blk.%u.ffn_norm.weight", l);
                if (r >= 0)
                        r = gguf_writer_add_tensor(w, name, GGML_TYPE_F32, 1, ne_norm, m.ones, E * 4);
                for (size_t i = 0; r >= 0 && i < ELEMENTSOF(list); i++) {
                        uint64_t ne[2] = { list[i].ne0, list[i].ne1 };
                        snprintf(name, sizeof(name), "blk.%u.%s", l, list[i].n);
                        r = gguf_writer_add_tensor(w, name, GGML_TYPE_Q4_0, 2, ne, list[i].data, list[i].size);
                }
        }
        if (r >= 0)
                r = gguf_writer_write(w, argv[1]);
finish:
        if (r < 0)
                fprintf(stderr, "quantd-bench-model-file: %s\n", strerror(-r));
        gguf_writer_free(w);
        for (unsigned i = 0; i < V; i++)
                free(tok[i]);
        free(tok);
        free(types);
        free(qa), free(qb), free(qc), free(qd), free(qout);
        bench_model_done(&m);
        return r < 0 ? 1 : 0;
}
