/* The policy on a libuv loop: reads sysfs/procfs every poll interval, wakes on the kernel's PSI
 * trigger, follows UPower and power-profiles-daemon on the system bus, decides, and calls back
 * when the decision changes. Everything runs on the loop thread. */
#pragma once

/* Before uv.h: its sys/param.h defines MIN/MAX only where they are not defined yet. */
#include "macro.h"

#include <systemd/sd-bus.h>
#include <uv.h>

#include "policy-rules.h"

typedef struct PolicyMonitor PolicyMonitor;

typedef struct PolicyMonitorOptions {
        const PolicyConfig *config;     /* copied; NULL: defaults */
        /* The system bus. NULL: the monitor opens its own (sd_bus_open_system(), which honours
         * $DBUS_SYSTEM_BUS_ADDRESS) and drives it from the loop. A bus given here must already be
         * driven by the caller. */
        sd_bus *system_bus;
        /* What the caller runs now: fills up to max models and the GPU memory budget (gpu may
         * be left untouched: no budget known); returns how many models it filled. */
        size_t (*get_models)(PolicyModelInput *models, size_t max, PolicyGpuMemory *gpu, void *userdata);
        /* The decision changed (old is NULL the first time). */
        void (*changed)(PolicyMonitor *m, const PolicyDecision *old, const PolicyDecision *now,
                        void *userdata);
        void *userdata;
} PolicyMonitorOptions;

int policy_monitor_new(uv_loop_t *loop, const PolicyMonitorOptions *o, PolicyMonitor **ret);
/* Stops everything; memory is released when the loop runs the handles' close callbacks. */
PolicyMonitor *policy_monitor_free(PolicyMonitor *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(PolicyMonitor *, policy_monitor_free);

/* Reads the sysfs/procfs sources now and decides. */
int policy_monitor_poll(PolicyMonitor *m);
/* Decides again from the readings held (after the set of models or a pin changed). */
int policy_monitor_update(PolicyMonitor *m);
/* Swaps the configuration (after a reload); restarts the timer and the PSI trigger. */
int policy_monitor_set_config(PolicyMonitor *m, const PolicyConfig *c);

const PolicyConfig *policy_monitor_config(PolicyMonitor *m);
const PolicyReadings *policy_monitor_readings(PolicyMonitor *m);
const PolicyDecision *policy_monitor_decision(PolicyMonitor *m);
/* "connected", "given", "off" (config) or "unavailable: <error>". */
const char *policy_monitor_bus_state(PolicyMonitor *m);
