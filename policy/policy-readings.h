/* A snapshot of everything the policy looks at: temperatures, power supplies, memory, the power
 * profile and the GPU memory budget. The readers in policy-{thermal,power,memory}.c fill it from
 * sysfs/procfs (through fs_path(), so $QUANTD_ROOT redirects them), the bus watchers in
 * policy-{upower,ppd}.c from the system bus. Each source says whether it is present. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define POLICY_MAX_SENSORS 32

typedef struct PolicySensor {
        char name[64];          /* "thermal_zone0:x86_pkg_temp" or "hwmon2:amdgpu:temp1" */
        double temp_c;
        double trip_c;          /* lowest 'hot'/'passive' trip point, or NAN */
        bool gpu;
} PolicySensor;

typedef struct PolicyThermal {
        bool present;
        unsigned n_sensors;
        PolicySensor sensors[POLICY_MAX_SENSORS];
} PolicyThermal;

typedef struct PolicyPower {
        /* /sys/class/power_supply */
        bool ac_present;        /* a Mains/USB supply exists */
        bool ac_online;         /* any of them online */
        bool battery_present;   /* a system battery (scope Device excluded) */
        double battery_percent;
        char battery_status[32]; /* "Charging", "Discharging", "Full", ... */
        double energy_now_wh, power_now_w; /* NAN when not reported */
} PolicyPower;

typedef struct PolicyUPower {
        bool present;           /* org.freedesktop.UPower owns a name on the system bus */
        bool on_battery;
        bool display_present;   /* DisplayDevice IsPresent */
        double percentage;
        uint32_t state;         /* UPower device state: 1 charging, 2 discharging, 4 full, ... */
} PolicyUPower;

typedef struct PolicyProfile {
        bool present;
        char service[48];       /* which bus name answered */
        char active[32];        /* "performance", "balanced", "power-saver" */
        char degraded[64];      /* PerformanceDegraded, "" when not */
} PolicyProfile;

typedef enum PolicyPsiMode {
        POLICY_PSI_ABSENT,      /* no /proc/pressure/memory */
        POLICY_PSI_POLL,        /* read every poll interval */
        POLICY_PSI_TRIGGER,     /* a kernel trigger wakes the loop, plus the periodic reads */
} PolicyPsiMode;

typedef struct PolicyMemory {
        bool meminfo_present;
        uint64_t mem_total, mem_available; /* bytes */
        bool psi_present;
        double psi_some_avg10, psi_full_avg10; /* percent */
        PolicyPsiMode psi_mode;
        uint64_t psi_event_usec; /* CLOCK_MONOTONIC time of the last trigger event, 0: none */
} PolicyMemory;

typedef struct PolicyGpuMemory {
        bool present;
        uint64_t budget, used;  /* VK_EXT_memory_budget and what quantd holds, bytes */
} PolicyGpuMemory;

typedef struct PolicyReadings {
        PolicyThermal thermal;
        PolicyPower power;
        PolicyUPower upower;
        PolicyProfile profile;
        PolicyMemory memory;
        PolicyGpuMemory gpu;
} PolicyReadings;

void policy_readings_init(PolicyReadings *r);

/* sysfs/procfs readers. Each fills its part of the snapshot; a missing source is reported as
 * not present and returns 0. Negative errno only for real failures (out of memory). */
int policy_thermal_read(PolicyThermal *ret);
int policy_power_read(PolicyPower *ret);
int policy_memory_read(PolicyMemory *m); /* keeps psi_mode and psi_event_usec */

/* PSI trigger on /proc/pressure/memory: returns a pollable fd (POLLPRI on events) or -EOPNOTSUPP
 * where the file is not the kernel's (a fake tree) or the kernel refuses the trigger. When the
 * window is refused (no CAP_SYS_RESOURCE: only multiples of 2 s), the next multiple of 2 s is
 * tried with the stall scaled alike. */
int policy_psi_trigger_open(uint64_t stall_usec, uint64_t window_usec);

/* true: on battery according to any source (UPower OnBattery, or AC present but offline, or no
 * AC and a battery discharging). */
bool policy_readings_on_battery(const PolicyReadings *r);
/* Battery charge in percent from UPower's display device, else sysfs; NAN when unknown. */
double policy_readings_battery_percent(const PolicyReadings *r);

const char *policy_psi_mode_to_string(PolicyPsiMode m);
