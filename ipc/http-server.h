/* The HTTP/1.1 API server on the daemon's libuv loop: a Unix socket (created, or adopted from
 * socket activation) and an optional loopback TCP listener.
 *
 * Wiring (daemon/daemon-main.c, HAVE_HTTP_SERVER when ipc/meson.build defines http_server_dep):
 * after the Manager exists and before the loop runs,
 *
 *         r = http_server_new(manager, &http);
 *         http_server_set_policy_hook(http, policy_status_hook, d);     (optional)
 *
 * The server listens on manager_config(m)->socket_fd when it is >= 0 (the already-listening fd
 * from LISTEN_FDS), else it creates manager_config(m)->socket_path with mode 0660 (a stale socket
 * file there is replaced; group "quantd" when that group exists). The [http] section of the
 * config is read here: tcp = 127.0.0.1:8080 (loopback only, off by default),
 * request_timeout_sec, idle_timeout_sec, max_header_bytes, max_connections; [limits]
 * max_request_bytes caps the body. At shutdown call http_server_free() after
 * manager_shutdown() and before manager_free(), and let the loop run once more so the handles
 * close (the memory is released in their close callbacks).
 * Management endpoints need a peer with uid 0 or the daemon's own uid (SO_PEERCRED). */
#pragma once

#include <stdint.h>

#include "http-backend.h"
#include "http-conn.h"

typedef struct HttpServer HttpServer;

/* The daemon's entry point (ipc/http-manager.c): the backend is the Manager. */
int http_server_new(Manager *m, HttpServer **ret);

/* Any backend (tests). path or listen_fd (>= 0, already listening; AF_UNIX or AF_INET*); both
 * may be absent (then add a TCP listener). backend must outlive the server. */
int http_server_new_with_backend(uv_loop_t *loop, const HttpBackend *backend, void *backend_ctx,
                                 const char *path, int listen_fd, HttpServer **ret);
/* Listens on a loopback address ("127.0.0.1", "::1" or "localhost"); -EPERM for others. TCP
 * peers have no credentials: they may never manage. port 0 picks one; ret_port gets it. */
int http_server_listen_tcp(HttpServer *s, const char *address, uint16_t port, uint16_t *ret_port);
void http_server_set_limits(HttpServer *s, const HttpLimits *limits);
/* After manager_reload() (SIGHUP): the limits again from the new configuration, for new requests
 * on every connection; the listeners are kept. */
int http_server_reload(HttpServer *s, Manager *m);
void http_server_set_policy_hook(HttpServer *s, HttpPolicyHook hook, void *userdata);
unsigned http_server_n_connections(HttpServer *s);

/* Stops listening and drops every connection (their requests are cancelled). The memory goes
 * when the loop has run the close callbacks. */
HttpServer *http_server_free(HttpServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpServer *, http_server_free);
