/* libuv transport of the HTTP API: listeners, accepted connections, peer credentials, timers,
 * and writes; the protocol itself is in http-conn.c. */
#include <grp.h>
#include <netdb.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "http-server.h"
#include "log.h"

#define MAX_LISTENERS 4
#define MAX_WRITE_QUEUE (64u * 1024 * 1024)

typedef union Stream {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
} Stream;

typedef struct Client Client;

struct HttpServer {
        uv_loop_t *loop;
        HttpContext ctx;
        Stream listeners[MAX_LISTENERS];
        bool listener_is_tcp[MAX_LISTENERS];
        size_t n_listeners;
        char *path;                     /* created by us: unlinked at the end */
        Client *clients;
        unsigned n_clients;
        unsigned n_open;                /* handles (listeners and clients) not yet closed */
        bool freeing;
};

struct Client {
        HttpServer *server;
        Client *prev, *next;
        Stream h;
        uv_timer_t timer;
        uv_shutdown_t shutdown;
        HttpConn *conn;
        unsigned n_open;
        bool shutting_down, destroyed;
};

static void server_maybe_free(HttpServer *s) {
        if (!s->freeing || s->n_open > 0 || s->clients)
                return;
        free(s->path);
        free(s);
}

static void client_handle_closed(uv_handle_t *h) {
        Client *c = h->data;
        HttpServer *s = c->server;

        s->n_open--;
        if (--c->n_open > 0) {
                server_maybe_free(s);
                return;
        }
        free(c);
        server_maybe_free(s);
}

static void client_destroy(Client *c) {
        HttpServer *s = c->server;

        if (c->destroyed)
                return;
        c->destroyed = true;
        if (c->prev)
                c->prev->next = c->next;
        else
                s->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->n_clients--;
        /* The peer is gone: cancel what it asked for. */
        http_conn_detach(TAKE_PTR(c->conn));
        uv_close(&c->h.handle, client_handle_closed);
        uv_close((uv_handle_t *) &c->timer, client_handle_closed);
}

static void on_linger(uv_timer_t *t) {
        client_destroy(t->data);
}

/* The answer is out: read and drop what the peer still sends (the rest of a refused body) until
 * it closes or for 2 s, so that closing does not reset the connection before it read the answer. */
static void on_shutdown(uv_shutdown_t *req, int status) {
        Client *c = req->data;

        if (status < 0 || c->destroyed) {
                client_destroy(c);
                return;
        }
        uv_timer_start(&c->timer, on_linger, 2000, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf);

/* ---- HttpConnOps ---- */

typedef struct WriteReq {
        uv_write_t req;
        char data[];
} WriteReq;

static void on_write(uv_write_t *req, int status) {
        free(req);
}

static int client_write(void *userdata, const void *data, size_t n) {
        Client *c = userdata;
        uv_buf_t buf = uv_buf_init((char *) data, (unsigned) n);
        WriteReq *w;
        int k;

        if (c->destroyed || c->shutting_down)
                return -ECONNRESET;
        /* Most answers and every SSE event fit the socket buffer: try that first. */
        if (uv_stream_get_write_queue_size(&c->h.stream) == 0) {
                k = uv_try_write(&c->h.stream, &buf, 1);
                if (k == (int) n)
                        return 0;
                if (k > 0) {
                        data = (const char *) data + k;
                        n -= (size_t) k;
                } else if (k != UV_EAGAIN) {
                        client_destroy(c);
                        return k;
                }
        }
        if (uv_stream_get_write_queue_size(&c->h.stream) + n > MAX_WRITE_QUEUE) {
                /* A peer that does not read: drop it rather than buffer without end. */
                client_destroy(c);
                return -ENOBUFS;
        }
        w = malloc(sizeof(WriteReq) + n);
        if (!w) {
                client_destroy(c);
                return -ENOMEM;
        }
        memcpy(w->data, data, n);
        buf = uv_buf_init(w->data, (unsigned) n);
        k = uv_write(&w->req, &c->h.stream, &buf, 1, on_write);
        if (k < 0) {
                free(w);
                client_destroy(c);
                return k;
        }
        return 0;
}

static void client_close(void *userdata) {
        Client *c = userdata;

        if (c->destroyed || c->shutting_down)
                return;
        c->shutting_down = true;
        uv_timer_stop(&c->timer);
        (void) uv_read_start(&c->h.stream, on_alloc, on_read);
        c->shutdown.data = c;
        if (uv_shutdown(&c->shutdown, &c->h.stream, on_shutdown) < 0)
                client_destroy(c);
}

static void on_timer(uv_timer_t *t) {
        Client *c = t->data;

        if (c->conn)
                http_conn_timeout(c->conn);
}

static void client_state_changed(void *userdata, HttpConnState st) {
        Client *c = userdata;
        const HttpLimits *l = &c->server->ctx.limits;

        if (c->destroyed || c->shutting_down)
                return;
        switch (st) {
        case HTTP_CONN_IDLE:
                uv_timer_start(&c->timer, on_timer, l->idle_timeout_usec / 1000, 0);
                break;
        case HTTP_CONN_READING:
                uv_timer_start(&c->timer, on_timer, l->request_timeout_usec / 1000, 0);
                break;
        case HTTP_CONN_BUSY:
                uv_timer_stop(&c->timer);
                break;
        }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        static char scratch[64 * 1024];

        /* One loop thread: feeding copies what it keeps, so one static buffer serves all. */
        *buf = uv_buf_init(scratch, sizeof scratch);
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
        Client *c = stream->data;

        if (n > 0 && c->shutting_down)
                return;         /* lingering: dropped */
        if (n > 0) {
                http_conn_ref(c->conn);
                HttpConn *conn = c->conn;
                http_conn_feed(conn, buf->base, (size_t) n);
                http_conn_unref(conn);
        } else if (n < 0) {
                /* EOF or error: the peer left; a running request is cancelled. */
                client_destroy(c);
        }
}

static void client_set_reading(void *userdata, bool on) {
        Client *c = userdata;

        if (c->destroyed || c->shutting_down)
                return;
        if (on)
                (void) uv_read_start(&c->h.stream, on_alloc, on_read);
        else
                (void) uv_read_stop(&c->h.stream);
}

static const HttpConnOps client_ops = {
        .write = client_write,
        .close = client_close,
        .state_changed = client_state_changed,
        .set_reading = client_set_reading,
};

/* ---- listeners ---- */

static void on_connection(uv_stream_t *listener, int status) {
        HttpServer *s = listener->data;
        bool tcp = listener->type == UV_TCP;
        struct ucred cred = {};
        bool have_creds = false;
        uv_os_fd_t fd;
        Client *c;
        int r;

        if (status < 0) {
                log_warning("HTTP accept failed: %s, ignoring", uv_strerror(status));
                return;
        }
        c = calloc(1, sizeof(Client));
        if (!c)
                return (void) log_oom();
        c->server = s;
        r = tcp ? uv_tcp_init(s->loop, &c->h.tcp) : uv_pipe_init(s->loop, &c->h.pipe, 0);
        if (r < 0) {
                free(c);
                return;
        }
        c->h.handle.data = c;
        uv_timer_init(s->loop, &c->timer);
        c->timer.data = c;
        c->n_open = 2;
        s->n_open += 2;
        c->next = s->clients;
        if (s->clients)
                s->clients->prev = c;
        s->clients = c;
        s->n_clients++;

        if (uv_accept(listener, &c->h.stream) < 0) {
                client_destroy(c);
                return;
        }
        if (s->n_clients > s->ctx.limits.max_connections || s->freeing) {
                log_warning("HTTP: more than %u connections, dropping one", s->ctx.limits.max_connections);
                client_destroy(c);
                return;
        }
        if (!tcp && uv_fileno(&c->h.handle, &fd) >= 0) {
                socklen_t len = sizeof cred;
                have_creds = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) >= 0;
        }
        r = http_conn_new(&s->ctx, &client_ops, c, have_creds, cred.uid, cred.pid, &c->conn);
        if (r < 0) {
                client_destroy(c);
                return;
        }
        client_state_changed(c, HTTP_CONN_IDLE);
        if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0)
                client_destroy(c);
}

static void listener_closed(uv_handle_t *h) {
        HttpServer *s = h->data;

        s->n_open--;
        server_maybe_free(s);
}

static Stream *listener_add(HttpServer *s, bool tcp) {
        Stream *l;

        if (s->n_listeners >= MAX_LISTENERS)
                return NULL;
        l = &s->listeners[s->n_listeners];
        if ((tcp ? uv_tcp_init(s->loop, &l->tcp) : uv_pipe_init(s->loop, &l->pipe, 0)) < 0)
                return NULL;
        l->handle.data = s;
        s->listener_is_tcp[s->n_listeners] = tcp;
        s->n_listeners++;
        s->n_open++;
        return l;
}

static int listen_path(HttpServer *s, const char *path) {
        struct stat st;
        Stream *l;
        int r;

        if (strlen(path) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                return -ENAMETOOLONG;
        /* A socket left by an earlier run is replaced; any other file is not touched. */
        if (lstat(path, &st) >= 0) {
                if (!S_ISSOCK(st.st_mode))
                        return -EEXIST;
                (void) unlink(path);
        }
        /* $XDG_RUNTIME_DIR/quantd/ may not exist yet (no RuntimeDirectory= in user mode). */
        _cleanup_free_ char *dir = strdup(path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        if (slash && slash != dir) {
                *slash = 0;
                if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                        return -errno;
        }
        l = listener_add(s, false);
        if (!l)
                return -ENOMEM;
        r = uv_pipe_bind(&l->pipe, path);
        if (r < 0)
                return r;
        s->path = strdup(path);
        if (!s->path)
                return -ENOMEM;
        /* 0660 before listen(), so nobody else connects in between; group quantd if it exists. */
        if (chmod(path, 0660) < 0)
                return -errno;
        struct group *g = getgrnam("quantd");
        if (g && chown(path, (uid_t) -1, g->gr_gid) < 0)
                log_debug("HTTP: cannot give %s to group quantd: %m, ignoring", path);
        r = uv_listen(&l->stream, 128, on_connection);
        return r;
}

static int listen_fd_adopt(HttpServer *s, int fd) {
        int domain = 0;
        socklen_t len = sizeof domain;
        Stream *l;
        int r;

        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
                return -errno;
        l = listener_add(s, domain != AF_UNIX);
        if (!l)
                return -ENOMEM;
        r = domain == AF_UNIX ? uv_pipe_open(&l->pipe, fd) : uv_tcp_open(&l->tcp, fd);
        if (r < 0)
                return r;
        return uv_listen(&l->stream, 128, on_connection);
}

int http_server_new_with_backend(uv_loop_t *loop, const HttpBackend *backend, void *backend_ctx,
                                 const char *path, int listen_fd, HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        int r;

        /* libuv writes with write(2): a peer that left must give EPIPE, not kill the process. The
         * daemon ignores SIGPIPE already; this covers every other user of the server. */
        signal(SIGPIPE, SIG_IGN);

        s = calloc(1, sizeof(HttpServer));
        if (!s)
                return -ENOMEM;
        s->loop = loop;
        s->ctx = (HttpContext) {
                .backend = backend,
                .backend_ctx = backend_ctx,
                .limits = HTTP_LIMITS_DEFAULT,
                .daemon_uid = getuid(),
        };
        if (listen_fd >= 0)
                r = listen_fd_adopt(s, listen_fd);
        else if (path)
                r = listen_path(s, path);
        else
                r = 0;
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

int http_server_listen_tcp(HttpServer *s, const char *address, uint16_t port, uint16_t *ret_port) {
        struct sockaddr_storage ss = {};
        struct addrinfo hints = { .ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM }, *ai = NULL;
        Stream *l;
        int r, namelen = sizeof ss;

        if (streq(address, "localhost"))
                address = "127.0.0.1";
        if (getaddrinfo(address, NULL, &hints, &ai) != 0 || !ai)
                return -EINVAL;
        memcpy(&ss, ai->ai_addr, MIN((size_t) ai->ai_addrlen, sizeof ss));
        freeaddrinfo(ai);
        if (ss.ss_family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *) &ss;
                if ((ntohl(in->sin_addr.s_addr) >> 24) != 127)
                        return -EPERM;
                in->sin_port = htons(port);
        } else if (ss.ss_family == AF_INET6) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;
                if (!IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
                        return -EPERM;
                in6->sin6_port = htons(port);
        } else
                return -EAFNOSUPPORT;

        l = listener_add(s, true);
        if (!l)
                return -ENOMEM;
        r = uv_tcp_bind(&l->tcp, (struct sockaddr *) &ss, 0);
        if (r < 0)
                return r;
        r = uv_listen(&l->stream, 128, on_connection);
        if (r < 0)
                return r;
        if (ret_port) {
                r = uv_tcp_getsockname(&l->tcp, (struct sockaddr *) &ss, &namelen);
                if (r < 0)
                        return r;
                *ret_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *) &ss)->sin_port
                                                          : ((struct sockaddr_in6 *) &ss)->sin6_port);
        }
        return 0;
}

void http_server_set_limits(HttpServer *s, const HttpLimits *limits) {
        s->ctx.limits = *limits;
}

void http_server_set_policy_hook(HttpServer *s, HttpPolicyHook hook, void *userdata) {
        s->ctx.policy_hook = hook;
        s->ctx.policy_userdata = userdata;
}

unsigned http_server_n_connections(HttpServer *s) {
        return s->n_clients;
}

HttpServer *http_server_free(HttpServer *s) {
        if (!s || s->freeing)
                return NULL;
        s->freeing = true;
        while (s->clients)
                client_destroy(s->clients);
        for (size_t i = 0; i < s->n_listeners; i++)
                uv_close(&s->listeners[i].handle, listener_closed);
        if (s->path)
                (void) unlink(s->path);
        server_maybe_free(s);
        return NULL;
}
