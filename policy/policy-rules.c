/* policy_decide(): readings + configuration + previous state → the precision of each model. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "policy-rules.h"

#define WHY_MAX 128

static bool rule_hot(const PolicyConfig *c, const PolicyThermal *t, bool was, char *why) {
        double best_margin = -INFINITY;
        bool fires = false;

        if (!t->present)
                return false;
        for (unsigned i = 0; i < t->n_sensors; i++) {
                const PolicySensor *s = &t->sensors[i];
                double enter = c->use_trip_points && !isnan(s->trip_c) ? s->trip_c : c->hot_enter_c;
                double leave = enter - (c->hot_enter_c - c->hot_leave_c);
                /* Entering needs the enter threshold; staying only needs to be above leave. */
                double limit = was ? leave : enter;
                bool hot = was ? s->temp_c > limit : s->temp_c >= limit;
                double margin = s->temp_c - limit;

                if (hot && margin > best_margin) {
                        best_margin = margin;
                        snprintf(why, WHY_MAX, "%s at %.1f °C %s %.1f °C", s->name, s->temp_c,
                                 was ? ">" : ">=", limit);
                }
                fires = fires || hot;
        }
        return fires;
}

static bool rule_pressure(const PolicyConfig *c, const PolicyMemory *m, bool was, uint64_t now,
                          char *why) {
        double psi_limit = was ? c->psi_leave : c->psi_enter;
        uint64_t avail_limit = was ? c->mem_available_leave : c->mem_available_enter;

        if (m->psi_present && (was ? m->psi_some_avg10 > psi_limit : m->psi_some_avg10 >= psi_limit)) {
                snprintf(why, WHY_MAX, "PSI some avg10 %.2f%% %s %.2f%%", m->psi_some_avg10,
                         was ? ">" : ">=", psi_limit);
                return true;
        }
        if (m->psi_event_usec > 0 && now >= m->psi_event_usec &&
            now - m->psi_event_usec < c->psi_hold_usec) {
                snprintf(why, WHY_MAX, "PSI trigger fired %.1f s ago",
                         (double) (now - m->psi_event_usec) / 1e6);
                return true;
        }
        if (m->meminfo_present && c->mem_available_enter > 0 && m->mem_available < avail_limit) {
                snprintf(why, WHY_MAX, "MemAvailable %llu MiB < %llu MiB",
                         (unsigned long long) (m->mem_available >> 20),
                         (unsigned long long) (avail_limit >> 20));
                return true;
        }
        return false;
}

static bool rule_battery_low(const PolicyConfig *c, const PolicyReadings *r, bool was, char *why) {
        double pct = policy_readings_battery_percent(r);
        double limit = was ? c->battery_low_leave : c->battery_low_enter;

        /* A low battery that is charging on mains does not limit anything. */
        if (isnan(pct) || !policy_readings_on_battery(r))
                return false;
        if (was ? pct < limit : pct <= limit) {
                snprintf(why, WHY_MAX, "battery %.0f%% %s %.0f%%", pct, was ? "<" : "<=", limit);
                return true;
        }
        return false;
}

static void evaluate_rules(const PolicyConfig *c, const PolicyReadings *r, const PolicyState *s,
                           uint64_t now, bool fires[_POLICY_RULE_MAX], char whys[][WHY_MAX]) {
        const PolicyProfile *p = &r->profile;

        fires[POLICY_RULE_PERFORMANCE] = p->present && streq(p->active, "performance");
        fires[POLICY_RULE_BALANCED] = p->present && streq(p->active, "balanced");
        fires[POLICY_RULE_POWER_SAVER] = p->present && streq(p->active, "power-saver");
        for (PolicyRule i = POLICY_RULE_PERFORMANCE; i <= POLICY_RULE_POWER_SAVER; i++)
                snprintf(whys[i], WHY_MAX, "profile %s (%s)", p->active, p->service);
        fires[POLICY_RULE_DEGRADED] = p->present && p->degraded[0] != '\0';
        snprintf(whys[POLICY_RULE_DEGRADED], WHY_MAX, "performance degraded: %s", p->degraded);

        fires[POLICY_RULE_ON_BATTERY] = policy_readings_on_battery(r);
        if (r->upower.present && r->upower.on_battery)
                snprintf(whys[POLICY_RULE_ON_BATTERY], WHY_MAX, "UPower OnBattery");
        else if (r->power.ac_present)
                snprintf(whys[POLICY_RULE_ON_BATTERY], WHY_MAX, "AC offline");
        else
                snprintf(whys[POLICY_RULE_ON_BATTERY], WHY_MAX, "battery discharging");

        fires[POLICY_RULE_BATTERY_LOW] =
                rule_battery_low(c, r, s->active[POLICY_RULE_BATTERY_LOW], whys[POLICY_RULE_BATTERY_LOW]);
        fires[POLICY_RULE_HOT] = rule_hot(c, &r->thermal, s->active[POLICY_RULE_HOT], whys[POLICY_RULE_HOT]);
        fires[POLICY_RULE_MEMORY_PRESSURE] = rule_pressure(c, &r->memory,
                                                           s->active[POLICY_RULE_MEMORY_PRESSURE], now,
                                                           whys[POLICY_RULE_MEMORY_PRESSURE]);
}

static bool variant_fits(const PolicyReadings *r, const PolicyModelInput *m, QdPrecision p) {
        uint64_t need = m->variant_bytes[p], room;

        if (need == 0 || !r->gpu.present || r->gpu.budget == 0)
                return true;
        /* The model's own resident bytes come back when it switches. */
        room = r->gpu.budget + m->resident_bytes;
        room = room > r->gpu.used ? room - r->gpu.used : 0;
        return need <= room;
}

static const PolicyModelState *state_find(const PolicyState *s, const char *name) {
        for (size_t i = 0; i < s->n_models; i++)
                if (streq(s->models[i].name, name))
                        return &s->models[i];
        return NULL;
}

static void decide_model(const PolicyConfig *c, const PolicyReadings *r, const PolicyModelInput *in,
                         const PolicyState *old, const PolicyDecision *d, uint64_t now,
                         PolicyModelDecision *out, PolicyModelState *st) {
        bool pressure = d->rules & (1u << POLICY_RULE_MEMORY_PRESSURE);
        QdPrecision p = d->cap;
        const PolicyModelState *prev;

        *out = (PolicyModelDecision) {};
        snprintf(out->name, sizeof out->name, "%s", in->name);
        if (in->pinned >= 0 && in->pinned < _QD_PRECISION_MAX) {
                out->pinned = true;
                out->precision = out->wanted = in->pinned;
                return; /* no state: on unpinning the policy starts afresh */
        }

        while (p < QD_PRECISION_INT4 && !variant_fits(r, in, p)) {
                p++;
                out->budget_limited = true;
        }
        out->no_fit = !variant_fits(r, in, p);
        out->wanted = out->precision = p;

        prev = state_find(old, in->name);
        if (prev && p < prev->precision && now - prev->since_usec < c->dwell_usec)
                out->precision = prev->precision; /* relaxing waits for the dwell time */

        out->evict = pressure && c->evict_under_pressure;
        out->unload = pressure && c->unload_idle_usec > 0 && in->active_requests == 0 &&
                      in->idle_usec >= c->unload_idle_usec;

        snprintf(st->name, sizeof st->name, "%s", in->name);
        st->precision = out->precision;
        st->since_usec = prev && prev->precision == out->precision ? prev->since_usec : now;
}

int policy_decide(const PolicyConfig *c, const PolicyReadings *r, const PolicyModelInput *models,
                  size_t n_models, PolicyState *state, uint64_t now_usec, PolicyDecision *ret) {
        bool fires[_POLICY_RULE_MAX] = {};
        char whys[_POLICY_RULE_MAX][WHY_MAX] = {};
        PolicyDecision d = { .deciding = _POLICY_RULE_INVALID, .wanted_cap = QD_PRECISION_F16 };
        PolicyState ns = {};

        if (c->enabled)
                evaluate_rules(c, r, state, now_usec, fires, whys);

        for (PolicyRule i = 0; i < _POLICY_RULE_MAX; i++) {
                ns.active[i] = fires[i];
                if (!fires[i] || c->rule_precision[i] < 0)
                        continue;
                d.rules |= 1u << i;
                /* Later rules win ties: they are the more specific ones. */
                if (d.deciding < 0 || c->rule_precision[i] >= d.wanted_cap) {
                        d.wanted_cap = c->rule_precision[i];
                        d.deciding = i;
                }
        }

        d.cap = d.wanted_cap;
        ns.cap_since_usec = now_usec;
        if (state->initialized && d.wanted_cap <= state->cap) {
                ns.cap_since_usec = state->cap_since_usec;
                if (d.wanted_cap < state->cap && now_usec - state->cap_since_usec < c->dwell_usec) {
                        d.cap = state->cap;
                        d.dwell_holding = true;
                } else if (d.wanted_cap < state->cap)
                        ns.cap_since_usec = now_usec;
        }
        ns.cap = d.cap;
        ns.initialized = true;

        if (d.deciding >= 0)
                snprintf(d.reason, sizeof d.reason, "%s: %s", policy_rule_to_string(d.deciding),
                         whys[d.deciding]);
        else
                snprintf(d.reason, sizeof d.reason, c->enabled ? "no rule fires" : "policy disabled");
        if (d.dwell_holding) {
                size_t l = strlen(d.reason);
                snprintf(d.reason + l, sizeof d.reason - l, "; holding %s for the dwell time",
                         policy_precision_to_string(d.cap));
        }

        if ((d.rules & (1u << POLICY_RULE_ON_BATTERY)) && c->token_rate_on_battery > 0)
                d.token_rate_cap = c->token_rate_on_battery;
        if ((d.rules & (1u << POLICY_RULE_HOT)) && c->token_rate_hot > 0 &&
            (d.token_rate_cap == 0 || c->token_rate_hot < d.token_rate_cap))
                d.token_rate_cap = c->token_rate_hot;

        for (size_t i = 0; i < n_models && i < POLICY_MAX_MODELS; i++) {
                PolicyModelState *st = &ns.models[ns.n_models];
                decide_model(c, r, &models[i], state, &d, now_usec, &d.models[d.n_models], st);
                d.n_models++;
                if (st->name[0])
                        ns.n_models++;
        }

        *state = ns;
        *ret = d;
        return n_models > POLICY_MAX_MODELS ? -E2BIG : 0;
}

bool policy_decision_differs(const PolicyDecision *a, const PolicyDecision *b) {
        if (a->cap != b->cap || a->rules != b->rules || a->token_rate_cap != b->token_rate_cap ||
            a->n_models != b->n_models)
                return true;
        for (size_t i = 0; i < a->n_models; i++) {
                const PolicyModelDecision *x = &a->models[i], *y = &b->models[i];
                if (!streq(x->name, y->name) || x->precision != y->precision ||
                    x->pinned != y->pinned || x->evict != y->evict || x->unload != y->unload ||
                    x->budget_limited != y->budget_limited || x->no_fit != y->no_fit)
                        return true;
        }
        return false;
}

const PolicyModelDecision *policy_decision_find(const PolicyDecision *d, const char *model) {
        for (size_t i = 0; i < d->n_models; i++)
                if (streq(d->models[i].name, model))
                        return &d->models[i];
        return NULL;
}
