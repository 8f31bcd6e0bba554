/* The HTTP server on real sockets and a real libuv loop, with the fake backend: socket mode,
 * socket activation (an adopted fd), loopback TCP, 16 concurrent streaming clients each getting
 * their own full answer, a client leaving mid-stream freeing its slot, limits over the wire,
 * and a clean teardown (uv_loop_close() == 0). */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>

#include "http-client.h"
#include "http-fake.h"
#include "http-server.h"

#define N_CLIENTS 16

static Fake fake;
static char sock_path[100];
static uint16_t tcp_port;
static atomic_int n_done;
static atomic_int failures;

static int connect_unix(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        CHECK(fd >= 0);
        CHECK(strlen(path) < sizeof sa.sun_path);
        memcpy(sa.sun_path, path, strlen(path) + 1);
        CHECK(connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0);
        return fd;
}

static void send_all(int fd, const char *s, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
                if (k <= 0)
                        return;
                s += k;
                n -= (size_t) k;
        }
}

/* Sends one request and reads until one full response is parsed. */
static int roundtrip(int fd, const char *req, Response *r) {
        char *buf = NULL;
        size_t size = 0, pos = 0;
        int k = 0;

        send_all(fd, req, strlen(req));
        for (;;) {
                char tmp[4096];
                ssize_t n = recv(fd, tmp, sizeof tmp, 0);
                if (n <= 0)
                        break;
                buf = realloc(buf, size + (size_t) n);
                memcpy(buf + size, tmp, (size_t) n);
                size += (size_t) n;
                k = response_parse(buf, size, &pos, r);
                if (k != 0)
                        break;
        }
        free(buf);
        return k;
}

static char *post(const char *path, const char *body) {
        char *s;
        CHECK(asprintf(&s, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s", path, strlen(body), body) > 0);
        return s;
}

static void *client_thread(void *arg) {
        int i = (int) (intptr_t) arg, fd = connect_unix(sock_path);
        char body[256], want[64];
        Response r = {};
        char **ev = NULL;
        size_t n = 0;

        snprintf(body, sizeof body,
                 "{\"model\":\"tiny\",\"stream\":true,\"max_tokens\":20,\"messages\":[{\"role\":\"user\",\"content\":\"client%d says\"}]}", i);
        char *req = post("/v1/chat/completions", body);
        if (roundtrip(fd, req, &r) != 1 || r.status != 200)
                goto fail;
        n = sse_events(r.body, &ev);
        /* role + 20 tokens + finish + [DONE], and every token is this client's own. */
        if (n != 23 || strcmp(ev[n - 1], "[DONE]") != 0)
                goto fail;
        for (size_t k = 1; k <= 20; k++) {
                json_t *j = json_loads(ev[k], 0, NULL);
                const char *t = json_string_value(json_object_get(json_object_get(
                        json_array_get(json_object_get(j, "choices"), 0), "delta"), "content"));
                snprintf(want, sizeof want, k % 2 ? "client%d " : "says ", i);
                bool ok = t && strcmp(t, want) == 0;
                json_decref(j);
                if (!ok)
                        goto fail;
        }
        goto out;
fail:
        fprintf(stderr, "client %d: bad answer (status %u): %s\n", i, r.status, strna(r.body));
        failures++;
out:
        for (size_t k = 0; ev && k < n; k++)
                free(ev[k]);
        free(ev);
        response_clear(&r);
        free(req);
        close(fd);
        n_done++;
        return NULL;
}

/* Reads the first event of an endless stream, then hangs up. */
static void *leaver_thread(void *arg) {
        int fd = connect_unix(sock_path);
        char *req = post("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"go\",\"stream\":true,\"max_tokens\":1000000}");
        char buf[256];

        send_all(fd, req, strlen(req));
        if (recv(fd, buf, sizeof buf, 0) <= 0)
                failures++;
        free(req);
        close(fd);
        n_done++;
        return NULL;
}

static void *misc_thread(void *arg) {
        Response r = {};
        int fd;

        /* Oversized body: 413 at once from the Content-Length. */
        fd = connect_unix(sock_path);
        if (roundtrip(fd, "POST /v1/completions HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n", &r) != 1 || r.status != 413)
                failures++;
        response_clear(&r);
        close(fd);

        /* Management over the socket: this process is the daemon's uid, so it may. */
        fd = connect_unix(sock_path);
        char *req = post("/api/models/tiny/precision", "{\"precision\":\"int4\"}");
        if (roundtrip(fd, req, &r) != 1 || r.status != 200)
                failures++;
        free(req);
        response_clear(&r);
        /* Unknown path and wrong method on the same keep-alive connection. */
        if (roundtrip(fd, "GET /v2/nothing HTTP/1.1\r\n\r\n", &r) != 1 || r.status != 404)
                failures++;
        response_clear(&r);
        if (roundtrip(fd, "DELETE /v1/models HTTP/1.1\r\n\r\n", &r) != 1 || r.status != 405)
                failures++;
        response_clear(&r);
        close(fd);

        /* Loopback TCP: works, and never privileged. */
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(tcp_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        fd = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0);
        if (roundtrip(fd, "GET /v1/models HTTP/1.1\r\n\r\n", &r) != 1 || r.status != 200 || !strstr(r.body, "\"tiny\""))
                failures++;
        response_clear(&r);
        req = post("/api/models/unload", "{\"name\":\"tiny\"}");
        if (roundtrip(fd, req, &r) != 1 || r.status != 403)
                failures++;
        free(req);
        response_clear(&r);
        close(fd);
        n_done++;
        return NULL;
}

typedef struct Run {
        HttpServer *server;
        uv_timer_t pump;
        int expect_done;
        unsigned cancelled_before;
} Run;

static void on_pump(uv_timer_t *t) {
        Run *run = t->data;

        fake_pump(&fake);
        if (n_done >= run->expect_done && fake.n_live == 0 && http_server_n_connections(run->server) == 0) {
                uv_timer_stop(t);
                uv_stop(t->loop);
        }
}

static void run_threads(uv_loop_t *loop, Run *run, void *(*fn)(void *), int n) {
        pthread_t th[N_CLIENTS];

        n_done = 0;
        run->expect_done = n;
        for (int i = 0; i < n; i++)
                CHECK(pthread_create(&th[i], NULL, fn, (void *) (intptr_t) i) == 0);
        uv_timer_start(&run->pump, on_pump, 1, 1);
        uv_run(loop, UV_RUN_DEFAULT);
        for (int i = 0; i < n; i++)
                pthread_join(th[i], NULL);
}

static void close_cb(uv_handle_t *h) {
}

int main(void) {
        char dir[] = "/tmp/quantd-http-test-XXXXXX";
        uv_loop_t loop;
        Run run = {};
        struct stat st;

        CHECK(mkdtemp(dir));
        snprintf(sock_path, sizeof sock_path, "%s/sub/api.sock", dir);
        CHECK(uv_loop_init(&loop) == 0);
        uv_timer_init(&loop, &run.pump);
        run.pump.data = &run;

        CHECK(http_server_new_with_backend(&loop, &fake_backend, &fake, sock_path, -EBADF, &run.server) == 0);
        CHECK(stat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0660);
        CHECK(http_server_listen_tcp(run.server, "10.1.2.3", 0, NULL) == -EPERM);
        CHECK(http_server_listen_tcp(run.server, "127.0.0.1", 0, &tcp_port) == 0 && tcp_port > 0);

        run_threads(&loop, &run, client_thread, N_CLIENTS);
        CHECK(failures == 0);
        CHECK(fake.n_finished == N_CLIENTS && fake.n_cancelled == 0);

        run_threads(&loop, &run, leaver_thread, 1);
        CHECK(failures == 0);
        CHECK(fake.n_live == 0 && fake.n_cancelled == 1);

        run_threads(&loop, &run, misc_thread, 1);
        CHECK(failures == 0);
        CHECK(strcmp(fake.precision, "2") == 0);

        run.server = http_server_free(run.server);
        uv_run(&loop, UV_RUN_NOWAIT);
        CHECK(access(sock_path, F_OK) < 0);

        /* Socket activation: an fd that is already listening is adopted as it is. */
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s/activated.sock", dir);
        CHECK(bind(lfd, (struct sockaddr *) &sa, sizeof sa) == 0 && listen(lfd, 16) == 0);
        CHECK(http_server_new_with_backend(&loop, &fake_backend, &fake, NULL, lfd, &run.server) == 0);
        memcpy(sock_path, sa.sun_path, sizeof sock_path - 1);
        run_threads(&loop, &run, client_thread, 2);
        CHECK(failures == 0);
        run.server = http_server_free(run.server);

        uv_close((uv_handle_t *) &run.pump, close_cb);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(uv_loop_close(&loop) == 0);
        unlink(sa.sun_path);
        snprintf(sock_path, sizeof sock_path, "%s/sub", dir);
        rmdir(sock_path);
        rmdir(dir);
        printf("ok\n");
        return 0;
}
