/* A binary heap of fixed-size elements ordered by a caller's "pops first" predicate; used by the
 * tokenizers' merge queues. Elements are copied in and out. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef bool (*HeapBeforeFn)(const void *a, const void *b);

typedef struct Heap {
        char *v;
        size_t n, alloc, size;
        HeapBeforeFn before;
} Heap;

#define HEAP_INIT(type, fn) ((Heap) { .size = sizeof(type), .before = (fn) })

int heap_push(Heap *h, const void *element);
/* Copies the first element to ret and removes it; h->n must be > 0. */
void heap_pop(Heap *h, void *ret);
void heap_done(Heap *h);
