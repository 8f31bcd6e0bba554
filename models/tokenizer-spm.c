/* SentencePiece-style tokenizer (llama.cpp's llm_tokenizer_spm): greedy bigram merges by score,
 * byte fallback through <0xXX> tokens. The input already has spaces escaped to U+2581. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "heap.h"
#include "macro.h"
#include "tokenizer-internal.h"

typedef struct Symbol {
        int32_t prev, next;
        size_t start, n;
} Symbol;

typedef struct Bigram {
        int32_t left, right;
        float score;
        size_t size;
} Bigram;

/* true when a should be popped before b: higher score, then leftmost */
static bool before(const void *pa, const void *pb) {
        const Bigram *a = pa, *b = pb;
        if (a->score != b->score)
                return a->score > b->score;
        return a->left < b->left;
}


int tokenizer_spm_init(QdTokenizer *t, char **ret_error) {
        for (unsigned b = 0; b < 256; b++) {
                char s[8];
                snprintf(s, sizeof(s), "<0x%02X>", b);
                t->byte_token[b] = tokenizer_lookup(t, s, 6);
        }
        return 0;
}

static int try_add(const QdTokenizer *t, const char *text, const Symbol *syms, Heap *h, int32_t left,
                   int32_t right) {
        if (left < 0 || right < 0)
                return 0;
        size_t n = syms[left].n + syms[right].n;
        int32_t id = tokenizer_lookup(t, text + syms[left].start, n);
        if (id < 0)
                return 0;
        return heap_push(h, &(Bigram){.left = left, .right = right, .score = t->scores[id], .size = n});
}

int tokenizer_spm_encode(const QdTokenizer *t, const char *text, size_t len, TokenVec *out) {
        _cleanup_free_ Symbol *syms = NULL;
        Heap h = HEAP_INIT(Bigram, before);
        size_t n = 0;
        int r = 0;

        if (len > INT32_MAX)
                return -E2BIG;
        syms = calloc(len, sizeof(Symbol));
        if (!syms)
                return -ENOMEM;
        for (size_t off = 0; off < len; n++) {
                size_t l = MIN(utf8_len((uint8_t)text[off]), len - off);
                syms[n] = (Symbol){.prev = (int32_t)n - 1, .start = off, .n = l};
                off += l;
                syms[n].next = off == len ? -1 : (int32_t)n + 1;
        }
        for (size_t i = 1; i < n; i++) {
                r = try_add(t, text, syms, &h, (int32_t)i - 1, (int32_t)i);
                if (r < 0)
                        goto finish;
        }
        while (h.n > 0) {
                Bigram b;
                heap_pop(&h, &b);
                Symbol *l = &syms[b.left], *rs = &syms[b.right];
                /* skip bigrams whose symbols have changed since they were queued */
                if (l->n == 0 || rs->n == 0 || l->n + rs->n != b.size || l->next != b.right)
                        continue;
                l->n += rs->n;
                rs->n = 0;
                l->next = rs->next;
                if (rs->next >= 0)
                        syms[rs->next].prev = b.left;
                r = try_add(t, text, syms, &h, l->prev, b.left);
                if (r < 0)
                        goto finish;
                r = try_add(t, text, syms, &h, b.left, l->next);
                if (r < 0)
                        goto finish;
        }
        for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = syms[i].next) {
                const Symbol *s = &syms[i];
                int32_t id = tokenizer_lookup(t, text + s->start, s->n);
                if (id >= 0) {
                        r = token_vec_push(out, id);
                        if (r < 0)
                                goto finish;
                        continue;
                }
                /* byte fallback (unknown token when the vocabulary has no byte tokens) */
                for (size_t j = 0; j < s->n; j++) {
                        int32_t bt = t->byte_token[(uint8_t)text[s->start + j]];
                        if (bt < 0)
                                bt = t->unk;
                        if (bt < 0)
                                continue;
                        r = token_vec_push(out, bt);
                        if (r < 0)
                                goto finish;
                }
        }
finish:
        heap_done(&h);
        return r;
}
