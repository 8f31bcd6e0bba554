/* Runs the policy on a libuv loop: the poll timer, the PSI trigger, the bus watchers. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "policy-bus.h"
#include "policy-monitor.h"
#include "policy-util.h"

#define BUS_RETRY_USEC (5 * UINT64_C(1000000))

typedef struct PsiWatch {
        PolicyMonitor *m;
        uv_poll_t poll;
        int fd;
} PsiWatch;

struct PolicyMonitor {
        uv_loop_t *loop;
        PolicyConfig config;
        PolicyReadings readings;
        PolicyState state;
        PolicyDecision decision;
        bool have_decision, deciding, again, freed;

        size_t (*get_models)(PolicyModelInput *models, size_t max, PolicyGpuMemory *gpu, void *userdata);
        void (*changed)(PolicyMonitor *m, const PolicyDecision *old, const PolicyDecision *now, void *userdata);
        void *userdata;

        uv_timer_t timer;
        bool timer_open;
        PsiWatch *psi;

        sd_bus *bus;
        bool bus_given;
        uint64_t bus_retry_usec;        /* when to try opening our own bus again, 0: not needed */
        PolicyBusAttach *attach;
        char bus_state[96];
        PolicyUPowerWatch *upower;
        PolicyPpdWatch *ppd;
};

static int decide(PolicyMonitor *m) {
        if (m->deciding) {
                /* Called back from inside changed(): decide once more when it returns. */
                m->again = true;
                return 0;
        }
        m->deciding = true;
        do {
                PolicyModelInput models[POLICY_MAX_MODELS];
                PolicyGpuMemory gpu = {};
                PolicyDecision d, old;
                size_t n = 0;

                m->again = false;
                if (m->get_models)
                        n = m->get_models(models, POLICY_MAX_MODELS, &gpu, m->userdata);
                m->readings.gpu = gpu;
                (void) policy_decide(&m->config, &m->readings, models, MIN(n, (size_t) POLICY_MAX_MODELS),
                                     &m->state, policy_now_usec(), &d);
                bool had = m->have_decision;
                bool differs = !had || policy_decision_differs(&m->decision, &d);
                old = m->decision;
                m->decision = d;
                m->have_decision = true;
                if (differs && m->changed)
                        m->changed(m, had ? &old : NULL, &m->decision, m->userdata);
        } while (m->again && !m->freed);
        m->deciding = false;
        return 0;
}

static void bus_close(PolicyMonitor *m) {
        m->upower = policy_upower_watch_free(m->upower);
        m->ppd = policy_ppd_watch_free(m->ppd);
        policy_bus_detach(TAKE_PTR(m->attach));
        m->bus = sd_bus_unref(m->bus);
        m->readings.upower = (PolicyUPower) { .percentage = NAN };
        m->readings.profile = (PolicyProfile) {};
}

static int bus_open(PolicyMonitor *m, sd_bus *given);
static void bus_watches_update(PolicyMonitor *m);

/* Our own connection dropped (dbus-daemon restarted) or never came up: the bus sources become
 * absent, and we try again every BUS_RETRY_USEC. */
static void bus_check(PolicyMonitor *m) {
        bool want = m->config.enabled && (m->config.upower || m->config.power_profiles);

        if (!want || m->bus_given)
                return;
        if (m->bus && sd_bus_is_open(m->bus) <= 0) {
                bus_close(m);
                strscpyf(m->bus_state, "disconnected");
                m->bus_retry_usec = policy_now_usec() + BUS_RETRY_USEC;
        }
        if (!m->bus && m->bus_retry_usec > 0 && policy_now_usec() >= m->bus_retry_usec) {
                (void) bus_open(m, NULL);
                bus_watches_update(m);
        }
}

static int read_sources(PolicyMonitor *m) {
        int r;

        r = policy_thermal_read(&m->readings.thermal);
        if (r < 0)
                return r;
        r = policy_power_read(&m->readings.power);
        if (r < 0)
                return r;
        return policy_memory_read(&m->readings.memory);
}

int policy_monitor_poll(PolicyMonitor *m) {
        int r;

        bus_check(m);
        r = read_sources(m);
        if (r < 0)
                return r;
        return decide(m);
}

int policy_monitor_update(PolicyMonitor *m) {
        return decide(m);
}

static void on_timer(uv_timer_t *t) {
        (void) policy_monitor_poll(t->data);
}

static void psi_on_close(uv_handle_t *h) {
        PsiWatch *p = h->data;
        closep(&p->fd);
        free(p);
}

static void psi_stop(PolicyMonitor *m) {
        if (!m->psi)
                return;
        uv_close((uv_handle_t *) &m->psi->poll, psi_on_close);
        m->psi = NULL;
}

static void psi_on_event(uv_poll_t *h, int status, int events) {
        PsiWatch *p = h->data;
        PolicyMonitor *m = p->m;

        if (status < 0) {
                /* The trigger broke (POLLERR): fall back to the periodic reads. */
                psi_stop(m);
                m->readings.memory.psi_mode = POLICY_PSI_POLL;
                return;
        }
        m->readings.memory.psi_event_usec = policy_now_usec();
        (void) policy_monitor_poll(m);
}

static void psi_start(PolicyMonitor *m) {
        PsiWatch *p;
        int fd;

        m->readings.memory.psi_mode = m->readings.memory.psi_present ? POLICY_PSI_POLL : POLICY_PSI_ABSENT;
        if (!m->config.psi_trigger)
                return;
        fd = policy_psi_trigger_open(m->config.psi_stall_usec, m->config.psi_window_usec);
        if (fd < 0)
                return; /* absent, a fake tree, or refused: the periodic reads remain */
        p = calloc(1, sizeof *p);
        if (!p || uv_poll_init(m->loop, &p->poll, fd) < 0) {
                free(p);
                closep(&fd);
                return;
        }
        p->m = m;
        p->fd = fd;
        p->poll.data = p;
        if (uv_poll_start(&p->poll, UV_PRIORITIZED, psi_on_event) < 0) {
                uv_close((uv_handle_t *) &p->poll, psi_on_close);
                return;
        }
        m->psi = p;
        m->readings.memory.psi_mode = POLICY_PSI_TRIGGER;
}

static void on_bus_change(void *userdata) {
        (void) decide(userdata);
}

static void bus_watches_update(PolicyMonitor *m) {
        int r;

        if (!m->bus)
                return;
        if (m->config.upower && !m->upower) {
                r = policy_upower_watch_new(m->bus, &m->readings.upower, on_bus_change, m, &m->upower);
                if (r < 0)
                        strscpyf(m->bus_state, "unavailable: UPower watch: %s", strerror(-r));
        } else if (!m->config.upower && m->upower) {
                m->upower = policy_upower_watch_free(m->upower);
                m->readings.upower = (PolicyUPower) {};
        }
        if (m->config.power_profiles && !m->ppd) {
                r = policy_ppd_watch_new(m->bus, &m->readings.profile, on_bus_change, m, &m->ppd);
                if (r < 0)
                        strscpyf(m->bus_state, "unavailable: power profiles watch: %s", strerror(-r));
        } else if (!m->config.power_profiles && m->ppd) {
                m->ppd = policy_ppd_watch_free(m->ppd);
                m->readings.profile = (PolicyProfile) {};
        }
}

static int bus_open(PolicyMonitor *m, sd_bus *given) {
        int r;

        if (given) {
                m->bus = sd_bus_ref(given);
                m->bus_given = true;
                strscpyf(m->bus_state, "given");
                return 0;
        }
        r = sd_bus_open_system(&m->bus);
        if (r >= 0)
                r = policy_bus_attach(m->loop, m->bus, &m->attach);
        if (r < 0) {
                /* No system bus (a container, a test without one): those sources stay absent
                 * until a later attempt succeeds. */
                m->bus = sd_bus_unref(m->bus);
                strscpyf(m->bus_state, "unavailable: %s", strerror(-r));
                m->bus_retry_usec = policy_now_usec() + BUS_RETRY_USEC;
                return 0;
        }
        m->bus_retry_usec = 0;
        strscpyf(m->bus_state, "connected");
        return 0;
}

static void timer_on_close(uv_handle_t *h) {
        free(h->data);
}

int policy_monitor_new(uv_loop_t *loop, const PolicyMonitorOptions *o, PolicyMonitor **ret) {
        PolicyMonitor *m;
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->loop = loop;
        if (o->config)
                m->config = *o->config;
        else
                policy_config_init(&m->config);
        r = policy_config_verify(&m->config);
        if (r < 0) {
                free(m);
                return r;
        }
        m->get_models = o->get_models;
        m->changed = o->changed;
        m->userdata = o->userdata;
        policy_readings_init(&m->readings);
        strscpyf(m->bus_state, "off");

        (void) uv_timer_init(loop, &m->timer);
        m->timer.data = m;
        m->timer_open = true;

        r = read_sources(m);
        if (r < 0) {
                policy_monitor_free(m);
                return r;
        }
        psi_start(m);
        if (m->config.enabled && (m->config.upower || m->config.power_profiles)) {
                (void) bus_open(m, o->system_bus);
                bus_watches_update(m);
        }
        (void) uv_timer_start(&m->timer, on_timer, m->config.poll_usec / 1000, m->config.poll_usec / 1000);
        (void) decide(m);
        *ret = m;
        return 0;
}

int policy_monitor_set_config(PolicyMonitor *m, const PolicyConfig *c) {
        int r = policy_config_verify(c);
        if (r < 0)
                return r;
        m->config = *c;
        (void) uv_timer_start(&m->timer, on_timer, c->poll_usec / 1000, c->poll_usec / 1000);
        psi_stop(m);
        psi_start(m);
        if (!m->bus && c->enabled && (c->upower || c->power_profiles))
                (void) bus_open(m, NULL);
        bus_watches_update(m);
        return policy_monitor_poll(m);
}

PolicyMonitor *policy_monitor_free(PolicyMonitor *m) {
        if (!m)
                return NULL;
        m->freed = true;
        bus_close(m);
        psi_stop(m);
        /* The monitor's memory goes with its timer handle. */
        m->timer.data = m;
        uv_close((uv_handle_t *) &m->timer, timer_on_close);
        return NULL;
}

const PolicyConfig *policy_monitor_config(PolicyMonitor *m) {
        return &m->config;
}

const PolicyReadings *policy_monitor_readings(PolicyMonitor *m) {
        return &m->readings;
}

const PolicyDecision *policy_monitor_decision(PolicyMonitor *m) {
        return &m->decision;
}

const char *policy_monitor_bus_state(PolicyMonitor *m) {
        return m->bus_state;
}
