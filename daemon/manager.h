/* The daemon's core object: the libuv loop, the engine, the resident models, and the queue of
 * generation requests. IPC front ends (ipc/dbus-*.c, ipc/http-*.c) talk only to this API.
 *
 * Threading: every function here is called on the loop thread, and every callback is invoked
 * on the loop thread. GPU work happens on one worker thread per model. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "engine.h"

typedef struct Manager Manager;
typedef struct Config Config;          /* daemon/config.h */
typedef struct GenRequest GenRequest;
typedef struct ManagedModel ManagedModel;

/* Who asks: used for fairness between clients, authorisation and logs. */
typedef struct Caller {
        uid_t uid;
        pid_t pid;
        const char *id;                 /* bus unique name or "socket:<fd>" */
        bool privileged;                /* root or polkit org.quantd.manage granted */
} Caller;

typedef struct GenParams {
        const char *model;              /* model name */
        const char *prompt;             /* raw prompt, or NULL when messages are given */
        const QdChatMessage *messages;
        size_t n_messages;
        QdSampling sampling;
        int32_t max_tokens;             /* <= 0: the configured default */
        char *const *stop;
        size_t n_stop;
        bool want_logprobs;
} GenParams;

typedef struct GenStats {
        uint32_t prompt_tokens, completion_tokens;
        double prompt_ms, generate_ms;  /* prefill and decode wall time */
        QdPrecision precision;          /* precision of the last step */
} GenStats;

typedef struct GenCallbacks {
        /* Newly complete text (UTF-8, maybe empty when held back) for one token. */
        void (*token)(GenRequest *r, const char *text, int32_t token, float logprob, void *userdata);
        /* reason: "stop" (EOS or stop string), "length", "cancelled", "error", "shutdown".
         * The request is freed after this returns. */
        void (*finished)(GenRequest *r, const char *reason, const GenStats *stats, void *userdata);
} GenCallbacks;

/* Queues a generation. -ENOENT unknown model, -EBUSY queue full (answer "busy" at once),
 * -E2BIG prompt/limits exceeded, -EINVAL bad parameters. ret (may be NULL) is valid until the
 * finished callback. */
int manager_generate(Manager *m, const Caller *c, const GenParams *p, const GenCallbacks *cb,
                     void *userdata, GenRequest **ret);
/* Stops a request at the next token boundary; finished() follows with "cancelled". */
void gen_request_cancel(GenRequest *r);
uint64_t gen_request_id(GenRequest *r);

/* Cancels every request of one caller (its bus name vanished or its socket closed). */
void manager_cancel_caller(Manager *m, const char *caller_id);

/* Models. Paths must resolve inside a configured model directory (-EPERM otherwise). */
int manager_load_model(Manager *m, const Caller *c, const char *path, const char *name,
                       QdPrecision precision, ManagedModel **ret);
int manager_unload_model(Manager *m, const Caller *c, const char *name);
ManagedModel *manager_find_model(Manager *m, const char *name);
/* Iteration: returns the i-th model or NULL past the end. */
ManagedModel *manager_model_at(Manager *m, size_t i);

typedef struct ModelStatus {
        const char *name, *path;
        QdModelInfo info;
        QdPrecision precision;          /* in use now */
        QdPrecision pinned;             /* QD_PRECISION_AUTO when the policy decides */
        unsigned active_requests, queued_requests;
        uint64_t last_used_usec;
        double token_rate_cap;          /* tokens/s the worker paces to; 0: none */
} ModelStatus;
void managed_model_status(ManagedModel *mm, ModelStatus *ret);

int manager_tokenize(Manager *m, const char *model, const char *text, bool add_bos,
                     int32_t **ret_tokens, size_t *ret_n);
int manager_detokenize(Manager *m, const char *model, const int32_t *tokens, size_t n, char **ret);

/* Precision: pin (or QD_PRECISION_AUTO to hand back to the policy). Applied at the next token
 * boundary by the model's worker; on_precision_changed listeners are told. */
int manager_set_precision(Manager *m, const Caller *c, const char *model, QdPrecision p,
                          const char *reason);

/* Listeners for property-change signals (the D-Bus front end registers one). */
typedef struct ManagerListener {
        void (*models_changed)(Manager *m, void *userdata);
        void (*precision_changed)(Manager *m, const char *model, QdPrecision from, QdPrecision to,
                                  const char *reason, void *userdata);
        void *userdata;
} ManagerListener;
int manager_add_listener(Manager *m, const ManagerListener *l);

uv_loop_t *manager_loop(Manager *m);
const Config *manager_config(Manager *m);
QdEngine *manager_engine(Manager *m);

/* ---- Added by the service engineer (lifecycle, introspection, hooks for policy/HTTP). ---- */

/* Creates the manager and its engine; takes ownership of config (also on failure). */
int manager_new(uv_loop_t *loop, Config *config, Manager **ret);
/* Ends every request with reason ("shutdown") and unloads every model; callbacks run before
 * it returns. Safe to call twice. */
void manager_shutdown(Manager *m, const char *reason);
Manager *manager_free(Manager *m);
/* Swaps in a reloaded configuration (limits apply to new requests; models listed in it that are
 * not resident are loaded). Takes ownership of config. */
int manager_reload(Manager *m, Config *config);
/* Loads the models the configuration lists (startup and reload); failures are logged. */
void manager_load_configured_models(Manager *m);

size_t manager_n_models(Manager *m);
/* Requests queued (not yet decoding) and live (queued or decoding) over all models. */
unsigned manager_n_waiting(Manager *m);
unsigned manager_n_live(Manager *m);
const char *managed_model_name(ManagedModel *mm);
/* The engine model, for the policy (variant sizes, current precision); do not compute on it. */
QdModel *managed_model_qd(ManagedModel *mm);
/* Loads on the libuv thread pool so that the loop keeps serving: the checks happen at once
 * (< 0 returned, callback not called), the file is read on a pool thread, and done() runs on
 * the loop thread with 0 and the model or < 0 (-ECANCELED when the daemon stops first). */
typedef void (*ManagerLoadDone)(Manager *m, int r, ManagedModel *mm, void *userdata);
int manager_load_model_async(Manager *m, const Caller *c, const char *path, const char *name,
                             QdPrecision precision, ManagerLoadDone done, void *userdata);
/* Drops every listener registered with this userdata (a front end going away). */
void manager_remove_listener(Manager *m, void *userdata);
/* The policy's token-rate cap (battery, heat): every model's worker spaces its steps so that
 * the model produces at most tokens_per_s tokens per second over all its sequences (0: no
 * cap). The worker waits, never the loop; the new cap applies from the next step. */
void manager_set_token_rate(Manager *m, double tokens_per_s);
double manager_token_rate(Manager *m);
/* Sum of device bytes of all resident models. */
uint64_t manager_device_bytes(Manager *m);

/* manager_set_precision() with c == NULL is the policy's call: it applies only to models that
 * are not pinned by a user (-EBUSY otherwise) and never pins. With a caller it needs
 * c->privileged (-EACCES), pins p, or unpins with QD_PRECISION_AUTO.
 * manager_load_model()/manager_unload_model() with c == NULL are internal (startup, policy
 * eviction) and skip the privilege check. */
