/* Tokenizer tests on hand-built vocabularies: known encodings (ids worked out by hand from the
 * fixture's scores and merge ranks), special tokens, pre-tokenizer differences, round trips. */
#include "formats-fixtures.h"

static void check_tokens(const QdTokenizer *t, const char *text, bool bos, bool special,
                         const int32_t *expect, size_t n_expect) {
        int32_t *v = NULL;
        size_t n = 0;

        CHECK_OK(qd_tokenizer_tokenize(t, text, strlen(text), bos, special, &v, &n));
        bool ok = n == n_expect && memcmp(v, expect, n * sizeof(int32_t)) == 0;
        if (!ok) {
                fprintf(stderr, "'%s': got", text);
                for (size_t i = 0; i < n; i++)
                        fprintf(stderr, " %d", v[i]);
                fprintf(stderr, ", expected");
                for (size_t i = 0; i < n_expect; i++)
                        fprintf(stderr, " %d", expect[i]);
                fprintf(stderr, "\n");
        }
        CHECK(ok);
        free(v);
}

static void check_round_trip(const QdTokenizer *t, const char *text) {
        int32_t *v = NULL;
        size_t n = 0, len = 0;
        char *out = NULL;

        CHECK_OK(qd_tokenizer_tokenize(t, text, strlen(text), true, false, &v, &n));
        CHECK_OK(qd_tokenizer_detokenize(t, v, n, true, &out, &len));
        if (!streq(out, text))
                fprintf(stderr, "round trip: '%s' -> '%s'\n", text, out);
        CHECK(streq(out, text) && len == strlen(text));
        free(out);
        free(v);
}

static const char *const mixed[] = {
        "hello world",
        "Hello, World! 12345 numbers\n\nand  two  spaces\ttab",
        ("caf\xc3\xa9 na\xc3\xafve \xc3\xa0 la cr\xc3\xa8me br\xc3\xbbl\xc3\xa9"
         "e"),
        "\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c", /* 你好，世界 */
        /* 🙂🚀 and a ZWJ sequence 👨‍👩 */
        "emoji \xf0\x9f\x99\x82\xf0\x9f\x9a\x80 and \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9",
        " leading space and trailing ",
        "it's they're we'll I'd",
        "",
};

static void test_spm(void) {
        QdTokenizer *t = fixture_spm();

        CHECK(qd_tokenizer_kind(t) == QD_TOKENIZER_SPM);
        CHECK(qd_tokenizer_n_vocab(t) == SPM_N_VOCAB);
        CHECK(qd_tokenizer_bos(t) == 1 && qd_tokenizer_eos(t) == 2 && qd_tokenizer_unk(t) == 0);
        CHECK(qd_tokenizer_add_bos(t));
        CHECK(qd_tokenizer_is_eog(t, 2) && !qd_tokenizer_is_eog(t, 1));
        CHECK(qd_tokenizer_find(t, "hello", 5) == SPM_HELLO);
        CHECK(qd_tokenizer_find(t, "nope", 4) == -ENOENT);

        /* "▁hello▁world": ll(-1), llo(-1.5), he(-2), hello(-0.5), ▁hello(-0.2), or(-4), ▁w(-4.5);
         * "d" is not a piece: byte fallback <0x64> */
        check_tokens(t, "hello world", true, false,
                     (const int32_t[]){1, SPM_SP_HELLO, SPM_SP_W, SPM_OR, SPM_L, SPM_BYTE(0x64)}, 6);
        /* é is not a piece: two byte tokens */
        check_tokens(t, "h\xc3\xa9", false, false,
                     (const int32_t[]){SPM_SP_H, SPM_BYTE(0xC3), SPM_BYTE(0xA9)}, 3);
        /* special tokens: the control token only with parse_special; after it a new ▁ prefix */
        check_tokens(t, "h<|ctl|>hello", false, true, (const int32_t[]){SPM_SP_H, SPM_CTL, SPM_SP_HELLO}, 3);
        /* user-defined tokens are always split out (as llama.cpp) */
        check_tokens(t, "<|user|>hello", false, false, (const int32_t[]){SPM_USER, SPM_SP_HELLO}, 2);
        {
                int32_t *v;
                size_t n;
                CHECK_OK(qd_tokenizer_tokenize(t, "h<|ctl|>", 8, false, false, &v, &n));
                for (size_t i = 0; i < n; i++)
                        CHECK(v[i] != SPM_CTL);
                CHECK(n == 1 + 7); /* ▁h then 7 byte tokens for "<|ctl|>" */
                free(v);
        }
        /* empty text: BOS only */
        check_tokens(t, "", true, false, (const int32_t[]){1}, 1);

        /* pieces */
        char buf[16];
        CHECK(qd_tokenizer_token_piece(t, SPM_SP_HELLO, false, buf, sizeof(buf)) == 6 &&
              memcmp(buf, " hello", 6) == 0);
        CHECK(qd_tokenizer_token_piece(t, SPM_BYTE(0xC3), false, buf, sizeof(buf)) == 1 &&
              (uint8_t)buf[0] == 0xC3);
        CHECK(qd_tokenizer_token_piece(t, 1, false, buf, sizeof(buf)) == 0);
        CHECK(qd_tokenizer_token_piece(t, 1, true, buf, sizeof(buf)) == 3 && memcmp(buf, "<s>", 3) == 0);
        CHECK(qd_tokenizer_token_piece(t, SPM_SP_HELLO, false, buf, 2) == -ENOBUFS);
        CHECK(qd_tokenizer_token_piece(t, SPM_N_VOCAB, false, buf, sizeof(buf)) == -EINVAL);

        /* detokenize: BOS dropped with skip_special, leading space of the first piece dropped */
        char *out;
        CHECK_OK(qd_tokenizer_detokenize(t, (const int32_t[]){1, SPM_SP_HELLO, SPM_SP_W, SPM_OR, 2}, 5,
                                         false, &out, NULL));
        CHECK(streq(out, "<s>hello wor</s>"));
        free(out);

        for (size_t i = 0; i < ELEMENTSOF(mixed); i++)
                check_round_trip(t, mixed[i]);
        qd_tokenizer_free(t);
}

static void test_bpe(void) {
        QdTokenizer *t = fixture_bpe("gpt2");

        CHECK(qd_tokenizer_kind(t) == QD_TOKENIZER_BPE);
        CHECK(!qd_tokenizer_add_bos(t));
        /* "hello" | "Ġworld": he(0) ll(1) hell(2) hello(3); Ġw(4) or(5) Ġwor(6) ld(7) */
        check_tokens(t, "hello world", false, false, (const int32_t[]){BPE_HELLO, BPE_G_WOR, BPE_LD}, 3);
        check_tokens(t, "hello world", true, false,
                     (const int32_t[]){BPE_ENDOFTEXT, BPE_HELLO, BPE_G_WOR, BPE_LD}, 4);
        /* 'hel' has no complete merge path beyond "he" */
        check_tokens(t, "hel", false, false, (const int32_t[]){BPE_HE, 'l'}, 2);
        /* gpt2 keeps " 12345" in one word: the 3-4 merge applies; ' ' is byte 32 → id 32 */
        check_tokens(t, " 12345", false, false, (const int32_t[]){' ', '1', '2', BPE_34, '5'}, 5);
        /* special tokens */
        check_tokens(t, "<|im_start|>hello", false, true, (const int32_t[]){BPE_IM_START, BPE_HELLO}, 2);
        CHECK(qd_tokenizer_is_eog(t, BPE_ENDOFTEXT));
        char buf[8];
        CHECK(qd_tokenizer_token_piece(t, BPE_G_W, false, buf, sizeof(buf)) == 2 &&
              memcmp(buf, " w", 2) == 0);
        CHECK(qd_tokenizer_token_piece(t, 10, false, buf, sizeof(buf)) == 1 && buf[0] == '\n');
        for (size_t i = 0; i < ELEMENTSOF(mixed); i++)
                check_round_trip(t, mixed[i]);
        qd_tokenizer_free(t);

        /* llama-bpe (Llama 3): \p{N}{1,3} splits "12345" into "123" "45", so no 3-4 merge */
        t = fixture_bpe("llama-bpe");
        check_tokens(t, " 12345", false, false, (const int32_t[]){' ', '1', '2', '3', '4', '5'}, 6);
        check_tokens(t, "hello world", false, false, (const int32_t[]){BPE_HELLO, BPE_G_WOR, BPE_LD}, 3);
        for (size_t i = 0; i < ELEMENTSOF(mixed); i++)
                check_round_trip(t, mixed[i]);
        qd_tokenizer_free(t);

        /* qwen2: single digits */
        t = fixture_bpe("qwen2");
        check_tokens(t, "34", false, false, (const int32_t[]){'3', '4'}, 2);
        for (size_t i = 0; i < ELEMENTSOF(mixed); i++)
                check_round_trip(t, mixed[i]);
        qd_tokenizer_free(t);

        /* smollm: every digit on its own first, then the GPT-2 regex */
        t = fixture_bpe("smollm");
        check_tokens(t, " 12345", false, false, (const int32_t[]){' ', '1', '2', '3', '4', '5'}, 6);
        check_tokens(t, "hello world", false, false, (const int32_t[]){BPE_HELLO, BPE_G_WOR, BPE_LD}, 3);
        for (size_t i = 0; i < ELEMENTSOF(mixed); i++)
                check_round_trip(t, mixed[i]);
        qd_tokenizer_free(t);

        /* default (no tokenizer.ggml.pre): \p{N}+ then [0-9]{3} splits "12345" into "123" "45",
         * "2345" into "234" "5" */
        t = fixture_bpe(NULL);
        check_tokens(t, "12345", false, false, (const int32_t[]){'1', '2', '3', '4', '5'}, 5);
        check_tokens(t, "345", false, false, (const int32_t[]){BPE_34, '5'}, 2);
        check_tokens(t, "2345", false, false, (const int32_t[]){'2', BPE_34, '5'}, 3);
        check_tokens(t, "34", false, false, (const int32_t[]){BPE_34}, 1);
        for (size_t i = 0; i < ELEMENTSOF(mixed); i++)
                check_round_trip(t, mixed[i]);
        qd_tokenizer_free(t);
}

static void test_errors(void) {
        size_t size;
        void *buf = fixture_bpe_gguf(&size, "no-such-pre");
        Gguf *g;
        QdTokenizer *t = NULL;
        char *err = NULL;

        CHECK_OK(gguf_open_memory(buf, size, &g, NULL));
        CHECK(qd_tokenizer_new_from_gguf(g, &t, &err) == -EOPNOTSUPP && !t);
        CHECK(err && strstr(err, "no-such-pre"));
        free(err);
        gguf_close(g);
        free(buf);

        GgufWriter *w;
        CHECK_OK(gguf_writer_new(&w));
        CHECK_OK(gguf_writer_add_string(w, "tokenizer.ggml.model", "llama"));
        CHECK_OK(gguf_writer_write_memory(w, &buf, &size));
        gguf_writer_free(w);
        CHECK_OK(gguf_open_memory(buf, size, &g, NULL));
        err = NULL;
        CHECK(qd_tokenizer_new_from_gguf(g, &t, &err) == -EBADMSG && err);
        free(err);
        gguf_close(g);
        free(buf);
}

int main(void) {
        test_spm();
        test_bpe();
        test_errors();
        printf("tokenizer tests passed\n");
        return 0;
}
