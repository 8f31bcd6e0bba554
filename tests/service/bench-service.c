/* quantd-bench-service: N clients stream one generation of K tokens each from the real daemon,
 * over D-Bus (Generate, Token/Finished signals; --address or the session bus) or over the Unix
 * socket (--socket: POST /api/generate, server-sent events). Prints the aggregate tokens/s, each
 * client's received rate against the engine's own decode rate (Finished stats), and, with --pid,
 * the daemon's loop-thread CPU time per streamed token (/proc/PID/task/PID/stat): the IPC cost.
 * Not a test: a benchmark (docs/PERFORMANCE.md).
 *   quantd-bench-service [--address A | --socket PATH] [--pid PID] [--prompt P] [--json]
 *                        MODEL CLIENTS TOKENS */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "bus-util.h"
#include "macro.h"

static const char *arg_address, *arg_socket, *arg_model, *arg_prompt = "Once upon a time";
static int arg_tokens, arg_pid;
static bool arg_json;

typedef struct Client {
        pthread_t thread;
        double t_start, t_first, t_end;
        int tokens;
        char reason[32];
        unsigned completion_tokens;
        double generate_ms, prompt_ms;
        int error;
        const char *path;
} Client;

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void token_seen(Client *c) {
        if (c->tokens++ == 0)
                c->t_first = now();
}

/* ---- D-Bus ---- */

static int on_message(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Client *c = userdata;
        const char *path = sd_bus_message_get_path(m);

        if (!c->path || !path || !streq(path, c->path))
                return 0;
        if (sd_bus_message_is_signal(m, "org.quantd.Quantd1.Request", "Token"))
                token_seen(c);
        else if (sd_bus_message_is_signal(m, "org.quantd.Quantd1.Request", "Finished")) {
                const char *reason = "", *key;
                c->t_end = now();
                if (sd_bus_message_read(m, "s", &reason) >= 0)
                        snprintf(c->reason, sizeof(c->reason), "%s", reason);
                if (sd_bus_message_enter_container(m, 'a', "{sv}") < 0)
                        return 0;
                while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                        if (sd_bus_message_read(m, "s", &key) < 0)
                                break;
                        if (streq(key, "completion_tokens"))
                                (void) sd_bus_message_read(m, "v", "u", &c->completion_tokens);
                        else if (streq(key, "generate_ms"))
                                (void) sd_bus_message_read(m, "v", "d", &c->generate_ms);
                        else if (streq(key, "prompt_ms"))
                                (void) sd_bus_message_read(m, "v", "d", &c->prompt_ms);
                        else
                                (void) sd_bus_message_skip(m, "v");
                        (void) sd_bus_message_exit_container(m);
                }
        }
        return 0;
}

static int run_dbus(Client *c) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        if (arg_address)
                r = bus_open_address(arg_address, &bus);
        else
                r = sd_bus_open_user(&bus);
        if (r >= 0)
                r = sd_bus_add_filter(bus, &slot, on_message, c);
        c->t_start = now();
        if (r >= 0)
                r = sd_bus_call_method(bus, "org.quantd.Quantd1", "/org/quantd/Quantd1", "org.quantd.Quantd1.Manager",
                                       "Generate", &error, &reply, "ssa{sv}", arg_model, arg_prompt, 1, "max_tokens",
                                       "i", (int32_t) arg_tokens);
        if (r >= 0)
                r = sd_bus_message_read(reply, "o", &c->path);
        while (r >= 0 && c->t_end == 0) {
                r = sd_bus_process(bus, NULL);
                if (r == 0)
                        r = sd_bus_wait(bus, UINT64_MAX);
        }
        if (r < 0)
                fprintf(stderr, "client: %s\n", error.message ?: strerror(-r));
        c->path = NULL;
        return r;
}

/* ---- the socket: POST /api/generate, SSE in chunks; lines are scanned as they arrive ---- */

static void sse_line(Client *c, const char *line) {
        json_t *j, *st;

        if (strncmp(line, "data: {\"text\"", 13) == 0) {
                token_seen(c);
                return;
        }
        if (strncmp(line, "data: {", 7) != 0 || !strstr(line, "\"finish_reason\""))
                return;
        c->t_end = now();
        j = json_loads(line + 6, 0, NULL);
        st = json_object_get(j, "stats");
        snprintf(c->reason, sizeof(c->reason), "%s", json_string_value(json_object_get(j, "finish_reason")) ?: "");
        c->completion_tokens = (unsigned) json_integer_value(json_object_get(st, "completion_tokens"));
        c->generate_ms = json_number_value(json_object_get(st, "generate_ms"));
        c->prompt_ms = json_number_value(json_object_get(st, "prompt_ms"));
        json_decref(j);
}

static int run_socket(Client *c) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_free_ char *body = NULL, *req = NULL;
        char buf[65536];
        size_t have = 0;
        int fd, n;
        json_t *b;

        b = json_pack("{s:s, s:s, s:i, s:b}", "model", arg_model, "prompt", arg_prompt, "max_tokens", arg_tokens,
                      "stream", true);
        body = b ? json_dumps(b, JSON_COMPACT) : NULL;
        json_decref(b);
        if (!body)
                return -ENOMEM;
        n = asprintf(&req,
                     "POST /api/generate HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
        if (n < 0)
                return -ENOMEM;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", arg_socket);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        c->t_start = now();
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || write(fd, req, (size_t) n) != n) {
                int r = -errno;
                close(fd);
                return r;
        }
        while (c->t_end == 0) {
                ssize_t k = read(fd, buf + have, sizeof(buf) - have - 1);
                char *p = buf, *nl;

                if (k <= 0)
                        break;
                have += (size_t) k;
                buf[have] = 0;
                while ((nl = memchr(p, '\n', have - (size_t) (p - buf)))) {
                        *nl = 0;
                        sse_line(c, p);
                        p = nl + 1;
                }
                have -= (size_t) (p - buf);
                memmove(buf, p, have);
                if (have == sizeof(buf) - 1)
                        have = 0;       /* a line longer than the buffer: not an event we count */
        }
        close(fd);
        return c->t_end > 0 ? 0 : -ECONNRESET;
}

static void *client_main(void *userdata) {
        Client *c = userdata;
        c->error = arg_socket ? run_socket(c) : run_dbus(c);
        return NULL;
}

/* The loop thread's CPU seconds (its tid is the daemon's pid): schedstat's run time in ns, else
 * utime + stime in clock ticks. */
static double loop_cpu(void) {
        char path[64], buf[1024], *p;
        unsigned long long ns;
        unsigned long ut = 0, st = 0;
        FILE *f;

        if (arg_pid <= 0)
                return 0;
        snprintf(path, sizeof(path), "/proc/%d/task/%d/schedstat", arg_pid, arg_pid);
        f = fopen(path, "re");
        if (f) {
                int k = fscanf(f, "%llu", &ns);
                fclose(f);
                if (k == 1)
                        return ns * 1e-9;
        }
        snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", arg_pid, arg_pid);
        f = fopen(path, "re");
        if (!f)
                return 0;
        p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
        fclose(f);
        /* After ") ": state, then fields 4..; utime and stime are fields 14 and 15. */
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
                return 0;
        return (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
}

int main(int argc, char *argv[]) {
        int a = 1, n;
        Client *cs;
        double t0, t1, cpu0, cpu1, rx = 0, rx_min = 1e30, eng = 0, ipt_rx = 0, ipt_eng = 0, first = 0;
        long total = 0;
        int ok = 0;

        for (; a < argc && strncmp(argv[a], "--", 2) == 0; a++) {
                if (streq(argv[a], "--json"))
                        arg_json = true;
                else if (a + 1 < argc && streq(argv[a], "--address"))
                        arg_address = argv[++a];
                else if (a + 1 < argc && streq(argv[a], "--socket"))
                        arg_socket = argv[++a];
                else if (a + 1 < argc && streq(argv[a], "--pid"))
                        arg_pid = atoi(argv[++a]);
                else if (a + 1 < argc && streq(argv[a], "--prompt"))
                        arg_prompt = argv[++a];
                else
                        break;
        }
        if (argc - a != 3 || (n = atoi(argv[a + 1])) <= 0 || (arg_tokens = atoi(argv[a + 2])) <= 0) {
                fprintf(stderr, "usage: quantd-bench-service [--address A | --socket PATH] [--pid PID] [--prompt P] "
                                "[--json] MODEL CLIENTS TOKENS\n");
                return 2;
        }
        arg_model = argv[a];
        cs = calloc((size_t) n, sizeof(Client));
        if (!cs)
                return 1;
        cpu0 = loop_cpu();
        t0 = now();
        for (int i = 0; i < n; i++)
                pthread_create(&cs[i].thread, NULL, client_main, &cs[i]);
        for (int i = 0; i < n; i++)
                pthread_join(cs[i].thread, NULL);
        t1 = now();
        cpu1 = loop_cpu();
        for (int i = 0; i < n; i++) {
                Client *c = &cs[i];
                if (c->error < 0 || c->tokens < 2)
                        continue;
                ok++;
                total += c->tokens;
                first += c->t_first - c->t_start;
                /* Per client: tokens received per second after the first, and the engine's decode
                 * rate for the same request (generate_ms covers the decode steps). */
                double r = (c->tokens - 1) / (c->t_end - c->t_first);
                rx += r;
                rx_min = r < rx_min ? r : rx_min;
                ipt_rx += (c->t_end - c->t_first) / (c->tokens - 1) * 1e3;
                if (c->completion_tokens > 0 && c->generate_ms > 0) {
                        eng += c->completion_tokens / c->generate_ms * 1e3;
                        ipt_eng += c->generate_ms / c->completion_tokens;
                }
        }
        if (ok == 0) {
                fprintf(stderr, "no client got a stream\n");
                return 1;
        }
        double agg = total / (t1 - t0), cpu_tok = total ? (cpu1 - cpu0) / total * 1e6 : 0;
        if (arg_json)
                printf("{\"transport\": \"%s\", \"clients\": %d, \"ok\": %d, \"tokens\": %ld, \"wall_s\": %.3f, "
                       "\"aggregate_tok_s\": %.1f, \"client_rx_tok_s\": %.2f, \"client_rx_min_tok_s\": %.2f, "
                       "\"client_engine_tok_s\": %.2f, \"ms_per_token_rx\": %.4f, \"ms_per_token_engine\": %.4f, "
                       "\"first_token_ms\": %.2f, \"loop_cpu_us_per_token\": %.2f, \"reason\": \"%s\"}\n",
                       arg_socket ? "socket" : "dbus", n, ok, total, t1 - t0, agg, rx / ok, rx_min, eng / ok,
                       ipt_rx / ok, ipt_eng / ok, first / ok * 1e3, arg_pid > 0 ? cpu_tok : -1, cs[0].reason);
        else
                printf("%-6s clients %2d (ok %d): %ld tokens in %.3f s = %.1f tok/s; per client received %.2f tok/s "
                       "(min %.2f), engine %.2f tok/s; %.4f vs %.4f ms/token; first token %.1f ms; "
                       "loop CPU %.2f us/token\n",
                       arg_socket ? "socket" : "dbus", n, ok, total, t1 - t0, agg, rx / ok, rx_min, eng / ok,
                       ipt_rx / ok, ipt_eng / ok, first / ok * 1e3, arg_pid > 0 ? cpu_tok : -1.0);
        free(cs);
        return ok == n ? 0 : 1;
}
