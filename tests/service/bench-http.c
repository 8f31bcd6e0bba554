/* Measures the HTTP front end's own cost per streamed token: the fake backend emits tokens as
 * fast as the loop runs, N client threads read SSE over the Unix socket. Not a test; run
 * `bench-http [CLIENTS] [TOKENS]` and compare with the engine's time per token. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "http-client.h"
#include "http-fake.h"
#include "http-server.h"

static Fake fake;
static char sock_path[100];
static int n_tokens = 2000;
static atomic_int n_done, n_events;

static void *client(void *arg) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        char body[256], *req, buf[65536];
        size_t total = 0;

        memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
        CHECK(connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0);
        snprintf(body, sizeof body, "{\"model\":\"tiny\",\"stream\":true,\"max_tokens\":%d,\"prompt\":\"a b c d\"}", n_tokens);
        CHECK(asprintf(&req, "POST /v1/completions HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body) > 0);
        CHECK(send(fd, req, strlen(req), 0) == (ssize_t) strlen(req));
        for (;;) {
                ssize_t k = recv(fd, buf, sizeof buf - 1, 0);
                if (k <= 0)
                        break;
                buf[k] = 0;
                total += (size_t) k;
                for (char *p = buf; (p = strstr(p, "data: ")); p += 6)
                        n_events++;
                if (k >= 5 && memcmp(buf + k - 5, "0\r\n\r\n", 5) == 0)
                        break;
        }
        free(req);
        close(fd);
        n_done++;
        return NULL;
}

static int n_clients = 1;

static void on_idle(uv_idle_t *h) {
        fake_pump(&fake);
        if (n_done >= n_clients)
                uv_stop(h->loop);
}

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static double cpu(void) {
        struct rusage ru;
        getrusage(RUSAGE_THREAD, &ru);
        return (double) ru.ru_utime.tv_sec + (double) ru.ru_stime.tv_sec +
               ((double) ru.ru_utime.tv_usec + (double) ru.ru_stime.tv_usec) * 1e-6;
}

int main(int argc, char **argv) {
        pthread_t th[256];
        HttpServer *s = NULL;
        uv_loop_t loop;
        uv_idle_t idle;

        if (argc > 1)
                n_clients = CLAMP(atoi(argv[1]), 1, 256);
        if (argc > 2)
                n_tokens = MAX(atoi(argv[2]), 1);
        snprintf(sock_path, sizeof sock_path, "/tmp/quantd-bench-%d.sock", (int) getpid());
        CHECK(uv_loop_init(&loop) == 0);
        CHECK(http_server_new_with_backend(&loop, &fake_backend, &fake, sock_path, -EBADF, &s) == 0);
        uv_idle_init(&loop, &idle);
        uv_idle_start(&idle, on_idle);
        double t0 = now(), c0 = cpu();
        for (int i = 0; i < n_clients; i++)
                pthread_create(&th[i], NULL, client, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        double t1 = now(), c1 = cpu();
        for (int i = 0; i < n_clients; i++)
                pthread_join(th[i], NULL);
        long tokens = (long) n_clients * n_tokens;
        printf("clients %d, tokens %ld, events %d: %.0f tokens/s, server loop thread %.2f us CPU per token "
               "(fake backend included), %.2f us wall per token\n",
               n_clients, tokens, (int) n_events, (double) tokens / (t1 - t0), (c1 - c0) * 1e6 / (double) tokens,
               (t1 - t0) * 1e6 / (double) tokens);
        s = http_server_free(s);
        uv_close((uv_handle_t *) &idle, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(uv_loop_close(&loop) == 0);
        return 0;
}
