/* Streaming detokenization: holds back incomplete UTF-8 characters and text that may still become
 * a stop string; emitted text is always valid UTF-8 (invalid bytes become U+FFFD). */
#include <errno.h>
#include <string.h>

#include "engine.h"
#include "macro.h"
#include "tokenizer.h"

struct QdTextStream {
        const QdTokenizer *tok;
        char **stop;
        size_t n_stop;
        char *buf; /* pending bytes */
        size_t len, alloc;
        bool stopped;
};

QdTextStream *qd_text_stream_free(QdTextStream *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_stop; i++)
                free(t->stop[i]);
        free(t->stop);
        free(t->buf);
        return mfree(t);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(QdTextStream *, qd_text_stream_free);

int qd_text_stream_new_tokenizer(const QdTokenizer *tok, char *const *stop, size_t n_stop,
                                 QdTextStream **ret) {
        _cleanup_(qd_text_stream_freep) QdTextStream *t = NULL;

        if (!tok || (n_stop > 0 && !stop))
                return -EINVAL;
        t = calloc(1, sizeof(QdTextStream));
        if (!t)
                return -ENOMEM;
        t->tok = tok;
        t->alloc = 64;
        t->buf = malloc(t->alloc);
        if (!t->buf)
                return -ENOMEM;
        t->stop = calloc(MAX(n_stop, 1u), sizeof(char *));
        if (!t->stop)
                return -ENOMEM;
        for (size_t i = 0; i < n_stop; i++) {
                if (!stop[i] || !*stop[i])
                        continue;
                t->stop[t->n_stop] = strdup(stop[i]);
                if (!t->stop[t->n_stop])
                        return -ENOMEM;
                t->n_stop++;
        }
        *ret = TAKE_PTR(t);
        return 0;
}

/* Length of a valid UTF-8 sequence at s (n bytes available): >0 valid, 0 incomplete but valid so
 * far, -1 invalid. */
static int utf8_check(const uint8_t *s, size_t n) {
        size_t need;
        uint32_t cp;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xC2 && s[0] <= 0xDF)
                need = 2, cp = s[0] & 0x1F;
        else if (s[0] >= 0xE0 && s[0] <= 0xEF)
                need = 3, cp = s[0] & 0x0F;
        else if (s[0] >= 0xF0 && s[0] <= 0xF4)
                need = 4, cp = s[0] & 0x07;
        else
                return -1;
        for (size_t i = 1; i < need; i++) {
                if (i >= n)
                        return 0;
                if ((s[i] & 0xC0) != 0x80)
                        return -1;
                cp = (cp << 6) | (s[i] & 0x3F);
                /* reject overlong, surrogate and out-of-range forms as early as possible */
                if (i == 1 && ((need == 3 && cp < 0x20) || (need == 3 && cp >= 0x360 && cp < 0x380) ||
                               (need == 4 && (cp < 0x10 || cp >= 0x110))))
                        return -1;
        }
        return (int)need;
}

/* Appends s[0..n) to out as valid UTF-8. final: an incomplete sequence at the end becomes
 * U+FFFD; otherwise the caller has already excluded it. */
static int append_valid(char **out, size_t *out_len, const char *s, size_t n) {
        char *o = malloc(n * 3 + 1);
        size_t k = 0;

        if (!o)
                return -ENOMEM;
        for (size_t i = 0; i < n;) {
                int l = utf8_check((const uint8_t *)s + i, n - i);
                if (l > 0) {
                        memcpy(o + k, s + i, (size_t)l);
                        k += (size_t)l;
                        i += (size_t)l;
                } else {
                        memcpy(o + k, "\xef\xbf\xbd", 3);
                        k += 3;
                        i++;
                }
        }
        o[k] = 0;
        *out = o;
        *out_len = k;
        return 0;
}

/* Bytes at the end of buf that must wait: an incomplete (so far valid) UTF-8 character, or a
 * suffix that is a proper prefix of a stop string. */
static size_t holdback(const QdTextStream *t) {
        size_t hold = 0;

        for (size_t back = 1; back <= MIN((size_t)3, t->len); back++) {
                const uint8_t *p = (const uint8_t *)t->buf + t->len - back;
                if ((*p & 0xC0) == 0x80)
                        continue;
                if (utf8_check(p, back) == 0)
                        hold = back;
                break;
        }
        for (size_t i = 0; i < t->n_stop; i++) {
                size_t sl = strlen(t->stop[i]);
                for (size_t k = MIN(sl - 1, t->len); k > hold; k--)
                        if (memcmp(t->buf + t->len - k, t->stop[i], k) == 0) {
                                hold = k;
                                break;
                        }
        }
        return hold;
}

static int emit(QdTextStream *t, size_t n, char **ret_text) {
        _cleanup_free_ char *o = NULL;
        size_t ol;
        int r = append_valid(&o, &ol, t->buf, n);
        if (r < 0)
                return r;
        memmove(t->buf, t->buf + n, t->len - n);
        t->len -= n;
        *ret_text = TAKE_PTR(o);
        return 0;
}

int qd_text_stream_push(QdTextStream *t, int32_t token, char **ret_text) {
        int n, r;

        if (t->stopped) {
                char *e = strdup("");
                if (!e)
                        return -ENOMEM;
                *ret_text = e;
                return 1;
        }
        n = qd_tokenizer_token_piece(t->tok, token, false, NULL, 0);
        if (n == -ENOBUFS || n > 0) {
                const char *text = qd_tokenizer_token_text(t->tok, token);
                size_t need = t->len + strlen(text) + 1;
                if (need > t->alloc) {
                        char *b = realloc(t->buf, MAX(need, t->alloc * 2));
                        if (!b)
                                return -ENOMEM;
                        t->buf = b;
                        t->alloc = MAX(need, t->alloc * 2);
                }
                n = qd_tokenizer_token_piece(t->tok, token, false, t->buf + t->len, t->alloc - t->len);
        }
        if (n < 0)
                return n;
        t->len += (size_t)n;

        /* a stop string can only start in the held-back part, so search all of buf */
        size_t first = SIZE_MAX;
        for (size_t i = 0; i < t->n_stop; i++) {
                void *p = memmem(t->buf, t->len, t->stop[i], strlen(t->stop[i]));
                if (p)
                        first = MIN(first, (size_t)((char *)p - t->buf));
        }
        if (first != SIZE_MAX) {
                r = emit(t, first, ret_text);
                if (r < 0)
                        return r;
                t->len = 0;
                t->stopped = true;
                return 1;
        }
        r = emit(t, t->len - holdback(t), ret_text);
        return r < 0 ? r : 0;
}

int qd_text_stream_flush(QdTextStream *t, char **ret_text) {
        if (t->stopped) {
                char *e = strdup("");
                if (!e)
                        return -ENOMEM;
                *ret_text = e;
                return 0;
        }
        return emit(t, t->len, ret_text);
}
