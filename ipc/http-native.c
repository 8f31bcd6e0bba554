/* Native endpoints under /api/, mirroring the D-Bus API: status, models, load/unload,
 * tokenize/detokenize, precision pinning, the policy state and quantize/evaluate jobs. */
#include <string.h>

#include "http-router.h"
#include "log.h"

static const HttpBackend *backend(HttpConn *c, void **ret_ctx) {
        HttpContext *ctx = http_conn_context(c);
        *ret_ctx = ctx->backend_ctx;
        return ctx->backend;
}

/* A string member: NULL when absent; a 400 answered (and -EBADMSG) when of another type. */
static int get_string(HttpConn *c, json_t *o, const char *key, bool required, const char **ret) {
        json_t *v = json_object_get(o, key);

        if (!v || json_is_null(v)) {
                if (required) {
                        (void) http_conn_reply_error(c, 400, "invalid_request_error", "missing_parameter",
                                                     "Missing required parameter '%s'", key);
                        return -EBADMSG;
                }
                *ret = NULL;
                return 0;
        }
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
                (void) http_conn_reply_error(c, 400, "invalid_request_error", "invalid_type",
                                             "Parameter '%s' must be a string", key);
                return -EBADMSG;
        }
        *ret = json_string_value(v);
        return 0;
}

json_t *http_model_status_json(const ModelStatus *st) {
        return json_pack("{s:s,s:s?,s:s,s:s,s:I,s:i,s:i,s:i,s:i,s:s,s:s,s:i,s:i,s:I,s:I,s:I,s:b}",
                         "name", st->name, "path", st->path, "arch", st->info.arch,
                         "file_type", st->info.file_type, "n_params", (json_int_t) st->info.n_params,
                         "n_vocab", (int) st->info.n_vocab, "n_ctx_train", (int) st->info.n_ctx_train,
                         "n_embd", (int) st->info.n_embd, "n_layer", (int) st->info.n_layer,
                         "precision", http_precision_to_string(st->precision),
                         "pinned", http_precision_to_string(st->pinned),
                         "active_requests", (int) st->active_requests,
                         "queued_requests", (int) st->queued_requests,
                         "host_bytes", (json_int_t) st->info.host_bytes,
                         "device_bytes", (json_int_t) st->info.device_bytes,
                         "last_used_usec", (json_int_t) st->last_used_usec,
                         "has_chat_template", st->info.has_chat_template);
}

int http_native_status(HttpConn *c, const HttpRequest *req, const char *arg) {
        void *bctx;
        const HttpBackend *b = backend(c, &bctx);
        json_t *j = NULL;
        int r;

        if (b->status) {
                r = b->status(bctx, &j);
                if (r < 0)
                        return http_conn_reply_errno(c, r, "status");
        } else
                j = json_object();
        if (!j)
                return -ENOMEM;
        json_object_set_new(j, "version", json_string(QUANTD_HTTP_VERSION));
        return http_conn_reply_json_take(c, 200, j);
}

int http_native_models(HttpConn *c, const HttpRequest *req, const char *arg) {
        void *bctx;
        const HttpBackend *b = backend(c, &bctx);
        json_t *a = json_array();

        if (!a)
                return -ENOMEM;
        for (size_t i = 0; b->model_at; i++) {
                ModelStatus st = {};
                if (b->model_at(bctx, i, &st) < 0)
                        break;
                json_array_append_new(a, http_model_status_json(&st));
        }
        return http_conn_reply_json_take(c, 200, json_pack("{s:o}", "models", a));
}

int http_native_load(HttpConn *c, const HttpRequest *req, const char *arg) {
        void *bctx;
        const HttpBackend *b = backend(c, &bctx);
        json_t *body = NULL;
        const char *path, *name, *prec;
        _cleanup_free_ char *loaded = NULL;
        QdPrecision p = QD_PRECISION_AUTO;
        int r;

        if (http_request_json(c, req, &body) < 0)
                return 0;
        if (get_string(c, body, "path", true, &path) < 0 || get_string(c, body, "name", false, &name) < 0 ||
            get_string(c, body, "precision", false, &prec) < 0)
                goto done;
        if (prec) {
                p = http_precision_from_string(prec);
                if (p == QD_PRECISION_INVALID) {
                        (void) http_conn_reply_error(c, 400, "invalid_request_error", "invalid_value",
                                                     "Unknown precision '%s' (fp16, int8, int4, auto)", prec);
                        goto done;
                }
        }
        r = b->load_model ? b->load_model(bctx, http_conn_caller(c), path, name, p, &loaded) : -EOPNOTSUPP;
        if (r < 0) {
                log_info_errno(r, "HTTP load of %s failed: %m", path);
                (void) http_conn_reply_errno(c, r, "load");
                goto done;
        }
        (void) http_conn_reply_json_take(c, 200, json_pack("{s:s,s:b}", "name", loaded ? loaded : strna(name), "loaded", 1));
done:
        json_decref(body);
        return 0;
}

int http_native_unload(HttpConn *c, const HttpRequest *req, const char *arg) {
        void *bctx;
        const HttpBackend *b = backend(c, &bctx);
        json_t *body = NULL;
        const char *name;
        int r;

        if (http_request_json(c, req, &body) < 0)
                return 0;
        if (get_string(c, body, "name", true, &name) < 0)
                goto done;
        r = b->unload_model ? b->unload_model(bctx, http_conn_caller(c), name) : -EOPNOTSUPP;
        if (r < 0)
                (void) http_conn_reply_errno(c, r, name);
        else
                (void) http_conn_reply_json_take(c, 200, json_pack("{s:s,s:b}", "name", name, "unloaded", 1));
done:
        json_decref(body);
        return 0;
}

int http_native_tokenize(HttpConn *c, const HttpRequest *req, const char *arg) {
        void *bctx;
        const HttpBackend *b = backend(c, &bctx);
        json_t *body = NULL, *bos;
        const char *model, *text;
        _cleanup_free_ int32_t *tokens = NULL;
        size_t n = 0;
        int r;

        if (http_request_json(c, req, &body) < 0)
                return 0;
        if (get_string(c, body, "model", true, &model) < 0 || get_string(c, body, "text", true, &text) < 0)
                goto done;
        bos = json_object_get(body, "add_bos");
        if (bos && !json_is_boolean(bos)) {
                (void) http_conn_reply_error(c, 400, "invalid_request_error", "invalid_type",
                                             "Parameter 'add_bos' must be a boolean");
                goto done;
        }
        r = b->tokenize ? b->tokenize(bctx, model, text, bos ? json_is_true(bos) : true, &tokens, &n) : -EOPNOTSUPP;
        if (r < 0) {
                (void) http_conn_reply_errno(c, r, model);
                goto done;
        }
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++)
                json_array_append_new(a, json_integer(tokens[i]));
        (void) http_conn_reply_json_take(c, 200, a ? json_pack("{s:o,s:I}", "tokens", a, "count", (json_int_t) n) : NULL);
done:
        json_decref(body);
        return 0;
}

int http_native_detokenize(HttpConn *c, const HttpRequest *req, const char *arg) {
        void *bctx;
        const HttpBackend *b = backend(c, &bctx);
        json_t *body = NULL, *a;
        const char *model;
        _cleanup_free_ int32_t *tokens = NULL;
        _cleanup_free_ char *text = NULL;
        size_t n;
        int r;

        if (http_request_json(c, req, &body) < 0)
                return 0;
        if (get_string(c, body, "model", true, &model) < 0)
                goto done;
        a = json_object_get(body, "tokens");
        if (!json_is_array(a)) {
                (void) http_conn_reply_error(c, 400, "invalid_request_error", "invalid_type",
                                             "Parameter 'tokens' must be an array of integers");
                goto done;
        }
        n = json_array_size(a);
        tokens = malloc(MAX(n, 1u) * sizeof(int32_t));
        if (!tokens) {
                (void) http_conn_reply_errno(c, -ENOMEM, "detokenize");
                goto done;
        }
        for (size_t i = 0; i < n; i++) {
                json_t *t = json_array_get(a, i);
                if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX) {
                        (void) http_conn_reply_error(c, 400, "invalid_request_error", "invalid_value",
                                                     "tokens[%zu] is not a valid token id", i);
                        goto done;
                }
                tokens[i] = (int32_t) json_integer_value(t);
        }
        r = b->detokenize ? b->detokenize(bctx, model, tokens, n, &text) : -EOPNOTSUPP;
        if (r < 0)
                (void) http_conn_reply_errno(c, r, model);
        else
                (void) http_conn_reply_json_take(c, 200, json_pack("{s:o}", "text", http_json_text(text, strlen(text))));
done:
        json_decref(body);
        return 0;
}

int http_native_precision(HttpConn *c, const HttpRequest *req, const char *arg) {
        void *bctx;
        const HttpBackend *b = backend(c, &bctx);
        json_t *body = NULL;
        const char *prec, *reason;
        QdPrecision p;
        int r;

        if (http_request_json(c, req, &body) < 0)
                return 0;
        if (get_string(c, body, "precision", true, &prec) < 0 ||
            get_string(c, body, "reason", false, &reason) < 0)
                goto done;
        p = http_precision_from_string(prec);
        if (p == QD_PRECISION_INVALID) {
                (void) http_conn_reply_error(c, 400, "invalid_request_error", "invalid_value",
                                             "Unknown precision '%s' (fp16, int8, int4, auto)", prec);
                goto done;
        }
        r = b->set_precision ? b->set_precision(bctx, http_conn_caller(c), arg, p, reason ? reason : "http")
                             : -EOPNOTSUPP;
        if (r < 0)
                (void) http_conn_reply_errno(c, r, arg);
        else
                (void) http_conn_reply_json_take(c, 200, json_pack("{s:s,s:s}", "model", arg, "precision", prec));
done:
        json_decref(body);
        return 0;
}

int http_native_policy(HttpConn *c, const HttpRequest *req, const char *arg) {
        HttpContext *ctx = http_conn_context(c);
        json_t *j = NULL, *models;
        int r;

        if (!ctx->policy_hook)
                return http_conn_reply_json_take(c, 200, json_pack("{s:b}", "available", 0));
        /* The same object as D-Bus GetPolicy(): the models' precisions, then the policy's state. */
        j = json_object();
        models = json_array();
        if (!j || !models) {
                json_decref(j);
                json_decref(models);
                return -ENOMEM;
        }
        for (size_t i = 0; ctx->backend->model_at; i++) {
                ModelStatus st = {};
                if (ctx->backend->model_at(ctx->backend_ctx, i, &st) < 0)
                        break;
                json_array_append_new(models, json_pack("{s:s, s:s, s:s, s:b}", "name", st.name, "precision",
                                                        http_precision_to_string(st.precision), "pinned",
                                                        http_precision_to_string(st.pinned), "policy_controlled",
                                                        st.pinned == QD_PRECISION_AUTO));
        }
        json_object_set_new(j, "models", models);
        json_object_set_new(j, "policy", json_string("active"));
        r = ctx->policy_hook(ctx->policy_userdata, j);
        if (r < 0) {
                json_decref(j);
                return http_conn_reply_errno(c, r, "policy");
        }
        if (!json_object_get(j, "available"))
                json_object_set_new(j, "available", json_true());
        return http_conn_reply_json_take(c, 200, j);
}

/* A non-negative integer member, 0 when absent; a 400 answered (and -EBADMSG) otherwise. */
static int get_uint(HttpConn *c, json_t *o, const char *key, uint64_t *ret) {
        json_t *v = json_object_get(o, key);

        if (!v || json_is_null(v)) {
                *ret = 0;
                return 0;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
                (void) http_conn_reply_error(c, 400, "invalid_request_error", "invalid_type",
                                             "Parameter '%s' must be a non-negative integer", key);
                return -EBADMSG;
        }
        *ret = (uint64_t) json_integer_value(v);
        return 0;
}

static int start_job(HttpConn *c, const HttpRequest *req, JobKind kind) {
        void *bctx;
        const HttpBackend *b = backend(c, &bctx);
        json_t *body = NULL;
        JobParams p = { .kind = kind };
        uint64_t id = 0;
        int r;

        if (http_request_json(c, req, &body) < 0)
                return 0;
        if (get_string(c, body, "model", true, &p.model) < 0 || get_uint(c, body, "ctx", &p.ctx) < 0)
                goto done;
        if (kind == JOB_QUANTIZE) {
                if (get_string(c, body, "type", false, &p.type) < 0 ||
                    get_string(c, body, "method", false, &p.method) < 0 ||
                    get_string(c, body, "calibration", false, &p.calib) < 0 ||
                    get_uint(c, body, "samples", &p.samples) < 0)
                        goto done;
        } else if (get_string(c, body, "text_file", false, &p.text_file) < 0 ||
                   get_string(c, body, "text", false, &p.text) < 0 ||
                   get_string(c, body, "reference", false, &p.ref) < 0 ||
                   get_uint(c, body, "max_windows", &p.max_windows) < 0)
                goto done;
        r = b->start_job ? b->start_job(bctx, http_conn_caller(c), &p, &id) : -EOPNOTSUPP;
        if (r < 0) {
                (void) http_conn_reply_errno(c, r, kind == JOB_QUANTIZE ? "quantize" : "evaluate");
                goto done;
        }
        (void) http_conn_reply_json_take(c, 202, json_pack("{s:I,s:s}", "id", (json_int_t) id, "state", "queued"));
done:
        json_decref(body);
        return 0;
}

int http_native_quantize(HttpConn *c, const HttpRequest *req, const char *arg) {
        return start_job(c, req, JOB_QUANTIZE);
}

int http_native_evaluate(HttpConn *c, const HttpRequest *req, const char *arg) {
        return start_job(c, req, JOB_EVALUATE);
}

static int parse_job_id(const char *arg, uint64_t *ret) {
        char *end;
        uint64_t v;

        if (!arg || !*arg || *arg < '0' || *arg > '9')
                return -ENOENT;
        errno = 0;
        v = strtoull(arg, &end, 10);
        if (errno != 0 || *end)
                return -ENOENT;
        *ret = v;
        return 0;
}

int http_native_job(HttpConn *c, const HttpRequest *req, const char *arg) {
        void *bctx;
        const HttpBackend *b = backend(c, &bctx);
        json_t *j = NULL;
        uint64_t id = 0;
        int r;

        r = parse_job_id(arg, &id);
        if (r >= 0)
                r = b->job_json ? b->job_json(bctx, id, &j) : -EOPNOTSUPP;
        if (r < 0)
                return http_conn_reply_errno(c, r, "job");
        return http_conn_reply_json_take(c, 200, j);
}

int http_native_job_cancel(HttpConn *c, const HttpRequest *req, const char *arg) {
        void *bctx;
        const HttpBackend *b = backend(c, &bctx);
        uint64_t id = 0;
        int r;

        r = parse_job_id(arg, &id);
        if (r >= 0)
                r = b->cancel_job ? b->cancel_job(bctx, http_conn_caller(c), id) : -EOPNOTSUPP;
        if (r < 0)
                return http_conn_reply_errno(c, r, "job");
        return http_conn_reply_json_take(c, 200, json_pack("{s:I,s:b}", "id", (json_int_t) id, "cancelled", 1));
}
