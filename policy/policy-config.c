/* The [policy] configuration section: defaults, parsing of one key at a time, verification. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"
#include "policy-rules.h"

#define USEC_PER_SEC UINT64_C(1000000)
#define MIB UINT64_C(1048576)

static const char *const rule_names[_POLICY_RULE_MAX] = {
        [POLICY_RULE_PERFORMANCE] = "performance",
        [POLICY_RULE_BALANCED] = "balanced",
        [POLICY_RULE_POWER_SAVER] = "power-saver",
        [POLICY_RULE_DEGRADED] = "performance-degraded",
        [POLICY_RULE_ON_BATTERY] = "on-battery",
        [POLICY_RULE_BATTERY_LOW] = "battery-low",
        [POLICY_RULE_HOT] = "hot",
        [POLICY_RULE_MEMORY_PRESSURE] = "memory-pressure",
};

const char *policy_rule_to_string(PolicyRule r) {
        if (r < 0 || r >= _POLICY_RULE_MAX)
                return "none";
        return rule_names[r];
}

const char *policy_precision_to_string(QdPrecision p) {
        switch (p) {
        case QD_PRECISION_F16:
                return "fp16";
        case QD_PRECISION_INT8:
                return "int8";
        case QD_PRECISION_INT4:
                return "int4";
        case QD_PRECISION_AUTO:
                return "auto";
        default:
                return "invalid";
        }
}

QdPrecision policy_precision_from_string(const char *s) {
        if (!s)
                return QD_PRECISION_INVALID;
        if (strcasecmp(s, "fp16") == 0 || strcasecmp(s, "f16") == 0)
                return QD_PRECISION_F16;
        if (strcasecmp(s, "int8") == 0 || strcasecmp(s, "q8_0") == 0)
                return QD_PRECISION_INT8;
        if (strcasecmp(s, "int4") == 0 || strcasecmp(s, "q4_0") == 0)
                return QD_PRECISION_INT4;
        if (strcasecmp(s, "auto") == 0 || strcasecmp(s, "off") == 0 || strcasecmp(s, "none") == 0)
                return QD_PRECISION_AUTO;
        return QD_PRECISION_INVALID;
}

void policy_config_init(PolicyConfig *c) {
        *c = (PolicyConfig) {
                .enabled = true,
                .poll_usec = 1 * USEC_PER_SEC,
                .dwell_usec = 10 * USEC_PER_SEC,
                .rule_precision = {
                        [POLICY_RULE_PERFORMANCE] = QD_PRECISION_F16,
                        [POLICY_RULE_BALANCED] = QD_PRECISION_F16,
                        [POLICY_RULE_POWER_SAVER] = QD_PRECISION_INT8,
                        [POLICY_RULE_DEGRADED] = QD_PRECISION_INT8,
                        [POLICY_RULE_ON_BATTERY] = QD_PRECISION_INT8,
                        [POLICY_RULE_BATTERY_LOW] = QD_PRECISION_INT4,
                        [POLICY_RULE_HOT] = QD_PRECISION_INT4,
                        [POLICY_RULE_MEMORY_PRESSURE] = QD_PRECISION_INT4,
                },
                .battery_low_enter = 20,
                .battery_low_leave = 25,
                .hot_enter_c = 85,
                .hot_leave_c = 78,
                .use_trip_points = true,
                .psi_enter = 10,
                .psi_leave = 5,
                .mem_available_enter = 512 * MIB,
                .mem_available_leave = 768 * MIB,
                .psi_trigger = true,
                .psi_stall_usec = 150000,
                .psi_window_usec = 1000000,
                .psi_hold_usec = 10 * USEC_PER_SEC,
                .evict_under_pressure = true,
                .unload_idle_usec = 300 * USEC_PER_SEC,
                .upower = true,
                .power_profiles = true,
        };
}

static int parse_bool(const char *v, bool *ret) {
        static const char *const yes[] = { "1", "yes", "true", "on" };
        static const char *const no[] = { "0", "no", "false", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(v, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(v, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        return -EINVAL;
}

/* A number followed by one of the units (first unit: none given), scaled. */
static int parse_scaled(const char *v, const char *const *units, const double *scale, size_t n_units,
                        double lo, double hi, double *ret) {
        char *end;
        double d;

        errno = 0;
        d = strtod(v, &end);
        if (errno != 0 || end == v || !isfinite(d))
                return -EINVAL;
        while (*end == ' ')
                end++;
        for (size_t i = 0; i < n_units; i++)
                if (strcasecmp(end, units[i]) == 0) {
                        d *= scale[i];
                        if (d < lo || d > hi)
                                return -EINVAL;
                        *ret = d;
                        return 0;
                }
        return -EINVAL;
}

static int parse_double(const char *v, double lo, double hi, double *ret) {
        static const char *const units[] = { "" };
        static const double scale[] = { 1 };
        return parse_scaled(v, units, scale, 1, lo, hi, ret);
}

static int parse_percent(const char *v, double *ret) {
        static const char *const units[] = { "", "%" };
        static const double scale[] = { 1, 1 };
        return parse_scaled(v, units, scale, 2, 0, 100, ret);
}

static int parse_celsius(const char *v, double *ret) {
        static const char *const units[] = { "", "C", "°C" };
        static const double scale[] = { 1, 1, 1 };
        return parse_scaled(v, units, scale, 3, -50, 200, ret);
}

/* Durations: plain seconds, or with us, ms, s, min, h. */
static int parse_duration(const char *v, uint64_t *ret) {
        static const char *const units[] = { "", "us", "ms", "s", "sec", "min", "m", "h" };
        static const double scale[] = { 1e6, 1, 1e3, 1e6, 1e6, 60e6, 60e6, 3600e6 };
        double d;
        int r = parse_scaled(v, units, scale, ELEMENTSOF(units), 0, 86400e6 * 365, &d);
        if (r < 0)
                return r;
        *ret = (uint64_t) llround(d);
        return 0;
}

/* Sizes: plain bytes, or with K, M, G (powers of 1024; KiB, MiB, GiB also accepted). */
static int parse_size(const char *v, uint64_t *ret) {
        static const char *const units[] = { "", "B", "K", "KiB", "M", "MiB", "G", "GiB" };
        static const double scale[] = { 1, 1, 1024.0, 1024.0, (double) MIB, (double) MIB,
                                        1024.0 * MIB, 1024.0 * MIB };
        double d;
        int r = parse_scaled(v, units, scale, ELEMENTSOF(units), 0, 1e18, &d);
        if (r < 0)
                return r;
        *ret = (uint64_t) llround(d);
        return 0;
}

static int parse_precision(const char *v, QdPrecision *ret) {
        QdPrecision p = policy_precision_from_string(v);
        if (p == QD_PRECISION_INVALID)
                return -EINVAL;
        *ret = p;
        return 0;
}

/* Keys compare without case and underscores: "dwell", "Dwell" and "DWELL" are one key, as are
 * "on_battery" and "OnBattery". */
static bool key_eq(const char *a, const char *b) {
        for (;;) {
                while (*a == '_')
                        a++;
                while (*b == '_')
                        b++;
                if (!*a || !*b)
                        return *a == *b;
                if (tolower((unsigned char) *a) != tolower((unsigned char) *b))
                        return false;
                a++, b++;
        }
}

int policy_config_parse_key(PolicyConfig *c, const char *section, const char *key, const char *value) {
        static const struct {
                const char *key;
                PolicyRule rule;
        } rule_keys[] = {
                { "performance_profile", POLICY_RULE_PERFORMANCE },
                { "balanced_profile", POLICY_RULE_BALANCED },
                { "power_saver_profile", POLICY_RULE_POWER_SAVER },
                { "performance_degraded", POLICY_RULE_DEGRADED },
                { "on_battery", POLICY_RULE_ON_BATTERY },
                { "battery_low", POLICY_RULE_BATTERY_LOW },
                { "hot", POLICY_RULE_HOT },
                { "memory_pressure", POLICY_RULE_MEMORY_PRESSURE },
        };
        int r;

        if (!section || strcasecmp(section, "policy") != 0)
                return 0;
        if (!key || !value)
                return -EINVAL;

        for (size_t i = 0; i < ELEMENTSOF(rule_keys); i++)
                if (key_eq(key, rule_keys[i].key)) {
                        r = parse_precision(value, &c->rule_precision[rule_keys[i].rule]);
                        return r < 0 ? r : 1;
                }

#define P(name, expr)                             \
        if (key_eq(key, name)) {                  \
                r = (expr);                       \
                return r < 0 ? r : 1;             \
        }
        P("enabled", parse_bool(value, &c->enabled));
        P("poll_interval", parse_duration(value, &c->poll_usec));
        P("dwell", parse_duration(value, &c->dwell_usec));
        P("battery_low_enter", parse_percent(value, &c->battery_low_enter));
        P("battery_low_leave", parse_percent(value, &c->battery_low_leave));
        P("hot_enter", parse_celsius(value, &c->hot_enter_c));
        P("hot_leave", parse_celsius(value, &c->hot_leave_c));
        P("use_trip_points", parse_bool(value, &c->use_trip_points));
        P("pressure_enter", parse_percent(value, &c->psi_enter));
        P("pressure_leave", parse_percent(value, &c->psi_leave));
        P("mem_available_enter", parse_size(value, &c->mem_available_enter));
        P("mem_available_leave", parse_size(value, &c->mem_available_leave));
        P("pressure_trigger", parse_bool(value, &c->psi_trigger));
        P("pressure_trigger_stall", parse_duration(value, &c->psi_stall_usec));
        P("pressure_trigger_window", parse_duration(value, &c->psi_window_usec));
        P("pressure_hold", parse_duration(value, &c->psi_hold_usec));
        P("evict_under_pressure", parse_bool(value, &c->evict_under_pressure));
        P("unload_idle", parse_duration(value, &c->unload_idle_usec));
        P("token_rate_on_battery", parse_double(value, 0, 1e6, &c->token_rate_on_battery));
        P("token_rate_hot", parse_double(value, 0, 1e6, &c->token_rate_hot));
        P("upower", parse_bool(value, &c->upower));
        P("power_profiles", parse_bool(value, &c->power_profiles));
#undef P
        return -ENOENT;
}

int policy_config_verify(const PolicyConfig *c) {
        if (c->battery_low_leave < c->battery_low_enter)
                return -EINVAL;
        if (c->hot_leave_c > c->hot_enter_c)
                return -EINVAL;
        if (c->psi_leave > c->psi_enter)
                return -EINVAL;
        if (c->mem_available_enter > 0 && c->mem_available_leave < c->mem_available_enter)
                return -EINVAL;
        if (c->poll_usec < 10000)
                return -EINVAL;
        if (c->psi_trigger && (c->psi_stall_usec == 0 || c->psi_stall_usec > c->psi_window_usec))
                return -EINVAL;
        return 0;
}
