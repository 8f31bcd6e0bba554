/* Table-driven tests of policy_decide(): each scenario is a timeline of readings with the
 * decision expected at each step, covering every rule, hysteresis, dwell, pins and the budget. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "policy-rules.h"

/* Steps start from defaults and override some fields. */
#pragma GCC diagnostic ignored "-Woverride-init"

#define MIB UINT64_C(1048576)
#define BIT(r) (1u << (r))
#define NOPIN QD_PRECISION_AUTO

typedef struct Step {
        double t;                       /* seconds since the scenario began */
        int ac;                         /* 1 online, 0 offline, -1 no mains supply */
        double battery;                 /* percent; NAN: no battery */
        const char *status;             /* battery status */
        int upower_on_battery;          /* -1: no UPower */
        double temp, trip;              /* °C of the only thermal zone; trip NAN: none */
        double gpu_temp;                /* hwmon amdgpu; NAN: none */
        double psi;                     /* some avg10; NAN: no PSI */
        double psi_event_ago;           /* seconds since a trigger event; NAN: none */
        double avail_mib;               /* MemAvailable; NAN: no meminfo */
        const char *profile;            /* NULL: no power-profiles-daemon */
        const char *degraded;
        QdPrecision pin;
        unsigned active_requests;
        double idle;                    /* seconds the model has been idle */
        /* expectations */
        QdPrecision expect;             /* model "m" */
        unsigned rules;                 /* exact set of firing rules */
        bool evict, unload, budget_limited;
        double token_cap;
} Step;

#define STEP(...)                                                                              \
        { .ac = 1, .battery = NAN, .status = "Charging", .upower_on_battery = -1, .temp = 45,  \
          .trip = NAN, .gpu_temp = NAN, .psi = 0, .psi_event_ago = NAN, .avail_mib = 8192,     \
          .profile = NULL, .degraded = "", .pin = NOPIN, .idle = 0, .rules = 0,               \
          .expect = QD_PRECISION_F16, __VA_ARGS__ }

typedef struct Scenario {
        const char *name;
        const char *config[8][2];       /* [Policy] key=value overrides */
        uint64_t gpu_budget_mib, gpu_used_mib; /* 0: no budget known */
        uint64_t bytes_mib[_QD_PRECISION_MAX];
        Step steps[10];
        size_t n_steps;
} Scenario;

#define STEPS(...) .steps = { __VA_ARGS__ }, .n_steps = ELEMENTSOF(((Step[]) { __VA_ARGS__ }))

static const Scenario scenarios[] = {
        {
                .name = "nothing fires: fp16",
                STEPS(STEP(.t = 0)),
        },
        {
                .name = "profiles: performance fp16, balanced fp16, power-saver int8",
                .config = { { "dwell", "0" } },
                STEPS(STEP(.t = 0, .profile = "performance", .rules = BIT(POLICY_RULE_PERFORMANCE)),
                      STEP(.t = 1, .profile = "balanced", .rules = BIT(POLICY_RULE_BALANCED)),
                      STEP(.t = 2, .profile = "power-saver", .rules = BIT(POLICY_RULE_POWER_SAVER),
                           .expect = QD_PRECISION_INT8),
                      STEP(.t = 3, .profile = "performance", .degraded = "high-operating-temperature",
                           .rules = BIT(POLICY_RULE_PERFORMANCE) | BIT(POLICY_RULE_DEGRADED),
                           .expect = QD_PRECISION_INT8)),
        },
        {
                .name = "AC unplugged: int8 at once; plugged back: fp16 only after the dwell",
                .config = { { "dwell", "10" } },
                STEPS(STEP(.t = 0, .ac = 1, .battery = 80),
                      STEP(.t = 1, .ac = 0, .battery = 80, .status = "Discharging",
                           .rules = BIT(POLICY_RULE_ON_BATTERY), .expect = QD_PRECISION_INT8),
                      STEP(.t = 2, .ac = 1, .battery = 80, .expect = QD_PRECISION_INT8),
                      STEP(.t = 10.5, .ac = 1, .battery = 80, .expect = QD_PRECISION_INT8),
                      STEP(.t = 11, .ac = 1, .battery = 80, .expect = QD_PRECISION_F16)),
        },
        {
                .name = "no mains supply: a discharging battery means on battery",
                STEPS(STEP(.t = 0, .ac = -1, .battery = 60, .status = "Discharging",
                           .rules = BIT(POLICY_RULE_ON_BATTERY), .expect = QD_PRECISION_INT8)),
        },
        {
                .name = "UPower OnBattery alone is enough",
                STEPS(STEP(.t = 0, .ac = -1, .upower_on_battery = 1,
                           .rules = BIT(POLICY_RULE_ON_BATTERY), .expect = QD_PRECISION_INT8),
                      STEP(.t = 0, .ac = -1, .upower_on_battery = 0, .expect = QD_PRECISION_INT8)),
        },
        {
                .name = "battery low: enter at 20%, leave above 25% (hysteresis)",
                .config = { { "dwell", "0" } },
                STEPS(STEP(.t = 0, .ac = 0, .battery = 21, .status = "Discharging",
                           .rules = BIT(POLICY_RULE_ON_BATTERY), .expect = QD_PRECISION_INT8),
                      STEP(.t = 1, .ac = 0, .battery = 20, .status = "Discharging",
                           .rules = BIT(POLICY_RULE_ON_BATTERY) | BIT(POLICY_RULE_BATTERY_LOW),
                           .expect = QD_PRECISION_INT4),
                      STEP(.t = 2, .ac = 0, .battery = 24, .status = "Discharging",
                           .rules = BIT(POLICY_RULE_ON_BATTERY) | BIT(POLICY_RULE_BATTERY_LOW),
                           .expect = QD_PRECISION_INT4),
                      STEP(.t = 3, .ac = 0, .battery = 25, .status = "Discharging",
                           .rules = BIT(POLICY_RULE_ON_BATTERY), .expect = QD_PRECISION_INT8),
                      STEP(.t = 4, .ac = 1, .battery = 10, .expect = QD_PRECISION_F16)),
        },
        {
                .name = "hot: enter at 85 °C, stay down to 78 °C, leave below",
                .config = { { "dwell", "0" } },
                STEPS(STEP(.t = 0, .temp = 84.9),
                      STEP(.t = 1, .temp = 85, .rules = BIT(POLICY_RULE_HOT), .expect = QD_PRECISION_INT4),
                      STEP(.t = 2, .temp = 80, .rules = BIT(POLICY_RULE_HOT), .expect = QD_PRECISION_INT4),
                      STEP(.t = 3, .temp = 78, .expect = QD_PRECISION_F16),
                      STEP(.t = 4, .temp = 84, .expect = QD_PRECISION_F16)),
        },
        {
                .name = "hot: a zone's trip point replaces the threshold; the margin stays",
                .config = { { "dwell", "0" } },
                STEPS(STEP(.t = 0, .temp = 72, .trip = 75),
                      STEP(.t = 1, .temp = 75, .trip = 75, .rules = BIT(POLICY_RULE_HOT),
                           .expect = QD_PRECISION_INT4),
                      STEP(.t = 2, .temp = 69, .trip = 75, .rules = BIT(POLICY_RULE_HOT),
                           .expect = QD_PRECISION_INT4),
                      STEP(.t = 3, .temp = 68, .trip = 75)),
        },
        {
                .name = "hot: trip points ignored when UseTripPoints=no",
                .config = { { "UseTripPoints", "no" } },
                STEPS(STEP(.t = 0, .temp = 80, .trip = 75)),
        },
        {
                .name = "hot: a GPU hwmon sensor counts; token rate cap applies",
                .config = { { "token_rate_hot", "20" }, { "TokenRateOnBattery", "30" } },
                STEPS(STEP(.t = 0, .gpu_temp = 90, .rules = BIT(POLICY_RULE_HOT),
                           .expect = QD_PRECISION_INT4, .token_cap = 20),
                      STEP(.t = 1, .ac = 0, .gpu_temp = 90,
                           .rules = BIT(POLICY_RULE_HOT) | BIT(POLICY_RULE_ON_BATTERY),
                           .expect = QD_PRECISION_INT4, .token_cap = 20)),
        },
        {
                .name = "memory pressure: PSI enter 10%, leave 5%, evicts, unloads idle models",
                .config = { { "dwell", "0" }, { "unload_idle", "1min" } },
                STEPS(STEP(.t = 0, .psi = 9.9),
                      STEP(.t = 1, .psi = 10, .idle = 30, .rules = BIT(POLICY_RULE_MEMORY_PRESSURE),
                           .expect = QD_PRECISION_INT4, .evict = true),
                      STEP(.t = 2, .psi = 6, .idle = 61, .rules = BIT(POLICY_RULE_MEMORY_PRESSURE),
                           .expect = QD_PRECISION_INT4, .evict = true, .unload = true),
                      STEP(.t = 3, .psi = 6, .idle = 61, .active_requests = 1,
                           .rules = BIT(POLICY_RULE_MEMORY_PRESSURE), .expect = QD_PRECISION_INT4,
                           .evict = true),
                      STEP(.t = 4, .psi = 5, .idle = 61)),
        },
        {
                .name = "memory pressure: a PSI trigger event holds for PressureHoldSec",
                .config = { { "dwell", "0" }, { "pressure_hold", "5s" } },
                STEPS(STEP(.t = 0, .psi = 0, .psi_event_ago = 0.1,
                           .rules = BIT(POLICY_RULE_MEMORY_PRESSURE), .expect = QD_PRECISION_INT4,
                           .evict = true),
                      STEP(.t = 3, .psi = 0, .psi_event_ago = 3.1,
                           .rules = BIT(POLICY_RULE_MEMORY_PRESSURE), .expect = QD_PRECISION_INT4,
                           .evict = true),
                      STEP(.t = 6, .psi = 0, .psi_event_ago = 6.1)),
        },
        {
                .name = "memory pressure: MemAvailable floor with its own leave threshold",
                .config = { { "dwell", "0" } },
                STEPS(STEP(.t = 0, .avail_mib = 511, .rules = BIT(POLICY_RULE_MEMORY_PRESSURE),
                           .expect = QD_PRECISION_INT4, .evict = true),
                      STEP(.t = 1, .avail_mib = 700, .rules = BIT(POLICY_RULE_MEMORY_PRESSURE),
                           .expect = QD_PRECISION_INT4, .evict = true),
                      STEP(.t = 2, .avail_mib = 768)),
        },
        {
                .name = "dwell: tightening is immediate, relaxing waits, a new tightening restarts it",
                .config = { { "dwell", "5" } },
                STEPS(STEP(.t = 0, .ac = 0, .rules = BIT(POLICY_RULE_ON_BATTERY), .expect = QD_PRECISION_INT8),
                      STEP(.t = 1, .ac = 0, .temp = 90, .rules = BIT(POLICY_RULE_ON_BATTERY) | BIT(POLICY_RULE_HOT),
                           .expect = QD_PRECISION_INT4),
                      STEP(.t = 2, .ac = 0, .temp = 50, .rules = BIT(POLICY_RULE_ON_BATTERY),
                           .expect = QD_PRECISION_INT4),
                      STEP(.t = 6, .ac = 0, .temp = 50, .rules = BIT(POLICY_RULE_ON_BATTERY),
                           .expect = QD_PRECISION_INT8),
                      STEP(.t = 7, .ac = 1, .temp = 50, .expect = QD_PRECISION_INT8),
                      STEP(.t = 11, .ac = 1, .temp = 50, .expect = QD_PRECISION_F16)),
        },
        {
                .name = "a pinned model ignores the policy",
                STEPS(STEP(.t = 0, .temp = 95, .pin = QD_PRECISION_F16, .rules = BIT(POLICY_RULE_HOT),
                           .expect = QD_PRECISION_F16),
                      STEP(.t = 1, .pin = QD_PRECISION_INT4, .expect = QD_PRECISION_INT4),
                      STEP(.t = 2, .psi = 50, .pin = QD_PRECISION_INT8,
                           .rules = BIT(POLICY_RULE_MEMORY_PRESSURE), .expect = QD_PRECISION_INT8)),
        },
        {
                .name = "budget: fp16 does not fit, int8 does",
                .gpu_budget_mib = 1000, .gpu_used_mib = 400,
                .bytes_mib = { [QD_PRECISION_F16] = 900, [QD_PRECISION_INT8] = 500, [QD_PRECISION_INT4] = 260 },
                STEPS(STEP(.t = 0, .expect = QD_PRECISION_INT8, .budget_limited = true)),
        },
        {
                .name = "a rule configured off, another changed",
                .config = { { "on_battery", "off" }, { "Hot", "int8" } },
                STEPS(STEP(.t = 0, .ac = 0),
                      STEP(.t = 1, .ac = 0, .temp = 99, .rules = BIT(POLICY_RULE_HOT),
                           .expect = QD_PRECISION_INT8)),
        },
        {
                .name = "Enabled=no decides fp16 whatever happens",
                .config = { { "enabled", "no" } },
                STEPS(STEP(.t = 0, .ac = 0, .temp = 99, .psi = 80)),
        },
};

static void fill_readings(const Step *s, uint64_t now, PolicyReadings *r) {
        policy_readings_init(r);
        if (s->ac >= 0) {
                r->power.ac_present = true;
                r->power.ac_online = s->ac == 1;
        }
        if (!isnan(s->battery)) {
                r->power.battery_present = true;
                r->power.battery_percent = s->battery;
                snprintf(r->power.battery_status, sizeof r->power.battery_status, "%s", s->status);
        }
        if (s->upower_on_battery >= 0) {
                r->upower.present = true;
                r->upower.on_battery = s->upower_on_battery == 1;
        }
        if (!isnan(s->temp)) {
                PolicySensor *z = &r->thermal.sensors[r->thermal.n_sensors++];
                snprintf(z->name, sizeof z->name, "thermal_zone0:acpitz");
                z->temp_c = s->temp;
                z->trip_c = s->trip;
        }
        if (!isnan(s->gpu_temp)) {
                PolicySensor *g = &r->thermal.sensors[r->thermal.n_sensors++];
                snprintf(g->name, sizeof g->name, "hwmon1:amdgpu:temp1");
                g->temp_c = s->gpu_temp;
                g->gpu = true;
        }
        r->thermal.present = r->thermal.n_sensors > 0;
        if (!isnan(s->psi)) {
                r->memory.psi_present = true;
                r->memory.psi_some_avg10 = s->psi;
                r->memory.psi_mode = POLICY_PSI_POLL;
        }
        if (!isnan(s->psi_event_ago))
                r->memory.psi_event_usec = now - (uint64_t) (s->psi_event_ago * 1e6);
        if (!isnan(s->avail_mib)) {
                r->memory.meminfo_present = true;
                r->memory.mem_total = 16384 * MIB;
                r->memory.mem_available = (uint64_t) (s->avail_mib * MIB);
        }
        if (s->profile) {
                r->profile.present = true;
                snprintf(r->profile.service, sizeof r->profile.service, "net.hadess.PowerProfiles");
                snprintf(r->profile.active, sizeof r->profile.active, "%s", s->profile);
                snprintf(r->profile.degraded, sizeof r->profile.degraded, "%s", s->degraded);
        }
}

static int run_scenario(const Scenario *sc) {
        PolicyConfig cfg;
        PolicyState state = {};
        int failures = 0, r;

        policy_config_init(&cfg);
        for (size_t i = 0; i < ELEMENTSOF(sc->config) && sc->config[i][0]; i++) {
                r = policy_config_parse_key(&cfg, "Policy", sc->config[i][0], sc->config[i][1]);
                if (r != 1) {
                        printf("FAIL %s: config %s=%s → %d\n", sc->name, sc->config[i][0], sc->config[i][1], r);
                        return 1;
                }
        }
        if (policy_config_verify(&cfg) < 0) {
                printf("FAIL %s: config does not verify\n", sc->name);
                return 1;
        }

        for (size_t i = 0; i < sc->n_steps; i++) {
                const Step *s = &sc->steps[i];
                /* Start well away from 0, as CLOCK_MONOTONIC does. */
                uint64_t now = 1000000000 + (uint64_t) (s->t * 1e6);
                PolicyReadings rd;
                PolicyDecision d;
                PolicyModelInput m = {
                        .name = "m",
                        .pinned = s->pin,
                        .current = QD_PRECISION_F16,
                        .idle_usec = (uint64_t) (s->idle * 1e6),
                        .active_requests = s->active_requests,
                };

                fill_readings(s, now, &rd);
                if (sc->gpu_budget_mib > 0) {
                        rd.gpu.present = true;
                        rd.gpu.budget = sc->gpu_budget_mib * MIB;
                        rd.gpu.used = sc->gpu_used_mib * MIB;
                }
                for (int p = 0; p < _QD_PRECISION_MAX; p++)
                        m.variant_bytes[p] = sc->bytes_mib[p] * MIB;

                r = policy_decide(&cfg, &rd, &m, 1, &state, now, &d);
                const PolicyModelDecision *md = policy_decision_find(&d, "m");
                bool ok = r == 0 && md && md->precision == s->expect && d.rules == s->rules &&
                          md->evict == s->evict && md->unload == s->unload &&
                          md->budget_limited == s->budget_limited && d.token_rate_cap == s->token_cap &&
                          md->pinned == (s->pin != NOPIN);
                printf("%s %s, step %zu (t=%.1f): %s rules=%#x evict=%d unload=%d cap=%s reason=\"%s\"\n",
                       ok ? "ok  " : "FAIL", sc->name, i, s->t,
                       md ? policy_precision_to_string(md->precision) : "-", d.rules,
                       md ? md->evict : -1, md ? md->unload : -1, policy_precision_to_string(d.cap), d.reason);
                if (!ok) {
                        printf("     expected %s rules=%#x evict=%d unload=%d budget_limited=%d token_cap=%g\n",
                               policy_precision_to_string(s->expect), s->rules, s->evict, s->unload,
                               s->budget_limited, s->token_cap);
                        failures++;
                }
        }
        return failures;
}

static int test_config(void) {
        PolicyConfig c;
        int failures = 0;
        static const struct {
                const char *section, *key, *value;
                int expect;
        } cases[] = {
                { "daemon", "hot", "int4", 0 },
                { "policy", "hot", "fp16", 1 },
                { "Policy", "Hot", "int5", -EINVAL },
                { "policy", "dwell", "2.5", 1 },
                { "policy", "dwell", "-1", -EINVAL },
                { "policy", "poll_interval", "250ms", 1 },
                { "policy", "hot_enter", "90x", -EINVAL },
                { "policy", "hot_enter", "91 °C", 1 },
                { "policy", "unknown", "1", -ENOENT },
                { "policy", "mem_available_enter", "256M", 1 },
                { "policy", "MemAvailableLeave", "1G", 1 },
                { "policy", "pressure_trigger_stall", "100ms", 1 },
                { "policy", "pressure_enter", "12%", 1 },
                { "policy", "pressure_enter", "120%", -EINVAL },
                { "policy", "unload_idle", "5min", 1 },
                { "policy", "enabled", "maybe", -EINVAL },
        };

        policy_config_init(&c);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int r = policy_config_parse_key(&c, cases[i].section, cases[i].key, cases[i].value);
                if (r != cases[i].expect) {
                        printf("FAIL config [%s] %s=%s → %d, expected %d\n", cases[i].section,
                               cases[i].key, cases[i].value, r, cases[i].expect);
                        failures++;
                }
        }
        if (c.rule_precision[POLICY_RULE_HOT] != QD_PRECISION_F16 || c.dwell_usec != 2500000 ||
            c.poll_usec != 250000 || c.hot_enter_c != 91 || c.mem_available_enter != 256 * MIB ||
            c.mem_available_leave != 1024 * MIB || c.psi_stall_usec != 100000 || c.psi_enter != 12 ||
            c.unload_idle_usec != 300000000) {
                printf("FAIL config values not stored\n");
                failures++;
        }
        /* Inverted hysteresis is refused. */
        policy_config_parse_key(&c, "policy", "hot_leave", "95");
        if (policy_config_verify(&c) != -EINVAL) {
                printf("FAIL config: inverted hot thresholds verified\n");
                failures++;
        }
        for (int p = QD_PRECISION_F16; p < _QD_PRECISION_MAX; p++)
                if (policy_precision_from_string(policy_precision_to_string(p)) != p) {
                        printf("FAIL precision string round trip %d\n", p);
                        failures++;
                }
        printf("%s config parsing\n", failures ? "FAIL" : "ok  ");
        return failures;
}

static int test_many_models(void) {
        PolicyConfig c;
        PolicyState st = {};
        PolicyReadings rd;
        PolicyDecision d;
        PolicyModelInput in[POLICY_MAX_MODELS + 1];
        char names[POLICY_MAX_MODELS + 1][16];

        policy_config_init(&c);
        policy_readings_init(&rd);
        for (size_t i = 0; i < ELEMENTSOF(in); i++) {
                snprintf(names[i], sizeof names[i], "m%zu", i);
                in[i] = (PolicyModelInput) { .name = names[i], .pinned = NOPIN };
        }
        if (policy_decide(&c, &rd, in, ELEMENTSOF(in), &st, 1, &d) != -E2BIG ||
            d.n_models != POLICY_MAX_MODELS || st.n_models != POLICY_MAX_MODELS) {
                printf("FAIL too many models not reported\n");
                return 1;
        }
        printf("ok   more than %d models: -E2BIG, the first ones decided\n", POLICY_MAX_MODELS);
        return 0;
}

int main(void) {
        int failures = 0;

        for (size_t i = 0; i < ELEMENTSOF(scenarios); i++)
                failures += run_scenario(&scenarios[i]);
        failures += test_config();
        failures += test_many_models();
        printf("%d failure(s)\n", failures);
        return failures ? 1 : 0;
}
