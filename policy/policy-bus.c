/* sd-bus on a libuv loop, and a watcher that follows one object's properties on the bus. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "policy-bus.h"
#include "policy-util.h"

struct PolicyBusAttach {
        sd_bus *bus;
        uv_poll_t poll;
        uv_timer_t timer;
        uv_prepare_t prepare;
        int poll_events;
        unsigned open_handles;
};

static void attach_process(PolicyBusAttach *a) {
        /* Dispatch everything that is ready; errors (a dropped connection) end the loop. */
        for (;;) {
                int r = sd_bus_process(a->bus, NULL);
                if (r <= 0)
                        break;
        }
}

static void attach_on_poll(uv_poll_t *h, int status, int events) {
        attach_process(h->data);
}

static void attach_on_timer(uv_timer_t *h) {
        attach_process(h->data);
}

static void attach_on_prepare(uv_prepare_t *h) {
        PolicyBusAttach *a = h->data;
        uint64_t until;
        int events = 0, e;

        e = sd_bus_get_events(a->bus);
        if (e < 0) {
                /* The connection is gone: stop watching it. */
                if (a->poll_events != 0)
                        (void) uv_poll_stop(&a->poll);
                a->poll_events = 0;
                (void) uv_timer_stop(&a->timer);
                return;
        }
        if (e & POLLIN)
                events |= UV_READABLE;
        if (e & POLLOUT)
                events |= UV_WRITABLE;
        if (events != a->poll_events) {
                (void) uv_poll_start(&a->poll, events, attach_on_poll);
                a->poll_events = events;
        }
        if (sd_bus_get_timeout(a->bus, &until) > 0 && until != UINT64_MAX) {
                uint64_t now = policy_now_usec();
                uint64_t ms = until > now ? DIV_ROUND_UP(until - now, 1000) : 0;
                (void) uv_timer_start(&a->timer, attach_on_timer, ms, 0);
        } else
                (void) uv_timer_stop(&a->timer);
}

static void attach_on_close(uv_handle_t *h) {
        PolicyBusAttach *a = h->data;
        if (--a->open_handles == 0) {
                sd_bus_unref(a->bus);
                free(a);
        }
}

int policy_bus_attach(uv_loop_t *loop, sd_bus *bus, PolicyBusAttach **ret) {
        PolicyBusAttach *a;
        int fd, r;

        fd = sd_bus_get_fd(bus);
        if (fd < 0)
                return fd;
        a = calloc(1, sizeof *a);
        if (!a)
                return -ENOMEM;
        r = uv_poll_init(loop, &a->poll, fd);
        if (r < 0) {
                free(a);
                return r;
        }
        a->bus = sd_bus_ref(bus);
        (void) uv_timer_init(loop, &a->timer);
        (void) uv_prepare_init(loop, &a->prepare);
        a->poll.data = a->timer.data = a->prepare.data = a;
        a->open_handles = 3;
        (void) uv_prepare_start(&a->prepare, attach_on_prepare);
        /* The prepare handle re-arms the others; it need not keep the loop alive by itself. */
        uv_unref((uv_handle_t *) &a->prepare);
        *ret = a;
        return 0;
}

void policy_bus_detach(PolicyBusAttach *a) {
        if (!a)
                return;
        uv_close((uv_handle_t *) &a->poll, attach_on_close);
        uv_close((uv_handle_t *) &a->timer, attach_on_close);
        uv_close((uv_handle_t *) &a->prepare, attach_on_close);
}

struct PolicyPropWatch {
        sd_bus *bus;
        char *service, *path, *iface;
        char *owner;                    /* unique name of the current owner, NULL: none */
        sd_bus_slot *owner_match, *props_match, *get_all;
        PolicyPropFn prop;
        PolicyWatchFn done;
        void *userdata;
        bool present;
};

bool policy_prop_watch_present(PolicyPropWatch *w) {
        return w && w->present;
}

static int parse_props(PolicyPropWatch *w, sd_bus_message *m) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *name;

                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                r = w->prop(name, m, w->userdata);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int on_get_all(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PolicyPropWatch *w = userdata;
        const char *sender;

        w->get_all = sd_bus_slot_unref(w->get_all);
        if (sd_bus_message_is_method_error(reply, NULL)) {
                /* Not running (and not activatable), or no such object: absent. */
                bool was = w->present;
                w->present = false;
                if (was)
                        w->done(false, w->userdata);
                return 0;
        }
        sender = sd_bus_message_get_sender(reply);
        if (sender && !streq_ptr(sender, w->owner)) {
                free(w->owner);
                w->owner = strdup(sender);
        }
        if (parse_props(w, reply) < 0)
                return 0;
        w->present = true;
        w->done(true, w->userdata);
        return 0;
}

static int request_all(PolicyPropWatch *w) {
        w->get_all = sd_bus_slot_unref(w->get_all);
        return sd_bus_call_method_async(w->bus, &w->get_all, w->service, w->path,
                                        "org.freedesktop.DBus.Properties", "GetAll", on_get_all, w,
                                        "s", w->iface);
}

static int on_props_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        PolicyPropWatch *w = userdata;
        const char *iface;

        /* Anyone may emit a signal with this path: only the name's owner counts. */
        if (!w->owner || !streq_ptr(sd_bus_message_get_sender(m), w->owner))
                return 0;
        if (sd_bus_message_read(m, "s", &iface) < 0 || !streq(iface, w->iface))
                return 0;
        if (parse_props(w, m) < 0)
                return 0;
        /* Invalidated properties carry no value: fetch them all again. */
        if (sd_bus_message_enter_container(m, 'a', "s") > 0) {
                const char *inv;
                bool any = sd_bus_message_read(m, "s", &inv) > 0;
                (void) sd_bus_message_exit_container(m);
                if (any) {
                        (void) request_all(w);
                        return 0;
                }
        }
        w->present = true;
        w->done(true, w->userdata);
        return 0;
}

static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        PolicyPropWatch *w = userdata;
        const char *name, *old, *new;

        if (sd_bus_message_read(m, "sss", &name, &old, &new) < 0 || !streq(name, w->service))
                return 0;
        w->owner = mfree(w->owner);
        if (new[0] != '\0') {
                w->owner = strdup(new);
                (void) request_all(w);
        } else if (w->present) {
                w->present = false;
                w->done(false, w->userdata);
        }
        return 0;
}

int policy_prop_watch_new(sd_bus *bus, const char *service, const char *path, const char *iface,
                          PolicyPropFn prop, PolicyWatchFn done, void *userdata, PolicyPropWatch **ret) {
        _cleanup_free_ char *match = NULL;
        PolicyPropWatch *w;
        int r;

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->bus = sd_bus_ref(bus);
        w->service = strdup(service);
        w->path = strdup(path);
        w->iface = strdup(iface);
        w->prop = prop;
        w->done = done;
        w->userdata = userdata;
        if (!w->service || !w->path || !w->iface) {
                policy_prop_watch_free(w);
                return -ENOMEM;
        }
        if (asprintf(&match, "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                     "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='%s'", service) < 0) {
                policy_prop_watch_free(w);
                return -ENOMEM;
        }
        /* Matches go out before the first GetAll, so that no change can fall between them. */
        r = sd_bus_add_match_async(bus, &w->owner_match, match, on_owner_changed, NULL, w);
        if (r >= 0)
                r = sd_bus_match_signal_async(bus, &w->props_match, NULL, path,
                                              "org.freedesktop.DBus.Properties", "PropertiesChanged",
                                              on_props_changed, NULL, w);
        if (r >= 0)
                r = request_all(w);
        if (r < 0) {
                policy_prop_watch_free(w);
                return r;
        }
        *ret = w;
        return 0;
}

PolicyPropWatch *policy_prop_watch_free(PolicyPropWatch *w) {
        if (!w)
                return NULL;
        sd_bus_slot_unref(w->owner_match);
        sd_bus_slot_unref(w->props_match);
        sd_bus_slot_unref(w->get_all);
        sd_bus_unref(w->bus);
        free(w->service);
        free(w->path);
        free(w->iface);
        free(w->owner);
        free(w);
        return NULL;
}
