/* Helpers shared by the quantization sources, not part of the API. */
#pragma once

#include <stddef.h>

/* Calls fn(userdata, i) for i in [0, n) on up to n_threads threads (the caller's included),
 * indices handed out one at a time. Returns the first negative value fn returned (the remaining
 * indices are skipped), -ENOMEM/-EAGAIN if no thread could run, or 0. */
int qd_parallel_for(size_t n, unsigned n_threads, int (*fn)(void *userdata, size_t i),
                    void *userdata);
