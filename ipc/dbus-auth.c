/* Who is calling: sender credentials, and the root / owner / polkit org.quantd.manage check.
 * The polkit call is asynchronous: the method call is parked, and dispatched again once polkit
 * answered (the approach of systemd's bus_verify_polkit_async()). */
#include <string.h>
#include <unistd.h>

#include "log.h" /* first: util/macro.h before <sys/param.h> */
#include "dbus-internal.h"

#define POLKIT_ACTION "org.quantd.manage"

struct AuthQuery {
        DbusServer *server;
        sd_bus_message *request;        /* the parked method call */
        sd_bus_slot *slot;              /* the CheckAuthorization call in flight */
        bool done;
        int authorized;                 /* 1 granted, 0 refused, < 0 polkit failed */
        AuthQuery *next;
};

static AuthQuery *auth_query_free(AuthQuery *q) {
        if (!q)
                return NULL;
        sd_bus_slot_unref(q->slot);
        sd_bus_message_unref(q->request);
        return mfree(q);
}

static void auth_query_unlink(DbusServer *s, AuthQuery *q) {
        for (AuthQuery **i = &s->auth_queries; *i; i = &(*i)->next)
                if (*i == q) {
                        *i = q->next;
                        return;
                }
}

void dbus_auth_free(DbusServer *s) {
        while (s->auth_queries) {
                AuthQuery *q = s->auth_queries;
                s->auth_queries = q->next;
                auth_query_free(q);
        }
        s->polkit_loop = bus_loop_detach(s->polkit_loop);
        s->polkit_bus = sd_bus_flush_close_unref(s->polkit_bus);
}

static int polkit_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        AuthQuery *q = userdata;
        DbusServer *s = q->server;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        int authorized = 0, challenge = 0, r;

        q->slot = sd_bus_slot_unref(q->slot);
        if (e) {
                log_notice("polkit CheckAuthorization failed: %s", e->message ?: e->name);
                q->authorized = -EACCES;
        } else {
                r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
                if (r >= 0)
                        r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
                q->authorized = r < 0 ? r : authorized ? 1 : 0;
        }
        q->done = true;
        /* Hand the parked call to the dispatcher again; dbus_caller() finds the answer. */
        r = sd_bus_enqueue_for_read(s->bus, q->request);
        if (r < 0) {
                log_warning_errno(r, "Failed to resume a call after polkit answered: %m");
                (void) sd_bus_reply_method_errorf(q->request, SD_BUS_ERROR_ACCESS_DENIED, "Authorization failed.");
                auth_query_unlink(s, q);
                auth_query_free(q);
        }
        return 0;
}

/* Starts CheckAuthorization for the sender of m. */
static int polkit_start(DbusServer *s, sd_bus_message *m, const char *sender) {
        AuthQuery *q;
        sd_bus *bus = s->bus;
        /* Interactive authentication only when the caller said it can wait for it. */
        unsigned flags = sd_bus_message_get_allow_interactive_authorization(m) > 0 ? 1 : 0;
        int r;

        if (s->user) {
                /* polkit lives on the system bus, not the session bus we serve. */
                if (!s->polkit_bus) {
                        r = sd_bus_open_system(&s->polkit_bus);
                        if (r >= 0)
                                r = bus_loop_attach(s->polkit_bus, manager_loop(s->manager), &s->polkit_loop);
                        if (r < 0) {
                                s->polkit_bus = sd_bus_flush_close_unref(s->polkit_bus);
                                return r;
                        }
                }
                bus = s->polkit_bus;
        }
        q = calloc(1, sizeof(AuthQuery));
        if (!q)
                return -ENOMEM;
        q->server = s;
        q->request = sd_bus_message_ref(m);
        r = sd_bus_call_method_async(bus, &q->slot, "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
                                     "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization", polkit_reply, q,
                                     "(sa{sv})sa{ss}us", "system-bus-name", 1, "name", "s", sender, POLKIT_ACTION, 0,
                                     flags, "");
        if (r < 0) {
                auth_query_free(q);
                return r;
        }
        q->next = s->auth_queries;
        s->auth_queries = q;
        return 0;
}

int dbus_caller(DbusServer *s, sd_bus_message *m, bool check_privileged, Caller *c) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        const char *sender = sd_bus_message_get_sender(m);
        uid_t uid = (uid_t) -1;
        pid_t pid = 0;
        int r;

        *c = (Caller) { .uid = (uid_t) -1, .id = sender };
        r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID | SD_BUS_CREDS_PID, &creds);
        if (r >= 0) {
                (void) sd_bus_creds_get_euid(creds, &uid);
                (void) sd_bus_creds_get_pid(creds, &pid);
        }
        c->uid = uid;
        c->pid = pid;
        if (!check_privileged)
                return 0;

        if (uid == 0 || (s->user && uid == getuid())) {
                c->privileged = true;
                return 0;
        }
        if (!sender)
                return 0;

        /* Second dispatch of a parked call: polkit has answered. */
        for (AuthQuery *q = s->auth_queries; q; q = q->next)
                if (q->request == m) {
                        if (!q->done)
                                return 1;
                        c->privileged = q->authorized > 0;
                        auth_query_unlink(s, q);
                        auth_query_free(q);
                        goto decided;
                }

        r = polkit_start(s, m, sender);
        if (r >= 0)
                return 1;
        log_notice("Could not ask polkit about %s (uid %d): %s; refusing.", sender, (int) uid, strerror(-r));
decided:
        if (!c->privileged)
                log_notice("Management call %s() from %s (uid %d, pid %d) refused.", sd_bus_message_get_member(m),
                           sender, (int) uid, (int) pid);
        else
                log_info("Management call %s() from %s (uid %d, pid %d) authorized by polkit.",
                         sd_bus_message_get_member(m), sender, (int) uid, (int) pid);
        return 0;
}
