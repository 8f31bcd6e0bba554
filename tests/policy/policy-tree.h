/* Builds fake sysfs/procfs trees for the policy's tests (pointed at with $QUANTD_ROOT). */
#pragma once

/* Writes content (a newline is added) to root/rel, creating folders; replaces atomically. */
int tree_write(const char *root, const char *rel, const char *content);
int tree_writef(const char *root, const char *rel, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
int tree_thermal_zone(const char *root, int n, const char *type, long millic, const char *trip_type,
                      long trip_millic);
int tree_hwmon(const char *root, int n, const char *name, long temp1_millic);
/* online < 0: no online file; capacity < 0: none; status NULL: none. */
int tree_power_supply(const char *root, const char *name, const char *type, int online, int capacity,
                      const char *status);
int tree_meminfo(const char *root, unsigned long total_mib, unsigned long avail_mib);
int tree_psi(const char *root, double some_avg10, double full_avg10);
void tree_remove(const char *root);
