/* org.quantd.Quantd1.Manager at /org/quantd/Quantd1 and one org.quantd.Quantd1.Model object
 * per resident model; the bus connection and its name. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "daemon-config.h"
#include "log.h" /* first: util/macro.h before <sys/param.h> */
#include "bus-util.h"
#include "dbus-internal.h"

int dbus_reply_errno(sd_bus_message *m, int r, sd_bus_error *error, const char *what) {
        const char *name;

        switch (r) {
        case -ENOENT: name = QD_ERROR_NO_SUCH_MODEL; break;
        case -EBUSY: name = QD_ERROR_BUSY; break;
        case -EACCES: name = SD_BUS_ERROR_ACCESS_DENIED; break;
        case -EPERM: name = QD_ERROR_NOT_ALLOWED; break;
        case -E2BIG: name = QD_ERROR_TOO_LARGE; break;
        case -EEXIST: name = QD_ERROR_EXISTS; break;
        case -EINVAL: name = SD_BUS_ERROR_INVALID_ARGS; break;
        case -ENOMEM: name = SD_BUS_ERROR_NO_MEMORY; break;
        default: name = QD_ERROR_FAILED; break;
        }
        return sd_bus_error_setf(error, name, "%s: %s", what, strerror(-r));
}

char *dbus_model_path(const char *name) {
        char *p = NULL;
        return sd_bus_path_encode(QD_MODEL_PREFIX, name, &p) < 0 ? NULL : p;
}

static QdDeviceInfo device_info(DbusServer *s) {
        QdDeviceInfo di = {};
        (void) qd_engine_device_info(manager_engine(s->manager), &di);
        return di;
}

/* ---- Manager methods ---- */

static int method_list_models(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DbusServer *s = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        ManagedModel *mm;
        int r;

        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(so)");
        for (size_t i = 0; r >= 0 && (mm = manager_model_at(s->manager, i)); i++) {
                _cleanup_free_ char *p = dbus_model_path(managed_model_name(mm));
                if (!p)
                        return -ENOMEM;
                r = sd_bus_message_append(reply, "(so)", managed_model_name(mm), p);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static void load_done(Manager *manager, int r, ManagedModel *mm, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *object = NULL;

        if (r >= 0) {
                object = dbus_model_path(managed_model_name(mm));
                r = object ? sd_bus_reply_method_return(m, "o", object) : -ENOMEM;
        }
        if (r < 0) {
                (void) dbus_reply_errno(m, r, &error, r == -ECANCELED ? "The daemon is stopping" : "Cannot load model");
                r = sd_bus_reply_method_error(m, &error);
        }
        if (r < 0)
                log_debug_errno(r, "Failed to answer LoadModel(): %m");
}

static int method_load_model(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DbusServer *s = userdata;
        const char *path, *key, *name = NULL, *prec = NULL;
        QdPrecision p = QD_PRECISION_AUTO;
        Caller c;
        int r;

        /* Read from the start also when dispatched again after a polkit check. */
        r = sd_bus_message_rewind(m, true);
        if (r < 0)
                return r;

        r = sd_bus_message_read(m, "s", &path);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "name"))
                        r = sd_bus_message_read(m, "v", "s", &name);
                else if (streq(key, "precision"))
                        r = sd_bus_message_read(m, "v", "s", &prec);
                else
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown option '%s'.", key);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        if (prec) {
                p = qd_precision_from_string(prec);
                if (p == QD_PRECISION_INVALID)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown precision '%s'.", prec);
        }
        r = dbus_caller(s, m, true, &c);
        if (r != 0)
                return r; /* < 0 error, > 0 parked until polkit answers */
        if (!c.privileged)
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED,
                                        "Loading models needs root or the polkit action org.quantd.manage.");
        /* The file is read on the thread pool; the reply follows in load_done(). */
        r = manager_load_model_async(s->manager, &c, path, name, p, load_done, sd_bus_message_ref(m));
        if (r < 0) {
                sd_bus_message_unref(m);
                return dbus_reply_errno(m, r, error, "Cannot load model");
        }
        return 1;
}

static int method_unload_model(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DbusServer *s = userdata;
        const char *name;
        Caller c;
        int r;

        /* Read from the start also when dispatched again after a polkit check. */
        r = sd_bus_message_rewind(m, true);
        if (r < 0)
                return r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        if (!manager_find_model(s->manager, name))
                return sd_bus_error_setf(error, QD_ERROR_NO_SUCH_MODEL, "No model '%s'.", name);
        r = dbus_caller(s, m, true, &c);
        if (r != 0)
                return r; /* < 0 error, > 0 parked until polkit answers */
        if (!c.privileged)
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED,
                                        "Unloading models needs root or the polkit action org.quantd.manage.");
        r = manager_unload_model(s->manager, &c, name);
        if (r < 0)
                return dbus_reply_errno(m, r, error, "Cannot unload model");
        return sd_bus_reply_method_return(m, NULL);
}

static int method_tokenize(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DbusServer *s = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ int32_t *tokens = NULL;
        const char *model, *text;
        size_t n;
        int r;

        r = sd_bus_message_read(m, "ss", &model, &text);
        if (r < 0)
                return r;
        r = manager_tokenize(s->manager, model, text, true, &tokens, &n);
        if (r < 0)
                return dbus_reply_errno(m, r, error, "Cannot tokenize");
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_append_array(reply, 'i', tokens, n * sizeof(int32_t));
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_detokenize(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DbusServer *s = userdata;
        _cleanup_free_ char *text = NULL;
        const char *model;
        const void *tokens;
        size_t size;
        int r;

        r = sd_bus_message_read(m, "s", &model);
        if (r >= 0)
                r = sd_bus_message_read_array(m, 'i', &tokens, &size);
        if (r < 0)
                return r;
        r = manager_detokenize(s->manager, model, tokens, size / sizeof(int32_t), &text);
        if (r < 0)
                return dbus_reply_errno(m, r, error, "Cannot detokenize");
        return sd_bus_reply_method_return(m, "s", text);
}

static int method_generate(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return dbus_request_generate(userdata, m, error);
}

static int method_set_precision(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DbusServer *s = userdata;
        const char *model, *prec;
        QdPrecision p;
        Caller c;
        int r;

        /* Read from the start also when dispatched again after a polkit check. */
        r = sd_bus_message_rewind(m, true);
        if (r < 0)
                return r;

        r = sd_bus_message_read(m, "ss", &model, &prec);
        if (r < 0)
                return r;
        p = qd_precision_from_string(prec);
        if (p == QD_PRECISION_INVALID)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown precision '%s'.", prec);
        if (!manager_find_model(s->manager, model))
                return sd_bus_error_setf(error, QD_ERROR_NO_SUCH_MODEL, "No model '%s'.", model);
        r = dbus_caller(s, m, true, &c);
        if (r != 0)
                return r; /* < 0 error, > 0 parked until polkit answers */
        if (!c.privileged)
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED,
                                        "Changing precision needs root or the polkit action org.quantd.manage.");
        r = manager_set_precision(s->manager, &c, model, p, "user");
        if (r < 0)
                return dbus_reply_errno(m, r, error, "Cannot set precision");
        return sd_bus_reply_method_return(m, NULL);
}

static int method_get_policy(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DbusServer *s = userdata;
        json_t *obj = json_object(), *models = json_array();
        _cleanup_free_ char *text = NULL;
        ManagedModel *mm;
        int r = 0;

        if (!obj || !models) {
                json_decref(obj);
                json_decref(models);
                return -ENOMEM;
        }
        for (size_t i = 0; (mm = manager_model_at(s->manager, i)); i++) {
                ModelStatus st;
                managed_model_status(mm, &st);
                json_array_append_new(models, json_pack("{s:s, s:s, s:s, s:b}", "name", st.name, "precision",
                                                        qd_precision_to_string(st.precision), "pinned",
                                                        qd_precision_to_string(st.pinned),
                                                        "policy_controlled", st.pinned == QD_PRECISION_AUTO));
        }
        json_object_set_new(obj, "models", models);
        json_object_set_new(obj, "policy", json_string(s->policy_hook ? "active" : "none"));
        if (s->policy_hook)
                r = s->policy_hook(s->policy_userdata, obj);
        /* As GET /api/policy has it. */
        if (r >= 0 && !json_object_get(obj, "available"))
                json_object_set_new(obj, "available", json_boolean(s->policy_hook != NULL));
        if (r >= 0)
                text = json_dumps(obj, JSON_COMPACT);
        json_decref(obj);
        if (r < 0)
                return dbus_reply_errno(m, r, error, "Cannot describe the policy");
        if (!text)
                return -ENOMEM;
        return sd_bus_reply_method_return(m, "s", text);
}

/* ---- Manager properties ---- */

static int prop_version(sd_bus *bus, const char *path, const char *iface, const char *prop,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", QUANTD_VERSION);
}

static int prop_device(sd_bus *bus, const char *path, const char *iface, const char *prop,
                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        QdDeviceInfo di = device_info(userdata);
        return sd_bus_message_append(reply, "s", di.name);
}

static int prop_memory(sd_bus *bus, const char *path, const char *iface, const char *prop,
                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        QdDeviceInfo di = device_info(userdata);
        return sd_bus_message_append(reply, "t", streq(prop, "DeviceMemoryTotal") ? di.memory_total : di.memory_used);
}

static int prop_models(sd_bus *bus, const char *path, const char *iface, const char *prop,
                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        DbusServer *s = userdata;
        ManagedModel *mm;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "o");
        for (size_t i = 0; r >= 0 && (mm = manager_model_at(s->manager, i)); i++) {
                _cleanup_free_ char *p = dbus_model_path(managed_model_name(mm));
                if (!p)
                        return -ENOMEM;
                r = sd_bus_message_append(reply, "o", p);
        }
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int prop_requests(sd_bus *bus, const char *path, const char *iface, const char *prop,
                         sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        DbusServer *s = userdata;
        return sd_bus_message_append(reply, "u", streq(prop, "QueuedRequests") ? manager_n_waiting(s->manager)
                                                                              : manager_n_live(s->manager));
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", prop_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Device", "s", prop_device, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DeviceMemoryTotal", "t", prop_memory, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DeviceMemoryUsed", "t", prop_memory, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Models", "ao", prop_models, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ActiveRequests", "u", prop_requests, 0, 0),
        SD_BUS_PROPERTY("QueuedRequests", "u", prop_requests, 0, 0),
        SD_BUS_METHOD_WITH_ARGS("ListModels", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(so)", models),
                                method_list_models, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("LoadModel", SD_BUS_ARGS("s", path, "a{sv}", options), SD_BUS_RESULT("o", model),
                                method_load_model, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("UnloadModel", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT, method_unload_model,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Tokenize", SD_BUS_ARGS("s", model, "s", text), SD_BUS_RESULT("ai", tokens),
                                method_tokenize, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Detokenize", SD_BUS_ARGS("s", model, "ai", tokens), SD_BUS_RESULT("s", text),
                                method_detokenize, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Generate", SD_BUS_ARGS("s", model, "s", prompt, "a{sv}", options),
                                SD_BUS_RESULT("o", request), method_generate, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetPrecision", SD_BUS_ARGS("s", model, "s", precision), SD_BUS_NO_RESULT,
                                method_set_precision, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetPolicy", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", json), method_get_policy,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Quantize", SD_BUS_ARGS("s", model, "a{sv}", options), SD_BUS_RESULT("o", job),
                                dbus_method_quantize, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Evaluate", SD_BUS_ARGS("s", model, "a{sv}", options), SD_BUS_RESULT("o", job),
                                dbus_method_evaluate, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("PrecisionChanged", SD_BUS_ARGS("s", model, "s", from, "s", to, "s", reason), 0),
        SD_BUS_VTABLE_END
};

/* ---- Model objects ---- */

static int model_find(sd_bus *bus, const char *path, const char *iface, void *userdata, void **found,
                      sd_bus_error *error) {
        DbusServer *s = userdata;
        _cleanup_free_ char *name = NULL;
        ManagedModel *mm;

        if (sd_bus_path_decode(path, QD_MODEL_PREFIX, &name) <= 0)
                return 0;
        mm = manager_find_model(s->manager, name);
        if (!mm)
                return 0;
        *found = mm;
        return 1;
}

static int model_enumerate(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        DbusServer *s = userdata;
        size_t n = manager_n_models(s->manager);
        char **l = calloc(n + 1, sizeof(char *));

        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                l[i] = dbus_model_path(managed_model_name(manager_model_at(s->manager, i)));
                if (!l[i]) {
                        for (size_t j = 0; j < i; j++)
                                free(l[j]);
                        free(l);
                        return -ENOMEM;
                }
        }
        *nodes = l;
        return 1;
}

static int model_prop(sd_bus *bus, const char *path, const char *iface, const char *prop, sd_bus_message *reply,
                      void *userdata, sd_bus_error *error) {
        ModelStatus st;

        managed_model_status(userdata, &st);
        if (streq(prop, "Name"))
                return sd_bus_message_append(reply, "s", st.name);
        if (streq(prop, "Path"))
                return sd_bus_message_append(reply, "s", st.path);
        if (streq(prop, "Architecture"))
                return sd_bus_message_append(reply, "s", st.info.arch);
        if (streq(prop, "FileType"))
                return sd_bus_message_append(reply, "s", st.info.file_type);
        if (streq(prop, "Parameters"))
                return sd_bus_message_append(reply, "t", st.info.n_params);
        if (streq(prop, "ContextLength"))
                return sd_bus_message_append(reply, "u", st.info.n_ctx_train);
        if (streq(prop, "HasChatTemplate"))
                return sd_bus_message_append(reply, "b", st.info.has_chat_template);
        if (streq(prop, "Precision"))
                return sd_bus_message_append(reply, "s", qd_precision_to_string(st.precision));
        if (streq(prop, "Pinned"))
                return sd_bus_message_append(reply, "s", qd_precision_to_string(st.pinned));
        if (streq(prop, "HostBytes"))
                return sd_bus_message_append(reply, "t", st.info.host_bytes);
        if (streq(prop, "DeviceBytes"))
                return sd_bus_message_append(reply, "t", st.info.device_bytes);
        if (streq(prop, "Active"))
                return sd_bus_message_append(reply, "u", st.active_requests);
        if (streq(prop, "Queued"))
                return sd_bus_message_append(reply, "u", st.queued_requests);
        return -ENOENT;
}

static const sd_bus_vtable model_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", model_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Path", "s", model_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Architecture", "s", model_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("FileType", "s", model_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Parameters", "t", model_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ContextLength", "u", model_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("HasChatTemplate", "b", model_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Precision", "s", model_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Pinned", "s", model_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("HostBytes", "t", model_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DeviceBytes", "t", model_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Active", "u", model_prop, 0, 0),
        SD_BUS_PROPERTY("Queued", "u", model_prop, 0, 0),
        SD_BUS_VTABLE_END
};

/* ---- Change signals ---- */

static void on_models_changed(Manager *m, void *userdata) {
        DbusServer *s = userdata;
        ManagedModel *mm;

        (void) sd_bus_emit_properties_changed(s->bus, QD_MANAGER_PATH, QD_MANAGER_IFACE, "Models",
                                              "DeviceMemoryUsed", NULL);
        for (size_t i = 0; (mm = manager_model_at(m, i)); i++) {
                _cleanup_free_ char *p = dbus_model_path(managed_model_name(mm));
                if (p)
                        (void) sd_bus_emit_properties_changed(s->bus, p, QD_MODEL_IFACE, "Precision", "Pinned",
                                                              "HostBytes", "DeviceBytes", NULL);
        }
}

static void on_precision_changed(Manager *m, const char *model, QdPrecision from, QdPrecision to,
                                 const char *reason, void *userdata) {
        DbusServer *s = userdata;
        (void) sd_bus_emit_signal(s->bus, QD_MANAGER_PATH, QD_MANAGER_IFACE, "PrecisionChanged", "ssss", model,
                                  qd_precision_to_string(from), qd_precision_to_string(to), strna(reason));
}

/* ---- Lifetime ---- */

static int open_bus(bool user, sd_bus **ret) {
        const char *address = getenv("QUANTD_BUS_ADDRESS");
        sd_bus *bus = NULL;
        int r;

        if (address && *address)
                r = bus_open_address(address, &bus);
        else
                r = user ? sd_bus_open_user(&bus) : sd_bus_open_system(&bus);
        if (r < 0)
                return r;
        *ret = bus;
        return 0;
}

int dbus_server_new(Manager *m, bool user, DbusServer **ret) {
        DbusServer *s;
        int r;

        s = calloc(1, sizeof(DbusServer));
        if (!s)
                return log_oom();
        s->manager = m;
        s->user = user;
        r = open_bus(user, &s->bus);
        if (r < 0) {
                log_error_errno(r, "Failed to connect to the %s bus: %m", user ? "session" : "system");
                goto fail;
        }
        r = sd_bus_add_object_vtable(s->bus, &s->manager_slot, QD_MANAGER_PATH, QD_MANAGER_IFACE, manager_vtable, s);
        if (r >= 0)
                r = sd_bus_add_fallback_vtable(s->bus, &s->model_slot, QD_MODEL_PREFIX, QD_MODEL_IFACE, model_vtable,
                                               model_find, s);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(s->bus, &s->model_enum_slot, QD_MODEL_PREFIX, model_enumerate, s);
        if (r >= 0)
                r = dbus_request_register(s);
        if (r >= 0)
                r = dbus_job_register(s);
        if (r >= 0)
                r = sd_bus_add_object_manager(s->bus, NULL, QD_MANAGER_PATH);
        if (r < 0) {
                log_error_errno(r, "Failed to export the D-Bus objects: %m");
                goto fail;
        }
        r = manager_add_listener(m, &(ManagerListener) {
                .models_changed = on_models_changed,
                .precision_changed = on_precision_changed,
                .userdata = s,
        });
        if (r < 0)
                goto fail;
        r = sd_bus_request_name(s->bus, QD_BUS_NAME, 0);
        if (r < 0) {
                log_error_errno(r, "Failed to acquire the bus name %s: %m", QD_BUS_NAME);
                goto fail;
        }
        r = bus_loop_attach(s->bus, manager_loop(m), &s->loop);
        if (r < 0) {
                log_error_errno(r, "Failed to attach the bus to the event loop: %m");
                goto fail;
        }
        *ret = s;
        return 0;
fail:
        dbus_server_free(s);
        return r;
}

int dbus_server_flush(DbusServer *s) {
        return s && s->bus ? sd_bus_flush(s->bus) : 0;
}

void dbus_server_set_policy_hook(DbusServer *s, PolicyStatusHook hook, void *userdata) {
        s->policy_hook = hook;
        s->policy_userdata = userdata;
}

DbusServer *dbus_server_free(DbusServer *s) {
        if (!s)
                return NULL;
        manager_remove_listener(s->manager, s);
        dbus_job_unregister(s);
        dbus_requests_free(s);
        dbus_auth_free(s);
        s->loop = bus_loop_detach(s->loop);
        sd_bus_slot_unref(s->manager_slot);
        sd_bus_slot_unref(s->model_slot);
        sd_bus_slot_unref(s->model_enum_slot);
        sd_bus_slot_unref(s->request_slot);
        sd_bus_slot_unref(s->request_enum_slot);
        sd_bus_slot_unref(s->owner_slot);
        if (s->bus) {
                (void) sd_bus_flush(s->bus);
                sd_bus_close(s->bus);
                sd_bus_unref(s->bus);
        }
        return mfree(s);
}
