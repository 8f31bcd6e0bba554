/* Fake sysfs/procfs trees for the policy's tests. */
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "macro.h"
#include "policy-tree.h"

static int mkdir_parents(char *path) {
        for (char *s = strchr(path + 1, '/'); s; s = strchr(s + 1, '/')) {
                *s = '\0';
                int r = mkdir(path, 0755);
                *s = '/';
                if (r < 0 && errno != EEXIST)
                        return -errno;
        }
        return 0;
}

int tree_write(const char *root, const char *rel, const char *content) {
        _cleanup_free_ char *path = NULL, *data = NULL;
        int r;

        if (asprintf(&path, "%s/%s", root, rel) < 0 || asprintf(&data, "%s\n", content) < 0)
                return -ENOMEM;
        r = mkdir_parents(path);
        if (r < 0)
                return r;
        return write_file_atomic(path, data, strlen(data));
}

int tree_writef(const char *root, const char *rel, const char *fmt, ...) {
        _cleanup_free_ char *s = NULL;
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -ENOMEM;
        return tree_write(root, rel, s);
}

int tree_thermal_zone(const char *root, int n, const char *type, long millic, const char *trip_type,
                      long trip_millic) {
        char p[128];
        int r;

        snprintf(p, sizeof p, "sys/class/thermal/thermal_zone%d/type", n);
        if ((r = tree_write(root, p, type)) < 0)
                return r;
        snprintf(p, sizeof p, "sys/class/thermal/thermal_zone%d/temp", n);
        if ((r = tree_writef(root, p, "%ld", millic)) < 0)
                return r;
        if (!trip_type)
                return 0;
        snprintf(p, sizeof p, "sys/class/thermal/thermal_zone%d/trip_point_0_type", n);
        if ((r = tree_write(root, p, trip_type)) < 0)
                return r;
        snprintf(p, sizeof p, "sys/class/thermal/thermal_zone%d/trip_point_0_temp", n);
        return tree_writef(root, p, "%ld", trip_millic);
}

int tree_hwmon(const char *root, int n, const char *name, long temp1_millic) {
        char p[128];
        int r;

        snprintf(p, sizeof p, "sys/class/hwmon/hwmon%d/name", n);
        if ((r = tree_write(root, p, name)) < 0)
                return r;
        snprintf(p, sizeof p, "sys/class/hwmon/hwmon%d/temp1_input", n);
        return tree_writef(root, p, "%ld", temp1_millic);
}

int tree_power_supply(const char *root, const char *name, const char *type, int online, int capacity,
                      const char *status) {
        char p[128];
        int r;

        snprintf(p, sizeof p, "sys/class/power_supply/%s/type", name);
        if ((r = tree_write(root, p, type)) < 0)
                return r;
        if (online >= 0) {
                snprintf(p, sizeof p, "sys/class/power_supply/%s/online", name);
                if ((r = tree_writef(root, p, "%d", online)) < 0)
                        return r;
        }
        if (capacity >= 0) {
                snprintf(p, sizeof p, "sys/class/power_supply/%s/capacity", name);
                if ((r = tree_writef(root, p, "%d", capacity)) < 0)
                        return r;
        }
        if (status) {
                snprintf(p, sizeof p, "sys/class/power_supply/%s/status", name);
                if ((r = tree_write(root, p, status)) < 0)
                        return r;
        }
        return 0;
}

int tree_meminfo(const char *root, unsigned long total_mib, unsigned long avail_mib) {
        return tree_writef(root, "proc/meminfo",
                           "MemTotal:       %lu kB\nMemFree:         1024 kB\nMemAvailable:   %lu kB\nBuffers:          100 kB",
                           total_mib * 1024, avail_mib * 1024);
}

int tree_psi(const char *root, double some_avg10, double full_avg10) {
        return tree_writef(root, "proc/pressure/memory",
                           "some avg10=%.2f avg60=0.00 avg300=0.00 total=0\nfull avg10=%.2f avg60=0.00 avg300=0.00 total=0",
                           some_avg10, full_avg10);
}

static int remove_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

void tree_remove(const char *root) {
        (void) nftw(root, remove_cb, 16, FTW_DEPTH | FTW_PHYS);
}
