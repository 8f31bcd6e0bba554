/* The policy monitor with real parts: a private system bus (dbus-daemon), python-dbusmock's
 * upower and power_profiles_daemon templates on it, and a fake sysfs/procfs tree. Checks that
 * unplugging (UPower or sysfs) moves the decision to INT8 within 2 s, heat to INT4, a PSI spike
 * to INT4 with eviction, and that recovery honours hysteresis and the dwell time.
 * Exits 77 when dbus-daemon or python3-dbusmock is missing. */
#include "macro.h" /* before uv.h, which defines MIN/MAX only when missing */

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>
#include <uv.h>

#include "policy-monitor.h"
#include "policy-tree.h"

extern char **environ;

#define DWELL_MS 1000
#define POLL_MS 200

static int failures;
static char root[64] = "/tmp/test-policy-monitor.XXXXXX";
static pid_t children[16];
static size_t n_children;
static uv_loop_t loop;
static PolicyMonitor *monitor;
static unsigned changes;
static pid_t bus_pid;

#define CHECK(cond)                                                                   \
        do {                                                                          \
                if (!(cond)) {                                                        \
                        printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
                        failures++;                                                   \
                }                                                                     \
        } while (0)

static uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static pid_t spawn(char *const argv[]) {
        pid_t pid;
        if (n_children >= ELEMENTSOF(children))
                return -1;
        if (posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ) != 0)
                return -1;
        children[n_children++] = pid;
        return pid;
}

static void stop_child(pid_t pid) {
        for (size_t i = 0; i < n_children; i++)
                if (children[i] == pid) {
                        kill(pid, SIGTERM);
                        waitpid(pid, NULL, 0);
                        children[i] = 0;
                }
}

static void cleanup(void) {
        for (size_t i = n_children; i > 0; i--)
                if (children[i - 1] > 0)
                        stop_child(children[i - 1]);
        tree_remove(root);
}

/* The python that has dbusmock: argv[1] (meson finds it), $QUANTD_PYTHON, or the usual ones. */
static const char *find_python(const char *arg) {
        const char *candidates[] = { arg, getenv("QUANTD_PYTHON"), "/usr/bin/python3", "python3" };

        for (size_t i = 0; i < ELEMENTSOF(candidates); i++) {
                const char *p = candidates[i];
                _cleanup_free_ char *cmd = NULL;
                if (!p || !*p)
                        continue;
                if (asprintf(&cmd, "%s -c 'import dbusmock' >/dev/null 2>&1", p) < 0)
                        return NULL;
                if (system(cmd) == 0)
                        return p;
        }
        return NULL;
}

static int start_bus(char *address, size_t size) {
        _cleanup_free_ char *conf = NULL, *sock = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        char *argv[] = { "dbus-daemon", "--nofork", "--nopidfile", NULL, NULL };

        if (asprintf(&conf, "%s/system.conf", root) < 0 || asprintf(&sock, "%s/system_bus_socket", root) < 0)
                return -ENOMEM;
        f = fopen(conf, "we");
        if (!f)
                return -errno;
        /* A system-like bus that anyone may use, as the tests' processes all run as one user. */
        fprintf(f, "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
                   " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                   "<busconfig><type>system</type><listen>unix:path=%s</listen>\n"
                   "<auth>EXTERNAL</auth><policy context=\"default\"><allow user=\"*\"/>\n"
                   "<allow own=\"*\"/><allow send_destination=\"*\"/><allow receive_sender=\"*\"/>\n"
                   "</policy></busconfig>\n", sock);
        fclose(TAKE_PTR(f));
        _cleanup_free_ char *arg = NULL;
        if (asprintf(&arg, "--config-file=%s", conf) < 0)
                return -ENOMEM;
        argv[3] = arg;
        (void) unlink(sock);
        bus_pid = spawn(argv);
        if (bus_pid < 0)
                return -errno;
        for (int i = 0; i < 100 && access(sock, F_OK) < 0; i++)
                usleep(20000);
        if (access(sock, F_OK) < 0)
                return -ETIMEDOUT;
        snprintf(address, size, "unix:path=%s", sock);
        return 0;
}

static int wait_name(sd_bus *bus, const char *name, int timeout_ms) {
        uint64_t end = now_ms() + (uint64_t) timeout_ms;
        while (now_ms() < end) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                int has = 0;
                int r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                       "org.freedesktop.DBus", "NameHasOwner", NULL, &reply, "s", name);
                if (r >= 0 && sd_bus_message_read(reply, "b", &has) >= 0 && has)
                        return 0;
                usleep(50000);
        }
        return -ETIMEDOUT;
}

static int set_prop_bool(sd_bus *bus, const char *service, const char *path, const char *iface,
                         const char *prop, bool v) {
        return sd_bus_call_method(bus, service, path, "org.freedesktop.DBus.Properties", "Set", NULL, NULL,
                                  "ssv", iface, prop, "b", (int) v);
}

static int set_prop_str(sd_bus *bus, const char *service, const char *path, const char *iface,
                        const char *prop, const char *v) {
        return sd_bus_call_method(bus, service, path, "org.freedesktop.DBus.Properties", "Set", NULL, NULL,
                                  "ssv", iface, prop, "s", v);
}

static int set_prop_double(sd_bus *bus, const char *service, const char *path, const char *iface,
                           const char *prop, double v) {
        return sd_bus_call_method(bus, service, path, "org.freedesktop.DBus.Properties", "Set", NULL, NULL,
                                  "ssv", iface, prop, "d", v);
}

static size_t get_models(PolicyModelInput *models, size_t max, PolicyGpuMemory *gpu, void *userdata) {
        models[0] = (PolicyModelInput) {
                .name = "tiny",
                .pinned = QD_PRECISION_AUTO,
                .current = QD_PRECISION_F16,
                .variant_bytes = { 100 << 20, 53 << 20, 28 << 20 },
                .resident_bytes = 100 << 20,
        };
        gpu->present = true;
        gpu->budget = 1ull << 30;
        gpu->used = 100 << 20;
        return 1;
}

static void on_changed(PolicyMonitor *m, const PolicyDecision *old, const PolicyDecision *now, void *userdata) {
        changes++;
        printf("     decision: %s (%s), rules %#x, evict=%d\n",
               policy_precision_to_string(now->models[0].precision), now->reason, now->rules,
               now->models[0].evict);
}

typedef bool (*Pred)(void);

static void on_tick(uv_timer_t *t) {
        Pred p = (Pred) t->data;
        if (p())
                uv_stop(&loop);
}

/* Runs the loop until pred holds; returns milliseconds taken, or -1 past timeout_ms. */
static long run_until(Pred pred, int timeout_ms) {
        uv_timer_t tick;
        uint64_t start = now_ms();
        long ret = -1;

        uv_timer_init(&loop, &tick);
        tick.data = (void *) pred;
        uv_timer_start(&tick, on_tick, 10, 10);
        while (now_ms() - start < (uint64_t) timeout_ms) {
                if (pred()) {
                        ret = (long) (now_ms() - start);
                        break;
                }
                uv_run(&loop, UV_RUN_ONCE);
        }
        uv_close((uv_handle_t *) &tick, NULL);
        uv_run(&loop, UV_RUN_NOWAIT);
        return ret;
}

static QdPrecision precision(void) {
        const PolicyDecision *d = policy_monitor_decision(monitor);
        return d->n_models > 0 ? d->models[0].precision : QD_PRECISION_INVALID;
}

static bool is_f16(void) { return precision() == QD_PRECISION_F16; }
static bool is_int8(void) { return precision() == QD_PRECISION_INT8; }
static bool is_int4(void) { return precision() == QD_PRECISION_INT4; }
static bool is_int4_evict(void) { return is_int4() && policy_monitor_decision(monitor)->models[0].evict; }
static bool bus_sources_present(void) {
        const PolicyReadings *r = policy_monitor_readings(monitor);
        return r->upower.present && r->profile.present;
}
static bool profile_absent(void) { return !policy_monitor_readings(monitor)->profile.present; }
static bool bus_lost(void) {
        const PolicyReadings *r = policy_monitor_readings(monitor);
        return !r->upower.present && streq(policy_monitor_bus_state(monitor), "disconnected");
}
static bool upower_back(void) {
        return policy_monitor_readings(monitor)->upower.present &&
                streq(policy_monitor_bus_state(monitor), "connected");
}
static bool never(void) { return false; }

/* Expects the change within 2 s. */
#define EXPECT_WITHIN(pred, ms, what)                                                              \
        do {                                                                                       \
                long _t = run_until(pred, ms);                                                     \
                printf("%s %s: %ld ms\n", _t >= 0 ? "ok  " : "FAIL", what, _t);                   \
                if (_t < 0)                                                                        \
                        failures++;                                                                \
        } while (0)

/* Expects pred to hold throughout ms (checked at every loop wake-up). */
static void expect_hold(Pred pred, int ms, const char *what) {
        uint64_t end = now_ms() + (uint64_t) ms;
        bool held = true;

        while (now_ms() < end) {
                held = held && pred();
                (void) run_until(never, 50);
        }
        held = held && pred();
        printf("%s %s for %d ms\n", held ? "ok  " : "FAIL", what, ms);
        if (!held)
                failures++;
}

/* Expects the decision to hold for ms (hysteresis or dwell), then to relax within limit. */
static void expect_hold_then(Pred hold, int hold_ms, Pred after, int limit_ms, const char *what) {
        uint64_t start = now_ms();
        long t;

        (void) run_until(never, hold_ms);
        bool held = hold();
        t = run_until(after, limit_ms);
        printf("%s %s: held %d ms, then relaxed after %ld ms in all\n", held && t >= 0 ? "ok  " : "FAIL",
               what, hold_ms, (long) (now_ms() - start));
        if (!held || t < 0)
                failures++;
}

int main(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const char *python;
        char address[256];
        PolicyConfig cfg;
        pid_t ppd;
        int r;

        setvbuf(stdout, NULL, _IOLBF, 0);
        python = find_python(argc > 1 ? argv[1] : NULL);
        if (!python || system("command -v dbus-daemon >/dev/null 2>&1") != 0) {
                printf("skip: needs dbus-daemon and python3-dbusmock\n");
                return 77;
        }
        if (!mkdtemp(root))
                return 1;
        atexit(cleanup);
        setenv("QUANTD_ROOT", root, 1);
        CHECK(tree_thermal_zone(root, 0, "acpitz", 45000, "critical", 105000) == 0);
        CHECK(tree_power_supply(root, "AC", "Mains", 1, -1, NULL) == 0);
        CHECK(tree_power_supply(root, "BAT0", "Battery", -1, 80, "Charging") == 0);
        CHECK(tree_meminfo(root, 16384, 12000) == 0);
        CHECK(tree_psi(root, 0.0, 0.0) == 0);

        r = start_bus(address, sizeof address);
        if (r < 0) {
                printf("FAIL could not start dbus-daemon: %s\n", strerror(-r));
                return 1;
        }
        setenv("DBUS_SYSTEM_BUS_ADDRESS", address, 1);
        CHECK(sd_bus_open_system(&bus) >= 0);

        char *upower_argv[] = { (char *) python, "-m", "dbusmock", "--system", "--template", "upower", NULL };
        char *ppd_argv[] = { (char *) python, "-m", "dbusmock", "--system", "--template",
                             "power_profiles_daemon", NULL };
        CHECK(spawn(upower_argv) > 0);
        ppd = spawn(ppd_argv);
        CHECK(ppd > 0);
        if (wait_name(bus, "org.freedesktop.UPower", 10000) < 0 ||
            wait_name(bus, "net.hadess.PowerProfiles", 10000) < 0) {
                printf("FAIL dbusmock did not come up\n");
                return 1;
        }
        printf("ok   private system bus %s with dbusmock upower and power_profiles_daemon\n", address);

        policy_config_init(&cfg);
        CHECK(policy_config_parse_key(&cfg, "Policy", "poll_interval", "200ms") == 1);
        CHECK(policy_config_parse_key(&cfg, "Policy", "dwell", "1s") == 1);
        CHECK(policy_config_parse_key(&cfg, "Policy", "pressure_hold", "0") == 1);

        CHECK(uv_loop_init(&loop) == 0);
        PolicyMonitorOptions o = { .config = &cfg, .get_models = get_models, .changed = on_changed };
        r = policy_monitor_new(&loop, &o, &monitor);
        CHECK(r == 0);
        if (r < 0)
                return 1;
        CHECK(streq(policy_monitor_bus_state(monitor), "connected"));
        CHECK(policy_monitor_readings(monitor)->memory.psi_mode == POLICY_PSI_POLL);

        EXPECT_WITHIN(bus_sources_present, 5000, "UPower and power profile seen");
        CHECK(streq(policy_monitor_readings(monitor)->profile.active, "balanced"));
        CHECK(streq(policy_monitor_readings(monitor)->profile.service, "net.hadess.PowerProfiles"));
        CHECK(is_f16());

        /* 1. UPower says we are on battery. */
        CHECK(set_prop_bool(bus, "org.freedesktop.UPower", "/org/freedesktop/UPower", "org.freedesktop.UPower",
                            "OnBattery", true) >= 0);
        EXPECT_WITHIN(is_int8, 2000, "UPower OnBattery=true → int8");
        CHECK(set_prop_bool(bus, "org.freedesktop.UPower", "/org/freedesktop/UPower", "org.freedesktop.UPower",
                            "OnBattery", false) >= 0);
        expect_hold_then(is_int8, DWELL_MS - 300, is_f16, 1500, "UPower OnBattery=false → fp16 after the dwell");

        /* 2. The fake AC supply goes offline. */
        CHECK(tree_write(root, "sys/class/power_supply/AC/online", "0") == 0);
        EXPECT_WITHIN(is_int8, 2000, "sysfs AC online=0 → int8");
        CHECK(tree_write(root, "sys/class/power_supply/AC/online", "1") == 0);
        expect_hold_then(is_int8, DWELL_MS - 300, is_f16, 1500, "sysfs AC online=1 → fp16 after the dwell");

        /* 3. Heat: enter at 85 °C, hold above 78 °C, leave below. */
        CHECK(tree_write(root, "sys/class/thermal/thermal_zone0/temp", "90000") == 0);
        EXPECT_WITHIN(is_int4, 2000, "thermal zone 90 °C → int4");
        CHECK(tree_write(root, "sys/class/thermal/thermal_zone0/temp", "80000") == 0);
        expect_hold(is_int4, 1500, "80 °C stays int4 (hysteresis)");
        CHECK(tree_write(root, "sys/class/thermal/thermal_zone0/temp", "70000") == 0);
        EXPECT_WITHIN(is_f16, 2000, "70 °C → fp16");

        /* 4. Memory pressure spike: INT4 and evict; recovery through the leave threshold. */
        CHECK(tree_psi(root, 25.0, 3.0) == 0);
        EXPECT_WITHIN(is_int4_evict, 2000, "PSI some avg10 25% → int4 + evict");
        CHECK(tree_psi(root, 7.0, 0.0) == 0);
        expect_hold(is_int4_evict, 1500, "PSI 7% stays int4 + evict (hysteresis)");
        CHECK(tree_psi(root, 1.0, 0.0) == 0);
        EXPECT_WITHIN(is_f16, 2000, "PSI 1% → fp16");

        /* 5. power-profiles-daemon: power-saver → INT8; the daemon going away → absent. */
        CHECK(set_prop_str(bus, "net.hadess.PowerProfiles", "/net/hadess/PowerProfiles", "net.hadess.PowerProfiles",
                           "ActiveProfile", "power-saver") >= 0);
        EXPECT_WITHIN(is_int8, 2000, "ActiveProfile=power-saver → int8");
        stop_child(ppd);
        EXPECT_WITHIN(profile_absent, 2000, "power-profiles-daemon gone → source absent");
        EXPECT_WITHIN(is_f16, 2000, "→ fp16 after the dwell");

        /* 6. UPower display device below 20% on battery → INT4 (battery-low). */
        CHECK(set_prop_bool(bus, "org.freedesktop.UPower", "/org/freedesktop/UPower/devices/DisplayDevice",
                            "org.freedesktop.UPower.Device", "IsPresent", true) >= 0);
        CHECK(set_prop_double(bus, "org.freedesktop.UPower", "/org/freedesktop/UPower/devices/DisplayDevice",
                              "org.freedesktop.UPower.Device", "Percentage", 15.0) >= 0);
        CHECK(set_prop_bool(bus, "org.freedesktop.UPower", "/org/freedesktop/UPower", "org.freedesktop.UPower",
                            "OnBattery", true) >= 0);
        EXPECT_WITHIN(is_int4, 2000, "UPower on battery at 15% → int4");
        CHECK(policy_monitor_decision(monitor)->rules & (1u << POLICY_RULE_BATTERY_LOW));

        /* 7. The system bus restarts: the bus sources go absent, and come back once the monitor
         * reconnects (it retries every 5 s). */
        sd_bus_flush_close_unref(TAKE_PTR(bus));
        stop_child(bus_pid);
        EXPECT_WITHIN(bus_lost, 2000, "dbus-daemon gone → UPower absent, bus disconnected");
        EXPECT_WITHIN(is_f16, 2500, "→ fp16 after the dwell: sysfs says AC online");
        r = start_bus(address, sizeof address);
        CHECK(r == 0);
        CHECK(spawn(upower_argv) > 0);
        EXPECT_WITHIN(upower_back, 8000, "dbus-daemon back → reconnected, UPower present");

        printf("     %u decision changes\n", changes);
        monitor = policy_monitor_free(monitor);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(uv_loop_close(&loop) == 0);
        printf("%d failure(s)\n", failures);
        return failures ? 1 : 0;
}
