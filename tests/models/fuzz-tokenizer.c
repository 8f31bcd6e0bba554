/* Fuzz target: any bytes as text for the SPM and BPE fixture tokenizers. The first byte picks
 * parse_special and the pre-tokenizer; byte-level BPE must round-trip every input exactly. */
#include "engine.h"
#include "formats-fixtures.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static QdTokenizer *spm, *bpe[4];

static void check(const QdTokenizer *t, const char *text, size_t len, bool special, bool exact) {
        int32_t *v = NULL;
        size_t n, out_len;
        char *out = NULL;

        CHECK_OK(qd_tokenizer_tokenize(t, text, len, false, special, &v, &n));
        for (size_t i = 0; i < n; i++)
                CHECK(v[i] >= 0 && (uint32_t)v[i] < qd_tokenizer_n_vocab(t));
        CHECK_OK(qd_tokenizer_detokenize(t, v, n, false, &out, &out_len));
        if (exact)
                CHECK(out_len == len && memcmp(out, text, len) == 0);
        free(out);

        /* streaming gives valid UTF-8 only */
        QdTextStream *s;
        char *stop[] = {(char *)"lo w"};
        CHECK_OK(qd_text_stream_new_tokenizer(t, stop, 1, &s));
        for (size_t i = 0; i < n; i++) {
                char *piece = NULL;
                int r = qd_text_stream_push(s, v[i], &piece);
                CHECK(r >= 0 && piece);
                free(piece);
        }
        char *rest = NULL;
        CHECK_OK(qd_text_stream_flush(s, &rest));
        free(rest);
        qd_text_stream_free(s);
        free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const pres[4] = {"gpt2", "llama-bpe", "qwen2", NULL};

        if (!spm) {
                spm = fixture_spm();
                for (int i = 0; i < 4; i++)
                        bpe[i] = fixture_bpe(pres[i]);
        }
        if (size == 0 || size > 4096)
                return 0;
        bool special = data[0] & 1;
        const QdTokenizer *b = bpe[(data[0] >> 1) & 3];
        const char *text = (const char *)data + 1;
        check(spm, text, size - 1, special, false);
        check(b, text, size - 1, special, !special);
        return 0;
}
