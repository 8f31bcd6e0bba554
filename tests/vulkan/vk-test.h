/* What the tests of vulkan/ share: cleanup helpers, assertions that fail the test, and the
 * device (or meson's "skipped" where there is none). */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "vk.h"


#define CHECK(expr)                                                                   \
        do {                                                                          \
                int _r = (expr);                                                      \
                if (_r < 0) {                                                         \
                        fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, \
                                #expr, strerror(-_r));                                \
                        return EXIT_FAILURE;                                          \
                }                                                                     \
        } while (0)

#define ASSERT(cond)                                                                         \
        do {                                                                                 \
                if (!(cond)) {                                                               \
                        fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, \
                                #cond);                                                      \
                        return EXIT_FAILURE;                                                 \
                }                                                                            \
        } while (0)

/* The default device; exits with 77 (skipped) where there is no Vulkan device. */
static inline int vk_test_device_new(QvkDevice **ret) {
        int r = qvk_device_new(NULL, NULL, ret);

        if (r == -ENODEV) {
                fprintf(stderr, "no Vulkan device, skipping\n");
                exit(77);
        }
        return r;
}

/* A xorshift state for fresh random inputs: $QUANTD_TEST_SEED, else the clock; printed so that
 * a failing run can be repeated. */
static inline uint64_t vk_test_seed(void) {
        const char *env = getenv("QUANTD_TEST_SEED");
        uint64_t s = env ? strtoull(env, NULL, 0) : (uint64_t) time(NULL) ^ 0x9e3779b97f4a7c15ull;

        s |= 1;
        printf("seed %llu\n", (unsigned long long) s);
        return s;
}

/* Uniform in [-1, 1). */
static inline double vk_test_urand(uint64_t *s) {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return (double) (*s >> 11) / (double) (1ull << 53) * 2.0 - 1.0;
}
