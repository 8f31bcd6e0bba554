/* Byte-level BPE tokenizer (GPT-2 style, llama.cpp's llm_tokenizer_bpe): PCRE2 pre-tokenizer
 * chosen by tokenizer.ggml.pre, GPT-2 byte-to-unicode mapping, merges applied by rank. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <string.h>

#include "heap.h"
#include "macro.h"
#include "tokenizer-internal.h"

/* The regexes llama.cpp uses for each pre-tokenizer (llama-vocab.cpp), applied in sequence. */
static const char *const re_gpt2[] = {
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        NULL,
};
static const char *const re_default[] = {
        "[\\p{P}\\$\\+<=>\\^`\\|]",
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        "\\p{N}+",
        "[0-9][0-9][0-9]",
        NULL,
};
static const char *const re_smollm[] = {
        /* also starcoder, refact */
        "\\p{N}",
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        NULL,
};
static const char *const re_llama3[] = {
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
        "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        NULL,
};
static const char *const re_qwen2[] = {
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
        "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        NULL,
};

static size_t utf8_encode(uint32_t cp, char *out) {
        if (cp < 0x80) {
                out[0] = (char)cp;
                return 1;
        }
        if (cp < 0x800) {
                out[0] = (char)(0xC0 | (cp >> 6));
                out[1] = (char)(0x80 | (cp & 0x3F));
                return 2;
        }
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
}

static void init_byte_map(QdTokenizer *t) {
        uint32_t n = 0;
        for (unsigned cp = 0; cp < ELEMENTSOF(t->cp_to_byte); cp++)
                t->cp_to_byte[cp] = -1;
        for (unsigned b = 0; b < 256; b++) {
                if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
                        t->byte_to_cp[b] = b;
                else
                        t->byte_to_cp[b] = 256 + n++;
                t->cp_to_byte[t->byte_to_cp[b]] = (int16_t)b;
        }
}

static size_t merge_slot(const QdTokenizer *t, uint64_t key) {
        size_t i = (size_t)((key * UINT64_C(0x9E3779B97F4A7C15)) >> 20) & t->merges_mask;
        while (t->merges[i].used && t->merges[i].key != key)
                i = (i + 1) & t->merges_mask;
        return i;
}

static const MergeEntry *merge_find(const QdTokenizer *t, int32_t left, int32_t right) {
        if (!t->merges || left < 0 || right < 0)
                return NULL;
        uint64_t key = (uint64_t)left << 32 | (uint32_t)right;
        const MergeEntry *e = &t->merges[merge_slot(t, key)];
        return e->used ? e : NULL;
}

void tokenizer_bpe_done(QdTokenizer *t) {
        for (size_t i = 0; i < t->n_regex; i++)
                pcre2_code_free(t->regex[i]);
        t->n_regex = 0;
}

int tokenizer_bpe_init(QdTokenizer *t, const Gguf *g, char **ret_error) {
        const char *const *merges;
        const char *const *res;
        const char *pre = NULL;
        size_t n = 0;

        init_byte_map(t);
        (void)gguf_get_string(g, "tokenizer.ggml.pre", &pre, NULL);
        if (!pre || streq(pre, "default"))
                res = re_default;
        else if (streq(pre, "gpt2") || streq(pre, "gpt-2"))
                res = re_gpt2;
        else if (streq(pre, "llama-bpe") || streq(pre, "llama3") || streq(pre, "llama-v3") ||
                 streq(pre, "smaug-bpe")) {
                res = re_llama3;
                t->ignore_merges = true;
        } else if (streq(pre, "qwen2") || streq(pre, "deepseek-r1-qwen"))
                res = re_qwen2;
        else if (streq(pre, "smollm") || streq(pre, "starcoder") || streq(pre, "refact"))
                res = re_smollm;
        else {
                if (ret_error && asprintf(ret_error, "pre-tokenizer '%s' is not supported", pre) < 0)
                        *ret_error = NULL;
                return -EOPNOTSUPP;
        }
        for (; res[t->n_regex]; t->n_regex++) {
                int err;
                PCRE2_SIZE off;
                t->regex[t->n_regex] =
                        pcre2_compile((PCRE2_SPTR)res[t->n_regex], PCRE2_ZERO_TERMINATED,
                                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, NULL);
                if (!t->regex[t->n_regex])
                        return -ENOMEM; /* the patterns are fixed and known to compile */
                (void)pcre2_jit_compile(t->regex[t->n_regex], PCRE2_JIT_COMPLETE);
        }

        const size_t *lens;
        if (gguf_get_string_array(g, "tokenizer.ggml.merges", &merges, &lens, &n) < 0) {
                if (ret_error && asprintf(ret_error, "tokenizer.ggml.merges is missing") < 0)
                        *ret_error = NULL;
                return -EBADMSG;
        }
        size_t cap = 16;
        while (cap < n * 2)
                cap <<= 1;
        t->merges = calloc(cap, sizeof(MergeEntry));
        if (!t->merges)
                return -ENOMEM;
        t->merges_mask = cap - 1;
        for (size_t i = 0; i < n && i < INT32_MAX; i++) {
                const char *m = merges[i];
                const char *sp = lens[i] > 1 ? memchr(m + 1, ' ', lens[i] - 1) : NULL;
                if (!sp)
                        continue; /* llama.cpp refuses such files; skipping is as safe */
                size_t ll = (size_t)(sp - m), rl = lens[i] - ll - 1;
                int32_t left = tokenizer_lookup(t, m, ll), right = tokenizer_lookup(t, sp + 1, rl);
                if (left < 0 || right < 0)
                        continue;
                /* the merged text is the merge string without its separator */
                char stack[256];
                _cleanup_free_ char *heap = NULL;
                char *cat = stack;
                if (ll + rl > sizeof(stack)) {
                        cat = heap = malloc(ll + rl);
                        if (!heap)
                                return -ENOMEM;
                }
                memcpy(cat, m, ll);
                memcpy(cat + ll, sp + 1, rl);
                int32_t merged = tokenizer_lookup(t, cat, ll + rl);
                if (merged < 0)
                        continue;
                uint64_t key = (uint64_t)left << 32 | (uint32_t)right;
                MergeEntry *e = &t->merges[merge_slot(t, key)];
                if (e->used)
                        continue; /* the first (lowest) rank wins */
                *e = (MergeEntry){.key = key, .rank = (int32_t)i, .merged = merged, .used = true};
        }
        return 0;
}

size_t tokenizer_bpe_decode(const QdTokenizer *t, const char *text, size_t len, char *out) {
        size_t n = 0;

        for (size_t i = 0; i < len;) {
                uint8_t c = (uint8_t)text[i];
                size_t l = MIN(utf8_len(c), len - i);
                uint32_t cp = c;
                if (l == 2)
                        cp = ((c & 0x1Fu) << 6) | ((uint8_t)text[i + 1] & 0x3Fu);
                int b = l <= 2 && cp < ELEMENTSOF(t->cp_to_byte) ? t->cp_to_byte[cp] : -1;
                if (b >= 0)
                        out[n++] = (char)b;
                else {
                        memcpy(out + n, text + i, l);
                        n += l;
                }
                i += l;
        }
        return n;
}

typedef struct Span {
        size_t start, len;
} Span;

typedef struct SpanVec {
        Span *v;
        size_t n, alloc;
} SpanVec;

static int span_push(SpanVec *s, size_t start, size_t len) {
        if (len == 0)
                return 0;
        if (s->n == s->alloc) {
                size_t na = MAX(s->alloc * 2, (size_t)32);
                Span *v = reallocarray(s->v, na, sizeof(Span));
                if (!v)
                        return -ENOMEM;
                s->v = v;
                s->alloc = na;
        }
        s->v[s->n++] = (Span){start, len};
        return 0;
}

/* Splits every span by the regex: matches and the text between them become spans. */
static int regex_split(const pcre2_code *re, const char *text, const SpanVec *in, SpanVec *out) {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
        int r = 0;

        if (!md)
                return -ENOMEM;
        for (size_t i = 0; i < in->n && r >= 0; i++) {
                const char *s = text + in->v[i].start;
                size_t len = in->v[i].len, pos = 0, last = 0;
                while (pos < len) {
                        int rc = pcre2_match(re, (PCRE2_SPTR)s, len, pos, 0, md, NULL);
                        if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
                                /* JIT stack exhausted on a pathological run: the interpreter */
                                rc = pcre2_match(re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_JIT, md, NULL);
                        if (rc < 0)
                                break; /* no match (or a limit hit): the rest is one piece */
                        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                        if (ov[1] == ov[0]) { /* empty match: step over one character */
                                pos = ov[0] + 1;
                                continue;
                        }
                        if ((r = span_push(out, in->v[i].start + last, ov[0] - last)) < 0 ||
                            (r = span_push(out, in->v[i].start + ov[0], ov[1] - ov[0])) < 0)
                                break;
                        last = pos = ov[1];
                }
                if (r >= 0)
                        r = span_push(out, in->v[i].start + last, len - last);
        }
        pcre2_match_data_free(md);
        return r;
}

typedef struct Sym {
        int32_t prev, next, id;
        size_t start, n;
} Sym;

typedef struct Pair {
        int32_t left, right, rank;
        size_t left_n, right_n;
} Pair;

static bool pair_before(const void *pa, const void *pb) {
        const Pair *a = pa, *b = pb;
        return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}


static int add_pair(const QdTokenizer *t, const Sym *syms, Heap *h, int32_t l, int32_t r) {
        if (l < 0 || r < 0)
                return 0;
        const MergeEntry *e = merge_find(t, syms[l].id, syms[r].id);
        if (!e)
                return 0;
        return heap_push(
                h,
                &(Pair){.left = l, .right = r, .rank = e->rank, .left_n = syms[l].n, .right_n = syms[r].n});
}

/* BPE over one pre-tokenized word, already mapped to GPT-2 code points. */
static int bpe_word(const QdTokenizer *t, const char *w, size_t len, Sym *syms, Heap *h, TokenVec *out) {
        size_t n = 0;
        int r;

        if (t->ignore_merges) {
                int32_t id = tokenizer_lookup(t, w, len);
                if (id >= 0)
                        return token_vec_push(out, id);
        }
        for (size_t off = 0; off < len; n++) {
                size_t l = MIN(utf8_len((uint8_t)w[off]), len - off);
                syms[n] = (Sym){
                        .prev = (int32_t)n - 1, .start = off, .n = l, .id = tokenizer_lookup(t, w + off, l)};
                off += l;
                syms[n].next = off == len ? -1 : (int32_t)n + 1;
        }
        h->n = 0;
        for (size_t i = 1; i < n; i++)
                if ((r = add_pair(t, syms, h, (int32_t)i - 1, (int32_t)i)) < 0)
                        return r;
        while (h->n > 0) {
                Pair p;
                heap_pop(h, &p);
                Sym *ls = &syms[p.left], *rs = &syms[p.right];
                if (ls->n != p.left_n || rs->n != p.right_n || ls->next != p.right)
                        continue; /* outdated */
                const MergeEntry *e = merge_find(t, ls->id, rs->id);
                ls->n += rs->n;
                ls->id = e->merged;
                rs->n = 0;
                ls->next = rs->next;
                if (rs->next >= 0)
                        syms[rs->next].prev = p.left;
                if ((r = add_pair(t, syms, h, ls->prev, p.left)) < 0 ||
                    (r = add_pair(t, syms, h, p.left, ls->next)) < 0)
                        return r;
        }
        for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = syms[i].next) {
                if (syms[i].id >= 0) {
                        if ((r = token_vec_push(out, syms[i].id)) < 0)
                                return r;
                        continue;
                }
                /* not in the vocabulary: one token per byte where those exist (as llama.cpp) */
                for (size_t j = 0; j < syms[i].n; j++) {
                        int32_t id = tokenizer_lookup(t, w + syms[i].start + j, 1);
                        if (id >= 0 && (r = token_vec_push(out, id)) < 0)
                                return r;
                }
        }
        return 0;
}

int tokenizer_bpe_encode(const QdTokenizer *t, const char *text, size_t len, TokenVec *out) {
        SpanVec a = {}, b = {};
        _cleanup_free_ char *word = NULL;
        _cleanup_free_ Sym *syms = NULL;
        Heap h = HEAP_INIT(Pair, pair_before);
        int r;

        r = span_push(&a, 0, len);
        for (size_t i = 0; i < t->n_regex && r >= 0; i++) {
                b.n = 0;
                r = regex_split(t->regex[i], text, &a, &b);
                SpanVec tmp = a;
                a = b;
                b = tmp;
        }
        if (r < 0)
                goto finish;
        size_t maxw = 0;
        for (size_t i = 0; i < a.n; i++)
                maxw = MAX(maxw, a.v[i].len);
        word = malloc(maxw * 2 + 1);
        syms = calloc(maxw * 2 + 1, sizeof(Sym));
        if (!word || !syms) {
                r = -ENOMEM;
                goto finish;
        }
        for (size_t i = 0; i < a.n; i++) {
                size_t wl = 0;
                for (size_t j = 0; j < a.v[i].len; j++)
                        wl += utf8_encode(t->byte_to_cp[(uint8_t)text[a.v[i].start + j]], word + wl);
                r = bpe_word(t, word, wl, syms, &h, out);
                if (r < 0)
                        goto finish;
        }
finish:
        free(a.v);
        free(b.v);
        heap_done(&h);
        return r;
}
