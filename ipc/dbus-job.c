/* Quantize() / Evaluate() and the org.quantd.Quantd1.Job objects: State/Progress change
 * signals, Finished(state, result), Cancel, cancellation when the starting client leaves. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h" /* first: util/macro.h before <sys/param.h> */
#include "dbus-internal.h"
#include "manager-jobs.h"

static char *job_path(uint64_t id) {
        char buf[32], *p = NULL;

        snprintf(buf, sizeof(buf), "%" PRIu64, id);
        return sd_bus_path_encode(QD_JOB_PREFIX, buf, &p) < 0 ? NULL : p;
}

static int read_uint_option(sd_bus_message *m, uint64_t *ret) {
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        if (type != 'v' || !contents || strlen(contents) != 1)
                return -EINVAL;
        switch (contents[0]) {
        case 'i': { int32_t v; r = sd_bus_message_read(m, "v", "i", &v); if (r >= 0 && v < 0) r = -EINVAL; *ret = (uint64_t) v; break; }
        case 'u': { uint32_t v; r = sd_bus_message_read(m, "v", "u", &v); *ret = v; break; }
        case 'x': { int64_t v; r = sd_bus_message_read(m, "v", "x", &v); if (r >= 0 && v < 0) r = -EINVAL; *ret = (uint64_t) v; break; }
        case 't': { uint64_t v; r = sd_bus_message_read(m, "v", "t", &v); *ret = v; break; }
        default: return -EINVAL;
        }
        return r;
}

static int parse_job_options(sd_bus_message *m, JobParams *p, sd_bus_error *error) {
        const char *key;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char **sv = NULL;
                uint64_t *uv = NULL;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                if (p->kind == JOB_QUANTIZE && streq(key, "type"))
                        sv = &p->type;
                else if (p->kind == JOB_QUANTIZE && streq(key, "method"))
                        sv = &p->method;
                else if (p->kind == JOB_QUANTIZE && streq(key, "calibration"))
                        sv = &p->calib;
                else if (p->kind == JOB_QUANTIZE && streq(key, "samples"))
                        uv = &p->samples;
                else if (streq(key, "ctx"))
                        uv = &p->ctx;
                else if (p->kind == JOB_EVALUATE && streq(key, "text_file"))
                        sv = &p->text_file;
                else if (p->kind == JOB_EVALUATE && streq(key, "text"))
                        sv = &p->text;
                else if (p->kind == JOB_EVALUATE && streq(key, "reference"))
                        sv = &p->ref;
                else if (p->kind == JOB_EVALUATE && streq(key, "max_windows"))
                        uv = &p->max_windows;
                else
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown option '%s'.", key);
                r = sv ? sd_bus_message_read(m, "v", "s", sv) : read_uint_option(m, uv);
                if (r < 0)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid value for option '%s'.", key);
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int start_job(sd_bus_message *m, DbusServer *s, JobKind kind, sd_bus_error *error) {
        _cleanup_free_ char *path = NULL;
        JobParams p = { .kind = kind };
        Job *j;
        Caller c;
        int r;

        /* Read from the start also when dispatched again after a polkit check. */
        r = sd_bus_message_rewind(m, true);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "s", &p.model);
        if (r < 0)
                return r;
        r = parse_job_options(m, &p, error);
        if (r < 0 || sd_bus_error_is_set(error))
                return r;
        r = dbus_caller(s, m, true, &c);
        if (r != 0)
                return r; /* < 0 error, > 0 parked until polkit answers */
        if (!c.privileged) {
                log_info("%s job refused for uid %u (%s).", job_kind_to_string(kind), (unsigned) c.uid, strna(c.id));
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "%s needs root or the polkit action org.quantd.manage.",
                                         kind == JOB_QUANTIZE ? "Quantizing" : "Evaluating");
        }
        r = manager_start_job(s->manager, &c, &p, &j);
        if (r < 0)
                return dbus_reply_errno(m, r, error, kind == JOB_QUANTIZE ? "Cannot quantize" : "Cannot evaluate");
        path = job_path(job_id(j));
        if (!path) {
                manager_job_cancel(j);
                return -ENOMEM;
        }
        return sd_bus_reply_method_return(m, "o", path);
}

int dbus_method_quantize(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return start_job(m, userdata, JOB_QUANTIZE, error);
}

int dbus_method_evaluate(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return start_job(m, userdata, JOB_EVALUATE, error);
}

/* A flat JSON object as a{sv}: strings, numbers and booleans. */
static int append_result(sd_bus_message *reply, json_t *o) {
        const char *k;
        json_t *v;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        json_object_foreach(o, k, v) {
                if (json_is_string(v))
                        r = sd_bus_message_append(reply, "{sv}", k, "s", json_string_value(v));
                else if (json_is_integer(v))
                        r = sd_bus_message_append(reply, "{sv}", k, "x", (int64_t) json_integer_value(v));
                else if (json_is_real(v))
                        r = sd_bus_message_append(reply, "{sv}", k, "d", json_real_value(v));
                else if (json_is_boolean(v))
                        r = sd_bus_message_append(reply, "{sv}", k, "b", (int) json_is_true(v));
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static Job *path_job(DbusServer *s, const char *path) {
        _cleanup_free_ char *id = NULL;
        char *end;
        uint64_t n;

        if (!path || sd_bus_path_decode(path, QD_JOB_PREFIX, &id) <= 0)
                return NULL;
        n = strtoull(id, &end, 10);
        if (!*id || *end)
                return NULL;
        return manager_find_job(s->manager, n);
}

/* The handlers get the server (the job is looked up again from the path each time, as a
 * finished job may expire between calls). */
static int job_find(sd_bus *bus, const char *path, const char *iface, void *userdata, void **found,
                    sd_bus_error *error) {
        if (!path_job(userdata, path))
                return 0;
        *found = userdata;
        return 1;
}

static int job_enumerate(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        DbusServer *s = userdata;
        size_t n = 0;
        char **l;

        while (manager_job_at(s->manager, n))
                n++;
        l = calloc(n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                l[i] = job_path(job_id(manager_job_at(s->manager, i)));
                if (!l[i]) {
                        for (size_t k = 0; k < i; k++)
                                free(l[k]);
                        free(l);
                        return -ENOMEM;
                }
        }
        *nodes = l;
        return 1;
}

static int job_prop(sd_bus *bus, const char *path, const char *iface, const char *prop, sd_bus_message *reply,
                    void *userdata, sd_bus_error *error) {
        Job *j = path_job(userdata, path);

        if (!j)
                return sd_bus_error_set(error, SD_BUS_ERROR_UNKNOWN_OBJECT, "No such job.");
        if (streq(prop, "Id"))
                return sd_bus_message_append(reply, "t", job_id(j));
        if (streq(prop, "Kind"))
                return sd_bus_message_append(reply, "s", job_kind_to_string(job_kind(j)));
        if (streq(prop, "State"))
                return sd_bus_message_append(reply, "s", job_state_to_string(job_state(j)));
        if (streq(prop, "Progress"))
                return sd_bus_message_append(reply, "d", job_progress(j));
        if (streq(prop, "Error"))
                return sd_bus_message_append(reply, "s", job_error(j) ?: "");
        if (streq(prop, "Result")) {
                _cleanup_free_ char *txt = job_result(j) ? json_dumps(job_result(j), JSON_COMPACT) : strdup("{}");
                return txt ? sd_bus_message_append(reply, "s", txt) : -ENOMEM;
        }
        return -ENOENT;
}

static int method_job_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DbusServer *s = userdata;
        Job *j = path_job(s, sd_bus_message_get_path(m));
        Caller c;
        int r;

        if (!j)
                return sd_bus_error_set(error, SD_BUS_ERROR_UNKNOWN_OBJECT, "No such job.");
        r = dbus_caller(s, m, false, &c);
        if (r < 0)
                return r;
        if (!streq_ptr(c.id, job_owner(j))) {
                r = dbus_caller(s, m, true, &c);
                if (r != 0)
                        return r; /* < 0 error, > 0 parked until polkit answers */
                if (!c.privileged)
                        return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Not the owner of this job.");
        }
        manager_job_cancel(j);
        return sd_bus_reply_method_return(m, NULL);
}

static const sd_bus_vtable job_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "t", job_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Kind", "s", job_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", job_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Progress", "d", job_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Result", "s", job_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Error", "s", job_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("Cancel", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_job_cancel,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("Finished", SD_BUS_ARGS("s", state, "a{sv}", result), 0),
        SD_BUS_VTABLE_END
};

static void on_job_changed(Manager *m, Job *j, bool finished, void *userdata) {
        DbusServer *s = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *sig = NULL;
        _cleanup_free_ char *path = job_path(job_id(j));
        int r;

        if (!path)
                return;
        r = sd_bus_emit_properties_changed(s->bus, path, QD_JOB_IFACE, "State", "Progress", "Result", "Error", NULL);
        if (r < 0)
                log_debug_errno(r, "Job %" PRIu64 ": failed to emit PropertiesChanged: %m", job_id(j));
        if (!finished)
                return;
        r = sd_bus_message_new_signal(s->bus, &sig, path, QD_JOB_IFACE, "Finished");
        if (r >= 0)
                r = sd_bus_message_append(sig, "s", job_state_to_string(job_state(j)));
        if (r >= 0) {
                json_t *res = job_result(j), *empty = res ? NULL : json_object();
                if (empty && job_error(j))
                        json_object_set_new(empty, "error", json_string(job_error(j)));
                r = res || empty ? append_result(sig, res ?: empty) : -ENOMEM;
                json_decref(empty);
        }
        if (r >= 0)
                r = sd_bus_send(s->bus, sig, NULL);
        if (r < 0)
                log_debug_errno(r, "Job %" PRIu64 ": failed to send Finished: %m", job_id(j));
}

int dbus_job_register(DbusServer *s) {
        int r;

        r = sd_bus_add_fallback_vtable(s->bus, &s->job_slot, QD_JOB_PREFIX, QD_JOB_IFACE, job_vtable, job_find, s);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(s->bus, &s->job_enum_slot, QD_JOB_PREFIX, job_enumerate, s);
        if (r >= 0)
                r = manager_add_job_listener(s->manager, &(JobListener) { .changed = on_job_changed, .userdata = s });
        return r;
}

void dbus_job_unregister(DbusServer *s) {
        manager_remove_job_listener(s->manager, s);
        s->job_slot = sd_bus_slot_unref(s->job_slot);
        s->job_enum_slot = sd_bus_slot_unref(s->job_enum_slot);
}
