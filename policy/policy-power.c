/* Reads mains and battery state from /sys/class/power_supply. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "macro.h"
#include "policy-readings.h"
#include "policy-util.h"

static void read_battery(PolicyPower *p, const char *dir, unsigned *n, double *sum_percent) {
        _cleanup_free_ char *scope = NULL, *status = NULL;
        int64_t v;

        /* Peripheral batteries (mouse, headset) carry scope=Device; they do not power us. */
        if (policy_read_string_at(dir, "scope", &scope) >= 0 && streq(scope, "Device"))
                return;
        if (policy_read_int_at(dir, "present", &v) >= 0 && v == 0)
                return;
        if (policy_read_int_at(dir, "capacity", &v) < 0)
                return;
        *sum_percent += (double) CLAMP(v, 0, 100);
        (*n)++;
        p->battery_present = true;
        if (policy_read_string_at(dir, "status", &status) >= 0 &&
            (p->battery_status[0] == '\0' || streq(status, "Discharging")))
                snprintf(p->battery_status, sizeof p->battery_status, "%s", status);
        /* energy_now in µWh, power_now in µW */
        if (policy_read_int_at(dir, "energy_now", &v) >= 0)
                p->energy_now_wh = (isnan(p->energy_now_wh) ? 0 : p->energy_now_wh) + (double) v / 1e6;
        if (policy_read_int_at(dir, "power_now", &v) >= 0)
                p->power_now_w = (isnan(p->power_now_w) ? 0 : p->power_now_w) + (double) v / 1e6;
}

int policy_power_read(PolicyPower *ret) {
        _cleanup_free_ char *dir = fs_path("/sys/class/power_supply");
        _cleanup_(closedirp) DIR *d = NULL;
        PolicyPower p = { .battery_percent = NAN, .energy_now_wh = NAN, .power_now_w = NAN };
        double sum_percent = 0;
        unsigned n_bat = 0;
        struct dirent *de;

        if (!dir)
                return -ENOMEM;
        d = opendir(dir);
        if (d)
                while ((de = readdir(d))) {
                        _cleanup_free_ char *ps = NULL, *type = NULL;
                        int64_t online;

                        if (de->d_name[0] == '.')
                                continue;
                        if (asprintf(&ps, "%s/%s", dir, de->d_name) < 0)
                                return -ENOMEM;
                        if (policy_read_string_at(ps, "type", &type) < 0)
                                continue;
                        if (streq(type, "Mains") || streq(type, "USB")) {
                                if (policy_read_int_at(ps, "online", &online) < 0)
                                        continue;
                                p.ac_present = true;
                                if (online > 0)
                                        p.ac_online = true;
                        } else if (streq(type, "Battery"))
                                read_battery(&p, ps, &n_bat, &sum_percent);
                }
        if (n_bat > 0)
                p.battery_percent = sum_percent / n_bat;
        *ret = p;
        return 0;
}

bool policy_readings_on_battery(const PolicyReadings *r) {
        if (r->upower.present && r->upower.on_battery)
                return true;
        if (r->power.ac_present)
                return !r->power.ac_online;
        return r->power.battery_present && streq(r->power.battery_status, "Discharging");
}

double policy_readings_battery_percent(const PolicyReadings *r) {
        if (r->upower.present && r->upower.display_present)
                return r->upower.percentage;
        if (r->power.battery_present)
                return r->power.battery_percent;
        return NAN;
}
