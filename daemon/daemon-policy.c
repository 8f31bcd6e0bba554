/* The precision policy inside the daemon: feeds the manager's models to the policy monitor,
 * applies its decisions through manager_set_precision(), and describes its state as JSON. */
#include "macro.h" /* before uv.h (through manager.h), which defines MIN/MAX only when missing */

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "daemon-config.h"
#include "daemon-hooks.h"
#include "log.h"
#include "manager.h"
#include "policy-monitor.h"

#define HISTORY_MAX 32

typedef struct HistoryEntry {
        uint64_t realtime_usec;
        const char *kind;               /* "request" (policy asked), "switch" (done), "unload" */
        char model[128];
        QdPrecision from, to;
        char reason[192];
} HistoryEntry;

/* Variant sizes do not change while a model is loaded: computed once per model, not every poll
 * (qd_model_variant_bytes() plans the whole variant when it is not resident). */
typedef struct SizeCache {
        ManagedModel *mm;
        char name[128];
        uint64_t bytes[_QD_PRECISION_MAX];
} SizeCache;

struct DaemonPolicy {
        Manager *manager;
        SizeCache sizes[POLICY_MAX_MODELS];
        size_t n_sizes;
        PolicyMonitor *monitor;
        HistoryEntry history[HISTORY_MAX];
        size_t history_next, history_n;
};

static uint64_t realtime_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static uint64_t monotonic_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static void history_add(DaemonPolicy *p, const char *kind, const char *model, QdPrecision from,
                        QdPrecision to, const char *reason) {
        HistoryEntry *e = &p->history[p->history_next];

        *e = (HistoryEntry) { .realtime_usec = realtime_usec(), .kind = kind, .from = from, .to = to };
        snprintf(e->model, sizeof e->model, "%.127s", model);
        snprintf(e->reason, sizeof e->reason, "%.191s", strna(reason));
        p->history_next = (p->history_next + 1) % HISTORY_MAX;
        p->history_n = MIN(p->history_n + 1, (size_t) HISTORY_MAX);
}

static size_t get_models(PolicyModelInput *models, size_t max, PolicyGpuMemory *gpu, void *userdata) {
        DaemonPolicy *p = userdata;
        uint64_t config_budget = manager_config(p->manager)->memory_budget, now = monotonic_usec();
        QdDeviceInfo di;
        ManagedModel *mm;
        size_t n = 0;

        if (manager_engine(p->manager) && qd_engine_device_info(manager_engine(p->manager), &di) >= 0 &&
            di.memory_budget > 0) {
                gpu->present = true;
                gpu->budget = di.memory_budget;
                gpu->used = di.memory_used;
        }
        if (config_budget > 0 && (!gpu->present || config_budget < gpu->budget)) {
                /* The configured budget counts the weights of resident models only. */
                gpu->present = true;
                gpu->budget = config_budget;
                gpu->used = manager_device_bytes(p->manager);
        }

        SizeCache sizes[POLICY_MAX_MODELS];
        size_t n_sizes = 0;

        for (size_t i = 0; n < max && n < POLICY_MAX_MODELS && (mm = manager_model_at(p->manager, i)); i++) {
                QdModel *qd = managed_model_qd(mm);
                SizeCache *sc = &sizes[n_sizes++];
                ModelStatus st;

                managed_model_status(mm, &st);
                models[n] = (PolicyModelInput) {
                        .name = st.name,
                        .pinned = st.pinned,
                        .current = st.precision,
                        .resident_bytes = st.info.device_bytes,
                        .idle_usec = now > st.last_used_usec ? now - st.last_used_usec : 0,
                        .active_requests = st.active_requests + st.queued_requests,
                };
                *sc = (SizeCache) { .mm = mm };
                snprintf(sc->name, sizeof sc->name, "%.127s", st.name);
                for (size_t k = 0; k < p->n_sizes; k++)
                        if (p->sizes[k].mm == mm && streq(p->sizes[k].name, sc->name)) {
                                *sc = p->sizes[k];
                                break;
                        }
                for (QdPrecision q = QD_PRECISION_F16; q < _QD_PRECISION_MAX; q++) {
                        if (sc->bytes[q] == 0 && qd)
                                sc->bytes[q] = qd_model_variant_bytes(qd, q);
                        /* UINT64_MAX: it could not be planned (out of memory): unknown. */
                        models[n].variant_bytes[q] = sc->bytes[q] == UINT64_MAX ? 0 : sc->bytes[q];
                }
                n++;
        }
        memcpy(p->sizes, sizes, n_sizes * sizeof(SizeCache));
        p->n_sizes = n_sizes;
        return n;
}

static void apply(DaemonPolicy *p, const PolicyDecision *d) {
        for (size_t i = 0; i < d->n_models; i++) {
                const PolicyModelDecision *md = &d->models[i];
                char reason[256];
                ManagedModel *mm;
                QdPrecision cur;
                int r;

                if (md->pinned)
                        continue;
                mm = manager_find_model(p->manager, md->name);
                if (!mm)
                        continue;
                cur = qd_model_get_precision(managed_model_qd(mm));
                if (md->unload) {
                        log_info("Precision policy: unloading idle model %s (%s).", md->name, d->reason);
                        history_add(p, "unload", md->name, cur, cur, d->reason);
                        r = manager_unload_model(p->manager, NULL, md->name);
                        if (r < 0)
                                log_warning_errno(r, "Failed to unload model %s, ignoring: %m", md->name);
                        continue;
                }
                if (cur == md->precision)
                        continue;
                snprintf(reason, sizeof reason, "policy: %s%s", d->reason,
                         md->budget_limited ? "; a less conservative variant does not fit the memory budget" : "");
                r = manager_set_precision(p->manager, NULL, md->name, md->precision, reason);
                if (r < 0) {
                        log_warning_errno(r, "Failed to move model %s to %s, ignoring: %m", md->name,
                                          policy_precision_to_string(md->precision));
                        continue;
                }
                history_add(p, "request", md->name, cur, md->precision, reason);
        }
}

static void on_decision(PolicyMonitor *mon, const PolicyDecision *old, const PolicyDecision *d, void *userdata) {
        DaemonPolicy *p = userdata;

        if (!old || old->cap != d->cap || old->rules != d->rules)
                log_info("Precision policy: at most %s (%s).", policy_precision_to_string(d->cap), d->reason);
        apply(p, d);
        /* token_rate_on_battery / token_rate_hot: enforced by the models' workers. */
        manager_set_token_rate(p->manager, d->token_rate_cap);
}

static void on_models_changed(Manager *m, void *userdata) {
        DaemonPolicy *p = userdata;
        if (p->monitor)
                (void) policy_monitor_update(p->monitor);
}

static void on_precision_changed(Manager *m, const char *model, QdPrecision from, QdPrecision to,
                                 const char *reason, void *userdata) {
        history_add(userdata, "switch", model, from, to, reason);
}

static int load_config(Manager *m, PolicyConfig *ret) {
        const Config *c = manager_config(m);
        PolicyConfig pc;
        int r;

        policy_config_init(&pc);
        for (size_t i = 0; i < c->n_entries; i++) {
                const ConfigEntry *e = &c->entries[i];

                r = policy_config_parse_key(&pc, e->section, e->key, e->value);
                if (r == -ENOENT)
                        log_warning("%s:%u: unknown key '%s' in [policy], ignoring.", strna(e->file), e->line, e->key);
                else if (r < 0)
                        log_warning("%s:%u: invalid value '%s' for %s, ignoring.", strna(e->file), e->line,
                                    e->value, e->key);
        }
        r = policy_config_verify(&pc);
        if (r < 0)
                return log_error_errno(r, "The [policy] thresholds are inconsistent (a leave threshold on the "
                                       "wrong side of its enter threshold, or a poll interval under 10 ms).");
        *ret = pc;
        return 0;
}

int daemon_policy_new(Manager *m, DaemonPolicy **ret) {
        DaemonPolicy *p;
        PolicyConfig pc;
        int r;

        r = load_config(m, &pc);
        if (r < 0)
                return r;
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->manager = m;
        r = policy_monitor_new(manager_loop(m),
                               &(PolicyMonitorOptions) {
                                       .config = &pc,
                                       .get_models = get_models,
                                       .changed = on_decision,
                                       .userdata = p,
                               },
                               &p->monitor);
        if (r < 0) {
                free(p);
                return r;
        }
        /* Last, so that nothing is left registered on failure (listeners cannot be removed). */
        r = manager_add_listener(m, &(ManagerListener) {
                                         .models_changed = on_models_changed,
                                         .precision_changed = on_precision_changed,
                                         .userdata = p,
                                 });
        if (r < 0) {
                policy_monitor_free(p->monitor);
                free(p);
                return r;
        }
        log_info("Precision policy started (system bus: %s, PSI: %s).", policy_monitor_bus_state(p->monitor),
                 policy_psi_mode_to_string(policy_monitor_readings(p->monitor)->memory.psi_mode));
        *ret = p;
        return 0;
}

DaemonPolicy *daemon_policy_free(DaemonPolicy *p) {
        if (!p)
                return NULL;
        /* The manager keeps the listener: the daemon frees the policy only after
         * manager_shutdown(), when no more notifications come. */
        p->monitor = policy_monitor_free(p->monitor);
        free(p);
        return NULL;
}

int daemon_policy_reload(DaemonPolicy *p) {
        PolicyConfig pc;
        int r;

        r = load_config(p->manager, &pc);
        if (r < 0)
                return r;
        return policy_monitor_set_config(p->monitor, &pc);
}

/* The JSON of `quantctl policy` and GetPolicy(). */

static json_t *json_num(double v) {
        return isnan(v) ? json_null() : json_real(v);
}

static json_t *sources_json(const PolicyReadings *r, const char *bus_state) {
        json_t *sensors = json_array();

        for (unsigned i = 0; i < r->thermal.n_sensors; i++) {
                const PolicySensor *s = &r->thermal.sensors[i];
                json_array_append_new(sensors, json_pack("{s:s, s:o, s:o, s:b}", "name", s->name, "temp_c",
                                                         json_num(s->temp_c), "trip_c", json_num(s->trip_c),
                                                         "gpu", s->gpu));
        }
        return json_pack(
                "{s:{s:b, s:o}, s:{s:b, s:b, s:b, s:o, s:s, s:o, s:o}, s:{s:s, s:b, s:b, s:b, s:o, s:i},"
                " s:{s:b, s:s, s:s, s:s}, s:{s:b, s:I, s:I, s:b, s:o, s:o, s:s}, s:{s:b, s:I, s:I},"
                " s:b, s:o}",
                "thermal", "present", r->thermal.present, "sensors", sensors,
                "power_supply", "ac_present", r->power.ac_present, "ac_online", r->power.ac_online,
                "battery_present", r->power.battery_present, "battery_percent", json_num(r->power.battery_percent),
                "battery_status", r->power.battery_status, "energy_now_wh", json_num(r->power.energy_now_wh),
                "power_now_w", json_num(r->power.power_now_w),
                "upower", "bus", bus_state, "present", r->upower.present, "on_battery", r->upower.on_battery,
                "display_present", r->upower.display_present, "percentage", json_num(r->upower.percentage),
                "state", (int) r->upower.state,
                "power_profile", "present", r->profile.present, "service", r->profile.service, "active",
                r->profile.active, "degraded", r->profile.degraded,
                "memory", "meminfo_present", r->memory.meminfo_present, "mem_total", (json_int_t) r->memory.mem_total,
                "mem_available", (json_int_t) r->memory.mem_available, "psi_present", r->memory.psi_present,
                "psi_some_avg10", json_num(r->memory.psi_some_avg10), "psi_full_avg10",
                json_num(r->memory.psi_full_avg10), "psi_mode", policy_psi_mode_to_string(r->memory.psi_mode),
                "gpu_memory", "present", r->gpu.present, "budget", (json_int_t) r->gpu.budget, "used",
                (json_int_t) r->gpu.used,
                "on_battery", policy_readings_on_battery(r),
                "battery_percent", json_num(policy_readings_battery_percent(r)));
}

static json_t *decision_json(Manager *m, const PolicyDecision *d) {
        json_t *models = json_array();

        for (size_t i = 0; i < d->n_models; i++) {
                const PolicyModelDecision *md = &d->models[i];
                ManagedModel *mm = manager_find_model(m, md->name);
                ModelStatus st = {};

                /* token_rate_cap: what the model's worker paces to now. */
                if (mm)
                        managed_model_status(mm, &st);
                json_array_append_new(models, json_pack("{s:s, s:s, s:s, s:b, s:b, s:b, s:b, s:b, s:o}", "name", md->name,
                                                        "precision", policy_precision_to_string(md->precision),
                                                        "wanted", policy_precision_to_string(md->wanted),
                                                        "pinned", md->pinned, "budget_limited", md->budget_limited,
                                                        "no_fit", md->no_fit, "evict", md->evict, "unload", md->unload,
                                                        "token_rate_cap", st.token_rate_cap > 0 ?
                                                        json_real(st.token_rate_cap) : json_null()));
        }
        return json_pack("{s:s, s:s, s:s, s:s, s:b, s:o, s:o}", "cap", policy_precision_to_string(d->cap),
                         "wanted_cap", policy_precision_to_string(d->wanted_cap), "deciding",
                         policy_rule_to_string(d->deciding), "reason", d->reason, "dwell_holding", d->dwell_holding,
                         "token_rate_cap", d->token_rate_cap > 0 ? json_real(d->token_rate_cap) : json_null(),
                         "models", models);
}

static json_t *config_json(const PolicyConfig *c) {
        return json_pack("{s:b, s:f, s:f, s:f, s:f, s:f, s:f, s:b, s:f, s:f, s:I, s:I, s:b, s:f, s:b, s:f, s:f, s:f}",
                         "enabled", c->enabled, "poll_interval_s", c->poll_usec / 1e6, "dwell_s",
                         c->dwell_usec / 1e6, "battery_low_enter", c->battery_low_enter, "battery_low_leave",
                         c->battery_low_leave, "hot_enter_c", c->hot_enter_c, "hot_leave_c", c->hot_leave_c,
                         "use_trip_points", c->use_trip_points, "pressure_enter", c->psi_enter,
                         "pressure_leave", c->psi_leave, "mem_available_enter", (json_int_t) c->mem_available_enter,
                         "mem_available_leave", (json_int_t) c->mem_available_leave, "pressure_trigger",
                         c->psi_trigger, "pressure_hold_s", c->psi_hold_usec / 1e6, "evict_under_pressure",
                         c->evict_under_pressure, "unload_idle_s", c->unload_idle_usec / 1e6,
                         "token_rate_on_battery", c->token_rate_on_battery, "token_rate_hot", c->token_rate_hot);
}

int daemon_policy_status(DaemonPolicy *p, json_t *obj) {
        const PolicyConfig *c = policy_monitor_config(p->monitor);
        const PolicyDecision *d = policy_monitor_decision(p->monitor);
        json_t *rules = json_array(), *history = json_array(), *v;

        if (!rules || !history) {
                json_decref(rules);
                json_decref(history);
                return -ENOMEM;
        }
        for (PolicyRule i = 0; i < _POLICY_RULE_MAX; i++)
                json_array_append_new(rules, json_pack("{s:s, s:s, s:b}", "rule", policy_rule_to_string(i),
                                                       "precision", policy_precision_to_string(c->rule_precision[i]),
                                                       "fires", !!(d->rules & (1u << i))));
        for (size_t k = 0; k < p->history_n; k++) {
                const HistoryEntry *e = &p->history[(p->history_next + HISTORY_MAX - p->history_n + k) % HISTORY_MAX];
                json_array_append_new(history, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "time_usec",
                                                         (json_int_t) e->realtime_usec, "kind", e->kind, "model",
                                                         e->model, "from", policy_precision_to_string(e->from),
                                                         "to", policy_precision_to_string(e->to), "reason", e->reason));
        }
        json_object_set_new(obj, "rules", rules);
        json_object_set_new(obj, "history", history);
        v = sources_json(policy_monitor_readings(p->monitor), policy_monitor_bus_state(p->monitor));
        if (v)
                json_object_set_new(obj, "sources", v);
        v = decision_json(p->manager, d);
        if (v)
                json_object_set_new(obj, "decision", v);
        v = config_json(c);
        if (v)
                json_object_set_new(obj, "config", v);
        return 0;
}
