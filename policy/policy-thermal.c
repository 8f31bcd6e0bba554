/* Reads temperatures from thermal zones (with their hot/passive trip points) and GPU hwmon chips. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "macro.h"
#include "policy-readings.h"
#include "policy-util.h"

/* Trip points outside this range are firmware placeholders, not limits to honour. */
#define TRIP_MIN_C 40.0
#define TRIP_MAX_C 150.0

static bool hwmon_name_is_gpu(const char *name) {
        static const char *const gpus[] = { "amdgpu", "radeon", "nouveau", "i915", "xe" };
        for (size_t i = 0; i < ELEMENTSOF(gpus); i++)
                if (streq(name, gpus[i]))
                        return true;
        return false;
}

static PolicySensor *sensor_add(PolicyThermal *t) {
        if (t->n_sensors >= POLICY_MAX_SENSORS)
                return NULL;
        PolicySensor *s = &t->sensors[t->n_sensors++];
        *s = (PolicySensor) { .trip_c = NAN };
        return s;
}

static double zone_trip(const char *zone_dir) {
        double best = NAN;

        for (unsigned i = 0; i < 32; i++) {
                _cleanup_free_ char *type = NULL;
                char key[64];
                int64_t mc;

                snprintf(key, sizeof key, "trip_point_%u_type", i);
                if (policy_read_string_at(zone_dir, key, &type) < 0)
                        break;
                if (!streq(type, "hot") && !streq(type, "passive"))
                        continue;
                snprintf(key, sizeof key, "trip_point_%u_temp", i);
                if (policy_read_int_at(zone_dir, key, &mc) < 0)
                        continue;
                double c = (double) mc / 1000.0;
                if (c < TRIP_MIN_C || c > TRIP_MAX_C)
                        continue;
                if (isnan(best) || c < best)
                        best = c;
        }
        return best;
}

static int read_zones(PolicyThermal *t) {
        _cleanup_free_ char *dir = fs_path("/sys/class/thermal");
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;

        if (!dir)
                return -ENOMEM;
        d = opendir(dir);
        if (!d)
                return 0;
        while ((de = readdir(d))) {
                _cleanup_free_ char *zone = NULL, *type = NULL;
                int64_t mc;

                if (strncmp(de->d_name, "thermal_zone", 12) != 0)
                        continue;
                if (asprintf(&zone, "%s/%s", dir, de->d_name) < 0)
                        return -ENOMEM;
                /* A zone whose sensor is off or broken fails the read (-ENODATA, -EAGAIN). */
                if (policy_read_int_at(zone, "temp", &mc) < 0)
                        continue;
                (void) policy_read_string_at(zone, "type", &type);
                PolicySensor *s = sensor_add(t);
                if (!s)
                        break;
                strscpyf(s->name, "%s:%s", de->d_name, strna(type));
                s->temp_c = (double) mc / 1000.0;
                s->trip_c = zone_trip(zone);
        }
        return 0;
}

static int read_hwmon_gpus(PolicyThermal *t) {
        _cleanup_free_ char *dir = fs_path("/sys/class/hwmon");
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;

        if (!dir)
                return -ENOMEM;
        d = opendir(dir);
        if (!d)
                return 0;
        while ((de = readdir(d))) {
                _cleanup_free_ char *hw = NULL, *name = NULL;

                if (strncmp(de->d_name, "hwmon", 5) != 0)
                        continue;
                if (asprintf(&hw, "%s/%s", dir, de->d_name) < 0)
                        return -ENOMEM;
                if (policy_read_string_at(hw, "name", &name) < 0 || !hwmon_name_is_gpu(name))
                        continue;
                for (unsigned i = 1; i <= 8; i++) {
                        char key[32];
                        int64_t mc;

                        snprintf(key, sizeof key, "temp%u_input", i);
                        if (policy_read_int_at(hw, key, &mc) < 0)
                                continue;
                        PolicySensor *s = sensor_add(t);
                        if (!s)
                                return 0;
                        strscpyf(s->name, "%s:%s:temp%u", de->d_name, name, i);
                        s->temp_c = (double) mc / 1000.0;
                        s->gpu = true;
                }
        }
        return 0;
}

int policy_thermal_read(PolicyThermal *ret) {
        PolicyThermal t = {};
        int r;

        r = read_zones(&t);
        if (r < 0)
                return r;
        r = read_hwmon_gpus(&t);
        if (r < 0)
                return r;
        t.present = t.n_sensors > 0;
        *ret = t;
        return 0;
}
