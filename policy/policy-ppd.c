/* Follows power-profiles-daemon on the system bus, under its new and its older name. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "policy-bus.h"
#include "policy-util.h"

/* In order of preference: the name since 0.20, then the original one. */
static const struct {
        const char *service, *path;
} names[] = {
        { "org.freedesktop.UPower.PowerProfiles", "/org/freedesktop/UPower/PowerProfiles" },
        { "net.hadess.PowerProfiles", "/net/hadess/PowerProfiles" },
};
#define N_NAMES ELEMENTSOF(names)

typedef struct PpdName {
        struct PolicyPpdWatch *w;
        PolicyPropWatch *watch;
        char active[32], degraded[64];
} PpdName;

struct PolicyPpdWatch {
        PolicyProfile *out;
        PpdName n[N_NAMES];
        void (*changed)(void *userdata);
        void *userdata;
};

static int prop(const char *name, sd_bus_message *m, void *userdata) {
        PpdName *n = userdata;
        const char *s;
        int r;

        if (streq(name, "ActiveProfile")) {
                r = sd_bus_message_read(m, "v", "s", &s);
                if (r >= 0)
                        strscpyf(n->active, "%s", s);
                return r;
        }
        if (streq(name, "PerformanceDegraded")) {
                r = sd_bus_message_read(m, "v", "s", &s);
                if (r >= 0)
                        strscpyf(n->degraded, "%s", s);
                return r;
        }
        return sd_bus_message_skip(m, "v");
}

static void done(bool present, void *userdata) {
        PpdName *n = userdata;
        PolicyPpdWatch *w = n->w;
        PolicyProfile p = {};

        for (size_t i = 0; i < N_NAMES; i++)
                if (policy_prop_watch_present(w->n[i].watch)) {
                        p.present = true;
                        strscpyf(p.service, "%s", names[i].service);
                        strscpyf(p.active, "%s", w->n[i].active);
                        strscpyf(p.degraded, "%s", w->n[i].degraded);
                        break;
                }
        *w->out = p;
        w->changed(w->userdata);
}

int policy_ppd_watch_new(sd_bus *bus, PolicyProfile *out, void (*changed)(void *userdata),
                         void *userdata, PolicyPpdWatch **ret) {
        PolicyPpdWatch *w;
        int r;

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->out = out;
        w->changed = changed;
        w->userdata = userdata;
        for (size_t i = 0; i < N_NAMES; i++) {
                w->n[i].w = w;
                /* Both names share the interface name of their service. */
                r = policy_prop_watch_new(bus, names[i].service, names[i].path, names[i].service, prop,
                                          done, &w->n[i], &w->n[i].watch);
                if (r < 0) {
                        policy_ppd_watch_free(w);
                        return r;
                }
        }
        *ret = w;
        return 0;
}

PolicyPpdWatch *policy_ppd_watch_free(PolicyPpdWatch *w) {
        if (!w)
                return NULL;
        for (size_t i = 0; i < N_NAMES; i++)
                policy_prop_watch_free(w->n[i].watch);
        free(w);
        return NULL;
}
