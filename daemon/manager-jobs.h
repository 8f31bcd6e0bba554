/* Background jobs of the manager: quantizing a model into the state directory's cache and
 * evaluating a model on a text. One job runs at a time on a dedicated thread, beside serving.
 *
 * Threading: like manager.h, every function here is called on the loop thread and listeners
 * are invoked on the loop thread. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "manager.h"

typedef struct Job Job;

typedef enum JobKind {
        JOB_QUANTIZE,
        JOB_EVALUATE,
        _JOB_KIND_MAX,
} JobKind;

typedef enum JobState {
        JOB_QUEUED,
        JOB_RUNNING,
        JOB_DONE,
        JOB_FAILED,
        JOB_CANCELLED,
        _JOB_STATE_MAX,
} JobState;

typedef struct JobParams {
        JobKind kind;
        const char *model;              /* resident model name, or a path inside a model dir */
        /* quantize */
        const char *type;               /* "q8_0", "q4_0", "q4_1" (NULL: q4_0) */
        const char *method;             /* "rtn", "rtn-clip", "gptq", "awq" (NULL: rtn) */
        const char *calib;              /* calibration text file inside a model dir, or NULL */
        uint64_t samples, ctx;          /* calibration windows / tokens (quantize) or window
                                         * length (evaluate); 0: the library's default */
        /* evaluate */
        const char *text_file;          /* inside a model dir */
        const char *text;               /* inline text (instead of text_file) */
        const char *ref;                /* reference model (name or path), or NULL */
        uint64_t max_windows;           /* 0: all */
} JobParams;

typedef struct JobListener {
        /* Progress or state changed; finished is true once, when the job reached its end. */
        void (*changed)(Manager *m, Job *j, bool finished, void *userdata);
        void *userdata;
} JobListener;

/* Queues a job. -EACCES unless c is privileged, -ENOENT unknown model or file, -EPERM a path
 * outside the model directories, -EINVAL bad parameters, -EBUSY too many jobs queued. */
int manager_start_job(Manager *m, const Caller *c, const JobParams *p, Job **ret);
Job *manager_find_job(Manager *m, uint64_t id);
/* Iteration over the jobs kept (queued, running, and finished ones for a while). */
Job *manager_job_at(Manager *m, size_t i);
/* Stops a queued or running job (between tensors / windows); no-op once finished. */
void manager_job_cancel(Job *j);
/* Cancels the jobs started by caller_id (a bus client that left). */
void manager_cancel_caller_jobs(Manager *m, const char *caller_id);

int manager_add_job_listener(Manager *m, const JobListener *l);
void manager_remove_job_listener(Manager *m, void *userdata);

uint64_t job_id(const Job *j);
JobKind job_kind(const Job *j);
JobState job_state(const Job *j);
double job_progress(const Job *j);
const char *job_error(const Job *j);          /* NULL unless failed */
const char *job_owner(const Job *j);          /* caller id that started it, may be NULL */
json_t *job_result(const Job *j);             /* borrowed; NULL until done */
/* {"id", "kind", "state", "progress", "error"?, "result"?}: new reference. */
json_t *job_to_json(const Job *j);

const char *job_kind_to_string(JobKind k);
const char *job_state_to_string(JobState s);
bool job_state_is_final(JobState s);

/* manager.c: cancels every job and joins the job thread; listeners of unfinished jobs are told
 * with finished == true. */
void manager_jobs_free(Manager *m);
