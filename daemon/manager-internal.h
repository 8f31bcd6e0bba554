/* Private structures shared by manager.c (models, residency) and manager-worker.c (requests). */
#pragma once

#include <pthread.h>
#include <stdatomic.h>

#include "daemon-config.h"
#include "manager.h"

typedef enum EventType {
        EVENT_TOKEN,
        EVENT_FINISHED,
        EVENT_PRECISION,
} EventType;

/* Posted by a worker, consumed on the loop thread in order. */
typedef struct Event {
        struct Event *next;
        EventType type;
        GenRequest *req;
        char *text;
        int32_t token;
        float logprob;
        const char *reason;             /* static string */
        GenStats stats;
        QdPrecision from, to;
        int error;
} Event;

struct GenRequest {
        Manager *manager;
        ManagedModel *model;
        uint64_t id;
        char *caller_id;
        GenCallbacks cb;
        void *userdata;

        int32_t *tokens;
        size_t n_tokens;
        uint32_t max_tokens;
        QdSampling sampling;
        char **stop;
        size_t n_stop;
        bool want_logprobs;
        atomic_bool cancel;

        /* Worker side. */
        QdSequence *seq;
        QdTextStream *ts;
        uint32_t generated;
        uint64_t t_start, t_prefilled;

        /* Loop side: every live request, for manager_cancel_caller(). */
        GenRequest *live_prev, *live_next;
};

struct ManagedModel {
        Manager *manager;
        char *name, *path;
        QdModel *model;
        QdPrecision pinned;
        uint64_t last_used_usec;
        unsigned n_live;                /* requests not yet finished (loop side) */
        bool removed;                   /* stopped, waiting for the async handle to close */

        pthread_t thread;
        bool thread_started;
        pthread_mutex_t lock;           /* pending, stopping, want_precision, counters */
        pthread_cond_t cond;
        GenRequest **pending;
        size_t n_pending, n_pending_alloc;
        unsigned n_active;
        unsigned max_batch;
        double token_rate;              /* tokens/s over all sequences; 0: no cap (policy) */
        bool stopping;
        const char *stop_reason;
        QdPrecision want_precision;     /* QD_PRECISION_INVALID: nothing asked */
        char *want_reason;
        /* Background preparation of a variant that is not resident (manager-worker.c): the
         * worker keeps stepping at the old precision and switches when it is built. prep_done
         * and prep_result are under lock; the rest belongs to the worker thread. */
        pthread_t prep_thread;
        bool prep_running;              /* prep_thread started and not yet joined */
        bool prep_done;                 /* prep_thread finished with prep_result */
        int prep_result;
        bool prep_stepped;              /* a step ran since the preparation started */
        QdPrecision prep_target;        /* the variant prep_thread builds */
        bool target_set;                /* a switch to target_precision is waiting */
        QdPrecision target_precision;
        char *target_reason;

        pthread_mutex_t ev_lock;
        Event *ev_head, *ev_tail;
        uv_async_t async;
};

/* The engine, shared with asynchronous loads that may outlive the manager (shutdown during a
 * load): freed by whoever drops the last reference, on the loop thread. */
typedef struct EngineHold {
        QdEngine *engine;
        unsigned refs;
} EngineHold;

struct Manager {
        EngineHold *hold;
        uv_loop_t *loop;
        Config *config;
        QdEngine *engine;
        ManagedModel **models;
        size_t n_models;
        ManagerListener *listeners;
        size_t n_listeners;
        uint64_t next_request_id;
        atomic_uint n_waiting;          /* queued, not yet admitted by a worker */
        GenRequest *live;
        uv_timer_t *idle_timer;
        struct LoadJob *loads;          /* asynchronous loads in flight */
        bool idle_timer_armed;
        double token_rate;              /* manager_set_token_rate(), for every model */
        struct JobQueue *jobs;          /* manager-jobs.c, created on first use */
};

/* manager-worker.c */
int model_worker_start(ManagedModel *mm);
/* Stops the worker: every request ends with reason; events are delivered before it returns. */
void model_worker_stop(ManagedModel *mm, const char *reason);
void model_request_precision(ManagedModel *mm, QdPrecision p, const char *reason);
void model_deliver_events(ManagedModel *mm);

/* manager.c */
uint64_t now_usec(void);
void manager_notify_models_changed(Manager *m);
void manager_notify_precision_changed(Manager *m, ManagedModel *mm, QdPrecision from, QdPrecision to,
                                      const char *reason);
void manager_request_done(Manager *m, GenRequest *r);
void manager_enforce_budget(Manager *m, ManagedModel *keep);
/* Checks and resolves a load: 0 and the resolved path and name to load, 1 and *ret_existing
 * when that file is already resident under that name, < 0 refused. */
int manager_load_prepare(Manager *m, const Caller *c, const char *path, const char *name, QdPrecision precision,
                         char **ret_resolved, char **ret_name, ManagedModel **ret_existing);
/* Makes a loaded engine model resident; takes resolved, name and model in every case. */
int manager_adopt_model(Manager *m, const char *caller_id, uid_t uid, char *resolved, char *name, QdModel *model,
                        QdPrecision precision, uint64_t t0, ManagedModel **ret);

/* Resolves path (absolute, or relative to a model directory, or a cached quantization in the
 * state directory) like a load does: -EPERM outside them. */
int manager_resolve_model_path(Manager *m, const char *path, char **ret);

/* manager-load.c */
void manager_cancel_loads(Manager *m);
