/* Small helpers shared by every part of quantd, in the manner of systemd's macro.h:
 * scope-based cleanup, ownership transfer and array sizes. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)
#define _pure_ __attribute__((pure))
#define _noreturn_ __attribute__((noreturn))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define CLAMP(x, lo, hi) MIN(MAX((x), (lo)), (hi))
#define DIV_ROUND_UP(x, y) (((x) + (y) - 1) / (y))
#define ALIGN_TO(x, a) (((x) + (a) - 1) / (a) * (a))
/* The fewest items of `unit` bytes that add up to a multiple of align, a power of two (e.g. the
 * rows between buffer offsets that meet a storage-buffer alignment). */
#define ALIGN_COUNT(unit, align) ((align) / MIN((uint64_t) (unit) & -(uint64_t) (unit), (uint64_t) (align)))

/* Hand a pointer over to the caller: returns it and clears the cleanup variable. */
#define TAKE_PTR(p)                        \
        ({                                 \
                typeof(p) _tp_ = (p);      \
                (p) = NULL;                \
                _tp_;                      \
        })

#define TAKE_FD(fd)                        \
        ({                                 \
                int _tfd_ = (fd);          \
                (fd) = -EBADF;             \
                _tfd_;                     \
        })

/* Declares foo_freep(Foo **p) for a destructor Foo *foo_free(Foo *p) that accepts NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)        \
        static inline void func##p(type *p) {          \
                if (*p)                                \
                        *p = func(*p);                 \
        }

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
        if (*fd >= 0)
                (void) close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f) {
        if (*f)
                (void) fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

/* Overflow-checked size arithmetic for untrusted counts (GGUF, HTTP). */
static inline bool size_mul_overflow(size_t a, size_t b, size_t *ret) {
        return __builtin_mul_overflow(a, b, ret);
}
static inline bool size_add_overflow(size_t a, size_t b, size_t *ret) {
        return __builtin_add_overflow(a, b, ret);
}

static inline const char *strna(const char *s) {
        return s ? s : "n/a";
}
static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        while (*a && *a == *b)
                a++, b++;
        return *a == *b;
}
#define streq(a, b) (__builtin_strcmp((a), (b)) == 0)
