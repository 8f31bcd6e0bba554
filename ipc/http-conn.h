/* One HTTP/1.1 connection as a byte-in, byte-out state machine: http-parser turns the bytes fed
 * in into requests, one at a time (pipelined requests wait), the router answers them, and the
 * response bytes go out through HttpConnOps. No libuv here, so tests and the fuzzer can drive a
 * connection directly; ipc/http-server.c is the transport. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "http-backend.h"
#include "macro.h"

typedef struct HttpLimits {
        size_t max_header_bytes;        /* request line + headers; more: 431 */
        size_t max_body_bytes;          /* decoded body; more: 413 */
        uint64_t request_timeout_usec;  /* first byte to last byte of a request; then 408 */
        uint64_t idle_timeout_usec;     /* keep-alive connection with no request; then closed */
        unsigned max_connections;       /* more are accepted and closed at once */
} HttpLimits;

#define HTTP_LIMITS_DEFAULT                                      \
        ((HttpLimits) {                                          \
                .max_header_bytes = 16 * 1024,                   \
                .max_body_bytes = 1024 * 1024,                   \
                .request_timeout_usec = 30 * 1000 * 1000ULL,     \
                .idle_timeout_usec = 120 * 1000 * 1000ULL,       \
                .max_connections = 256,                          \
        })

/* Shared by the connections of one server. */
typedef struct HttpContext {
        const HttpBackend *backend;
        void *backend_ctx;
        HttpPolicyHook policy_hook;     /* NULL: /api/policy answers {"available": false} */
        void *policy_userdata;
        HttpLimits limits;
        uid_t daemon_uid;               /* peers with this uid (or 0) may manage */
        uint64_t n_connections;         /* serial for caller ids */
} HttpContext;

typedef enum HttpConnState {
        HTTP_CONN_IDLE,                 /* waiting for a request (idle timeout) */
        HTTP_CONN_READING,              /* a request has begun (request timeout) */
        HTTP_CONN_BUSY,                 /* answering (no timeout: generation may take long) */
} HttpConnState;

typedef struct HttpConnOps {
        /* Queues bytes for the peer (copied). */
        int (*write)(void *userdata, const void *data, size_t n);
        /* Close once the queued bytes are out; no more calls follow. */
        void (*close)(void *userdata);
        void (*state_changed)(void *userdata, HttpConnState state);
        /* Flow control while a request is answered and pipelined bytes pile up. */
        void (*set_reading)(void *userdata, bool on);
} HttpConnOps;

typedef struct HttpConn HttpConn;

typedef struct HttpRequest {
        unsigned method;                /* enum http_method */
        const char *method_name;
        char *url;
        char *path;                     /* url without query */
        char *body;                     /* NUL-terminated */
        size_t body_size;
} HttpRequest;

/* have_creds false (TCP): uid/pid unknown, never privileged. */
int http_conn_new(HttpContext *ctx, const HttpConnOps *ops, void *userdata, bool have_creds,
                  uid_t uid, pid_t pid, HttpConn **ret);
/* The transport is gone: cancels what runs, drops the transport's reference. */
void http_conn_detach(HttpConn *c);
HttpConn *http_conn_ref(HttpConn *c);
HttpConn *http_conn_unref(HttpConn *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpConn *, http_conn_unref);

/* Bytes from the peer. */
void http_conn_feed(HttpConn *c, const void *data, size_t n);
/* The transport's timer for the current state fired. */
void http_conn_timeout(HttpConn *c);

/* For handlers. */
HttpContext *http_conn_context(HttpConn *c);
const Caller *http_conn_caller(HttpConn *c);
bool http_conn_detached(HttpConn *c);
/* Dispatched, but neither answered nor pending: a handler bug, answered with 500. */
bool http_conn_unanswered(HttpConn *c);

/* Complete answers; each ends the current request. body is not stolen. */
int http_conn_reply_json(HttpConn *c, unsigned status, json_t *body);
/* The same, taking the reference; a NULL body (a failed json_pack) is answered with 500. */
int http_conn_reply_json_take(HttpConn *c, unsigned status, json_t *body);
int http_conn_reply_error(HttpConn *c, unsigned status, const char *type, const char *code,
                          const char *format, ...) _printf_(5, 6);
/* The answer for a negative errno from the backend. */
int http_conn_reply_errno(HttpConn *c, int error, const char *what);
/* 405 with an Allow header. */
int http_conn_reply_not_allowed(HttpConn *c, const char *allow);

/* Server-sent events over chunked encoding: begin, events, end (ends the request). */
int http_conn_stream_begin(HttpConn *c);
int http_conn_stream_event(HttpConn *c, json_t *data);
int http_conn_stream_end(HttpConn *c);       /* writes "data: [DONE]" and the last chunk */

/* An answer that completes later (generation): on detach, cancel(userdata) is called once. The
 * handler's owner clears it with NULL before replying. */
void http_conn_set_pending(HttpConn *c, void (*cancel)(void *userdata), void *userdata);
