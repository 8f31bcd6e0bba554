/* The HTTP server's backend on the daemon's Manager, and the [http] config section. */
#include <stdio.h>
#include <string.h>

#include "daemon-config.h"
#include "http-server.h"
#include "log.h"

static int mgr_generate(void *ctx, const Caller *c, const GenParams *p, const GenCallbacks *cb,
                        void *userdata, GenRequest **ret) {
        return manager_generate(ctx, c, p, cb, userdata, ret);
}

static void mgr_cancel(void *ctx, GenRequest *r) {
        gen_request_cancel(r);
}

static void mgr_cancel_caller(void *ctx, const char *caller_id) {
        manager_cancel_caller(ctx, caller_id);
}

static uint64_t mgr_request_id(void *ctx, GenRequest *r) {
        return gen_request_id(r);
}

static int mgr_model_at(void *ctx, size_t i, ModelStatus *ret) {
        ManagedModel *mm = manager_model_at(ctx, i);

        if (!mm)
                return -ENOENT;
        managed_model_status(mm, ret);
        return 0;
}

static int mgr_load_model(void *ctx, const Caller *c, const char *path, const char *name,
                          QdPrecision precision, char **ret_name) {
        ManagedModel *mm = NULL;
        ModelStatus st = {};
        char *n;
        int r;

        r = manager_load_model(ctx, c, path, name, precision, &mm);
        if (r < 0)
                return r;
        if (mm)
                managed_model_status(mm, &st);
        n = strdup(st.name ? st.name : name ? name : path);
        if (!n)
                return -ENOMEM;
        *ret_name = n;
        return 0;
}

static int mgr_unload_model(void *ctx, const Caller *c, const char *name) {
        return manager_unload_model(ctx, c, name);
}

static int mgr_tokenize(void *ctx, const char *model, const char *text, bool add_bos,
                        int32_t **ret_tokens, size_t *ret_n) {
        return manager_tokenize(ctx, model, text, add_bos, ret_tokens, ret_n);
}

static int mgr_detokenize(void *ctx, const char *model, const int32_t *tokens, size_t n, char **ret) {
        return manager_detokenize(ctx, model, tokens, n, ret);
}

static int mgr_set_precision(void *ctx, const Caller *c, const char *model, QdPrecision p,
                             const char *reason) {
        return manager_set_precision(ctx, c, model, p, reason);
}

static void mgr_sampling_defaults(void *ctx, QdSampling *ret) {
        qd_sampling_init(ret);
}

static int mgr_status(void *ctx, json_t **ret) {
        Manager *m = ctx;
        QdEngine *e = manager_engine(m);
        QdDeviceInfo di = {};
        unsigned n = 0, active = 0, queued = 0;
        json_t *dev = json_null(), *j;

        for (ManagedModel *mm; (mm = manager_model_at(m, n)); n++) {
                ModelStatus st = {};
                managed_model_status(mm, &st);
                active += st.active_requests;
                queued += st.queued_requests;
        }
        if (e && qd_engine_device_info(e, &di) >= 0) {
                json_decref(dev);
                dev = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:b,s:b,s:b,s:b}", "name", di.name, "type", di.type,
                                "driver", di.driver, "memory_total", (json_int_t) di.memory_total,
                                "memory_budget", (json_int_t) di.memory_budget, "memory_used",
                                (json_int_t) di.memory_used, "fp16", di.fp16, "int8", di.int8, "int_dot",
                                di.int_dot, "coopmat", di.coopmat);
        }
        j = json_pack("{s:o*,s:i,s:i,s:i}", "device", dev, "models", (int) n, "active_requests", (int) active,
                      "queued_requests", (int) queued);
        if (!j)
                return -ENOMEM;
        *ret = j;
        return 0;
}

static int mgr_start_job(void *ctx, const Caller *c, const JobParams *p, uint64_t *ret_id) {
        Job *j;
        int r;

        r = manager_start_job(ctx, c, p, &j);
        if (r < 0)
                return r;
        *ret_id = job_id(j);
        return 0;
}

static int mgr_job_json(void *ctx, uint64_t id, json_t **ret) {
        Job *j = manager_find_job(ctx, id);
        json_t *o;

        if (!j)
                return -ENOENT;
        o = job_to_json(j);
        if (!o)
                return -ENOMEM;
        *ret = o;
        return 0;
}

static int mgr_cancel_job(void *ctx, const Caller *c, uint64_t id) {
        Job *j = manager_find_job(ctx, id);

        if (!j)
                return -ENOENT;
        if (!c->privileged)
                return -EACCES;
        manager_job_cancel(j);
        return 0;
}

static const HttpBackend manager_backend = {
        .generate = mgr_generate,
        .cancel = mgr_cancel,
        .sampling_defaults = mgr_sampling_defaults,
        .cancel_caller = mgr_cancel_caller,
        .request_id = mgr_request_id,
        .model_at = mgr_model_at,
        .load_model = mgr_load_model,
        .unload_model = mgr_unload_model,
        .tokenize = mgr_tokenize,
        .detokenize = mgr_detokenize,
        .set_precision = mgr_set_precision,
        .status = mgr_status,
        .start_job = mgr_start_job,
        .job_json = mgr_job_json,
        .cancel_job = mgr_cancel_job,
};

static int config_uint(const Config *cfg, const char *key, uint64_t *v) {
        const char *s = config_get(cfg, "http", key);

        if (!s)
                return 0;
        if (config_parse_size(s, v) < 0)
                return log_error_errno(EINVAL, "Invalid [http] %s = %s", key, s);
        return 0;
}

/* The [http] keys and [limits] max_request_bytes, at start and on reload. */
static int limits_from_config(const Config *cfg, HttpLimits *ret) {
        static const char *const known[] = {
                "tcp", "request_timeout_sec", "idle_timeout_sec", "max_header_bytes", "max_connections", NULL,
        };
        HttpLimits l = HTTP_LIMITS_DEFAULT;
        uint64_t v;

        if (cfg) {
                config_warn_unknown(cfg, "http", known);
                if (cfg->max_request_bytes > 0)
                        l.max_body_bytes = cfg->max_request_bytes;
                v = l.request_timeout_usec / 1000000;
                if (config_uint(cfg, "request_timeout_sec", &v) < 0)
                        return -EINVAL;
                l.request_timeout_usec = MAX(v, 1u) * 1000000;
                v = l.idle_timeout_usec / 1000000;
                if (config_uint(cfg, "idle_timeout_sec", &v) < 0)
                        return -EINVAL;
                l.idle_timeout_usec = MAX(v, 1u) * 1000000;
                v = l.max_header_bytes;
                if (config_uint(cfg, "max_header_bytes", &v) < 0)
                        return -EINVAL;
                l.max_header_bytes = CLAMP(v, 1024u, 1024u * 1024);
                v = l.max_connections;
                if (config_uint(cfg, "max_connections", &v) < 0)
                        return -EINVAL;
                l.max_connections = (unsigned) CLAMP(v, 1u, 65536u);
        }
        *ret = l;
        return 0;
}

int http_server_reload(HttpServer *s, Manager *m) {
        HttpLimits l;
        int r;

        /* The listeners stay (a new socket path or TCP address needs a restart). */
        r = limits_from_config(manager_config(m), &l);
        if (r < 0)
                return log_warning_errno(r, "Invalid [http] settings, keeping the old ones: %m");
        http_server_set_limits(s, &l);
        return 0;
}

int http_server_new(Manager *m, HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        const Config *cfg = manager_config(m);
        HttpLimits l;
        const char *path = cfg ? cfg->socket_path : NULL;
        int listen_fd = cfg ? cfg->socket_fd : -EBADF;
        int r;

        if (!path && listen_fd < 0)
                return log_error_errno(EINVAL, "No socket path configured for the HTTP API");
        r = limits_from_config(cfg, &l);
        if (r < 0)
                return r;

        r = http_server_new_with_backend(manager_loop(m), &manager_backend, m, path, listen_fd, &s);
        if (r < 0)
                return log_error_errno(r, "Failed to listen on %s: %m",
                                       listen_fd >= 0 ? "the activated socket" : strna(path));
        http_server_set_limits(s, &l);

        const char *tcp = cfg ? config_get(cfg, "http", "tcp") : NULL;
        if (tcp && *tcp && !streq(tcp, "no") && !streq(tcp, "off")) {
                _cleanup_free_ char *addr = strdup(tcp);
                char *colon = addr ? strrchr(addr, ':') : NULL;
                unsigned port;
                uint16_t bound = 0;

                if (!colon || sscanf(colon + 1, "%u", &port) != 1 || port > 65535)
                        return log_error_errno(EINVAL, "Invalid [http] tcp = %s (want ADDRESS:PORT)", tcp);
                *colon = 0;
                char *a = addr;
                if (a[0] == '[' && colon > a && colon[-1] == ']') {
                        a++;
                        colon[-1] = 0;
                }
                r = http_server_listen_tcp(s, a, (uint16_t) port, &bound);
                if (r < 0)
                        return log_error_errno(r, "Failed to listen on %s (only loopback addresses are allowed): %m", tcp);
                log_info("HTTP API also on TCP %s port %u", a, bound);
        }
        *ret = TAKE_PTR(s);
        return 0;
}
