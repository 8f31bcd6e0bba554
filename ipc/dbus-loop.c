/* Drives an sd_bus from a libuv loop: uv_poll on its fd, a uv_timer for its timeout, and a
 * uv_prepare that flushes messages queued outside a dispatch (signals sent from callbacks). */
#include <poll.h>
#include <stdlib.h>
#include <time.h>

#include "log.h" /* first: util/macro.h before <sys/param.h> */
#include "dbus-internal.h"

struct BusLoop {
        sd_bus *bus;
        uv_poll_t *poll;
        uv_timer_t *timer;
        uv_prepare_t *prepare;
        int events;
};

static void poll_cb(uv_poll_t *h, int status, int events);
static void timer_cb(uv_timer_t *h);

static void bus_loop_rearm(BusLoop *l) {
        uint64_t until, now;
        struct timespec ts;
        int e, events = 0;

        e = sd_bus_get_events(l->bus);
        if (e > 0) {
                if (e & POLLIN)
                        events |= UV_READABLE;
                if (e & POLLOUT)
                        events |= UV_WRITABLE;
        }
        if (events != l->events) {
                if (events)
                        uv_poll_start(l->poll, events, poll_cb);
                else
                        uv_poll_stop(l->poll);
                l->events = events;
        }

        uv_timer_stop(l->timer);
        if (sd_bus_get_timeout(l->bus, &until) > 0 && until != UINT64_MAX) {
                clock_gettime(CLOCK_MONOTONIC, &ts);
                now = (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
                uv_timer_start(l->timer, timer_cb,
                               until > now ? DIV_ROUND_UP(until - now, 1000) : 0, 0);
        }
}

static void bus_loop_process(BusLoop *l) {
        int r;

        do {
                r = sd_bus_process(l->bus, NULL);
        } while (r > 0);
        if (r < 0 && r != -ECONNRESET && r != -ENOTCONN)
                log_warning_errno(r, "Failed to process bus messages: %m");
        bus_loop_rearm(l);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
        bus_loop_process(h->data);
}

static void timer_cb(uv_timer_t *h) {
        bus_loop_process(h->data);
}

static void prepare_cb(uv_prepare_t *h) {
        BusLoop *l = h->data;

        bus_loop_process(l);
}

static void free_handle(uv_handle_t *h) {
        free(h);
}

int bus_loop_attach(sd_bus *bus, uv_loop_t *loop, BusLoop **ret) {
        BusLoop *l;
        int fd, r;

        fd = sd_bus_get_fd(bus);
        if (fd < 0)
                return fd;
        l = calloc(1, sizeof(BusLoop));
        if (!l)
                return -ENOMEM;
        l->bus = sd_bus_ref(bus);
        l->poll = calloc(1, sizeof(uv_poll_t));
        l->timer = calloc(1, sizeof(uv_timer_t));
        l->prepare = calloc(1, sizeof(uv_prepare_t));
        if (!l->poll || !l->timer || !l->prepare) {
                free(l->poll);
                free(l->timer);
                free(l->prepare);
                sd_bus_unref(l->bus);
                free(l);
                return -ENOMEM;
        }
        r = uv_poll_init(loop, l->poll, fd);
        if (r < 0) {
                free(l->poll);
                free(l->timer);
                free(l->prepare);
                sd_bus_unref(l->bus);
                free(l);
                return r;
        }
        uv_timer_init(loop, l->timer);
        uv_prepare_init(loop, l->prepare);
        l->poll->data = l->timer->data = l->prepare->data = l;
        uv_prepare_start(l->prepare, prepare_cb);
        l->events = -1;
        bus_loop_rearm(l);
        *ret = l;
        return 0;
}

BusLoop *bus_loop_detach(BusLoop *l) {
        if (!l)
                return NULL;
        uv_close((uv_handle_t *) l->poll, free_handle);
        uv_close((uv_handle_t *) l->timer, free_handle);
        uv_close((uv_handle_t *) l->prepare, free_handle);
        sd_bus_unref(l->bus);
        return mfree(l);
}
