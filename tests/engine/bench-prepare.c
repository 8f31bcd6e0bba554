/* quantd-prepare-bench: the gaps between tokens while a precision variant is prepared on a second
 * thread (llama_vk_prepare, what the daemon does for a switch to a variant that is not resident),
 * against normal steps, and the switch afterwards, on a random Llama-3-8B-shaped model built in
 * memory (bench-model.h). Not a test: run by hand.
 *   quantd-prepare-bench [--small] [--layers N] [--from fp16|int8|int4] [--to fp16|int8|int4]
 *                        [--device SEL] */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench-model.h"
#include "macro.h"
#include "model-llama.h"


#define MAX_GAPS 100000

typedef struct Prep {
        LlamaVk *v;
        QdPrecision p;
        int result;
        double t_end;
        atomic_bool done;
} Prep;

static void *prep_main(void *userdata) {
        Prep *pr = userdata;
        pr->result = llama_vk_prepare(pr->v, pr->p);
        pr->t_end = bench_now();
        atomic_store(&pr->done, true);
        return NULL;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static void stats(const char *what, double *g, size_t n) {
        if (n == 0) {
                printf("%-36s no steps\n", what);
                return;
        }
        qsort(g, n, sizeof(double), cmp_double);
        printf("%-36s %6zu steps, ms median %.2f, p99 %.2f, max %.2f\n", what, n, g[n / 2] * 1e3,
               g[MIN(n - 1, n * 99 / 100)] * 1e3, g[n - 1] * 1e3);
}

int main(int argc, char **argv) {
        uint32_t L = 32, E = 4096, F = 14336, H = 32, HKV = 8, V = 128256;
        QdPrecision from = QD_PRECISION_F16, to = QD_PRECISION_INT4;
        const char *dev = NULL;
        static const struct option opts[] = {
                { "small", no_argument, NULL, 's' },       { "layers", required_argument, NULL, 'l' },
                { "from", required_argument, NULL, 'f' },  { "to", required_argument, NULL, 't' },
                { "device", required_argument, NULL, 'd' }, {},
        };
        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        _cleanup_(llama_vk_freep) LlamaVk *v = NULL;
        _cleanup_(llama_vk_seq_freep) LlamaVkSeq *s = NULL;
        _cleanup_free_ double *base = NULL, *during = NULL;
        BenchModel bm = {};
        size_t nb = 0, nd = 0;
        int32_t tok = 1, c, r;
        Prep pr = {};
        pthread_t t;

        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0)
                switch (c) {
                case 's':
                        L = 2, E = 256, F = 512, H = 8, HKV = 2, V = 1000;
                        break;
                case 'l':
                        L = atoi(optarg);
                        break;
                case 'f':
                        from = qd_precision_from_string(optarg);
                        break;
                case 't':
                        to = qd_precision_from_string(optarg);
                        break;
                case 'd':
                        dev = optarg;
                        break;
                default:
                        return 2;
                }
        if (from < 0 || to < 0 || from == to)
                return fprintf(stderr, "bad --from/--to\n"), 2;
        base = calloc(MAX_GAPS, sizeof(double));
        during = calloc(MAX_GAPS, sizeof(double));
        if (!base || !during)
                return 1;
        if ((r = bench_model_init(&bm, L, E, F, H, HKV, V)) < 0)
                return fprintf(stderr, "model: %s\n", strerror(-r)), 1;
        if ((r = qvk_device_new(dev, NULL, &d)) < 0)
                return fprintf(stderr, "device: %s\n", strerror(-r)), 1;
        printf("device %s; model L=%u E=%u F=%u H=%u/%u V=%u\n", qvk_device_features(d)->name, L, E, F, H, HKV, V);
        double t0 = bench_now();
        if ((r = llama_vk_new(d, &bm.w, &v)) < 0 || (r = llama_vk_set_precision(v, from)) < 0)
                return fprintf(stderr, "upload: %s\n", strerror(-r)), 1;
        printf("%s resident in %.1f s\n", qd_precision_to_string(from), bench_now() - t0);
        if ((r = llama_vk_seq_new(v, 4096, &s)) < 0 || (r = llama_vk_seq_eval(s, &tok, 1, false, NULL, &tok, NULL)) < 0)
                return fprintf(stderr, "seq: %s\n", strerror(-r)), 1;

        /* Normal steps, then steps while the other variant is prepared; the sequence restarts
         * when its context fills. */
        for (int i = 0; i < 200; i++) {
                double a = bench_now();
                if ((r = llama_vk_seq_eval(s, &tok, 1, false, NULL, &tok, NULL)) < 0)
                        return fprintf(stderr, "step: %s\n", strerror(-r)), 1;
                if (i >= 20)
                        base[nb++] = bench_now() - a;
        }
        pr = (Prep) { .v = v, .p = to };
        double tp = bench_now(), last = tp;
        if (pthread_create(&t, NULL, prep_main, &pr) != 0)
                return 1;
        while (!atomic_load(&pr.done) && nd < MAX_GAPS) {
                if (llama_vk_seq_length(s) >= 4000) {
                        s = llama_vk_seq_free(s);
                        if ((r = llama_vk_seq_new(v, 4096, &s)) < 0)
                                return fprintf(stderr, "seq: %s\n", strerror(-r)), 1;
                }
                if ((r = llama_vk_seq_eval(s, &tok, 1, false, NULL, &tok, NULL)) < 0)
                        return fprintf(stderr, "step during prepare: %s\n", strerror(-r)), 1;
                double now = bench_now();
                during[nd++] = now - last;
                last = now;
        }
        pthread_join(t, NULL);
        if (pr.result < 0)
                return fprintf(stderr, "prepare: %s\n", strerror(-pr.result)), 1;
        printf("prepared %s on a second thread in %.2f s, %zu steps meanwhile\n", qd_precision_to_string(to),
               pr.t_end - tp, nd);
        stats("normal steps", base, nb);
        stats("gaps between tokens while preparing", during, nd);
        double a = bench_now();
        r = llama_vk_set_precision(v, to);
        double b = bench_now();
        if (r >= 0)
                r = llama_vk_seq_eval(s, &tok, 1, false, NULL, &tok, NULL);
        if (r < 0)
                return fprintf(stderr, "switch: %s\n", strerror(-r)), 1;
        printf("switch after prepare: set_precision %.3f ms, gap to the next token %.2f ms\n", (b - a) * 1e3,
               (bench_now() - a) * 1e3);
        s = llama_vk_seq_free(s);
        v = llama_vk_free(v);
        bench_model_done(&bm);
        return 0;
}
