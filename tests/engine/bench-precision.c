/* quantd-precision-bench: decode speed, GPU power and energy per token at FP16, INT8 and INT4, and
 * the pause at each kind of precision switch, on a random Llama-3-8B-shaped model built in memory
 * (bench-model.h). Power is read, never set: nvidia-smi is run as a child with
 * `--query-gpu=... -lms 50` and integrated over the decode window (trapezoid, timestamps taken when
 * a line arrives); without nvidia-smi the power columns say n/a. Not a test: run by hand.
 *   quantd-precision-bench [--small] [--layers N] [--embd N] [--ff N] [--heads N] [--kv-heads N]
 *                          [--vocab N] [--prompt N] [--tokens N] [--reps N] [--device SEL]
 *                          [--no-power] [--json FILE] */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-model.h"
#include "macro.h"
#include "model-llama.h"


static void bench_model_donep(BenchModel *m) {
        bench_model_done(m);
}

/* ---- power sampling through nvidia-smi ---- */

typedef struct PowerSample {
        double t, avg_w, inst_w, sm_mhz; /* NAN where not reported */
} PowerSample;

typedef struct Power {
        pid_t pid;
        int fd;
        bool thread_started, has_instant;
        pthread_t thread;
        pthread_mutex_t lock;
        PowerSample *s;
        size_t n, alloc;
} Power;

static double field(char **p) {
        char *end;
        while (**p == ' ' || **p == ',')
                (*p)++;
        double v = strtod(*p, &end);
        if (end == *p)
                v = NAN;
        while (*end && *end != ',')
                end++;
        *p = end;
        return v;
}

static void *power_reader(void *userdata) {
        Power *pw = userdata;
        FILE *f = fdopen(pw->fd, "r");
        char *line = NULL;
        size_t sz = 0;

        if (!f)
                return NULL;
        pw->fd = -1;
        while (getline(&line, &sz, f) > 0) {
                PowerSample ps = { .t = bench_now() };
                char *p = line;
                ps.avg_w = field(&p);
                ps.inst_w = pw->has_instant ? field(&p) : NAN;
                ps.sm_mhz = field(&p);
                if (isnan(ps.avg_w) && isnan(ps.inst_w))
                        continue;
                pthread_mutex_lock(&pw->lock);
                if (pw->n == pw->alloc) {
                        size_t na = pw->alloc ? pw->alloc * 2 : 1024;
                        PowerSample *ns = realloc(pw->s, na * sizeof(PowerSample));
                        if (ns) {
                                pw->s = ns;
                                pw->alloc = na;
                        }
                }
                if (pw->n < pw->alloc)
                        pw->s[pw->n++] = ps;
                pthread_mutex_unlock(&pw->lock);
        }
        free(line);
        fclose(f);
        return NULL;
}

static void power_stop(Power *pw) {
        if (pw->pid > 0) {
                (void) kill(pw->pid, SIGTERM);
                (void) waitpid(pw->pid, NULL, 0);
                pw->pid = 0;
        }
        if (pw->thread_started) {
                pthread_join(pw->thread, NULL);
                pw->thread_started = false;
        }
        if (pw->fd >= 0)
                close(pw->fd);
        pw->fd = -1;
}

static size_t power_count(Power *pw) {
        pthread_mutex_lock(&pw->lock);
        size_t n = pw->n;
        pthread_mutex_unlock(&pw->lock);
        return n;
}

static int power_start_query(Power *pw, const char *fields, bool instant) {
        char q[128];
        int p[2];

        snprintf(q, sizeof(q), "--query-gpu=%s", fields);
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0) {
                close(p[0]);
                close(p[1]);
                return -errno;
        }
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY);
                if (dup2(p[1], STDOUT_FILENO) < 0 || (null >= 0 && dup2(null, STDERR_FILENO) < 0))
                        _exit(127);
                execlp("nvidia-smi", "nvidia-smi", q, "--format=csv,noheader,nounits", "-lms", "50",
                       (char *) NULL);
                _exit(127);
        }
        close(p[1]);
        pw->pid = pid;
        pw->fd = p[0];
        pw->has_instant = instant;
        if (pthread_create(&pw->thread, NULL, power_reader, pw) != 0) {
                power_stop(pw);
                return -EAGAIN;
        }
        pw->thread_started = true;
        /* The first sample should come within a second or two; none means no nvidia-smi, no GPU, or
         * a field this driver does not know. */
        for (int i = 0; i < 60 && power_count(pw) == 0; i++)
                usleep(50000);
        if (power_count(pw) == 0) {
                power_stop(pw);
                return -ENODEV;
        }
        return 0;
}

static int power_start(Power *pw) {
        /* power.draw is a one-second average on recent drivers; power.draw.instant (drivers ≥ 530)
         * follows a short window better, so it is integrated when present. */
        if (power_start_query(pw, "power.draw,power.draw.instant,clocks.sm", true) >= 0)
                return 0;
        return power_start_query(pw, "power.draw,clocks.sm", false);
}

typedef struct PowerWindow {
        bool ok;
        size_t n;
        double watts, watts_avg_field, sm_mhz;
} PowerWindow;

/* Mean power over [a, b]: the trapezoid integral over the samples inside, divided by their span. */
static PowerWindow power_window(Power *pw, double a, double b) {
        PowerWindow w = {};
        double e = 0, e_avg = 0, span = 0, mhz = 0;
        size_t nm = 0, first = SIZE_MAX, last = 0;

        pthread_mutex_lock(&pw->lock);
        for (size_t i = 0; i < pw->n; i++) {
                const PowerSample *s = &pw->s[i];
                if (s->t < a || s->t > b)
                        continue;
                if (first == SIZE_MAX)
                        first = i;
                else {
                        const PowerSample *q = &pw->s[last];
                        double dt = s->t - q->t;
                        double x0 = pw->has_instant && !isnan(q->inst_w) ? q->inst_w : q->avg_w;
                        double x1 = pw->has_instant && !isnan(s->inst_w) ? s->inst_w : s->avg_w;
                        e += 0.5 * (x0 + x1) * dt;
                        e_avg += 0.5 * (q->avg_w + s->avg_w) * dt;
                        span += dt;
                }
                last = i;
                w.n++;
                if (!isnan(s->sm_mhz)) {
                        mhz += s->sm_mhz;
                        nm++;
                }
        }
        pthread_mutex_unlock(&pw->lock);
        if (w.n >= 2 && span > 0 && !isnan(e)) {
                w.ok = true;
                w.watts = e / span;
                w.watts_avg_field = e_avg / span;
                w.sm_mhz = nm ? mhz / nm : NAN;
        }
        return w;
}

/* ---- statistics ---- */

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static double median(double *v, size_t n) {
        qsort(v, n, sizeof(double), cmp_double);
        return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double maxd(const double *v, size_t n) {
        double m = -INFINITY;
        for (size_t i = 0; i < n; i++)
                m = MAX(m, v[i]);
        return m;
}

/* ---- the benchmark ---- */

#define MAX_REPS 64

typedef struct SpeedResult {
        double prep_s, tok_s, watts, watts_avg_field, j_per_tok, sm_mhz;
        size_t power_samples;
        bool power_ok;
        uint64_t bytes;
} SpeedResult;

typedef struct Switch {
        QdPrecision from, to;
        double gap_ms, gap_max_ms, set_ms, normal_ms, pause_ms; /* medians over the repeats */
} Switch;

typedef struct ColdSwitch {
        QdPrecision from, to;
        double set_s, gap_s;
} ColdSwitch;

static int step(LlamaVkSeq *s, int32_t *tok) {
        return llama_vk_seq_eval(s, tok, 1, false, NULL, tok, NULL);
}

static const char *pname(QdPrecision p) {
        return qd_precision_to_string(p);
}

int main(int argc, char **argv) {
        uint32_t L = 32, E = 4096, F = 14336, H = 32, HKV = 8, V = 128256, prompt = 64, ntok = 1024, reps = 5;
        const char *dev = NULL, *json = NULL;
        bool use_power = true;
        static const struct option opts[] = {
                { "layers", required_argument, NULL, 'l' }, { "embd", required_argument, NULL, 'e' },
                { "ff", required_argument, NULL, 'f' },     { "heads", required_argument, NULL, 'h' },
                { "kv-heads", required_argument, NULL, 'k' }, { "vocab", required_argument, NULL, 'v' },
                { "prompt", required_argument, NULL, 'p' }, { "tokens", required_argument, NULL, 't' },
                { "reps", required_argument, NULL, 'r' },   { "device", required_argument, NULL, 'd' },
                { "json", required_argument, NULL, 'j' },   { "small", no_argument, NULL, 's' },
                { "no-power", no_argument, NULL, 'n' },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                uint32_t x = optarg ? (uint32_t) strtoul(optarg, NULL, 10) : 0;
                switch (c) {
                case 'l': L = x; break;
                case 'e': E = x; break;
                case 'f': F = x; break;
                case 'h': H = x; break;
                case 'k': HKV = x; break;
                case 'v': V = x; break;
                case 'p': prompt = x; break;
                case 't': ntok = x; break;
                case 'r': reps = x; break;
                case 'd': dev = optarg; break;
                case 'j': json = optarg; break;
                case 'n': use_power = false; break;
                case 's': L = 4; E = 256; F = 1024; H = 4; HKV = 2; V = 4096; ntok = 64; break;
                default: return 2;
                }
        }
        if (prompt < 2 || !ntok || reps < 1 || reps > MAX_REPS)
                return 2;

        _cleanup_(bench_model_donep) BenchModel bm = {};
        r = bench_model_init(&bm, L, E, F, H, HKV, V);
        if (r == -EINVAL)
                return fprintf(stderr, "inconsistent model shape\n"), 2;
        if (r < 0)
                return fprintf(stderr, "out of memory\n"), 1;

        Power pw = { .fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER };
        bool power_ok = use_power && power_start(&pw) >= 0;

        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        _cleanup_(llama_vk_freep) LlamaVk *v = NULL;
        r = qvk_device_new(dev, NULL, &d);
        if (r < 0) {
                power_stop(&pw);
                return fprintf(stderr, "no Vulkan device: %s\n", strerror(-r)), 77;
        }
        const QvkFeatures *feat = qvk_device_features(d);
        printf("device: %s (%s)\n", feat->name, feat->driver);
        printf("model: layers %u, embd %u, ff %u, heads %u/%u, vocab %u; prompt %u, decode %u tokens greedy, "
               "%u repeats per switch\n", L, E, F, H, HKV, V, prompt, ntok, reps);
        printf("power: %s\n", power_ok ? (pw.has_instant ? "nvidia-smi power.draw.instant, every 50 ms"
                                                          : "nvidia-smi power.draw, every 50 ms") : "n/a");
        double t0 = bench_now();
        r = llama_vk_new(d, &bm.w, &v);
        if (r < 0)
                return fprintf(stderr, "llama_vk_new: %s\n", strerror(-r)), 1;
        printf("common upload %.1f s\n", bench_now() - t0);

        _cleanup_free_ int32_t *tokens = calloc(prompt, sizeof(int32_t));
        if (!tokens)
                return 1;
        for (uint32_t i = 0; i < prompt; i++)
                tokens[i] = (i * 7919u) % V;

        /* Idle power with the model resident, for reference. */
        PowerWindow idle = {};
        if (power_ok) {
                double a = bench_now();
                usleep(1500000);
                idle = power_window(&pw, a + 0.5, bench_now());
                if (idle.ok)
                        printf("idle: %.1f W, SM %.0f MHz\n", idle.watts, idle.sm_mhz);
        }

        /* 1. Speed and energy: each variant made resident (kept), then a fixed generation. */
        SpeedResult sp[_QD_PRECISION_MAX] = {};
        const uint32_t warm = 32;
        for (QdPrecision p = QD_PRECISION_F16; p < _QD_PRECISION_MAX; p++) {
                _cleanup_(llama_vk_seq_freep) LlamaVkSeq *s = NULL;
                int32_t tok;
                t0 = bench_now();
                r = llama_vk_set_precision(v, p);
                if (r < 0)
                        return fprintf(stderr, "set_precision %s: %s\n", pname(p), strerror(-r)), 1;
                sp[p].prep_s = bench_now() - t0;
                sp[p].bytes = llama_vk_variant_bytes(v, p);
                if ((r = llama_vk_seq_new(v, prompt + warm + ntok + 16, &s)) < 0 ||
                    (r = llama_vk_seq_eval(s, tokens, prompt, false, NULL, &tok, NULL)) < 0)
                        return fprintf(stderr, "prefill %s: %s\n", pname(p), strerror(-r)), 1;
                for (uint32_t i = 0; r >= 0 && i < warm; i++)
                        r = step(s, &tok);
                double a = bench_now();
                for (uint32_t i = 0; r >= 0 && i < ntok; i++)
                        r = step(s, &tok);
                double b = bench_now();
                if (r < 0)
                        return fprintf(stderr, "decode %s: %s\n", pname(p), strerror(-r)), 1;
                sp[p].tok_s = ntok / (b - a);
                if (power_ok) {
                        PowerWindow w = power_window(&pw, a, b);
                        sp[p].power_ok = w.ok;
                        sp[p].power_samples = w.n;
                        sp[p].watts = w.watts;
                        sp[p].watts_avg_field = w.watts_avg_field;
                        sp[p].sm_mhz = w.sm_mhz;
                        sp[p].j_per_tok = w.watts * (b - a) / ntok;
                }
                printf("%s: weights %.2f GiB, prepared in %.2f s; decode %.1f tok/s", pname(p),
                       sp[p].bytes / 1073741824.0, sp[p].prep_s, sp[p].tok_s);
                if (sp[p].power_ok)
                        printf(", %.1f W (power.draw %.1f W), %.3f J/token, SM %.0f MHz, %zu samples\n",
                               sp[p].watts, sp[p].watts_avg_field, sp[p].j_per_tok, sp[p].sm_mhz,
                               sp[p].power_samples);
                else
                        printf(", power: n/a\n");
                fflush(stdout);
        }
        if (power_ok)
                power_stop(&pw);

        /* 2. Switch pause with all three variants resident: the gap between two tokens across
         * set_precision (which makes the next step re-record its commands), against a normal step at
         * the target precision. */
        static const QdPrecision kinds[][2] = {
                { QD_PRECISION_F16, QD_PRECISION_INT8 }, { QD_PRECISION_INT8, QD_PRECISION_INT4 },
                { QD_PRECISION_INT4, QD_PRECISION_F16 }, { QD_PRECISION_INT8, QD_PRECISION_F16 },
                { QD_PRECISION_F16, QD_PRECISION_INT4 },
        };
        Switch sw[ELEMENTSOF(kinds)] = {};
        printf("resident: %.2f GiB on the device\n", llama_vk_device_bytes(v) / 1073741824.0);
        {
                _cleanup_(llama_vk_seq_freep) LlamaVkSeq *s = NULL;
                const uint32_t pre = 3, post = 3;
                int32_t tok;
                uint32_t need = prompt + reps * ELEMENTSOF(kinds) * (pre + 1 + post) + 16;
                if ((r = llama_vk_seq_new(v, need, &s)) < 0 ||
                    (r = llama_vk_seq_eval(s, tokens, prompt, false, NULL, &tok, NULL)) < 0)
                        return fprintf(stderr, "switch seq: %s\n", strerror(-r)), 1;
                for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
                        double gap[MAX_REPS], set[MAX_REPS], normal[MAX_REPS * 3];
                        size_t nn = 0;
                        sw[k].from = kinds[k][0];
                        sw[k].to = kinds[k][1];
                        for (uint32_t rep = 0; rep < reps; rep++) {
                                if ((r = llama_vk_set_precision(v, sw[k].from)) < 0)
                                        return fprintf(stderr, "set_precision: %s\n", strerror(-r)), 1;
                                for (uint32_t i = 0; r >= 0 && i < pre; i++)
                                        r = step(s, &tok);
                                double a = bench_now();
                                if (r >= 0)
                                        r = llama_vk_set_precision(v, sw[k].to);
                                double m = bench_now();
                                if (r >= 0)
                                        r = step(s, &tok);
                                double b = bench_now();
                                gap[rep] = (b - a) * 1e3;
                                set[rep] = (m - a) * 1e3;
                                for (uint32_t i = 0; r >= 0 && i < post; i++) {
                                        double x = bench_now();
                                        r = step(s, &tok);
                                        normal[nn++] = (bench_now() - x) * 1e3;
                                }
                                if (r < 0)
                                        return fprintf(stderr, "switch step: %s\n", strerror(-r)), 1;
                        }
                        sw[k].gap_max_ms = maxd(gap, reps);
                        sw[k].gap_ms = median(gap, reps);
                        sw[k].set_ms = median(set, reps);
                        sw[k].normal_ms = median(normal, nn);
                        sw[k].pause_ms = sw[k].gap_ms - sw[k].normal_ms;
                }
        }

        /* 3. Switch to a variant that is not resident: the others dropped, the target prepared from
         * the source weights (quantized, or converted for F16) inside set_precision. */
        static const QdPrecision cold_kinds[][2] = {
                { QD_PRECISION_F16, QD_PRECISION_INT8 }, { QD_PRECISION_INT8, QD_PRECISION_INT4 },
                { QD_PRECISION_INT4, QD_PRECISION_F16 },
        };
        ColdSwitch cs[ELEMENTSOF(cold_kinds)] = {};
        {
                _cleanup_(llama_vk_seq_freep) LlamaVkSeq *s = NULL;
                int32_t tok;
                if ((r = llama_vk_seq_new(v, prompt + 8 * ELEMENTSOF(cold_kinds) + 16, &s)) < 0 ||
                    (r = llama_vk_seq_eval(s, tokens, prompt, false, NULL, &tok, NULL)) < 0)
                        return fprintf(stderr, "cold seq: %s\n", strerror(-r)), 1;
                for (size_t k = 0; k < ELEMENTSOF(cold_kinds); k++) {
                        cs[k].from = cold_kinds[k][0];
                        cs[k].to = cold_kinds[k][1];
                        if ((r = llama_vk_set_precision(v, cs[k].from)) < 0 ||
                            (r = llama_vk_drop_variants(v, true)) < 0 ||
                            (r = step(s, &tok)) < 0 || (r = step(s, &tok)) < 0)
                                return fprintf(stderr, "cold prepare: %s\n", strerror(-r)), 1;
                        double a = bench_now();
                        r = llama_vk_set_precision(v, cs[k].to);
                        double m = bench_now();
                        if (r >= 0)
                                r = step(s, &tok);
                        double b = bench_now();
                        if (r < 0)
                                return fprintf(stderr, "cold switch: %s\n", strerror(-r)), 1;
                        cs[k].set_s = m - a;
                        cs[k].gap_s = b - a;
                }
        }

        printf("\n| weights | GiB | decode tok/s | GPU W | J/token | SM MHz |\n| --- | --- | --- | --- | --- | --- |\n");
        for (QdPrecision p = QD_PRECISION_F16; p < _QD_PRECISION_MAX; p++) {
                if (sp[p].power_ok)
                        printf("| %s | %.2f | %.1f | %.1f | %.3f | %.0f |\n", pname(p), sp[p].bytes / 1073741824.0,
                               sp[p].tok_s, sp[p].watts, sp[p].j_per_tok, sp[p].sm_mhz);
                else
                        printf("| %s | %.2f | %.1f | n/a | n/a | n/a |\n", pname(p), sp[p].bytes / 1073741824.0,
                               sp[p].tok_s);
        }
        printf("\n| switch (resident) | gap between tokens ms (median / max) | set_precision ms | normal step ms | pause ms |\n"
               "| --- | --- | --- | --- | --- |\n");
        for (size_t k = 0; k < ELEMENTSOF(sw); k++)
                printf("| %s → %s | %.2f / %.2f | %.3f | %.2f | %.2f |\n", pname(sw[k].from), pname(sw[k].to),
                       sw[k].gap_ms, sw[k].gap_max_ms, sw[k].set_ms, sw[k].normal_ms, sw[k].pause_ms);
        printf("\n| switch (not resident) | set_precision s | gap between tokens s |\n| --- | --- | --- |\n");
        for (size_t k = 0; k < ELEMENTSOF(cs); k++)
                printf("| %s → %s | %.3f | %.3f |\n", pname(cs[k].from), pname(cs[k].to), cs[k].set_s, cs[k].gap_s);

        if (json) {
                _cleanup_fclose_ FILE *f = fopen(json, "we");
                if (!f)
                        return fprintf(stderr, "%s: %m\n", json), 1;
                fprintf(f, "{\"device\":\"%s\",\"driver\":\"%s\",\"model\":{\"layers\":%u,\"embd\":%u,\"ff\":%u,"
                        "\"heads\":%u,\"kv_heads\":%u,\"vocab\":%u},\"prompt\":%u,\"tokens\":%u,\"reps\":%u,",
                        feat->name, feat->driver, L, E, F, H, HKV, V, prompt, ntok, reps);
                fprintf(f, "\"power_source\":\"%s\",", !power_ok ? "n/a" : pw.has_instant ? "power.draw.instant" : "power.draw");
                if (idle.ok)
                        fprintf(f, "\"idle_w\":%.2f,", idle.watts);
                fprintf(f, "\"speed\":[");
                for (QdPrecision p = QD_PRECISION_F16; p < _QD_PRECISION_MAX; p++) {
                        fprintf(f, "%s{\"precision\":\"%s\",\"bytes\":%" PRIu64 ",\"prepare_s\":%.4f,\"tok_s\":%.2f",
                                p ? "," : "", pname(p), sp[p].bytes, sp[p].prep_s, sp[p].tok_s);
                        if (sp[p].power_ok)
                                fprintf(f, ",\"watts\":%.2f,\"watts_power_draw\":%.2f,\"j_per_token\":%.4f,"
                                        "\"sm_mhz\":%.0f,\"samples\":%zu", sp[p].watts, sp[p].watts_avg_field,
                                        sp[p].j_per_tok, sp[p].sm_mhz, sp[p].power_samples);
                        fprintf(f, "}");
                }
                fprintf(f, "],\"switch_resident\":[");
                for (size_t k = 0; k < ELEMENTSOF(sw); k++)
                        fprintf(f, "%s{\"from\":\"%s\",\"to\":\"%s\",\"gap_ms\":%.3f,\"gap_max_ms\":%.3f,"
                                "\"set_ms\":%.4f,\"normal_step_ms\":%.3f,\"pause_ms\":%.3f}", k ? "," : "",
                                pname(sw[k].from), pname(sw[k].to), sw[k].gap_ms, sw[k].gap_max_ms, sw[k].set_ms,
                                sw[k].normal_ms, sw[k].pause_ms);
                fprintf(f, "],\"switch_not_resident\":[");
                for (size_t k = 0; k < ELEMENTSOF(cs); k++)
                        fprintf(f, "%s{\"from\":\"%s\",\"to\":\"%s\",\"set_s\":%.4f,\"gap_s\":%.4f}", k ? "," : "",
                                pname(cs[k].from), pname(cs[k].to), cs[k].set_s, cs[k].gap_s);
                fprintf(f, "]}\n");
                if (fflush(f) != 0)
                        return fprintf(stderr, "%s: %m\n", json), 1;
        }
        pthread_mutex_destroy(&pw.lock);
        free(pw.s);
        return 0;
}
