/* The manager: engine, resident models (load, unload, LRU eviction, idle unload), listeners. */
#include <inttypes.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "manager-internal.h"
#include "manager-jobs.h"

uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

void manager_notify_models_changed(Manager *m) {
        for (size_t i = 0; i < m->n_listeners; i++)
                if (m->listeners[i].models_changed)
                        m->listeners[i].models_changed(m, m->listeners[i].userdata);
}

void manager_notify_precision_changed(Manager *m, ManagedModel *mm, QdPrecision from, QdPrecision to,
                                      const char *reason) {
        log_info("Model %s: precision %s -> %s (%s).", mm->name, qd_precision_to_string(from),
                 qd_precision_to_string(to), strna(reason));
        for (size_t i = 0; i < m->n_listeners; i++)
                if (m->listeners[i].precision_changed)
                        m->listeners[i].precision_changed(m, mm->name, from, to, reason,
                                                          m->listeners[i].userdata);
        manager_notify_models_changed(m);
}

int manager_add_listener(Manager *m, const ManagerListener *l) {
        ManagerListener *n = realloc(m->listeners, (m->n_listeners + 1) * sizeof(ManagerListener));
        if (!n)
                return -ENOMEM;
        m->listeners = n;
        m->listeners[m->n_listeners++] = *l;
        return 0;
}

void manager_remove_listener(Manager *m, void *userdata) {
        for (size_t i = 0; i < m->n_listeners;)
                if (m->listeners[i].userdata == userdata) {
                        memmove(m->listeners + i, m->listeners + i + 1,
                                (m->n_listeners - i - 1) * sizeof(ManagerListener));
                        m->n_listeners--;
                } else
                        i++;
}

uv_loop_t *manager_loop(Manager *m) {
        return m->loop;
}

const Config *manager_config(Manager *m) {
        return m->config;
}

QdEngine *manager_engine(Manager *m) {
        return m->engine;
}

size_t manager_n_models(Manager *m) {
        return m->n_models;
}

ManagedModel *manager_model_at(Manager *m, size_t i) {
        return i < m->n_models ? m->models[i] : NULL;
}

ManagedModel *manager_find_model(Manager *m, const char *name) {
        if (!name)
                return NULL;
        for (size_t i = 0; i < m->n_models; i++)
                if (streq(m->models[i]->name, name))
                        return m->models[i];
        return NULL;
}

const char *managed_model_name(ManagedModel *mm) {
        return mm->name;
}

QdModel *managed_model_qd(ManagedModel *mm) {
        return mm->model;
}

unsigned manager_n_waiting(Manager *m) {
        return atomic_load(&m->n_waiting);
}

unsigned manager_n_live(Manager *m) {
        unsigned n = 0;
        for (size_t i = 0; i < m->n_models; i++)
                n += m->models[i]->n_live;
        return n;
}

uint64_t manager_device_bytes(Manager *m) {
        uint64_t sum = 0;
        for (size_t i = 0; i < m->n_models; i++) {
                QdModelInfo info;
                qd_model_info(m->models[i]->model, &info);
                sum += info.device_bytes;
        }
        return sum;
}

void managed_model_status(ManagedModel *mm, ModelStatus *ret) {
        *ret = (ModelStatus) {
                .name = mm->name,
                .path = mm->path,
                .precision = qd_model_get_precision(mm->model),
                .pinned = mm->pinned,
                .last_used_usec = mm->last_used_usec,
        };
        qd_model_info(mm->model, &ret->info);
        pthread_mutex_lock(&mm->lock);
        ret->active_requests = mm->n_active;
        ret->queued_requests = (unsigned) mm->n_pending;
        ret->token_rate_cap = mm->token_rate;
        pthread_mutex_unlock(&mm->lock);
}

void manager_set_token_rate(Manager *m, double tokens_per_s) {
        ManagedModel *mm;

        tokens_per_s = tokens_per_s > 0 ? tokens_per_s : 0;
        if (m->token_rate != tokens_per_s && tokens_per_s > 0)
                log_info("Token rate: at most %.1f tokens/s per model.", tokens_per_s);
        else if (m->token_rate != tokens_per_s)
                log_info("Token rate: no cap.");
        m->token_rate = tokens_per_s;
        for (size_t i = 0; (mm = manager_model_at(m, i)); i++) {
                pthread_mutex_lock(&mm->lock);
                mm->token_rate = tokens_per_s;
                /* A worker waiting out the old cap re-reads it at once. */
                pthread_cond_signal(&mm->cond);
                pthread_mutex_unlock(&mm->lock);
        }
}

double manager_token_rate(Manager *m) {
        return m->token_rate;
}

static void async_closed(uv_handle_t *h) {
        ManagedModel *mm = h->data;

        pthread_mutex_destroy(&mm->lock);
        pthread_mutex_destroy(&mm->ev_lock);
        pthread_cond_destroy(&mm->cond);
        free(mm->pending);
        free(mm->want_reason);
        free(mm->name);
        free(mm->path);
        free(mm);
}

static void async_cb(uv_async_t *h) {
        model_deliver_events(h->data);
}

/* Stops the worker, frees the engine model and detaches mm from the manager. */
static void managed_model_remove(Manager *m, ManagedModel *mm, const char *reason) {
        for (size_t i = 0; i < m->n_models; i++)
                if (m->models[i] == mm) {
                        memmove(m->models + i, m->models + i + 1, (m->n_models - i - 1) * sizeof(ManagedModel *));
                        m->n_models--;
                        break;
                }
        mm->removed = true;
        model_worker_stop(mm, reason);
        mm->model = qd_model_free(mm->model);
        uv_close((uv_handle_t *) &mm->async, async_closed);
        log_info("Model %s unloaded.", mm->name);
}

static bool model_is_idle(ManagedModel *mm) {
        return mm->n_live == 0;
}

/* Evicts least recently used idle models (never keep) until the budget holds with extra
 * bytes more (a variant about to be prepared). */
static void enforce_budget_with(Manager *m, ManagedModel *keep, uint64_t extra) {
        uint64_t budget = m->config->memory_budget;

        if (budget == 0)
                return;
        while (manager_device_bytes(m) > budget || extra > budget - manager_device_bytes(m)) {
                ManagedModel *lru = NULL;
                for (size_t i = 0; i < m->n_models; i++) {
                        ManagedModel *mm = m->models[i];
                        if (mm == keep || !model_is_idle(mm))
                                continue;
                        if (!lru || mm->last_used_usec < lru->last_used_usec)
                                lru = mm;
                }
                if (!lru) {
                        log_warning("Device memory budget of %" PRIu64 " bytes exceeded by busy models, keeping them.",
                                    budget);
                        return;
                }
                log_info("Evicting model %s (least recently used) to stay within the memory budget.", lru->name);
                managed_model_remove(m, lru, "cancelled");
        }
}

void manager_enforce_budget(Manager *m, ManagedModel *keep) {
        enforce_budget_with(m, keep, 0);
}

static void idle_timer_cb(uv_timer_t *t) {
        Manager *m = t->data;
        uint64_t now = now_usec(), timeout = m->config->idle_timeout_usec;
        bool changed = false;

        if (timeout == 0)
                return;
        for (size_t i = 0; i < m->n_models;) {
                ManagedModel *mm = m->models[i];
                if (model_is_idle(mm) && now - mm->last_used_usec >= timeout) {
                        log_info("Model %s idle for %" PRIu64 " s, unloading.", mm->name,
                                 (now - mm->last_used_usec) / 1000000);
                        managed_model_remove(m, mm, "cancelled");
                        changed = true;
                        continue;
                }
                i++;
        }
        if (changed)
                manager_notify_models_changed(m);
}

static void manager_arm_idle_timer(Manager *m) {
        uint64_t timeout = m->config->idle_timeout_usec, period;

        if (m->idle_timer_armed)
                uv_timer_stop(m->idle_timer);
        m->idle_timer_armed = false;
        if (timeout == 0)
                return;
        period = CLAMP(timeout / 1000 / 4, 100, 30000);
        uv_timer_start(m->idle_timer, idle_timer_cb, period, period);
        m->idle_timer_armed = true;
}

/* Finds path inside the model directories when it is relative. */
static int resolve_model_path(Manager *m, const char *path, char **ret) {
        int r;

        if (path[0] == '/')
                return config_model_path_allowed(m->config, path, ret);
        if (strstr(path, ".."))
                return -EPERM;
        r = -ENOENT;
        for (char **d = m->config->model_dirs; d && *d; d++) {
                _cleanup_free_ char *p = NULL;
                if (asprintf(&p, "%s/%s", *d, path) < 0)
                        return -ENOMEM;
                r = config_model_path_allowed(m->config, p, ret);
                if (r != -ENOENT)
                        return r;
        }
        return r;
}

int manager_resolve_model_path(Manager *m, const char *path, char **ret) {
        return resolve_model_path(m, path, ret);
}

static char *default_model_name(const char *path) {
        const char *b = strrchr(path, '/');
        size_t n;

        b = b ? b + 1 : path;
        n = strlen(b);
        if (n > 5 && strcasecmp(b + n - 5, ".gguf") == 0)
                n -= 5;
        return strndup(b, n);
}

int manager_load_prepare(Manager *m, const Caller *c, const char *path, const char *name, QdPrecision precision,
                         char **ret_resolved, char **ret_name, ManagedModel **ret_existing) {
        _cleanup_free_ char *resolved = NULL, *n = NULL;
        ManagedModel *mm;
        int r;

        if (c && !c->privileged)
                return -EACCES;
        if (!path || !*path || precision == QD_PRECISION_INVALID || precision >= _QD_PRECISION_MAX)
                return -EINVAL;
        r = resolve_model_path(m, path, &resolved);
        if (r < 0)
                return r;
        n = name && *name ? strdup(name) : default_model_name(resolved);
        if (!n)
                return -ENOMEM;
        if (strlen(n) > 128 || strchr(n, '/'))
                return -EINVAL;
        mm = manager_find_model(m, n);
        if (mm) {
                if (!streq(mm->path, resolved))
                        return -EEXIST;
                *ret_existing = mm;
                return 1;
        }
        *ret_resolved = TAKE_PTR(resolved);
        *ret_name = TAKE_PTR(n);
        return 0;
}

int manager_adopt_model(Manager *m, const char *caller_id, uid_t uid, char *resolved, char *name, QdModel *model,
                        QdPrecision precision, uint64_t t0, ManagedModel **ret) {
        ManagedModel *mm, **nl;
        int r;

        /* A load of the same name may have finished while this one ran (asynchronous loads). */
        mm = manager_find_model(m, name);
        if (mm) {
                r = streq(mm->path, resolved) ? 0 : -EEXIST;
                qd_model_free(model);
                free(resolved);
                free(name);
                if (r >= 0 && ret)
                        *ret = mm;
                return r;
        }
        mm = calloc(1, sizeof(ManagedModel));
        if (!mm) {
                qd_model_free(model);
                free(resolved);
                free(name);
                return -ENOMEM;
        }
        mm->manager = m;
        mm->name = name;
        mm->path = resolved;
        mm->model = model;
        mm->pinned = QD_PRECISION_AUTO;
        mm->want_precision = QD_PRECISION_INVALID;
        mm->max_batch = m->config->max_batch;
        mm->token_rate = m->token_rate;
        pthread_mutex_init(&mm->lock, NULL);
        pthread_mutex_init(&mm->ev_lock, NULL);
        /* CLOCK_MONOTONIC: the worker paces steps under a token-rate cap with timed waits. */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&mm->cond, &ca);
        pthread_condattr_destroy(&ca);
        mm->async.data = mm;

        r = uv_async_init(m->loop, &mm->async, async_cb);
        if (r < 0) {
                mm->model = qd_model_free(mm->model);
                pthread_mutex_destroy(&mm->lock);
                pthread_mutex_destroy(&mm->ev_lock);
                pthread_cond_destroy(&mm->cond);
                free(mm->name);
                free(mm->path);
                free(mm);
                return r;
        }
        nl = realloc(m->models, (m->n_models + 1) * sizeof(ManagedModel *));
        if (nl)
                m->models = nl;
        r = nl ? model_worker_start(mm) : -ENOMEM;
        if (r < 0) {
                /* The handle was initialised: close it, async_closed() frees mm. */
                mm->model = qd_model_free(mm->model);
                uv_close((uv_handle_t *) &mm->async, async_closed);
                return r;
        }
        m->models[m->n_models++] = mm;
        mm->last_used_usec = now_usec();
        {
                QdModelInfo info;
                qd_model_info(mm->model, &info);
                log_info("Model %s loaded from %s in %.1f ms (%s, %" PRIu64 " parameters, %s, %" PRIu64 " device bytes).",
                         mm->name, mm->path, (mm->last_used_usec - t0) / 1000.0, info.arch, info.n_params,
                         info.file_type, info.device_bytes);
                if (caller_id)
                        log_info("Model %s was loaded on behalf of %s (uid %u).", mm->name, caller_id, (unsigned) uid);
        }
        if (precision != QD_PRECISION_AUTO) {
                mm->pinned = precision;
                model_request_precision(mm, precision, "load option");
        }
        manager_enforce_budget(m, mm);
        manager_notify_models_changed(m);
        if (ret)
                *ret = mm;
        return 0;
}

int manager_load_model(Manager *m, const Caller *c, const char *path, const char *name,
                       QdPrecision precision, ManagedModel **ret) {
        char *resolved = NULL, *n = NULL;
        ManagedModel *existing = NULL;
        QdModel *model = NULL;
        uint64_t t0;
        int r;

        r = manager_load_prepare(m, c, path, name, precision, &resolved, &n, &existing);
        if (r < 0)
                return r;
        if (r > 0) {
                if (ret)
                        *ret = existing;
                return 0;
        }
        t0 = now_usec();
        r = qd_model_load(m->engine, resolved, &model);
        if (r < 0) {
                log_error_errno(r, "Failed to load model %s: %m", resolved);
                free(resolved);
                free(n);
                return r;
        }
        return manager_adopt_model(m, c ? strna(c->id) : NULL, c ? c->uid : 0, resolved, n, model, precision, t0,
                                   ret);
}

int manager_unload_model(Manager *m, const Caller *c, const char *name) {
        ManagedModel *mm;

        if (c && !c->privileged)
                return -EACCES;
        mm = manager_find_model(m, name);
        if (!mm)
                return -ENOENT;
        if (c)
                log_info("Unloading model %s on behalf of %s (uid %u).", mm->name, strna(c->id), (unsigned) c->uid);
        managed_model_remove(m, mm, "cancelled");
        manager_notify_models_changed(m);
        return 0;
}

int manager_set_precision(Manager *m, const Caller *c, const char *model, QdPrecision p,
                          const char *reason) {
        ManagedModel *mm;

        if (p == QD_PRECISION_INVALID || p >= _QD_PRECISION_MAX)
                return -EINVAL;
        mm = manager_find_model(m, model);
        if (!mm)
                return -ENOENT;
        if (c) {
                if (!c->privileged)
                        return -EACCES;
                mm->pinned = p;
                if (p == QD_PRECISION_AUTO) {
                        /* Handed back to the policy, which decides at its next evaluation. */
                        manager_notify_models_changed(m);
                        return 0;
                }
        } else {
                if (p == QD_PRECISION_AUTO)
                        return -EINVAL;
                if (mm->pinned != QD_PRECISION_AUTO)
                        return -EBUSY;
        }
        /* A variant that is not resident is prepared next to the current one: make room for it
         * first (the worker drops the model's own unused variants before it builds). */
        if (mm->model && !qd_model_has_variant(mm->model, p)) {
                uint64_t extra = qd_model_variant_bytes(mm->model, p);
                size_t n = m->n_models;
                enforce_budget_with(m, mm, extra == UINT64_MAX ? 0 : extra);
                if (m->n_models != n)
                        manager_notify_models_changed(m);
        }
        model_request_precision(mm, p, reason ?: (c ? "user" : "policy"));
        return 0;
}

int manager_tokenize(Manager *m, const char *model, const char *text, bool add_bos,
                     int32_t **ret_tokens, size_t *ret_n) {
        ManagedModel *mm = manager_find_model(m, model);
        size_t len;

        if (!mm)
                return -ENOENT;
        len = strlen(text);
        if (len > m->config->max_request_bytes)
                return -E2BIG;
        mm->last_used_usec = now_usec();
        return qd_model_tokenize(mm->model, text, len, add_bos, false, ret_tokens, ret_n);
}

int manager_detokenize(Manager *m, const char *model, const int32_t *tokens, size_t n, char **ret) {
        ManagedModel *mm = manager_find_model(m, model);
        QdModelInfo info;
        char *buf = NULL;
        size_t len = 0, alloc = 0;

        if (!mm)
                return -ENOENT;
        qd_model_info(mm->model, &info);
        for (size_t i = 0; i < n; i++) {
                char piece[256];
                int k;

                if (tokens[i] < 0 || (uint32_t) tokens[i] >= info.n_vocab) {
                        free(buf);
                        return -EINVAL;
                }
                k = qd_model_token_piece(mm->model, tokens[i], piece, sizeof(piece));
                if (k < 0) {
                        free(buf);
                        return k;
                }
                if (len + (size_t) k + 1 > alloc) {
                        char *nb;
                        alloc = MAX(alloc * 2, len + (size_t) k + 64);
                        nb = realloc(buf, alloc);
                        if (!nb) {
                                free(buf);
                                return -ENOMEM;
                        }
                        buf = nb;
                }
                memcpy(buf + len, piece, (size_t) MIN((size_t) k, sizeof(piece)));
                len += (size_t) MIN((size_t) k, sizeof(piece));
        }
        if (!buf) {
                buf = strdup("");
                if (!buf)
                        return -ENOMEM;
        } else
                buf[len] = '\0';
        mm->last_used_usec = now_usec();
        *ret = buf;
        return 0;
}

void manager_request_done(Manager *m, GenRequest *r) {
        ManagedModel *mm = r->model;

        if (r->live_prev)
                r->live_prev->live_next = r->live_next;
        else
                m->live = r->live_next;
        if (r->live_next)
                r->live_next->live_prev = r->live_prev;
        mm->n_live--;
        mm->last_used_usec = now_usec();
}

void manager_cancel_caller(Manager *m, const char *caller_id) {
        for (GenRequest *r = m->live; r; r = r->live_next)
                if (streq_ptr(r->caller_id, caller_id))
                        gen_request_cancel(r);
}

static int engine_open(Manager *m) {
        const char *e = getenv("QUANTD_TEST_CPU");
        QdEngineOptions o = {
                .device = m->config->device,
                .cpu_only = m->config->cpu_only || (e && streq(e, "1")),
                .cache_dir = m->config->cache_dir,
        };
        QdDeviceInfo di;
        int r;

        r = qd_engine_new(&o, &m->engine);
        if (r < 0 && !o.cpu_only) {
                log_warning_errno(r, "No usable Vulkan device, falling back to the CPU path: %m");
                o.cpu_only = true;
                r = qd_engine_new(&o, &m->engine);
        }
        if (r < 0)
                return log_error_errno(r, "Failed to start the inference engine: %m");
        if (qd_engine_device_info(m->engine, &di) >= 0)
                log_info("Device: %s (%s, %s), %" PRIu64 " MiB.", di.name, di.type, di.driver,
                         di.memory_total >> 20);
        return 0;
}

int manager_new(uv_loop_t *loop, Config *config, Manager **ret) {
        _cleanup_(config_freep) Config *c = config;
        Manager *m;
        int r;

        m = calloc(1, sizeof(Manager));
        if (!m)
                return log_oom();
        m->loop = loop;
        m->config = TAKE_PTR(c);
        m->next_request_id = 1;
        r = engine_open(m);
        if (r < 0) {
                config_free(m->config);
                free(m);
                return r;
        }
        m->idle_timer = calloc(1, sizeof(uv_timer_t));
        m->hold = calloc(1, sizeof(EngineHold));
        if (!m->idle_timer || !m->hold) {
                free(m->idle_timer);
                free(m->hold);
                m->engine = qd_engine_free(m->engine);
                config_free(m->config);
                free(m);
                return log_oom();
        }
        m->hold->engine = m->engine;
        m->hold->refs = 1;
        uv_timer_init(loop, m->idle_timer);
        m->idle_timer->data = m;
        manager_arm_idle_timer(m);
        *ret = m;
        return 0;
}

void manager_load_configured_models(Manager *m) {
        for (char **i = m->config->models; i && *i; i++) {
                int r = manager_load_model(m, NULL, *i, NULL, QD_PRECISION_AUTO, NULL);
                if (r < 0)
                        log_error_errno(r, "Failed to load configured model %s, ignoring: %m", *i);
        }
}

int manager_reload(Manager *m, Config *config) {
        config_free(m->config);
        m->config = config;
        for (size_t i = 0; i < m->n_models; i++) {
                pthread_mutex_lock(&m->models[i]->lock);
                m->models[i]->max_batch = config->max_batch;
                pthread_mutex_unlock(&m->models[i]->lock);
        }
        manager_arm_idle_timer(m);
        manager_load_configured_models(m);
        manager_enforce_budget(m, NULL);
        manager_notify_models_changed(m);
        return 0;
}

void manager_shutdown(Manager *m, const char *reason) {
        manager_jobs_free(m);
        manager_cancel_loads(m);
        if (m->n_models == 0)
                return;
        while (m->n_models > 0)
                managed_model_remove(m, m->models[m->n_models - 1], reason);
        manager_notify_models_changed(m);
}

static void timer_closed(uv_handle_t *h) {
        free(h);
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        manager_shutdown(m, "shutdown");
        /* The handle outlives m until the loop runs its close callback. */
        uv_close((uv_handle_t *) m->idle_timer, timer_closed);
        /* Loads still reading hold the engine; the last one frees it. */
        if (--m->hold->refs == 0) {
                qd_engine_free(m->hold->engine);
                free(m->hold);
        }
        m->engine = NULL;
        config_free(m->config);
        free(m->models);
        free(m->listeners);
        return mfree(m);
}
