/* System-bus pieces of the policy: an sd-bus connection driven by a libuv loop, a helper that
 * follows one object's properties (GetAll, then PropertiesChanged from the name's owner), and
 * the UPower and power-profiles-daemon watchers built on it. */
#pragma once

/* Before uv.h: its sys/param.h defines MIN/MAX only where they are not defined yet. */
#include "macro.h"

#include <systemd/sd-bus.h>
#include <uv.h>

#include "policy-readings.h"

/* Drives bus from loop: uv_poll on its fd, a uv_timer for sd_bus_get_timeout(), and a
 * uv_prepare that re-arms both before the loop sleeps. */
typedef struct PolicyBusAttach PolicyBusAttach;
int policy_bus_attach(uv_loop_t *loop, sd_bus *bus, PolicyBusAttach **ret);
/* Closes the handles; the memory goes once the loop has run their close callbacks. */
void policy_bus_detach(PolicyBusAttach *a);

/* Called for one property; m is positioned at the variant, which the callback reads or skips. */
typedef int (*PolicyPropFn)(const char *name, sd_bus_message *m, void *userdata);
/* Called when the set of values changed (or the service went away: present == false). */
typedef void (*PolicyWatchFn)(bool present, void *userdata);

/* Follows service's object path, interface iface: GetAll when the name gets an owner,
 * PropertiesChanged from that owner, "absent" when the name loses it. */
typedef struct PolicyPropWatch PolicyPropWatch;
int policy_prop_watch_new(sd_bus *bus, const char *service, const char *path, const char *iface,
                          PolicyPropFn prop, PolicyWatchFn done, void *userdata, PolicyPropWatch **ret);
PolicyPropWatch *policy_prop_watch_free(PolicyPropWatch *w);
bool policy_prop_watch_present(PolicyPropWatch *w);

/* UPower: OnBattery, and the display device's IsPresent/Percentage/State. changed() is called
 * after out was updated. */
typedef struct PolicyUPowerWatch PolicyUPowerWatch;
int policy_upower_watch_new(sd_bus *bus, PolicyUPower *out, void (*changed)(void *userdata),
                            void *userdata, PolicyUPowerWatch **ret);
PolicyUPowerWatch *policy_upower_watch_free(PolicyUPowerWatch *w);

/* power-profiles-daemon under org.freedesktop.UPower.PowerProfiles, or the older
 * net.hadess.PowerProfiles: ActiveProfile and PerformanceDegraded. */
typedef struct PolicyPpdWatch PolicyPpdWatch;
int policy_ppd_watch_new(sd_bus *bus, PolicyProfile *out, void (*changed)(void *userdata),
                         void *userdata, PolicyPpdWatch **ret);
PolicyPpdWatch *policy_ppd_watch_free(PolicyPpdWatch *w);
