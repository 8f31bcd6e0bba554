/* Tokenizer common part: vocabulary from GGUF metadata, special tokens, pieces, detokenization. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "tokenizer-internal.h"

int token_vec_push(TokenVec *t, int32_t token) {
        if (t->n == t->alloc) {
                size_t na = MAX(t->alloc * 2, (size_t)64);
                int32_t *v = reallocarray(t->v, na, sizeof(int32_t));
                if (!v)
                        return -ENOMEM;
                t->v = v;
                t->alloc = na;
        }
        t->v[t->n++] = token;
        return 0;
}

size_t utf8_len(uint8_t c) {
        if (c < 0x80)
                return 1;
        if ((c & 0xE0) == 0xC0)
                return 2;
        if ((c & 0xF0) == 0xE0)
                return 3;
        if ((c & 0xF8) == 0xF0)
                return 4;
        return 1;
}

uint64_t tokenizer_hash_bytes(const char *s, size_t len) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        for (size_t i = 0; i < len; i++) {
                h ^= (uint8_t)s[i];
                h *= UINT64_C(0x100000001b3);
        }
        return h;
}

int32_t tokenizer_lookup(const QdTokenizer *t, const char *s, size_t len) {
        size_t i = tokenizer_hash_bytes(s, len) & t->hash_mask;
        for (;;) {
                int32_t id = t->hash[i];
                if (id < 0)
                        return -1;
                if (t->text_len[id] == len && memcmp(t->text[id], s, len) == 0)
                        return id;
                i = (i + 1) & t->hash_mask;
        }
}

_printf_(2, 3) static int fail(char **ret_error, const char *fmt, ...) {
        va_list ap;

        if (ret_error) {
                va_start(ap, fmt);
                if (vasprintf(ret_error, fmt, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return -EBADMSG;
}

QdTokenizer *qd_tokenizer_free(QdTokenizer *t) {
        if (!t)
                return NULL;
        tokenizer_bpe_done(t);
        free(t->text);
        free(t->text_len);
        free(t->textbuf);
        free(t->scores);
        free(t->types);
        free(t->hash);
        free(t->eog);
        free(t->special);
        free(t->merges);
        return mfree(t);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(QdTokenizer *, qd_tokenizer_free);

static int32_t special_id(const Gguf *g, const QdTokenizer *t, const char *key, int32_t def) {
        uint32_t v;
        if (gguf_get_u32(g, key, &v) < 0)
                return def < (int32_t)t->n_vocab ? def : -1;
        return v < t->n_vocab ? (int32_t)v : -1;
}

static int cmp_special(const void *a, const void *b, void *userdata) {
        const QdTokenizer *sort_ctx = userdata;
        int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
        uint8_t fx = (uint8_t)sort_ctx->text[x][0], fy = (uint8_t)sort_ctx->text[y][0];
        if (fx != fy)
                return fx < fy ? -1 : 1;
        if (sort_ctx->text_len[x] != sort_ctx->text_len[y])
                return sort_ctx->text_len[x] > sort_ctx->text_len[y] ? -1 : 1;
        return x < y ? -1 : x > y;
}

static int build_specials(QdTokenizer *t) {
        size_t n = 0;

        for (uint32_t i = 0; i < t->n_vocab; i++)
                if ((t->types[i] == QD_TOKEN_TYPE_CONTROL || t->types[i] == QD_TOKEN_TYPE_USER_DEFINED) &&
                    t->text_len[i] > 0)
                        n++;
        t->special = calloc(MAX(n, 1u), sizeof(int32_t));
        if (!t->special)
                return -ENOMEM;
        n = 0;
        for (uint32_t i = 0; i < t->n_vocab; i++)
                if ((t->types[i] == QD_TOKEN_TYPE_CONTROL || t->types[i] == QD_TOKEN_TYPE_USER_DEFINED) &&
                    t->text_len[i] > 0)
                        t->special[n++] = (int32_t)i;
        qsort_r(t->special, n, sizeof(int32_t), cmp_special, t);
        size_t j = 0;
        for (unsigned b = 0; b < 256; b++) {
                t->special_start[b] = j;
                while (j < n && (uint8_t)t->text[t->special[j]][0] == b)
                        j++;
        }
        t->special_start[256] = j;
        return 0;
}

static const char *const eog_texts[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<end_of_turn>", "</s>", "<|eom_id|>",
};

int qd_tokenizer_new_from_gguf(const Gguf *g, QdTokenizer **ret, char **ret_error) {
        _cleanup_(qd_tokenizer_freep) QdTokenizer *t = NULL;
        const char *model;
        const char *const *tokens;
        const size_t *lens;
        size_t n, total = 0;
        int r;

        r = gguf_get_string(g, "tokenizer.ggml.model", &model, NULL);
        if (r < 0)
                return fail(ret_error, "tokenizer.ggml.model is missing");
        t = calloc(1, sizeof(QdTokenizer));
        if (!t)
                return -ENOMEM;
        if (streq(model, "llama"))
                t->kind = QD_TOKENIZER_SPM;
        else if (streq(model, "gpt2"))
                t->kind = QD_TOKENIZER_BPE;
        else {
                if (ret_error && asprintf(ret_error, "tokenizer model '%s' is not supported", model) < 0)
                        *ret_error = NULL;
                return -EOPNOTSUPP;
        }

        r = gguf_get_string_array(g, "tokenizer.ggml.tokens", &tokens, &lens, &n);
        if (r < 0)
                return fail(ret_error, "tokenizer.ggml.tokens is missing or not an array of strings");
        if (n == 0 || n > INT32_MAX / 2)
                return fail(ret_error, "tokenizer.ggml.tokens has %zu entries", n);
        t->n_vocab = (uint32_t)n;
        t->text = calloc(n, sizeof(char *));
        t->text_len = calloc(n, sizeof(uint32_t));
        t->scores = calloc(n, sizeof(float));
        t->types = malloc(n);
        t->eog = calloc(n, sizeof(bool));
        if (!t->text || !t->text_len || !t->scores || !t->types || !t->eog)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (lens[i] > UINT32_MAX / 2 || memchr(tokens[i], 0, lens[i]))
                        return fail(ret_error, "token %zu: invalid text", i);
                total += lens[i] + 1;
        }
        t->textbuf = malloc(total);
        if (!t->textbuf)
                return -ENOMEM;
        char *p = t->textbuf;
        for (size_t i = 0; i < n; i++) {
                memcpy(p, tokens[i], lens[i] + 1);
                t->text[i] = p;
                t->text_len[i] = (uint32_t)lens[i];
                p += lens[i] + 1;
        }

        _cleanup_free_ float *scores = NULL;
        size_t ns;
        if (gguf_get_f32_array(g, "tokenizer.ggml.scores", &scores, &ns) >= 0) {
                if (ns != n)
                        return fail(ret_error, "tokenizer.ggml.scores has %zu entries, expected %zu", ns, n);
                memcpy(t->scores, scores, n * sizeof(float));
        }
        _cleanup_free_ int32_t *types = NULL;
        size_t nt;
        memset(t->types, QD_TOKEN_TYPE_NORMAL, n);
        if (gguf_get_i32_array(g, "tokenizer.ggml.token_type", &types, &nt) >= 0) {
                if (nt != n)
                        return fail(ret_error, "tokenizer.ggml.token_type has %zu entries, expected %zu", nt,
                                    n);
                for (size_t i = 0; i < n; i++) {
                        if (types[i] < 0 || types[i] > QD_TOKEN_TYPE_BYTE)
                                return fail(ret_error, "token %zu: invalid type %" PRIi32, i, types[i]);
                        t->types[i] = (uint8_t)(types[i] == QD_TOKEN_TYPE_UNDEFINED ? QD_TOKEN_TYPE_NORMAL
                                                                                    : types[i]);
                }
        }

        /* hash of the vocabulary; on duplicates the last id wins (as llama.cpp's map) */
        size_t cap = 1;
        while (cap < n * 2)
                cap <<= 1;
        t->hash = malloc(cap * sizeof(int32_t));
        if (!t->hash)
                return -ENOMEM;
        memset(t->hash, 0xff, cap * sizeof(int32_t));
        t->hash_mask = cap - 1;
        for (size_t i = 0; i < n; i++) {
                size_t h = tokenizer_hash_bytes(t->text[i], t->text_len[i]) & t->hash_mask;
                for (;;) {
                        int32_t id = t->hash[h];
                        if (id < 0 || (t->text_len[id] == t->text_len[i] &&
                                       memcmp(t->text[id], t->text[i], t->text_len[i]) == 0)) {
                                t->hash[h] = (int32_t)i;
                                break;
                        }
                        h = (h + 1) & t->hash_mask;
                }
        }

        bool spm = t->kind == QD_TOKENIZER_SPM;
        t->bos = special_id(g, t, "tokenizer.ggml.bos_token_id", spm ? 1 : -1);
        t->eos = special_id(g, t, "tokenizer.ggml.eos_token_id", spm ? 2 : -1);
        t->unk = special_id(g, t, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1);
        t->pad = special_id(g, t, "tokenizer.ggml.padding_token_id", -1);
        t->eot = special_id(g, t, "tokenizer.ggml.eot_token_id", -1);
        t->eom = special_id(g, t, "tokenizer.ggml.eom_token_id", -1);
        if (gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos) < 0)
                t->add_bos = spm;
        if (gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix) < 0)
                t->add_space_prefix = spm;
        if (t->eot < 0)
                for (size_t i = 0; i < 5 && t->eot < 0; i++) {
                        int32_t id = tokenizer_lookup(t, eog_texts[i], strlen(eog_texts[i]));
                        if (id >= 0 && t->types[id] == QD_TOKEN_TYPE_CONTROL)
                                t->eot = id;
                }
        for (size_t i = 0; i < ELEMENTSOF(eog_texts); i++) {
                int32_t id = tokenizer_lookup(t, eog_texts[i], strlen(eog_texts[i]));
                if (id >= 0 && t->types[id] == QD_TOKEN_TYPE_CONTROL)
                        t->eog[id] = true;
        }
        if (t->eos >= 0)
                t->eog[t->eos] = true;
        if (t->eot >= 0)
                t->eog[t->eot] = true;
        if (t->eom >= 0)
                t->eog[t->eom] = true;

        r = build_specials(t);
        if (r < 0)
                return r;
        r = spm ? tokenizer_spm_init(t, ret_error) : tokenizer_bpe_init(t, g, ret_error);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(t);
        return 0;
}

QdTokenizerKind qd_tokenizer_kind(const QdTokenizer *t) {
        return t->kind;
}

uint32_t qd_tokenizer_n_vocab(const QdTokenizer *t) {
        return t->n_vocab;
}

int32_t qd_tokenizer_bos(const QdTokenizer *t) {
        return t->bos;
}

int32_t qd_tokenizer_eos(const QdTokenizer *t) {
        return t->eos;
}

int32_t qd_tokenizer_eot(const QdTokenizer *t) {
        return t->eot;
}

int32_t qd_tokenizer_unk(const QdTokenizer *t) {
        return t->unk;
}

int32_t qd_tokenizer_pad(const QdTokenizer *t) {
        return t->pad;
}

bool qd_tokenizer_add_bos(const QdTokenizer *t) {
        return t->add_bos;
}

bool qd_tokenizer_is_eog(const QdTokenizer *t, int32_t token) {
        return token >= 0 && (uint32_t)token < t->n_vocab && t->eog[token];
}

const char *qd_tokenizer_token_text(const QdTokenizer *t, int32_t token) {
        return token >= 0 && (uint32_t)token < t->n_vocab ? t->text[token] : NULL;
}

QdTokenType qd_tokenizer_token_type(const QdTokenizer *t, int32_t token) {
        return token >= 0 && (uint32_t)token < t->n_vocab ? t->types[token] : QD_TOKEN_TYPE_UNDEFINED;
}

int32_t qd_tokenizer_find(const QdTokenizer *t, const char *text, size_t len) {
        int32_t id = tokenizer_lookup(t, text, len);
        return id < 0 ? -ENOENT : id;
}

/* Longest special token starting at text (or -1). */
static int32_t match_special(const QdTokenizer *t, const char *text, size_t len, bool parse_special) {
        uint8_t b = (uint8_t)text[0];
        for (size_t j = t->special_start[b]; j < t->special_start[b + 1]; j++) {
                int32_t id = t->special[j];
                if (!parse_special && t->types[id] == QD_TOKEN_TYPE_CONTROL)
                        continue;
                if (t->text_len[id] <= len && memcmp(text, t->text[id], t->text_len[id]) == 0)
                        return id;
        }
        return -1;
}

static int encode_fragment(const QdTokenizer *t, const char *text, size_t len, bool after_special,
                           TokenVec *out) {
        if (t->kind == QD_TOKENIZER_BPE)
                return len > 0 ? tokenizer_bpe_encode(t, text, len, out) : 0;

        /* SPM: ' ' → U+2581, with a leading one at the start and after special tokens */
        size_t n = (after_special && t->add_space_prefix) ? 3 : 0;
        for (size_t i = 0; i < len; i++)
                n += text[i] == ' ' ? 3 : 1;
        if (n == 0)
                return 0;
        _cleanup_free_ char *buf = malloc(n);
        if (!buf)
                return -ENOMEM;
        char *p = buf;
        if (after_special && t->add_space_prefix) {
                memcpy(p, "\xe2\x96\x81", 3);
                p += 3;
        }
        for (size_t i = 0; i < len; i++) {
                if (text[i] == ' ') {
                        memcpy(p, "\xe2\x96\x81", 3);
                        p += 3;
                } else
                        *p++ = text[i];
        }
        return tokenizer_spm_encode(t, buf, n, out);
}

int qd_tokenizer_tokenize(const QdTokenizer *t, const char *text, size_t len, bool add_bos,
                          bool parse_special, int32_t **ret_tokens, size_t *ret_n) {
        TokenVec out = {};
        bool after_special = true;
        size_t start = 0;
        int r;

        if (!text && len > 0)
                return -EINVAL;
        if (add_bos && t->bos >= 0) {
                r = token_vec_push(&out, t->bos);
                if (r < 0)
                        goto fail;
        }
        for (size_t i = 0; i < len;) {
                int32_t id = match_special(t, text + i, len - i, parse_special);
                if (id < 0) {
                        i++;
                        continue;
                }
                if (i > start) {
                        r = encode_fragment(t, text + start, i - start, after_special, &out);
                        if (r < 0)
                                goto fail;
                }
                r = token_vec_push(&out, id);
                if (r < 0)
                        goto fail;
                after_special = true;
                i += t->text_len[id];
                start = i;
        }
        if (len > start) {
                r = encode_fragment(t, text + start, len - start, after_special, &out);
                if (r < 0)
                        goto fail;
        }
        if (out.n == 0) {
                /* callers get a valid (empty) array */
                out.v = malloc(sizeof(int32_t));
                if (!out.v)
                        return -ENOMEM;
        }
        *ret_tokens = out.v;
        *ret_n = out.n;
        return 0;
fail:
        free(out.v);
        return r;
}

static int hex_digit(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* <0xXX> → byte, or -1 */
static int byte_token_value(const char *s, size_t len) {
        if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
                return -1;
        int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
        return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

int qd_tokenizer_token_piece(const QdTokenizer *t, int32_t token, bool special, char *buf, size_t size) {
        char tmp[512];
        const char *src;
        size_t n;

        if (token < 0 || (uint32_t)token >= t->n_vocab)
                return -EINVAL;
        const char *text = t->text[token];
        size_t len = t->text_len[token];
        switch (t->types[token]) {
        case QD_TOKEN_TYPE_CONTROL:
                if (!special)
                        return 0;
                __attribute__((fallthrough));
        case QD_TOKEN_TYPE_UNKNOWN:
        case QD_TOKEN_TYPE_USER_DEFINED:
                src = text;
                n = len;
                break;
        case QD_TOKEN_TYPE_BYTE: {
                int b = byte_token_value(text, len);
                if (t->kind == QD_TOKENIZER_SPM && b >= 0) {
                        tmp[0] = (char)b;
                        src = tmp;
                        n = 1;
                        break;
                }
                __attribute__((fallthrough));
        }
        case QD_TOKEN_TYPE_NORMAL:
                if (t->kind == QD_TOKENIZER_SPM) {
                        /* U+2581 → ' ': the result is never longer than the text */
                        if (len > size)
                                return -ENOBUFS;
                        n = 0;
                        for (size_t i = 0; i < len;) {
                                if (len - i >= 3 && memcmp(text + i, "\xe2\x96\x81", 3) == 0) {
                                        buf[n++] = ' ';
                                        i += 3;
                                } else
                                        buf[n++] = text[i++];
                        }
                        return (int)n;
                }
                if (len > size && len > sizeof(tmp))
                        return -ENOBUFS;
                n = tokenizer_bpe_decode(t, text, len, len <= sizeof(tmp) ? tmp : buf);
                src = len <= sizeof(tmp) ? tmp : buf;
                break;
        default: /* unused */
                return 0;
        }
        if (n > size)
                return -ENOBUFS;
        if (src != buf)
                memcpy(buf, src, n);
        return (int)MIN(n, (size_t)INT32_MAX);
}

int qd_tokenizer_detokenize(const QdTokenizer *t, const int32_t *tokens, size_t n, bool skip_special,
                            char **ret, size_t *ret_len) {
        _cleanup_free_ char *out = NULL;
        size_t len = 0, alloc = 0;
        bool strip_space = t->kind == QD_TOKENIZER_SPM && t->add_space_prefix;

        for (size_t i = 0; i < n; i++) {
                if (tokens[i] < 0 || (uint32_t)tokens[i] >= t->n_vocab)
                        return -EINVAL;
                size_t need = t->text_len[tokens[i]] + 1;
                if (len + need + 1 > alloc) {
                        size_t na = MAX(alloc * 2, len + need + 64);
                        char *p = realloc(out, na);
                        if (!p)
                                return -ENOMEM;
                        out = p;
                        alloc = na;
                }
                int k = qd_tokenizer_token_piece(t, tokens[i], !skip_special, out + len, alloc - len - 1);
                if (k < 0)
                        return k;
                if (t->types[tokens[i]] == QD_TOKEN_TYPE_CONTROL) {
                        len += (size_t)k; /* BOS etc. do not end the leading-space window */
                        continue;
                }
                if (strip_space && k > 0 && out[len] == ' ') {
                        memmove(out + len, out + len + 1, (size_t)k - 1);
                        k--;
                }
                strip_space = false;
                len += (size_t)k;
        }
        if (!out) {
                out = malloc(1);
                if (!out)
                        return -ENOMEM;
        }
        out[len] = 0;
        *ret = TAKE_PTR(out);
        if (ret_len)
                *ret_len = len;
        return 0;
}
