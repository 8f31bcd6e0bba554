/* A minimal parallel-for over pthreads for the CPU-heavy quantization loops. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include "macro.h"
#include "quant-internal.h"

typedef struct ParallelJob {
        size_t n;
        atomic_size_t next;
        atomic_int error;
        int (*fn)(void *userdata, size_t i);
        void *userdata;
} ParallelJob;

static void *parallel_worker(void *userdata) {
        ParallelJob *j = userdata;
        for (;;) {
                if (atomic_load(&j->error) < 0)
                        return NULL;
                size_t i = atomic_fetch_add(&j->next, 1);
                if (i >= j->n)
                        return NULL;
                int r = j->fn(j->userdata, i);
                if (r < 0) {
                        int expected = 0;
                        atomic_compare_exchange_strong(&j->error, &expected, r);
                        return NULL;
                }
        }
}

int qd_parallel_for(size_t n, unsigned n_threads, int (*fn)(void *userdata, size_t i),
                    void *userdata) {
        ParallelJob job = { .n = n, .fn = fn, .userdata = userdata };
        atomic_init(&job.next, 0);
        atomic_init(&job.error, 0);
        pthread_t tids[64];
        unsigned want = (unsigned) MIN((size_t) MAX(n_threads, 1u), MAX(n, (size_t) 1));
        want = MIN(want, (unsigned) ELEMENTSOF(tids) + 1);
        unsigned started = 0;
        for (unsigned t = 1; t < want; t++) {
                if (pthread_create(&tids[started], NULL, parallel_worker, &job) != 0)
                        break; /* fewer threads is still correct */
                started++;
        }
        parallel_worker(&job);
        for (unsigned t = 0; t < started; t++)
                pthread_join(tids[t], NULL);
        return atomic_load(&job.error);
}
