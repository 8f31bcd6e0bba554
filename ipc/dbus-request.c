/* Generate() and the org.quantd.Quantd1.Request objects: Token/Finished signals sent to the
 * request's owner only, Cancel, and cancellation when the owner leaves the bus. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h" /* first: util/macro.h before <sys/param.h> */
#include "dbus-internal.h"
#include "manager-jobs.h"

struct DbusRequest {
        DbusServer *server;
        GenRequest *req;
        uint64_t id;
        char *owner;
        char *path;
        char *model;
        DbusRequest *prev, *next;
};

static DbusRequest *dbus_request_free(DbusRequest *d) {
        if (!d)
                return NULL;
        if (d->prev)
                d->prev->next = d->next;
        else if (d->server && d->server->requests == d)
                d->server->requests = d->next;
        if (d->next)
                d->next->prev = d->prev;
        free(d->owner);
        free(d->path);
        free(d->model);
        return mfree(d);
}

static int send_to_owner(DbusRequest *d, const char *member, sd_bus_message **ret) {
        sd_bus_message *sig = NULL;
        int r;

        r = sd_bus_message_new_signal(d->server->bus, &sig, d->path, QD_REQUEST_IFACE, member);
        if (r >= 0 && d->owner)
                r = sd_bus_message_set_destination(sig, d->owner);
        if (r < 0) {
                sd_bus_message_unref(sig);
                return r;
        }
        *ret = sig;
        return 0;
}

/* Length of the valid UTF-8 sequence at s, 0 when invalid. */
static size_t utf8_valid_len(const unsigned char *s) {
        size_t n;
        uint32_t cp;

        if (s[0] < 0x80)
                return 1;
        if ((s[0] & 0xE0) == 0xC0)
                n = 2, cp = s[0] & 0x1F;
        else if ((s[0] & 0xF0) == 0xE0)
                n = 3, cp = s[0] & 0x0F;
        else if ((s[0] & 0xF8) == 0xF0)
                n = 4, cp = s[0] & 0x07;
        else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xC0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3F);
        }
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
                return 0;
        return n;
}

/* D-Bus strings must be valid UTF-8: the engine's text stream holds back split characters, but
 * a model may still emit bytes that never form one; those become U+FFFD. */
static char *utf8_sanitize(const char *text) {
        const unsigned char *s = (const unsigned char *) text;
        size_t len = strlen(text);
        char *out = malloc(len * 3 + 1), *o = out;

        if (!out)
                return NULL;
        while (*s) {
                size_t n = utf8_valid_len(s);
                if (n == 0) {
                        memcpy(o, "\xef\xbf\xbd", 3);
                        o += 3;
                        s++;
                } else {
                        memcpy(o, s, n);
                        o += n;
                        s += n;
                }
        }
        *o = '\0';
        return out;
}

static void on_token(GenRequest *r, const char *text, int32_t token, float logprob, void *userdata) {
        DbusRequest *d = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *sig = NULL;
        _cleanup_free_ char *clean = NULL;

        if (!d->server)
                return; /* the bus is gone (shutdown): nobody to tell */
        clean = utf8_sanitize(text);
        if (!clean || send_to_owner(d, "Token", &sig) < 0 ||
            sd_bus_message_append(sig, "sid", clean, token, (double) logprob) < 0 ||
            sd_bus_send(d->server->bus, sig, NULL) < 0)
                log_debug("Request %" PRIu64 ": failed to send a token to %s.", d->id, strna(d->owner));
}

static void on_finished(GenRequest *r, const char *reason, const GenStats *st, void *userdata) {
        DbusRequest *d = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *sig = NULL;
        int k;

        if (!d->server) {
                dbus_request_free(d);
                return;
        }
        k = send_to_owner(d, "Finished", &sig);
        if (k >= 0)
                k = sd_bus_message_append(sig, "sa{sv}", reason, 5,
                                          "prompt_tokens", "u", st->prompt_tokens,
                                          "completion_tokens", "u", st->completion_tokens,
                                          "prompt_ms", "d", st->prompt_ms,
                                          "generate_ms", "d", st->generate_ms,
                                          "precision", "s", st->precision >= 0 ? qd_precision_to_string(st->precision) : "");
        if (k >= 0)
                k = sd_bus_send(d->server->bus, sig, NULL);
        if (k < 0)
                log_debug_errno(k, "Request %" PRIu64 ": failed to send Finished: %m", d->id);
        dbus_request_free(d);
}

static const GenCallbacks callbacks = {
        .token = on_token,
        .finished = on_finished,
};

typedef struct GenOptions {
        GenParams p;
        char **stop;
        size_t n_stop;
        QdChatMessage *msgs;
} GenOptions;

static void gen_options_done(GenOptions *o) {
        free(o->stop);
        free(o->msgs);
}

/* Reads any integer variant. */
static int read_int_variant(sd_bus_message *m, int64_t *ret) {
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        if (type != 'v' || !contents || strlen(contents) != 1)
                return -EINVAL;
        switch (contents[0]) {
        case 'y': { uint8_t v; r = sd_bus_message_read(m, "v", "y", &v); *ret = v; break; }
        case 'n': { int16_t v; r = sd_bus_message_read(m, "v", "n", &v); *ret = v; break; }
        case 'q': { uint16_t v; r = sd_bus_message_read(m, "v", "q", &v); *ret = v; break; }
        case 'i': { int32_t v; r = sd_bus_message_read(m, "v", "i", &v); *ret = v; break; }
        case 'u': { uint32_t v; r = sd_bus_message_read(m, "v", "u", &v); *ret = v; break; }
        case 'x': { int64_t v; r = sd_bus_message_read(m, "v", "x", &v); *ret = v; break; }
        case 't': { uint64_t v; r = sd_bus_message_read(m, "v", "t", &v); *ret = (int64_t) v; break; }
        default: return -EINVAL;
        }
        return r;
}

static int read_double_variant(sd_bus_message *m, double *ret) {
        const char *contents;
        char type;
        int64_t i;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        if (type == 'v' && contents && streq(contents, "d"))
                return sd_bus_message_read(m, "v", "d", ret);
        r = read_int_variant(m, &i);
        if (r >= 0)
                *ret = (double) i;
        return r;
}

static int parse_options(sd_bus_message *m, GenOptions *o, sd_bus_error *error) {
        const char *key;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                int64_t i = 0;
                double d = 0;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "max_tokens")) {
                        r = read_int_variant(m, &i);
                        if (r >= 0 && (i <= 0 || i > INT32_MAX))
                                r = -EINVAL;
                        o->p.max_tokens = (int32_t) i;
                } else if (streq(key, "temperature") || streq(key, "top_p") || streq(key, "min_p") ||
                           streq(key, "repeat_penalty")) {
                        r = read_double_variant(m, &d);
                        if (r >= 0 && (!isfinite(d) || d < 0 || d > 1e6))
                                r = -EINVAL;
                        if (streq(key, "temperature"))
                                o->p.sampling.temperature = (float) d;
                        else if (streq(key, "top_p"))
                                o->p.sampling.top_p = (float) d;
                        else if (streq(key, "min_p"))
                                o->p.sampling.min_p = (float) d;
                        else
                                o->p.sampling.repeat_penalty = (float) d;
                } else if (streq(key, "top_k") || streq(key, "repeat_last_n")) {
                        r = read_int_variant(m, &i);
                        if (r >= 0 && (i < 0 || i > INT32_MAX))
                                r = -EINVAL;
                        if (streq(key, "top_k"))
                                o->p.sampling.top_k = (int32_t) i;
                        else
                                o->p.sampling.repeat_last_n = (int32_t) i;
                } else if (streq(key, "seed")) {
                        r = read_int_variant(m, &i);
                        o->p.sampling.seed = (uint64_t) i;
                } else if (streq(key, "stop")) {
                        r = sd_bus_message_enter_container(m, 'v', "as");
                        if (r >= 0)
                                r = sd_bus_message_enter_container(m, 'a', "s");
                        while (r >= 0) {
                                const char *s;
                                char **n;
                                r = sd_bus_message_read(m, "s", &s);
                                if (r <= 0)
                                        break;
                                n = realloc(o->stop, (o->n_stop + 1) * sizeof(char *));
                                if (!n)
                                        return -ENOMEM;
                                o->stop = n;
                                o->stop[o->n_stop++] = (char *) s;
                        }
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                } else if (streq(key, "messages")) {
                        size_t n = 0;
                        r = sd_bus_message_enter_container(m, 'v', "a(ss)");
                        if (r >= 0)
                                r = sd_bus_message_enter_container(m, 'a', "(ss)");
                        while (r >= 0) {
                                const char *role, *content;
                                QdChatMessage *nm;
                                r = sd_bus_message_read(m, "(ss)", &role, &content);
                                if (r <= 0)
                                        break;
                                nm = realloc(o->msgs, (n + 1) * sizeof(QdChatMessage));
                                if (!nm)
                                        return -ENOMEM;
                                o->msgs = nm;
                                o->msgs[n++] = (QdChatMessage) { .role = role, .content = content };
                        }
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        o->p.messages = o->msgs;
                        o->p.n_messages = n;
                } else if (streq(key, "logprobs")) {
                        int b;
                        r = sd_bus_message_read(m, "v", "b", &b);
                        o->p.want_logprobs = b;
                } else
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown option '%s'.", key);
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

int dbus_request_generate(DbusServer *s, sd_bus_message *m, sd_bus_error *error) {
        _cleanup_(gen_options_done) GenOptions o = {};
        const char *model, *prompt;
        DbusRequest *d;
        GenRequest *req;
        Caller c;
        char id[32];
        int r;

        r = sd_bus_message_read(m, "ss", &model, &prompt);
        if (r < 0)
                return r;
        qd_sampling_init(&o.p.sampling);
        r = parse_options(m, &o, error);
        if (r < 0 || sd_bus_error_is_set(error))
                return r;
        if (o.p.n_messages > 0 && *prompt)
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Give either a prompt or messages, not both.");
        o.p.model = model;
        o.p.prompt = o.p.n_messages > 0 ? NULL : prompt;
        o.p.stop = o.stop;
        o.p.n_stop = o.n_stop;

        r = dbus_caller(s, m, false, &c);
        if (r < 0)
                return r;
        d = calloc(1, sizeof(DbusRequest));
        if (!d)
                return -ENOMEM;
        d->server = s;
        d->owner = c.id ? strdup(c.id) : NULL;
        d->model = strdup(model);
        if ((c.id && !d->owner) || !d->model) {
                free(d->owner);
                free(d->model);
                free(d);
                return -ENOMEM;
        }
        r = manager_generate(s->manager, &c, &o.p, &callbacks, d, &req);
        if (r < 0) {
                free(d->owner);
                free(d->model);
                free(d);
                return dbus_reply_errno(m, r, error, "Cannot generate");
        }
        d->req = req;
        d->id = gen_request_id(req);
        snprintf(id, sizeof(id), "%" PRIu64, d->id);
        if (sd_bus_path_encode(QD_REQUEST_PREFIX, id, &d->path) < 0) {
                /* Without a path no one can follow it: end it; on_finished frees d. */
                gen_request_cancel(req);
                return -ENOMEM;
        }
        d->next = s->requests;
        if (s->requests)
                s->requests->prev = d;
        s->requests = d;
        /* The reply is queued before any Token: tokens arrive through the loop, after this
         * handler returned, so the caller always has the path before the first signal. */
        return sd_bus_reply_method_return(m, "o", d->path);
}

static DbusRequest *find_request(DbusServer *s, const char *path) {
        for (DbusRequest *d = s->requests; d; d = d->next)
                if (d->path && streq(d->path, path))
                        return d;
        return NULL;
}

static int request_find(sd_bus *bus, const char *path, const char *iface, void *userdata, void **found,
                        sd_bus_error *error) {
        DbusRequest *d = find_request(userdata, path);
        if (!d)
                return 0;
        *found = d;
        return 1;
}

static int request_enumerate(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        DbusServer *s = userdata;
        size_t n = 0, i = 0;
        char **l;

        for (DbusRequest *d = s->requests; d; d = d->next)
                n++;
        l = calloc(n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (DbusRequest *d = s->requests; d; d = d->next)
                if (d->path && !(l[i++] = strdup(d->path))) {
                        for (size_t j = 0; j < i; j++)
                                free(l[j]);
                        free(l);
                        return -ENOMEM;
                }
        *nodes = l;
        return 1;
}

static int method_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DbusRequest *d = userdata;
        Caller c;
        int r;

        r = dbus_caller(d->server, m, false, &c);
        if (r < 0)
                return r;
        /* Only the owner, root or a manager may stop someone's generation. */
        if (!streq_ptr(c.id, d->owner)) {
                r = dbus_caller(d->server, m, true, &c);
                if (r != 0)
                        return r; /* < 0 error, > 0 parked until polkit answers */
                if (!c.privileged)
                        return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Not the owner of this request.");
        }
        gen_request_cancel(d->req);
        return sd_bus_reply_method_return(m, NULL);
}

static int request_prop(sd_bus *bus, const char *path, const char *iface, const char *prop, sd_bus_message *reply,
                        void *userdata, sd_bus_error *error) {
        DbusRequest *d = userdata;
        if (streq(prop, "Model"))
                return sd_bus_message_append(reply, "s", d->model);
        if (streq(prop, "Owner"))
                return sd_bus_message_append(reply, "s", d->owner ?: "");
        return sd_bus_message_append(reply, "t", d->id);
}

static const sd_bus_vtable request_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "t", request_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Model", "s", request_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Owner", "s", request_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("Cancel", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_cancel, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("Token", SD_BUS_ARGS("s", text, "i", token, "d", logprob), 0),
        SD_BUS_SIGNAL_WITH_ARGS("Finished", SD_BUS_ARGS("s", reason, "a{sv}", stats), 0),
        SD_BUS_VTABLE_END
};

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DbusServer *s = userdata;
        const char *name, *old, *new;

        if (sd_bus_message_read(m, "sss", &name, &old, &new) < 0)
                return 0;
        if (name[0] == ':' && *old && !*new) {
                for (DbusRequest *d = s->requests; d; d = d->next)
                        if (streq_ptr(d->owner, name)) {
                                log_debug("%s left the bus, cancelling its requests.", name);
                                break;
                        }
                manager_cancel_caller(s->manager, name);
                manager_cancel_caller_jobs(s->manager, name);
        }
        return 0;
}

int dbus_request_register(DbusServer *s) {
        int r;

        r = sd_bus_add_fallback_vtable(s->bus, &s->request_slot, QD_REQUEST_PREFIX, QD_REQUEST_IFACE, request_vtable,
                                       request_find, s);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(s->bus, &s->request_enum_slot, QD_REQUEST_PREFIX, request_enumerate, s);
        if (r >= 0)
                r = sd_bus_match_signal(s->bus, &s->owner_slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                        "org.freedesktop.DBus", "NameOwnerChanged", on_name_owner_changed, s);
        return r;
}

void dbus_requests_free(DbusServer *s) {
        /* Normally the manager ended every request (shutdown) before this. Any left are
         * cancelled and orphaned: their callbacks still come and free them, without a bus. */
        while (s->requests) {
                DbusRequest *d = s->requests;
                s->requests = d->next;
                d->prev = d->next = NULL;
                d->server = NULL;
                gen_request_cancel(d->req);
        }
}
