/* The policy's rules: configuration ([policy] section), the per-rule hysteresis and per-model dwell
 * state, and policy_decide(), a pure function (no I/O, no clock) from readings to the highest
 * precision each model may use. Precisions order by conservativeness: F16 < INT8 < INT4, which
 * is also their enum order, so "the most conservative" is the largest value. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "policy-readings.h"

typedef enum PolicyRule {
        POLICY_RULE_PERFORMANCE,        /* power profile "performance" */
        POLICY_RULE_BALANCED,           /* power profile "balanced" */
        POLICY_RULE_POWER_SAVER,        /* power profile "power-saver" */
        POLICY_RULE_DEGRADED,           /* PerformanceDegraded is set */
        POLICY_RULE_ON_BATTERY,
        POLICY_RULE_BATTERY_LOW,
        POLICY_RULE_HOT,
        POLICY_RULE_MEMORY_PRESSURE,
        _POLICY_RULE_MAX,
        _POLICY_RULE_INVALID = -1,
} PolicyRule;

const char *policy_rule_to_string(PolicyRule r); /* "on-battery", "hot", ... */

typedef struct PolicyConfig {
        /* Keys of [policy] in docs/POLICY.md and policy/policy.conf. */
        bool enabled;                   /* enabled */
        uint64_t poll_usec;             /* poll_interval */
        uint64_t dwell_usec;            /* dwell */
        /* Highest precision while the rule fires; QD_PRECISION_AUTO: the rule is off. */
        QdPrecision rule_precision[_POLICY_RULE_MAX];
        double battery_low_enter, battery_low_leave; /* percent */
        double hot_enter_c, hot_leave_c;
        bool use_trip_points;           /* a zone's hot/passive trip replaces hot_enter */
        double psi_enter, psi_leave;    /* PSI some avg10, percent */
        uint64_t mem_available_enter, mem_available_leave; /* bytes; 0: off */
        bool psi_trigger;
        uint64_t psi_stall_usec, psi_window_usec;
        uint64_t psi_hold_usec;         /* a trigger event counts as pressure this long */
        bool evict_under_pressure;
        uint64_t unload_idle_usec;      /* unload models idle this long under pressure; 0: never */
        double token_rate_on_battery, token_rate_hot; /* tokens/s per model; 0: no cap */
        bool upower, power_profiles;    /* watch the system bus */
} PolicyConfig;

void policy_config_init(PolicyConfig *c);
/* For the daemon's inih callback: returns 1 when the key was consumed, 0 when section is not
 * "policy" (any case: not ours), -EINVAL for a bad value and -ENOENT for an unknown key in
 * [policy]. Keys compare ignoring case and '_' (hot_enter = HotEnter). */
int policy_config_parse_key(PolicyConfig *c, const char *section, const char *key, const char *value);
/* -EINVAL when leave/enter thresholds are inverted. */
int policy_config_verify(const PolicyConfig *c);

const char *policy_precision_to_string(QdPrecision p); /* "fp16", "int8", "int4", "auto" */
QdPrecision policy_precision_from_string(const char *s); /* also "off"/"none" → AUTO */

#define POLICY_MAX_MODELS 32

/* What the caller knows about each model. */
typedef struct PolicyModelInput {
        const char *name;
        QdPrecision pinned;             /* QD_PRECISION_AUTO when the policy decides */
        QdPrecision current;            /* in use now */
        uint64_t variant_bytes[_QD_PRECISION_MAX]; /* device bytes per variant; 0: unknown */
        uint64_t resident_bytes;        /* device bytes held by this model now */
        uint64_t idle_usec;             /* since last use */
        unsigned active_requests;
} PolicyModelInput;

typedef struct PolicyModelState {
        char name[128];
        QdPrecision precision;
        uint64_t since_usec;
} PolicyModelState;

/* Carried from one decision to the next: rule hysteresis and per-model dwell. Zero-init. */
typedef struct PolicyState {
        bool initialized;
        bool active[_POLICY_RULE_MAX];
        QdPrecision cap;
        uint64_t cap_since_usec;
        size_t n_models;
        PolicyModelState models[POLICY_MAX_MODELS];
} PolicyState;

typedef struct PolicyModelDecision {
        char name[128];
        QdPrecision precision;          /* what the model should use */
        QdPrecision wanted;             /* before dwell held it back */
        bool pinned;                    /* precision is the pin; nothing else applies */
        bool budget_limited;            /* a less conservative variant would not fit */
        bool no_fit;                    /* not even INT4 fits the budget */
        bool evict;                     /* drop variants other than the one in use */
        bool unload;                    /* idle under pressure: unload it */
} PolicyModelDecision;

typedef struct PolicyDecision {
        unsigned rules;                 /* bitmask (1u << PolicyRule) of rules that fire */
        QdPrecision cap;                /* most conservative firing rule, after dwell */
        QdPrecision wanted_cap;         /* before dwell */
        PolicyRule deciding;            /* the rule that sets wanted_cap, or _POLICY_RULE_INVALID */
        bool dwell_holding;             /* a relaxation waits for the dwell time */
        double token_rate_cap;          /* tokens/s, 0: none */
        char reason[160];               /* one line: which rule and the reading behind it */
        size_t n_models;
        PolicyModelDecision models[POLICY_MAX_MODELS];
} PolicyDecision;

/* Decides. now_usec is CLOCK_MONOTONIC; state is updated. Models beyond POLICY_MAX_MODELS are
 * ignored (-E2BIG is returned after deciding the first ones). */
int policy_decide(const PolicyConfig *c, const PolicyReadings *r, const PolicyModelInput *models,
                  size_t n_models, PolicyState *state, uint64_t now_usec, PolicyDecision *ret);

/* true when a and b would act differently (cap, rules, token cap or any model's outcome). */
bool policy_decision_differs(const PolicyDecision *a, const PolicyDecision *b);
const PolicyModelDecision *policy_decision_find(const PolicyDecision *d, const char *model);
