/* Binary heap with hole-moving sift-up/down; see heap.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "heap.h"
#include "macro.h"

#define AT(h, i) ((h)->v + (i) * (h)->size)

int heap_push(Heap *h, const void *e) {
        size_t i;

        if (h->n == h->alloc) {
                size_t na = MAX(h->alloc * 2, (size_t) 32);
                char *v = reallocarray(h->v, na, h->size);
                if (!v)
                        return -ENOMEM;
                h->v = v;
                h->alloc = na;
        }
        for (i = h->n++; i > 0 && h->before(e, AT(h, (i - 1) / 2)); i = (i - 1) / 2)
                memcpy(AT(h, i), AT(h, (i - 1) / 2), h->size);
        memcpy(AT(h, i), e, h->size);
        return 0;
}

void heap_pop(Heap *h, void *ret) {
        /* The last element stays in slot n (past the end) while its place is found: every slot
         * written below is < n. */
        const char *last;
        size_t i = 0;

        memcpy(ret, AT(h, 0), h->size);
        last = AT(h, --h->n);
        for (;;) {
                size_t l = 2 * i + 1, r = l + 1, m = i;
                const char *best = last;
                if (l < h->n && h->before(AT(h, l), best)) {
                        m = l;
                        best = AT(h, l);
                }
                if (r < h->n && h->before(AT(h, r), best))
                        m = r;
                if (m == i)
                        break;
                memcpy(AT(h, i), AT(h, m), h->size);
                i = m;
        }
        if (h->n > 0)
                memcpy(AT(h, i), last, h->size);
}

void heap_done(Heap *h) {
        h->v = mfree(h->v);
        h->n = h->alloc = 0;
}
