/* HTTP/1.1 connection state machine: http-parser in, one request at a time, responses out. */
#include <http_parser.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http-conn.h"
#include "http-router.h"
#include "log.h"

struct HttpConn {
        unsigned n_ref;
        HttpContext *ctx;
        const HttpConnOps *ops;         /* NULL once detached */
        void *userdata;

        Caller caller;
        char caller_id[32];

        http_parser parser;
        HttpConnState state;

        /* Bytes received but not yet parsed (pipelined behind the current request). */
        char *in;
        size_t in_size, in_alloc;
        bool reading_paused;

        /* The request being received. */
        HttpRequest req;
        size_t url_size, header_bytes, body_alloc;
        char hdr_name[32];
        size_t hdr_name_size;
        bool hdr_name_truncated, in_value;
        bool expect_continue;
        bool keep_alive;
        unsigned error_status;          /* limit hit while parsing */
        bool message_complete;

        /* The answer. */
        bool busy;                      /* dispatched, not yet answered */
        bool streaming;
        bool closing;                   /* no more requests on this connection */
        bool processing;
        void (*pending_cancel)(void *userdata);
        void *pending_userdata;
};

static void conn_process(HttpConn *c);

static const char *status_text(unsigned status) {
        switch (status) {
        case 100: return "Continue";
        case 200: return "OK";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 409: return "Conflict";
        case 411: return "Length Required";
        case 413: return "Payload Too Large";
        case 415: return "Unsupported Media Type";
        case 417: return "Expectation Failed";
        case 429: return "Too Many Requests";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 503: return "Service Unavailable";
        case 505: return "HTTP Version Not Supported";
        default: return "Unknown";
        }
}

static void conn_write(HttpConn *c, const void *data, size_t n) {
        if (c->ops && n > 0)
                (void) c->ops->write(c->userdata, data, n);
}

static void conn_set_state(HttpConn *c, HttpConnState st) {
        if (c->state == st)
                return;
        c->state = st;
        if (c->ops && c->ops->state_changed)
                c->ops->state_changed(c->userdata, st);
}

static void request_clear(HttpConn *c) {
        free(c->req.url);
        free(c->req.path);
        free(c->req.body);
        c->req = (HttpRequest) {};
        c->url_size = c->header_bytes = c->body_alloc = 0;
        c->hdr_name_size = 0;
        c->hdr_name_truncated = c->in_value = false;
        c->expect_continue = false;
        c->keep_alive = false;
        c->error_status = 0;
        c->message_complete = false;
}

/* ---- parser callbacks ---- */

static int header_bytes_add(HttpConn *c, size_t n) {
        c->header_bytes += n;
        if (c->header_bytes > c->ctx->limits.max_header_bytes) {
                c->error_status = 431;
                return -1;
        }
        return 0;
}

static int on_message_begin(http_parser *p) {
        HttpConn *c = p->data;

        request_clear(c);
        conn_set_state(c, HTTP_CONN_READING);
        return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
        HttpConn *c = p->data;
        char *u;

        if (header_bytes_add(c, n) < 0)
                return -1;
        u = realloc(c->req.url, c->url_size + n + 1);
        if (!u) {
                c->error_status = 500;
                return -1;
        }
        memcpy(u + c->url_size, at, n);
        c->url_size += n;
        u[c->url_size] = 0;
        c->req.url = u;
        return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
        HttpConn *c = p->data;

        if (header_bytes_add(c, n) < 0)
                return -1;
        if (c->in_value) {
                c->hdr_name_size = 0;
                c->hdr_name_truncated = false;
                c->in_value = false;
        }
        /* Only short names matter to us; longer ones are remembered as "not interesting". */
        if (c->hdr_name_size + n >= sizeof(c->hdr_name)) {
                c->hdr_name_truncated = true;
                return 0;
        }
        memcpy(c->hdr_name + c->hdr_name_size, at, n);
        c->hdr_name_size += n;
        c->hdr_name[c->hdr_name_size] = 0;
        return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
        HttpConn *c = p->data;

        if (header_bytes_add(c, n) < 0)
                return -1;
        c->in_value = true;
        if (c->hdr_name_truncated)
                return 0;
        if (strcasecmp(c->hdr_name, "expect") == 0 && n >= 12 && strncasecmp(at, "100-continue", 12) == 0)
                c->expect_continue = true;
        return 0;
}

static int on_headers_complete(http_parser *p) {
        HttpConn *c = p->data;

        if (!c->req.url) {
                c->error_status = 400;
                return -1;
        }
        /* Content-Length is known now: refuse before the body is sent. */
        if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->ctx->limits.max_body_bytes) {
                c->error_status = 413;
                return -1;
        }
        if (c->expect_continue) {
                char line[64];
                int k = snprintf(line, sizeof line, "HTTP/1.1 100 Continue\r\n\r\n");
                conn_write(c, line, (size_t) k);
        }
        return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
        HttpConn *c = p->data;
        size_t need;

        if (size_add_overflow(c->req.body_size, n, &need) || need > c->ctx->limits.max_body_bytes) {
                c->error_status = 413;
                return -1;
        }
        if (need + 1 > c->body_alloc) {
                size_t a = MAX(need + 1, MIN(c->body_alloc * 2, c->ctx->limits.max_body_bytes + 1));
                char *b = realloc(c->req.body, a);
                if (!b) {
                        c->error_status = 500;
                        return -1;
                }
                c->req.body = b;
                c->body_alloc = a;
        }
        memcpy(c->req.body + c->req.body_size, at, n);
        c->req.body_size = need;
        c->req.body[need] = 0;
        return 0;
}

static int on_message_complete(http_parser *p) {
        HttpConn *c = p->data;

        c->message_complete = true;
        c->keep_alive = http_should_keep_alive(p);
        c->req.method = p->method;
        c->req.method_name = http_method_str(p->method);
        /* One request at a time: stop here, the rest waits in c->in. */
        http_parser_pause(p, 1);
        return 0;
}

static const http_parser_settings parser_settings = {
        .on_message_begin = on_message_begin,
        .on_url = on_url,
        .on_header_field = on_header_field,
        .on_header_value = on_header_value,
        .on_headers_complete = on_headers_complete,
        .on_body = on_body,
        .on_message_complete = on_message_complete,
};

/* ---- lifetime ---- */

int http_conn_new(HttpContext *ctx, const HttpConnOps *ops, void *userdata, bool have_creds,
                  uid_t uid, pid_t pid, HttpConn **ret) {
        HttpConn *c;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->n_ref = 1;
        c->ctx = ctx;
        c->ops = ops;
        c->userdata = userdata;
        snprintf(c->caller_id, sizeof c->caller_id, "socket:%" PRIu64, ++ctx->n_connections);
        c->caller = (Caller) {
                .uid = have_creds ? uid : (uid_t) -1,
                .pid = have_creds ? pid : 0,
                .id = c->caller_id,
                .privileged = have_creds && (uid == 0 || uid == ctx->daemon_uid),
        };
        http_parser_init(&c->parser, HTTP_REQUEST);
        c->parser.data = c;
        c->state = HTTP_CONN_IDLE;
        *ret = c;
        return 0;
}

HttpConn *http_conn_ref(HttpConn *c) {
        if (c)
                c->n_ref++;
        return c;
}

HttpConn *http_conn_unref(HttpConn *c) {
        if (!c || --c->n_ref > 0)
                return NULL;
        request_clear(c);
        free(c->in);
        free(c);
        return NULL;
}

void http_conn_detach(HttpConn *c) {
        void (*cancel)(void *userdata);

        if (!c || !c->ops)
                return;
        c->ops = NULL;
        c->closing = true;
        cancel = c->pending_cancel;
        c->pending_cancel = NULL;
        if (cancel)
                cancel(c->pending_userdata);
        if (c->ctx->backend && c->ctx->backend->cancel_caller)
                c->ctx->backend->cancel_caller(c->ctx->backend_ctx, c->caller.id);
        http_conn_unref(c);
}

HttpContext *http_conn_context(HttpConn *c) {
        return c->ctx;
}

const Caller *http_conn_caller(HttpConn *c) {
        return &c->caller;
}

bool http_conn_detached(HttpConn *c) {
        return !c->ops;
}

bool http_conn_unanswered(HttpConn *c) {
        return c->busy && !c->streaming && !c->pending_cancel;
}

void http_conn_set_pending(HttpConn *c, void (*cancel)(void *userdata), void *userdata) {
        c->pending_cancel = cancel;
        c->pending_userdata = userdata;
}

/* ---- answers ---- */

static void conn_close(HttpConn *c) {
        const HttpConnOps *ops = c->ops;

        c->closing = true;
        if (ops && ops->close)
                ops->close(c->userdata);
}

/* The current request is answered: go on with pipelined bytes, or close. */
static void request_done(HttpConn *c) {
        c->busy = false;
        c->streaming = false;
        if (!c->keep_alive)
                c->closing = true;
        request_clear(c);
        if (c->closing) {
                conn_close(c);
                return;
        }
        conn_set_state(c, HTTP_CONN_IDLE);
        if (c->reading_paused && c->ops && c->ops->set_reading) {
                c->reading_paused = false;
                c->ops->set_reading(c->userdata, true);
        }
        if (!c->processing)
                conn_process(c);
}

/* Formats the head into buf (at least 512 bytes); returns its length or -ENOBUFS. */
static int format_head(HttpConn *c, char *buf, size_t size, unsigned status, const char *content_type,
                       ssize_t length, const char *extra) {
        char len[64];
        int k;

        if (length >= 0)
                snprintf(len, sizeof len, "Content-Length: %zd\r\n", length);
        else
                snprintf(len, sizeof len, "Transfer-Encoding: chunked\r\n");
        k = snprintf(buf, size,
                     "HTTP/1.1 %u %s\r\n"
                     "Content-Type: %s\r\n"
                     "%s%s%s\r\n",
                     status, status_text(status), content_type, len,
                     c->keep_alive && !c->closing ? "" : "Connection: close\r\n",
                     extra ? extra : "");
        if (k < 0 || (size_t) k >= size)
                return -ENOBUFS;
        return k;
}

static int reply_raw(HttpConn *c, unsigned status, const char *content_type, const char *body,
                     size_t size, const char *extra) {
        _cleanup_free_ char *buf = NULL;
        int k;

        if (!c->busy)
                return -EALREADY;
        /* A failed write may drop the transport (and its reference) under us. */
        _unused_ _cleanup_(http_conn_unrefp) HttpConn *ref = http_conn_ref(c);
        /* Head and body in one write: one syscall, and a peer never sees half an answer. */
        buf = malloc(512 + size);
        k = buf ? format_head(c, buf, 512, status, content_type, (ssize_t) size, extra) : -ENOMEM;
        if (k >= 0) {
                memcpy(buf + k, body, size);
                conn_write(c, buf, (size_t) k + size);
        }
        request_done(c);
        return k < 0 ? k : 0;
}

int http_conn_reply_json(HttpConn *c, unsigned status, json_t *body) {
        _cleanup_free_ char *s = NULL;
        size_t n;

        s = json_dumps(body, JSON_COMPACT);
        if (!s)
                return http_conn_reply_error(c, 500, "server_error", "internal_error", "Out of memory");
        /* One newline at the end, as curl users expect. */
        n = strlen(s);
        char *t = realloc(s, n + 2);
        if (!t)
                return http_conn_reply_error(c, 500, "server_error", "internal_error", "Out of memory");
        s = t;
        memcpy(s + n, "\n", 2);
        return reply_raw(c, status, "application/json", s, n + 1, NULL);
}

int http_conn_reply_json_take(HttpConn *c, unsigned status, json_t *body) {
        int r;

        if (!body)
                return http_conn_reply_error(c, 500, "server_error", "internal_error",
                                             "Could not build the response");
        r = http_conn_reply_json(c, status, body);
        json_decref(body);
        return r;
}

static int reply_error_va(HttpConn *c, unsigned status, const char *type, const char *code,
                          const char *extra, const char *format, va_list ap) _printf_(6, 0);
static int reply_error_va(HttpConn *c, unsigned status, const char *type, const char *code,
                          const char *extra, const char *format, va_list ap) {
        _cleanup_free_ char *msg = NULL, *s = NULL;
        json_t *j;

        if (vasprintf(&msg, format, ap) < 0)
                msg = NULL;
        j = json_pack("{s:{s:s,s:s,s:s?,s:n}}", "error", "message", msg ? msg : "error", "type",
                      type, "code", code, "param");
        s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!s)
                return reply_raw(c, 500, "application/json", "{}\n", 3, NULL);
        size_t n = strlen(s);
        char *t = realloc(s, n + 2);
        if (!t)
                return reply_raw(c, 500, "application/json", "{}\n", 3, NULL);
        s = t;
        memcpy(s + n, "\n", 2);
        return reply_raw(c, status, "application/json", s, n + 1, extra);
}

int http_conn_reply_error(HttpConn *c, unsigned status, const char *type, const char *code,
                          const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = reply_error_va(c, status, type, code, NULL, format, ap);
        va_end(ap);
        return r;
}

static int reply_error_extra(HttpConn *c, unsigned status, const char *type, const char *code,
                             const char *extra, const char *format, ...) _printf_(6, 7);
static int reply_error_extra(HttpConn *c, unsigned status, const char *type, const char *code,
                             const char *extra, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = reply_error_va(c, status, type, code, extra, format, ap);
        va_end(ap);
        return r;
}

int http_conn_reply_not_allowed(HttpConn *c, const char *allow) {
        char extra[128];

        snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
        return reply_error_extra(c, 405, "invalid_request_error", "method_not_allowed", extra,
                                 "Method %s not allowed here (allowed: %s)",
                                 strna(c->req.method_name), allow);
}

int http_conn_reply_errno(HttpConn *c, int error, const char *what) {
        error = error < 0 ? -error : error;
        switch (error) {
        case ENOENT:
                return http_conn_reply_error(c, 404, "invalid_request_error", "not_found",
                                             "%s: not found", what);
        case EBUSY:
        case EAGAIN:
                return http_conn_reply_error(c, 503, "server_busy", "busy",
                                             "%s: the server is busy, try again later", what);
        case E2BIG:
        case ENOSPC:
                return http_conn_reply_error(c, 400, "invalid_request_error",
                                             "context_length_exceeded", "%s: request exceeds the configured limits", what);
        case EINVAL:
        case ERANGE:
                return http_conn_reply_error(c, 400, "invalid_request_error", "invalid_value",
                                             "%s: invalid parameters", what);
        case EPERM:
        case EACCES:
                return http_conn_reply_error(c, 403, "permission_error", "forbidden",
                                             "%s: permission denied", what);
        case EEXIST:
                return http_conn_reply_error(c, 409, "invalid_request_error", "conflict",
                                             "%s: already exists", what);
        case ESHUTDOWN:
                return http_conn_reply_error(c, 503, "server_error", "shutdown",
                                             "%s: the server is shutting down", what);
        default:
                return http_conn_reply_error(c, 500, "server_error", "internal_error",
                                             "%s: %s", what, strerror(error));
        }
}

/* One chunk of the chunked encoding, in one write. */
static void write_chunk(HttpConn *c, const char *data, size_t n) {
        _cleanup_free_ char *buf = NULL;
        int k;

        if (n == 0)
                return;
        buf = malloc(n + 32);
        if (!buf)
                return;
        k = snprintf(buf, 32, "%zx\r\n", n);
        memcpy(buf + k, data, n);
        memcpy(buf + k + n, "\r\n", 2);
        conn_write(c, buf, (size_t) k + n + 2);
}

int http_conn_stream_begin(HttpConn *c) {
        char head[512];
        int k;

        if (!c->busy || c->streaming)
                return -EALREADY;
        c->streaming = true;
        k = format_head(c, head, sizeof head, 200, "text/event-stream", -1, "Cache-Control: no-cache\r\n");
        if (k < 0)
                return k;
        conn_write(c, head, (size_t) k);
        return 0;
}

int http_conn_stream_event(HttpConn *c, json_t *data) {
        _cleanup_free_ char *s = NULL, *ev = NULL;
        int k;

        if (!c->streaming)
                return -EALREADY;
        _unused_ _cleanup_(http_conn_unrefp) HttpConn *ref = http_conn_ref(c);
        s = json_dumps(data, JSON_COMPACT);
        if (!s)
                return -ENOMEM;
        k = asprintf(&ev, "data: %s\n\n", s);
        if (k < 0)
                return -ENOMEM;
        write_chunk(c, ev, (size_t) k);
        return 0;
}

int http_conn_stream_end(HttpConn *c) {
        static const char done[] = "data: [DONE]\n\n";

        if (!c->streaming)
                return -EALREADY;
        _unused_ _cleanup_(http_conn_unrefp) HttpConn *ref = http_conn_ref(c);
        write_chunk(c, done, sizeof done - 1);
        conn_write(c, "0\r\n\r\n", 5);
        request_done(c);
        return 0;
}

/* ---- input ---- */

static void parse_error(HttpConn *c) {
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        unsigned status = c->error_status;

        /* Errors before a request is complete: answer, then close (the stream is out of sync). */
        c->closing = true;
        c->keep_alive = false;
        c->busy = true;
        if (status == 0)
                status = 400;
        conn_set_state(c, HTTP_CONN_BUSY);
        switch (status) {
        case 413:
                (void) http_conn_reply_error(c, 413, "invalid_request_error", "request_too_large",
                                             "Request body larger than %zu bytes",
                                             c->ctx->limits.max_body_bytes);
                break;
        case 431:
                (void) http_conn_reply_error(c, 431, "invalid_request_error", "headers_too_large",
                                             "Request headers larger than %zu bytes",
                                             c->ctx->limits.max_header_bytes);
                break;
        case 500:
                (void) http_conn_reply_error(c, 500, "server_error", "internal_error", "Out of memory");
                break;
        default:
                if (e == HPE_INVALID_VERSION)
                        (void) http_conn_reply_error(c, 505, "invalid_request_error", "bad_version",
                                                     "HTTP version not supported");
                else
                        (void) http_conn_reply_error(c, 400, "invalid_request_error", "bad_request",
                                                     "Malformed HTTP request: %s", http_errno_description(e));
        }
}

static void dispatch(HttpConn *c) {
        const char *q;

        c->busy = true;
        conn_set_state(c, HTTP_CONN_BUSY);
        if (!c->req.body) {
                c->req.body = strdup("");
                if (!c->req.body) {
                        (void) http_conn_reply_error(c, 500, "server_error", "internal_error", "Out of memory");
                        return;
                }
        }
        q = strchr(c->req.url, '?');
        c->req.path = q ? strndup(c->req.url, (size_t) (q - c->req.url)) : strdup(c->req.url);
        if (!c->req.path) {
                (void) http_conn_reply_error(c, 500, "server_error", "internal_error", "Out of memory");
                return;
        }
        http_route(c, &c->req);
}

static void conn_process(HttpConn *c) {
        http_conn_ref(c);
        c->processing = true;
        while (!c->busy && !c->closing && c->in_size > 0) {
                size_t n;

                if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
                        http_parser_pause(&c->parser, 0);
                n = http_parser_execute(&c->parser, &parser_settings, c->in, c->in_size);
                if (n > c->in_size)
                        n = c->in_size;
                memmove(c->in, c->in + n, c->in_size - n);
                c->in_size -= n;

                if (c->message_complete) {
                        c->message_complete = false;
                        dispatch(c);
                        continue;
                }
                if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
                        parse_error(c);
                        break;
                }
        }
        c->processing = false;
        http_conn_unref(c);
}

void http_conn_feed(HttpConn *c, const void *data, size_t n) {
        size_t need;

        if (!c->ops || c->closing || n == 0)
                return;
        if (size_add_overflow(c->in_size, n, &need))
                return;
        if (need > c->in_alloc) {
                size_t a = MAX(need, c->in_alloc * 2);
                char *b = realloc(c->in, a);
                if (!b) {
                        conn_close(c);
                        return;
                }
                c->in = b;
                c->in_alloc = a;
        }
        memcpy(c->in + c->in_size, data, n);
        c->in_size = need;

        /* Pipelined bytes while busy: keep at most one more full request, then stop reading. */
        if (c->busy && c->in_size > c->ctx->limits.max_header_bytes + c->ctx->limits.max_body_bytes &&
            !c->reading_paused && c->ops->set_reading) {
                c->reading_paused = true;
                c->ops->set_reading(c->userdata, false);
        }
        if (!c->processing)
                conn_process(c);
}

void http_conn_timeout(HttpConn *c) {
        if (c->busy || c->closing)
                return;
        _unused_ _cleanup_(http_conn_unrefp) HttpConn *ref = http_conn_ref(c);
        if (c->state == HTTP_CONN_READING) {
                c->keep_alive = false;
                c->closing = true;
                c->busy = true;
                (void) http_conn_reply_error(c, 408, "invalid_request_error", "timeout",
                                             "Request not received in time");
        } else
                conn_close(c);
}
