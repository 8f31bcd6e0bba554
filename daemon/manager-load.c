/* Asynchronous model loads: the file is read and uploaded on the libuv thread pool, the model
 * is made resident on the loop thread. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "manager-internal.h"

typedef struct LoadJob {
        uv_work_t work;
        EngineHold *hold;
        Manager *manager;               /* NULL once cancelled: the job only cleans up */
        char *resolved, *name, *caller_id;
        uid_t uid;
        QdPrecision precision;
        QdModel *model;
        int r;
        bool resident;                  /* already loaded when asked: nothing to read */
        uint64_t t0;
        ManagerLoadDone done;
        void *userdata;
        struct LoadJob *next;
} LoadJob;

static void load_job_unlink(Manager *m, LoadJob *j) {
        for (LoadJob **i = &m->loads; *i; i = &(*i)->next)
                if (*i == j) {
                        *i = j->next;
                        return;
                }
}

static void load_work(uv_work_t *w) {
        LoadJob *j = w->data;
        if (!j->resident)
                j->r = qd_model_load(j->hold->engine, j->resolved, &j->model);
}

static void load_after(uv_work_t *w, int status) {
        LoadJob *j = w->data;
        Manager *m = j->manager;
        ManagedModel *mm = NULL;
        int r = j->r;

        if (!m) {
                /* Cancelled while reading: the caller was told already. */
                qd_model_free(j->model);
                free(j->resolved);
                free(j->name);
        } else {
                load_job_unlink(m, j);
                if (j->resident) {
                        /* Unloaded meanwhile? Then this load raced an unload: say so. */
                        mm = manager_find_model(m, j->name);
                        r = mm && streq(mm->path, j->resolved) ? 0 : -EAGAIN;
                        free(j->resolved);
                        free(j->name);
                } else if (r < 0) {
                        log_error_errno(r, "Failed to load model %s: %m", j->resolved);
                        free(j->resolved);
                        free(j->name);
                } else
                        r = manager_adopt_model(m, j->caller_id, j->uid, j->resolved, j->name, j->model, j->precision,
                                                j->t0, &mm);
                j->done(m, r, r >= 0 ? mm : NULL, j->userdata);
        }
        if (--j->hold->refs == 0) {
                qd_engine_free(j->hold->engine);
                free(j->hold);
        }
        free(j->caller_id);
        free(j);
}

int manager_load_model_async(Manager *m, const Caller *c, const char *path, const char *name,
                             QdPrecision precision, ManagerLoadDone done, void *userdata) {
        ManagedModel *existing = NULL;
        LoadJob *j;
        int r;

        j = calloc(1, sizeof(LoadJob));
        if (!j)
                return -ENOMEM;
        r = manager_load_prepare(m, c, path, name, precision, &j->resolved, &j->name, &existing);
        if (r < 0) {
                free(j);
                return r;
        }
        if (r > 0) {
                /* Already resident: answered from the pool's completion like any other load. */
                j->resident = true;
                j->resolved = strdup(existing->path);
                j->name = strdup(existing->name);
                if (!j->resolved || !j->name) {
                        free(j->resolved);
                        free(j->name);
                        free(j);
                        return -ENOMEM;
                }
        }
        j->manager = m;
        j->hold = m->hold;
        j->caller_id = c && c->id ? strdup(c->id) : NULL;
        j->uid = c ? c->uid : 0;
        j->precision = precision;
        j->done = done;
        j->userdata = userdata;
        j->t0 = now_usec();
        j->work.data = j;
        r = uv_queue_work(m->loop, &j->work, load_work, load_after);
        if (r >= 0)
                m->hold->refs++;
        if (r < 0) {
                free(j->resolved);
                free(j->name);
                free(j->caller_id);
                free(j);
                return r;
        }
        j->next = m->loads;
        m->loads = j;
        return 0;
}

void manager_cancel_loads(Manager *m) {
        while (m->loads) {
                LoadJob *j = m->loads;
                m->loads = j->next;
                j->manager = NULL;
                j->done(m, -ECANCELED, NULL, j->userdata);
        }
}
