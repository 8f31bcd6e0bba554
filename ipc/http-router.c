/* Routing of HTTP requests to endpoint handlers, with method checks and management auth. */
#include <http_parser.h>
#include <string.h>

#include "http-router.h"
#include "log.h"

typedef struct Route {
        unsigned method;
        const char *pattern;            /* "/api/models/{}/precision": {} is one segment */
        HttpHandler handler;
        bool manage;                    /* needs a privileged caller */
} Route;

static const Route routes[] = {
        { HTTP_GET,  "/v1/models",                    http_openai_models },
        { HTTP_GET,  "/v1/models/{}",                 http_openai_model },
        { HTTP_POST, "/v1/completions",               http_openai_completions },
        { HTTP_POST, "/v1/chat/completions",          http_openai_chat },
        { HTTP_GET,  "/api/status",                   http_native_status },
        { HTTP_GET,  "/api/models",                   http_native_models },
        { HTTP_POST, "/api/models/load",              http_native_load, true },
        { HTTP_POST, "/api/models/unload",            http_native_unload, true },
        { HTTP_POST, "/api/models/{}/precision",      http_native_precision, true },
        { HTTP_POST, "/api/generate",                 http_native_generate },
        { HTTP_POST, "/api/tokenize",                 http_native_tokenize },
        { HTTP_POST, "/api/detokenize",               http_native_detokenize },
        { HTTP_GET,  "/api/policy",                   http_native_policy },
        { HTTP_POST, "/api/quantize",                 http_native_quantize, true },
        { HTTP_POST, "/api/evaluate",                 http_native_evaluate, true },
        { HTTP_GET,  "/api/jobs/{}",                  http_native_job },
        { HTTP_DELETE, "/api/jobs/{}",                http_native_job_cancel, true },
};

static int unhex(char ch) {
        if (ch >= '0' && ch <= '9')
                return ch - '0';
        if (ch >= 'a' && ch <= 'f')
                return ch - 'a' + 10;
        if (ch >= 'A' && ch <= 'F')
                return ch - 'A' + 10;
        return -1;
}

/* Percent-decodes [s, s+n) into a new string; NULL on a bad escape or an embedded NUL. */
static char *segment_decode(const char *s, size_t n) {
        char *out = malloc(n + 1), *o = out;

        if (!out)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '%') {
                        int hi = i + 2 < n ? unhex(s[i + 1]) : -1;
                        int lo = i + 2 < n ? unhex(s[i + 2]) : -1;
                        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                                return mfree(out);
                        *o++ = (char) (hi * 16 + lo);
                        i += 2;
                } else
                        *o++ = s[i];
        }
        *o = 0;
        return out;
}

/* 1 on a match (with *ret_arg set for {}), 0 otherwise. */
static int match(const char *pattern, const char *path, const char **ret_arg, size_t *ret_arg_size) {
        const char *p = pattern, *s = path;

        *ret_arg = NULL;
        *ret_arg_size = 0;
        while (*p) {
                if (p[0] == '{' && p[1] == '}') {
                        const char *e = strchr(s, '/');
                        size_t n = e ? (size_t) (e - s) : strlen(s);
                        if (n == 0)
                                return 0;
                        *ret_arg = s;
                        *ret_arg_size = n;
                        s += n;
                        p += 2;
                        continue;
                }
                if (*p != *s)
                        return 0;
                p++, s++;
        }
        return *s == 0;
}

void http_route(HttpConn *c, const HttpRequest *req) {
        char allow[64] = "";
        const Route *found = NULL;
        const char *arg = NULL;
        size_t arg_size = 0;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                const char *a;
                size_t an;

                if (!match(routes[i].pattern, req->path, &a, &an))
                        continue;
                if (routes[i].method == req->method) {
                        found = &routes[i];
                        arg = a;
                        arg_size = an;
                        break;
                }
                const char *m = http_method_str(routes[i].method);
                if (!strstr(allow, m) && strlen(allow) + strlen(m) + 3 < sizeof allow) {
                        if (allow[0])
                                strcat(allow, ", ");
                        strcat(allow, m);
                }
        }
        if (!found) {
                if (allow[0])
                        (void) http_conn_reply_not_allowed(c, allow);
                else
                        (void) http_conn_reply_error(c, 404, "invalid_request_error", "not_found",
                                                     "Unknown path %s", req->path);
                return;
        }

        _cleanup_free_ char *decoded = NULL;
        if (arg) {
                decoded = segment_decode(arg, arg_size);
                if (!decoded) {
                        (void) http_conn_reply_error(c, 400, "invalid_request_error", "bad_path",
                                                     "Malformed path segment");
                        return;
                }
        }

        const Caller *caller = http_conn_caller(c);
        if (found->manage) {
                log_info("HTTP %s %s from uid=%d pid=%d (%s)%s", req->method_name, req->path,
                         (int) caller->uid, (int) caller->pid, caller->id,
                         caller->privileged ? "" : ": denied");
                if (!caller->privileged) {
                        (void) http_conn_reply_error(c, 403, "permission_error", "forbidden",
                                                     "Managing models needs root or the daemon's user");
                        return;
                }
        }

        /* The handler may answer (and so free req) before it returns: keep nothing after. */
        r = found->handler(c, req, decoded);
        if (r < 0)
                (void) http_conn_reply_errno(c, r, "request");
        else if (http_conn_unanswered(c))
                (void) http_conn_reply_error(c, 500, "server_error", "internal_error",
                                             "The request was not answered");
}

json_t *http_json_text(const char *s, size_t n) {
        _cleanup_free_ char *out = NULL;
        size_t o = 0;

        if (size_mul_overflow(n, 3, &o) || !(out = malloc(o + 1)))
                return NULL;
        o = 0;
        for (size_t i = 0; i < n;) {
                unsigned char ch = (unsigned char) s[i];
                size_t len = ch < 0x80 ? 1 : (ch >> 5) == 6 ? 2 : (ch >> 4) == 14 ? 3 : (ch >> 3) == 30 ? 4 : 0;
                bool ok = len > 0 && i + len <= n && ch != 0;
                uint32_t cp = len == 1 ? ch : len == 2 ? ch & 0x1f : len == 3 ? ch & 0x0f : ch & 0x07;

                for (size_t k = 1; ok && k < len; k++) {
                        unsigned char cc = (unsigned char) s[i + k];
                        ok = (cc >> 6) == 2;
                        cp = (cp << 6) | (cc & 0x3f);
                }
                /* Overlong forms, surrogates and values past U+10FFFF are invalid too. */
                if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
                           (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff))
                        ok = false;
                if (ok) {
                        memcpy(out + o, s + i, len);
                        o += len;
                        i += len;
                } else {
                        memcpy(out + o, "\xef\xbf\xbd", 3);
                        o += 3;
                        i++;
                }
        }
        return json_stringn(out, o);
}

int http_request_json(HttpConn *c, const HttpRequest *req, json_t **ret) {
        json_error_t err;
        json_t *j;

        j = json_loadb(req->body, req->body_size, JSON_REJECT_DUPLICATES, &err);
        if (!j) {
                (void) http_conn_reply_error(c, 400, "invalid_request_error", "invalid_json",
                                             "Invalid JSON in request body: %s (line %d, column %d)",
                                             err.text, err.line, err.column);
                return -EBADMSG;
        }
        if (!json_is_object(j)) {
                json_decref(j);
                (void) http_conn_reply_error(c, 400, "invalid_request_error", "invalid_json",
                                             "The request body must be a JSON object");
                return -EBADMSG;
        }
        *ret = j;
        return 0;
}

static const char *const precision_names[_QD_PRECISION_MAX] = {
        [QD_PRECISION_F16] = "fp16",
        [QD_PRECISION_INT8] = "int8",
        [QD_PRECISION_INT4] = "int4",
};

QdPrecision http_precision_from_string(const char *s) {
        if (!s)
                return QD_PRECISION_INVALID;
        if (streq(s, "auto"))
                return QD_PRECISION_AUTO;
        for (int i = 0; i < _QD_PRECISION_MAX; i++)
                if (streq(s, precision_names[i]))
                        return (QdPrecision) i;
        return QD_PRECISION_INVALID;
}

const char *http_precision_to_string(QdPrecision p) {
        if (p == QD_PRECISION_AUTO)
                return "auto";
        if (p >= 0 && p < _QD_PRECISION_MAX)
                return precision_names[p];
        return "invalid";
}
