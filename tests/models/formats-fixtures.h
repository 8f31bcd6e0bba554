/* Small hand-made vocabularies for the tokenizer, text-stream and chat tests, built as real GGUF
 * files in memory with the writer. Token ids are fixed by the order below. */
#pragma once

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fixture/fixture-vocab.h"
#include "gguf.h"
#include "macro.h"
#include "tokenizer.h"

#define CHECK(x)                                                                                            \
        do {                                                                                                \
                if (!(x)) {                                                                                 \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);               \
                        abort();                                                                            \
                }                                                                                           \
        } while (0)

#define CHECK_OK(x)                                                                                         \
        do {                                                                                                \
                int _r = (x);                                                                               \
                if (_r < 0) {                                                                               \
                        fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #x, strerror(-_r));   \
                        abort();                                                                            \
                }                                                                                           \
        } while (0)

/* SPM fixture: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then the pieces below. */
enum {
        SPM_SPACE = 259,
        SPM_H,
        SPM_E,
        SPM_L,
        SPM_O,
        SPM_W,
        SPM_R,
        SPM_LL,
        SPM_LLO,
        SPM_HE,
        SPM_HELLO,
        SPM_SP_HELLO,
        SPM_LO,
        SPM_OR,
        SPM_SP_W,
        SPM_SP_H,
        SPM_USER,
        SPM_CTL,
        SPM_N_VOCAB,
};
#define SPM_BYTE(b) (3 + (b))

static const struct {
        const char *text;
        float score;
        int type;
} spm_pieces[] = {
        {"\xe2\x96\x81", -10, 1},
        {"h", -10, 1},
        {"e", -10, 1},
        {"l", -10, 1},
        {"o", -10, 1},
        {"w", -10, 1},
        {"r", -10, 1},
        {"ll", -1, 1},
        {"llo", -1.5f, 1},
        {"he", -2, 1},
        {"hello", -0.5f, 1},
        {"\xe2\x96\x81hello", -0.2f, 1},
        {"lo", -3, 1},
        {"or", -4, 1},
        {"\xe2\x96\x81w", -4.5f, 1},
        {"\xe2\x96\x81h", -5, 1},
        {"<|user|>", 0, 4},
        {"<|ctl|>", 0, 3},
};

static inline void *fixture_spm_gguf(size_t *ret_size, const char *chat_template) {
        GgufWriter *w = NULL;
        char *tok[SPM_N_VOCAB];
        float scores[SPM_N_VOCAB];
        int32_t types[SPM_N_VOCAB];
        void *buf = NULL;

        _Static_assert(SPM_N_VOCAB == 259 + ELEMENTSOF(spm_pieces), "fixture size");
        tok[0] = strdup("<unk>"), scores[0] = 0, types[0] = 2;
        tok[1] = strdup("<s>"), scores[1] = 0, types[1] = 3;
        tok[2] = strdup("</s>"), scores[2] = 0, types[2] = 3;
        for (int b = 0; b < 256; b++) {
                CHECK(asprintf(&tok[3 + b], "<0x%02X>", b) > 0);
                scores[3 + b] = 0;
                types[3 + b] = 6;
        }
        for (size_t i = 0; i < ELEMENTSOF(spm_pieces); i++) {
                tok[259 + i] = strdup(spm_pieces[i].text);
                scores[259 + i] = spm_pieces[i].score;
                types[259 + i] = spm_pieces[i].type;
        }
        CHECK_OK(gguf_writer_new(&w));
        CHECK_OK(gguf_writer_add_string(w, "general.architecture", "llama"));
        CHECK_OK(gguf_writer_add_string(w, "tokenizer.ggml.model", "llama"));
        CHECK_OK(gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", (const char *const *)tok,
                                              SPM_N_VOCAB));
        CHECK_OK(gguf_writer_add_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, SPM_N_VOCAB));
        CHECK_OK(gguf_writer_add_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, SPM_N_VOCAB));
        CHECK_OK(gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1));
        CHECK_OK(gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2));
        CHECK_OK(gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0));
        CHECK_OK(gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true));
        if (chat_template)
                CHECK_OK(gguf_writer_add_string(w, "tokenizer.chat_template", chat_template));
        CHECK_OK(gguf_writer_write_memory(w, &buf, ret_size));
        gguf_writer_free(w);
        for (int i = 0; i < SPM_N_VOCAB; i++)
                free(tok[i]);
        return buf;
}

/* BPE fixture: ids 0..255 are the bytes (as GPT-2 code points), then merged tokens. */
enum {
        BPE_HE = 256,
        BPE_LL,
        BPE_HELL,
        BPE_HELLO,
        BPE_G_W,
        BPE_OR,
        BPE_G_WOR,
        BPE_LD,
        BPE_34,
        BPE_ENDOFTEXT,
        BPE_IM_START,
        BPE_N_VOCAB,
};

static inline void *fixture_bpe_gguf(size_t *ret_size, const char *pre) {
        static const char *const merged[] = {"he",          "ll",          "hell", "hello", "\xc4\xa0w",
                                             "or",          "\xc4\xa0wor", "ld",   "34",    "<|endoftext|>",
                                             "<|im_start|>"};
        static const char *const merges[] = {"h e", "l l",          "he ll", "hell o", "\xc4\xa0 w",
                                             "o r", "\xc4\xa0w or", "l d",   "3 4"};
        GgufWriter *w = NULL;
        char *tok[BPE_N_VOCAB];
        int32_t types[BPE_N_VOCAB];
        void *buf = NULL;

        for (unsigned b = 0; b < 256; b++) {
                char s[4] = {};
                fixture_gpt2_byte(b, s);
                tok[b] = strdup(s);
                types[b] = 1;
        }
        for (size_t i = 0; i < ELEMENTSOF(merged); i++) {
                tok[256 + i] = strdup(merged[i]);
                types[256 + i] = i >= 9 ? 3 : 1;
        }
        CHECK_OK(gguf_writer_new(&w));
        CHECK_OK(gguf_writer_add_string(w, "tokenizer.ggml.model", "gpt2"));
        if (pre)
                CHECK_OK(gguf_writer_add_string(w, "tokenizer.ggml.pre", pre));
        CHECK_OK(gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", (const char *const *)tok,
                                              BPE_N_VOCAB));
        CHECK_OK(gguf_writer_add_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, BPE_N_VOCAB));
        CHECK_OK(gguf_writer_add_string_array(w, "tokenizer.ggml.merges", merges, ELEMENTSOF(merges)));
        CHECK_OK(gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", BPE_ENDOFTEXT));
        CHECK_OK(gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", BPE_ENDOFTEXT));
        CHECK_OK(gguf_writer_write_memory(w, &buf, ret_size));
        gguf_writer_free(w);
        for (int i = 0; i < BPE_N_VOCAB; i++)
                free(tok[i]);
        return buf;
}

static inline QdTokenizer *fixture_tokenizer(void *buf, size_t size) {
        Gguf *g = NULL;
        QdTokenizer *t = NULL;
        char *err = NULL;
        int r;

        CHECK_OK(gguf_open_memory(buf, size, &g, &err));
        r = qd_tokenizer_new_from_gguf(g, &t, &err);
        if (r < 0) {
                fprintf(stderr, "tokenizer: %s\n", err);
                abort();
        }
        gguf_close(g);
        return t;
}

static inline QdTokenizer *fixture_spm(void) {
        size_t size;
        void *buf = fixture_spm_gguf(&size, NULL);
        QdTokenizer *t = fixture_tokenizer(buf, size);
        free(buf);
        return t;
}

static inline QdTokenizer *fixture_bpe(const char *pre) {
        size_t size;
        void *buf = fixture_bpe_gguf(&size, pre);
        QdTokenizer *t = fixture_tokenizer(buf, size);
        free(buf);
        return t;
}
