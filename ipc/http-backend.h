/* What the HTTP front end needs from the daemon, as a table of functions. The real table
 * (ipc/http-manager.c) forwards to the Manager; tests and the fuzzer fill it with fakes, so
 * that parsing, routing and JSON handling run without a GPU or a daemon. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "macro.h"      /* before uv.h, whose sys/param.h also defines MIN/MAX */
#include "manager.h"
#include "manager-jobs.h"

typedef struct HttpBackend {
        /* As manager_generate(): callbacks arrive later on the loop thread. */
        int (*generate)(void *ctx, const Caller *c, const GenParams *p, const GenCallbacks *cb,
                        void *userdata, GenRequest **ret);
        void (*cancel)(void *ctx, GenRequest *r);
        /* D-Bus Generate's sampling defaults (qd_sampling_init()) for /api/generate; NULL: greedy. */
        void (*sampling_defaults)(void *ctx, QdSampling *ret);
        void (*cancel_caller)(void *ctx, const char *caller_id);
        uint64_t (*request_id)(void *ctx, GenRequest *r);

        /* Fills ret for the i-th model; -ENOENT past the end. */
        int (*model_at)(void *ctx, size_t i, ModelStatus *ret);
        int (*load_model)(void *ctx, const Caller *c, const char *path, const char *name,
                          QdPrecision precision, char **ret_name);
        int (*unload_model)(void *ctx, const Caller *c, const char *name);
        int (*tokenize)(void *ctx, const char *model, const char *text, bool add_bos,
                        int32_t **ret_tokens, size_t *ret_n);
        int (*detokenize)(void *ctx, const char *model, const int32_t *tokens, size_t n,
                          char **ret);
        int (*set_precision)(void *ctx, const Caller *c, const char *model, QdPrecision p,
                             const char *reason);
        /* A JSON object describing the daemon (device, memory, models); new reference. */
        int (*status)(void *ctx, json_t **ret);
        /* Quantize / evaluate jobs (daemon/manager-jobs.h): start one (as manager_start_job()),
         * read one as job_to_json() (-ENOENT unknown or expired), cancel one. */
        int (*start_job)(void *ctx, const Caller *c, const JobParams *p, uint64_t *ret_id);
        int (*job_json)(void *ctx, uint64_t id, json_t **ret);
        int (*cancel_job)(void *ctx, const Caller *c, uint64_t id);
} HttpBackend;

/* GET /api/policy: adds the policy's state to obj (the same shape as daemon-hooks.h's
 * PolicyStatusHook, so the daemon can pass the very function it gives the D-Bus server). */
typedef int (*HttpPolicyHook)(void *userdata, json_t *obj);
