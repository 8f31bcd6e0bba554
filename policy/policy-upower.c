/* Follows UPower on the system bus: OnBattery and the display device's charge. */
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "policy-bus.h"

#define UPOWER_SERVICE "org.freedesktop.UPower"
#define UPOWER_DISPLAY "/org/freedesktop/UPower/devices/DisplayDevice"

struct PolicyUPowerWatch {
        PolicyUPower *out;
        PolicyPropWatch *main, *display;
        void (*changed)(void *userdata);
        void *userdata;
};

static int main_prop(const char *name, sd_bus_message *m, void *userdata) {
        PolicyUPowerWatch *w = userdata;

        if (streq(name, "OnBattery")) {
                int b;
                int r = sd_bus_message_read(m, "v", "b", &b);
                if (r >= 0)
                        w->out->on_battery = b;
                return r;
        }
        return sd_bus_message_skip(m, "v");
}

static int display_prop(const char *name, sd_bus_message *m, void *userdata) {
        PolicyUPowerWatch *w = userdata;
        int r;

        if (streq(name, "IsPresent")) {
                int b;
                r = sd_bus_message_read(m, "v", "b", &b);
                if (r >= 0)
                        w->out->display_present = b;
                return r;
        }
        if (streq(name, "Percentage"))
                return sd_bus_message_read(m, "v", "d", &w->out->percentage);
        if (streq(name, "State"))
                return sd_bus_message_read(m, "v", "u", &w->out->state);
        return sd_bus_message_skip(m, "v");
}

static void done(bool present, void *userdata) {
        PolicyUPowerWatch *w = userdata;

        w->out->present = policy_prop_watch_present(w->main);
        if (!w->out->present)
                w->out->on_battery = false;
        if (!policy_prop_watch_present(w->display))
                w->out->display_present = false;
        w->changed(w->userdata);
}

int policy_upower_watch_new(sd_bus *bus, PolicyUPower *out, void (*changed)(void *userdata),
                            void *userdata, PolicyUPowerWatch **ret) {
        PolicyUPowerWatch *w;
        int r;

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        *w = (PolicyUPowerWatch) { .out = out, .changed = changed, .userdata = userdata };
        r = policy_prop_watch_new(bus, UPOWER_SERVICE, "/org/freedesktop/UPower", "org.freedesktop.UPower",
                                  main_prop, done, w, &w->main);
        if (r >= 0)
                r = policy_prop_watch_new(bus, UPOWER_SERVICE, UPOWER_DISPLAY, "org.freedesktop.UPower.Device",
                                          display_prop, done, w, &w->display);
        if (r < 0) {
                policy_upower_watch_free(w);
                return r;
        }
        *ret = w;
        return 0;
}

PolicyUPowerWatch *policy_upower_watch_free(PolicyUPowerWatch *w) {
        if (!w)
                return NULL;
        policy_prop_watch_free(w->main);
        policy_prop_watch_free(w->display);
        free(w);
        return NULL;
}
