/* Text stream tests: characters split across byte tokens, stop strings spanning tokens,
 * invalid bytes, flush. Uses the SPM fixture vocabulary (byte tokens <0xXX> = 3 + byte). */
#include "engine.h"
#include "formats-fixtures.h"

static void push_expect(QdTextStream *s, int32_t tok, const char *expect, int expect_r) {
        char *out = NULL;
        int r = qd_text_stream_push(s, tok, &out);
        if (r != expect_r || !out || !streq(out, expect))
                fprintf(stderr, "push %d: r=%d out='%s', expected r=%d '%s'\n", tok, r, strna(out), expect_r,
                        expect);
        CHECK(r == expect_r && streq(out, expect));
        free(out);
}

static void flush_expect(QdTextStream *s, const char *expect) {
        char *out = NULL;
        CHECK_OK(qd_text_stream_flush(s, &out));
        if (!streq(out, expect))
                fprintf(stderr, "flush: '%s', expected '%s'\n", out, expect);
        CHECK(streq(out, expect));
        free(out);
}

int main(void) {
        QdTokenizer *t = fixture_spm();
        QdTextStream *s;

        /* é = C3 A9, 🙂 = F0 9F 99 82 arrive byte by byte */
        CHECK_OK(qd_text_stream_new_tokenizer(t, NULL, 0, &s));
        push_expect(s, SPM_SP_HELLO, " hello", 0);
        push_expect(s, SPM_BYTE(0xC3), "", 0);
        push_expect(s, SPM_BYTE(0xA9), "\xc3\xa9", 0);
        push_expect(s, SPM_BYTE(0xF0), "", 0);
        push_expect(s, SPM_BYTE(0x9F), "", 0);
        push_expect(s, SPM_BYTE(0x99), "", 0);
        push_expect(s, SPM_BYTE(0x82), "\xf0\x9f\x99\x82", 0);
        push_expect(s, 1, "", 0);                          /* control token: no text */
        push_expect(s, SPM_BYTE(0xFF), "\xef\xbf\xbd", 0); /* invalid byte → U+FFFD */
        push_expect(s, SPM_BYTE(0xE4), "", 0);
        flush_expect(s, "\xef\xbf\xbd"); /* incomplete at the end */
        qd_text_stream_free(s);

        /* stop string spanning tokens: " hello" " w" "or" with stop "o wor" */
        char *stop[] = {(char *)"o wor", (char *)"zzz", (char *)""};
        CHECK_OK(qd_text_stream_new_tokenizer(t, stop, 3, &s));
        push_expect(s, SPM_SP_HELLO, " hell", 0); /* "o" may start the stop string */
        push_expect(s, SPM_SP_W, "", 0);          /* "o w" too */
        push_expect(s, SPM_OR, "", 1);            /* "o wor" complete */
        push_expect(s, SPM_L, "", 1);             /* stays stopped */
        flush_expect(s, "");
        qd_text_stream_free(s);

        /* a held-back prefix that does not complete is released */
        CHECK_OK(qd_text_stream_new_tokenizer(t, stop, 2, &s));
        push_expect(s, SPM_SP_HELLO, " hell", 0);
        push_expect(s, SPM_L, "ol", 0);
        push_expect(s, SPM_O, "", 0);
        flush_expect(s, "o");
        qd_text_stream_free(s);

        /* stop string inside one token: text before it is returned */
        char *stop2[] = {(char *)"ll"};
        CHECK_OK(qd_text_stream_new_tokenizer(t, stop2, 1, &s));
        push_expect(s, SPM_HE, "he", 0);
        push_expect(s, SPM_SP_HELLO, " he", 1);
        qd_text_stream_free(s);

        /* multi-byte stop string split across byte tokens, after a split character */
        char *stop3[] = {(char *)"\xc3\xa9!"};
        CHECK_OK(qd_text_stream_new_tokenizer(t, stop3, 1, &s));
        push_expect(s, SPM_H, "h", 0);
        push_expect(s, SPM_BYTE(0xC3), "", 0);
        push_expect(s, SPM_BYTE(0xA9), "", 0); /* é might start "é!" */
        push_expect(s, SPM_BYTE('!'), "", 1);
        qd_text_stream_free(s);

        CHECK(qd_text_stream_new_tokenizer(NULL, NULL, 0, &s) == -EINVAL);
        CHECK(!qd_text_stream_free(NULL));
        qd_tokenizer_free(t);
        printf("text stream tests passed\n");
        return 0;
}
