/* quantd-bench-dbus: N clients, each on its own bus connection and thread, stream a greedy
 * generation of K tokens at once; prints aggregate tokens/s, first-token latency and mean time
 * between tokens. Not a test: a benchmark (numbers in the report, docs/PERFORMANCE.md).
 *   quantd-bench-dbus [--address A] MODEL PROMPT CLIENTS TOKENS */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>

#include "macro.h"

static const char *address, *model, *prompt;
static int n_tokens;

typedef struct Client {
        pthread_t thread;
        double t_start, t_first, t_end;
        int tokens;
        char reason[32];
        int error;
        const char *path;
} Client;

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int on_message(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Client *c = userdata;
        const char *path = sd_bus_message_get_path(m);

        if (!c->path || !path || !streq(path, c->path))
                return 0;
        if (sd_bus_message_is_signal(m, "org.quantd.Quantd1.Request", "Token")) {
                if (c->tokens++ == 0)
                        c->t_first = now();
        } else if (sd_bus_message_is_signal(m, "org.quantd.Quantd1.Request", "Finished")) {
                const char *reason = "";
                (void) sd_bus_message_read(m, "s", &reason);
                snprintf(c->reason, sizeof(c->reason), "%s", reason);
                c->t_end = now();
        }
        return 0;
}

static void *client_main(void *userdata) {
        Client *c = userdata;
        sd_bus *bus = NULL;
        sd_bus_message *reply = NULL;
        sd_bus_slot *slot = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        if (address) {
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, address);
                if (r >= 0)
                        r = sd_bus_set_bus_client(bus, true);
                if (r >= 0)
                        r = sd_bus_start(bus);
        } else
                r = sd_bus_open_user(&bus);
        if (r >= 0)
                r = sd_bus_add_filter(bus, &slot, on_message, c);
        c->t_start = now();
        if (r >= 0)
                r = sd_bus_call_method(bus, "org.quantd.Quantd1", "/org/quantd/Quantd1", "org.quantd.Quantd1.Manager",
                                       "Generate", &error, &reply, "ssa{sv}", model, prompt, 1, "max_tokens", "i",
                                       (int32_t) n_tokens);
        if (r >= 0)
                r = sd_bus_message_read(reply, "o", &c->path);
        while (r >= 0 && c->t_end == 0) {
                r = sd_bus_process(bus, NULL);
                if (r == 0)
                        r = sd_bus_wait(bus, UINT64_MAX);
        }
        if (r < 0) {
                c->error = r;
                fprintf(stderr, "client: %s\n", error.message ?: strerror(-r));
        }
        c->path = NULL;
        sd_bus_error_free(&error);
        sd_bus_message_unref(reply);
        sd_bus_slot_unref(slot);
        sd_bus_flush_close_unref(bus);
        return NULL;
}

int main(int argc, char *argv[]) {
        int a = 1, n;
        Client *cs;
        double t0, t1, first = 0, itl = 0;
        long total = 0;
        int ok = 0;

        if (argc > 2 && streq(argv[1], "--address")) {
                address = argv[2];
                a = 3;
        }
        if (argc - a != 4) {
                fprintf(stderr, "usage: quantd-bench-dbus [--address A] MODEL PROMPT CLIENTS TOKENS\n");
                return 2;
        }
        model = argv[a];
        prompt = argv[a + 1];
        n = atoi(argv[a + 2]);
        n_tokens = atoi(argv[a + 3]);
        if (n <= 0 || n_tokens <= 0)
                return 2;
        cs = calloc((size_t) n, sizeof(Client));
        if (!cs)
                return 1;
        t0 = now();
        for (int i = 0; i < n; i++)
                pthread_create(&cs[i].thread, NULL, client_main, &cs[i]);
        for (int i = 0; i < n; i++)
                pthread_join(cs[i].thread, NULL);
        t1 = now();
        for (int i = 0; i < n; i++) {
                if (cs[i].error < 0 || cs[i].tokens == 0)
                        continue;
                ok++;
                total += cs[i].tokens;
                first += cs[i].t_first - cs[i].t_start;
                if (cs[i].tokens > 1)
                        itl += (cs[i].t_end - cs[i].t_first) / (cs[i].tokens - 1);
        }
        printf("clients %d (ok %d), tokens %ld, wall %.3f s, aggregate %.1f tok/s, first token %.1f ms, "
               "between tokens %.2f ms (per client)\n",
               n, ok, total, t1 - t0, total / (t1 - t0), ok ? first / ok * 1e3 : 0, ok ? itl / ok * 1e3 : 0);
        free(cs);
        return ok == n ? 0 : 1;
}
