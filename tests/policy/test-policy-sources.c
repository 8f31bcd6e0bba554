/* The sysfs/procfs readers against a fake tree under $QUANTD_ROOT: thermal zones with trip
 * points, GPU hwmon, power supplies, meminfo and PSI; absent sources; and the real kernel's PSI
 * trigger when the machine offers one. */
#include "macro.h" /* before uv.h, which defines MIN/MAX only when missing */

#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "policy-monitor.h"
#include "policy-readings.h"
#include "policy-tree.h"

static int failures;

#define CHECK(cond)                                                                   \
        do {                                                                          \
                if (!(cond)) {                                                        \
                        printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
                        failures++;                                                   \
                }                                                                     \
        } while (0)

static void test_absent(const char *root) {
        PolicyThermal t;
        PolicyPower p;
        PolicyMemory m = {};

        CHECK(policy_thermal_read(&t) == 0);
        CHECK(!t.present && t.n_sensors == 0);
        CHECK(policy_power_read(&p) == 0);
        CHECK(!p.ac_present && !p.battery_present && isnan(p.battery_percent));
        CHECK(policy_memory_read(&m) == 0);
        CHECK(!m.meminfo_present && !m.psi_present && m.psi_mode == POLICY_PSI_ABSENT);
        CHECK(policy_psi_trigger_open(150000, 1000000) == -ENOENT);
        printf("ok   empty tree %s: every source absent\n", root);
}

static void test_tree(const char *root) {
        PolicyReadings r;
        int fd;

        policy_readings_init(&r);
        CHECK(tree_thermal_zone(root, 0, "x86_pkg_temp", 51000, NULL, 0) == 0);
        CHECK(tree_thermal_zone(root, 1, "acpitz", 66500, "critical", 110000) == 0);
        CHECK(tree_write(root, "sys/class/thermal/thermal_zone1/trip_point_1_type", "passive") == 0);
        CHECK(tree_write(root, "sys/class/thermal/thermal_zone1/trip_point_1_temp", "90000") == 0);
        CHECK(tree_write(root, "sys/class/thermal/thermal_zone1/trip_point_2_type", "hot") == 0);
        CHECK(tree_write(root, "sys/class/thermal/thermal_zone1/trip_point_2_temp", "80000") == 0);
        /* A placeholder trip at 0 °C is ignored. */
        CHECK(tree_write(root, "sys/class/thermal/thermal_zone1/trip_point_3_type", "passive") == 0);
        CHECK(tree_write(root, "sys/class/thermal/thermal_zone1/trip_point_3_temp", "0") == 0);
        /* A zone whose temp does not parse is skipped. */
        CHECK(tree_thermal_zone(root, 2, "broken", 0, NULL, 0) == 0);
        CHECK(tree_write(root, "sys/class/thermal/thermal_zone2/temp", "") == 0);
        CHECK(tree_hwmon(root, 0, "coretemp", 70000) == 0);
        CHECK(tree_hwmon(root, 1, "amdgpu", 73000) == 0);
        CHECK(tree_power_supply(root, "AC", "Mains", 1, -1, NULL) == 0);
        CHECK(tree_power_supply(root, "BAT0", "Battery", -1, 64, "Charging") == 0);
        CHECK(tree_write(root, "sys/class/power_supply/BAT0/energy_now", "32000000") == 0);
        CHECK(tree_write(root, "sys/class/power_supply/BAT0/power_now", "12500000") == 0);
        /* A mouse's battery does not count. */
        CHECK(tree_power_supply(root, "hidpp_battery_0", "Battery", -1, 5, "Discharging") == 0);
        CHECK(tree_write(root, "sys/class/power_supply/hidpp_battery_0/scope", "Device") == 0);
        CHECK(tree_meminfo(root, 16384, 6000) == 0);
        CHECK(tree_psi(root, 1.5, 0.25) == 0);

        CHECK(policy_thermal_read(&r.thermal) == 0);
        CHECK(r.thermal.present && r.thermal.n_sensors == 3);
        for (unsigned i = 0; i < r.thermal.n_sensors; i++) {
                const PolicySensor *s = &r.thermal.sensors[i];
                printf("     sensor %s %.1f °C trip %.1f gpu=%d\n", s->name, s->temp_c, s->trip_c, s->gpu);
                if (strstr(s->name, "acpitz"))
                        CHECK(s->temp_c == 66.5 && s->trip_c == 80.0 && !s->gpu);
                else if (strstr(s->name, "x86_pkg_temp"))
                        CHECK(s->temp_c == 51.0 && isnan(s->trip_c));
                else
                        CHECK(strstr(s->name, "amdgpu:temp1") && s->gpu && s->temp_c == 73.0);
        }

        CHECK(policy_power_read(&r.power) == 0);
        CHECK(r.power.ac_present && r.power.ac_online);
        CHECK(r.power.battery_present && r.power.battery_percent == 64);
        CHECK(streq(r.power.battery_status, "Charging"));
        CHECK(fabs(r.power.energy_now_wh - 32.0) < 1e-9 && fabs(r.power.power_now_w - 12.5) < 1e-9);
        CHECK(!policy_readings_on_battery(&r));
        CHECK(policy_readings_battery_percent(&r) == 64);

        CHECK(tree_write(root, "sys/class/power_supply/AC/online", "0") == 0);
        CHECK(policy_power_read(&r.power) == 0);
        CHECK(r.power.ac_present && !r.power.ac_online && policy_readings_on_battery(&r));

        CHECK(policy_memory_read(&r.memory) == 0);
        CHECK(r.memory.meminfo_present && r.memory.mem_total == 16384ull << 20 &&
              r.memory.mem_available == 6000ull << 20);
        CHECK(r.memory.psi_present && r.memory.psi_some_avg10 == 1.5 && r.memory.psi_full_avg10 == 0.25);
        CHECK(r.memory.psi_mode == POLICY_PSI_POLL);

        /* The fake PSI file is a plain file: no trigger is written into it. */
        fd = policy_psi_trigger_open(150000, 1000000);
        CHECK(fd == -EOPNOTSUPP);
        if (fd >= 0)
                close(fd);
        {
                _cleanup_free_ char *p = fs_path("/proc/pressure/memory"), *s = NULL;
                CHECK(read_one_line_file(p, &s) == 0 && strncmp(s, "some avg10=1.50", 15) == 0);
        }
        printf("ok   fake tree: thermal, hwmon, power supplies, meminfo, PSI\n");
}

static void test_real_psi_trigger(void) {
        int fd;

        if (access("/proc/pressure/memory", F_OK) < 0) {
                printf("skip real PSI trigger: no /proc/pressure/memory\n");
                return;
        }
        fd = policy_psi_trigger_open(150000, 1000000);
        if (fd == -EOPNOTSUPP || fd == -EACCES || fd == -EPERM) {
                printf("skip real PSI trigger: the kernel refuses (%d)\n", fd);
                return;
        }
        CHECK(fd >= 0);
        if (fd >= 0) {
                struct pollfd p = { .fd = fd, .events = POLLPRI };
                /* A plain file would report POLLIN|POLLOUT at once; a trigger times out, or (on a
                 * machine under memory pressure right now) reports exactly POLLPRI. */
                int n = poll(&p, 1, 50);
                CHECK(n == 0 || (n == 1 && p.revents == POLLPRI));
                close(fd);
                printf("ok   real kernel PSI trigger opened and polled (%d events)\n", n);
        }
}

/* The monitor on the real /proc without a bus: it arms the kernel trigger on the loop where the
 * kernel allows, and everything it opened is closed after policy_monitor_free(). */
static void test_monitor_real(void) {
        PolicyMonitor *m = NULL;
        PolicyConfig c;
        uv_loop_t loop;
        int fd;

        policy_config_init(&c);
        c.upower = c.power_profiles = false;
        CHECK(uv_loop_init(&loop) == 0);
        CHECK(policy_monitor_new(&loop, &(PolicyMonitorOptions) { .config = &c }, &m) == 0);
        if (!m)
                return;
        CHECK(streq(policy_monitor_bus_state(m), "off"));
        fd = policy_psi_trigger_open(c.psi_stall_usec, c.psi_window_usec);
        if (fd >= 0) {
                close(fd);
                CHECK(policy_monitor_readings(m)->memory.psi_mode == POLICY_PSI_TRIGGER);
        } else
                CHECK(policy_monitor_readings(m)->memory.psi_mode != POLICY_PSI_TRIGGER);
        CHECK(uv_run(&loop, UV_RUN_NOWAIT) >= 0);
        CHECK(policy_monitor_poll(m) == 0);
        printf("ok   monitor on the real /proc: PSI %s, %u thermal sensors, decision %s (%s)\n",
               policy_psi_mode_to_string(policy_monitor_readings(m)->memory.psi_mode),
               policy_monitor_readings(m)->thermal.n_sensors,
               policy_precision_to_string(policy_monitor_decision(m)->cap), policy_monitor_decision(m)->reason);
        m = policy_monitor_free(m);
        CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
        CHECK(uv_loop_close(&loop) == 0);
}

int main(void) {
        char tmpl[] = "/tmp/test-policy-sources.XXXXXX";
        char *root = mkdtemp(tmpl);

        if (!root)
                return 1;
        test_real_psi_trigger();
        test_monitor_real();
        setenv("QUANTD_ROOT", root, 1);
        test_absent(root);
        test_tree(root);
        tree_remove(root);
        printf("%d failure(s)\n", failures);
        return failures ? 1 : 0;
}
