/* Quantize / evaluate jobs: a queue run by one dedicated thread, results on the loop thread. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h" /* first: util/macro.h before <sys/param.h> */
#include "eval.h"
#include "fileio.h"
#include "manager-internal.h"
#include "manager-jobs.h"

#define MAX_JOBS 16                     /* kept, finished ones included */
#define KEEP_FINISHED_USEC (600ULL * 1000000ULL)
#define MAX_TEXT_BYTES (64ULL << 20)

struct Job {
        Manager *manager;
        uint64_t id;
        JobKind kind;
        char *owner;
        /* Parameters, resolved on the loop thread. */
        char *model_path, *ref_path, *text_path, *calib_path, *text, *state_dir;
        QdQuantType type;
        QdQuantizeMethod method;
        uint64_t samples, ctx, max_windows;
        unsigned n_threads;

        /* Shared with the thread under JobQueue.lock. */
        JobState state;
        double progress;
        bool dirty, announced;
        char *error;
        json_t *result;
        atomic_bool cancel;
        uint64_t finished_usec;
};

typedef struct JobQueue {
        Manager *manager;
        Job **jobs;                     /* loop side owns the array; states under lock */
        size_t n_jobs;
        uint64_t next_id;
        JobListener *listeners;
        size_t n_listeners;

        pthread_t thread;
        bool thread_started, stopping;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        uv_async_t *async;
} JobQueue;

static const char *const kind_names[_JOB_KIND_MAX] = { "quantize", "evaluate" };
static const char *const state_names[_JOB_STATE_MAX] = { "queued", "running", "done", "failed", "cancelled" };

const char *job_kind_to_string(JobKind k) {
        return k >= 0 && k < _JOB_KIND_MAX ? kind_names[k] : NULL;
}

const char *job_state_to_string(JobState s) {
        return s >= 0 && s < _JOB_STATE_MAX ? state_names[s] : NULL;
}

bool job_state_is_final(JobState s) {
        return s == JOB_DONE || s == JOB_FAILED || s == JOB_CANCELLED;
}

static Job *job_free(Job *j) {
        if (!j)
                return NULL;
        free(j->owner);
        free(j->model_path);
        free(j->ref_path);
        free(j->text_path);
        free(j->calib_path);
        free(j->text);
        free(j->state_dir);
        free(j->error);
        json_decref(j->result);
        return mfree(j);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Job *, job_free);

/* ---- SHA-256 (OpenSSL's EVP) ------------------------------------------------------------ */

static void hex(const unsigned char *b, size_t n, char *out) {
        for (size_t i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", b[i]);
}

/* Hashes a file; checks j->cancel between chunks (-ECANCELED). */
static int sha256_file(Job *j, const char *path, char ret[65]) {
        _cleanup_close_ int fd = -EBADF;
        EVP_MD_CTX *ctx;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        char *buf;
        int r = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        buf = malloc(1 << 20);
        ctx = EVP_MD_CTX_new();
        if (!buf || !ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
                r = -ENOMEM;
        while (r >= 0) {
                ssize_t n = read(fd, buf, 1 << 20);
                if (n < 0)
                        r = errno == EINTR ? 0 : -errno;
                else if (n == 0)
                        break;
                else if (EVP_DigestUpdate(ctx, buf, (size_t) n) != 1)
                        r = -EIO;
                if (r >= 0 && j && atomic_load(&j->cancel))
                        r = -ECANCELED;
        }
        if (r >= 0 && EVP_DigestFinal_ex(ctx, md, &len) != 1)
                r = -EIO;
        EVP_MD_CTX_free(ctx);
        free(buf);
        if (r < 0)
                return r;
        hex(md, len, ret);
        return 0;
}

static int sha256_string(const char *s, char ret[65]) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;

        if (EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL) != 1)
                return -EIO;
        hex(md, len, ret);
        return 0;
}

/* ---- the job thread --------------------------------------------------------------------- */

static void job_set_progress(Job *j, double f) {
        JobQueue *q = j->manager->jobs;

        pthread_mutex_lock(&q->lock);
        if (f > j->progress + 0.005 || f >= 1.0) {
                j->progress = CLAMP(f, 0.0, 1.0);
                j->dirty = true;
        }
        pthread_mutex_unlock(&q->lock);
        uv_async_send(q->async);
}

/* The library's progress; quantizing starts at 5% (hashing the source came first). A
 * cancelled job stops here, between tensors or windows. */
static int on_progress(void *userdata, double fraction) {
        Job *j = userdata;

        if (atomic_load(&j->cancel))
                return -ECANCELED;
        job_set_progress(j, j->kind == JOB_QUANTIZE ? 0.05 + 0.95 * fraction : fraction);
        return 0;
}

static void on_log(void *userdata, const char *msg) {
        Job *j = userdata;
        log_debug("Job %" PRIu64 ": %s", j->id, msg);
}

static int state_subdir(Job *j, char **ret) {
        const char *base = j->state_dir;
        char *p;

        if (!base)
                return -ENXIO;
        if (mkdir(base, 0755) < 0 && errno != EEXIST)
                return -errno;
        if (asprintf(&p, "%s/quantized", base) < 0)
                return -ENOMEM;
        if (mkdir(p, 0755) < 0 && errno != EEXIST) {
                int r = -errno;
                free(p);
                return r;
        }
        *ret = p;
        return 0;
}

/* Checks a cached output against its sidecar: 0 valid, < 0 missing or corrupt. */
static int cache_verify(Job *j, const char *out, const char *sidecar, const char *key, char ret_sha[65]) {
        _cleanup_(json_decrefp) json_t *s = NULL;
        char sha[65];
        const char *want_key, *want_sha;
        int r;

        if (access(out, F_OK) < 0)
                return -ENOENT;
        if (access(sidecar, F_OK) < 0)
                return -EBADMSG; /* a crash between writing the output and its sidecar */
        s = json_load_file(sidecar, 0, NULL);
        if (!s || json_unpack(s, "{s:s,s:s}", "key", &want_key, "sha256", &want_sha) < 0)
                return -EBADMSG;
        if (!streq(want_key, key))
                return -EBADMSG;
        r = sha256_file(j, out, sha);
        if (r < 0)
                return r;
        if (!streq(sha, want_sha))
                return -EBADMSG;
        memcpy(ret_sha, sha, 65);
        return 0;
}

static int run_quantize(Job *j, json_t **ret) {
        _cleanup_free_ char *dir = NULL, *out = NULL, *sidecar = NULL, *tmp = NULL, *key = NULL, *err = NULL;
        _cleanup_free_ char *calib = NULL;
        _cleanup_(json_decrefp) json_t *side = NULL;
        char src_sha[65], calib_sha[65] = "", param_sha[65], out_sha[65];
        const char *type = qd_quant_type_to_string(j->type), *method = qd_quantize_method_to_string(j->method);
        uint64_t t0 = now_usec();
        size_t calib_len = 0;
        struct stat st;
        int r;

        r = state_subdir(j, &dir);
        if (r < 0)
                return r;
        r = sha256_file(j, j->model_path, src_sha);
        if (r < 0)
                return r;
        job_set_progress(j, 0.05);
        if (j->calib_path) {
                r = read_full_file(j->calib_path, MAX_TEXT_BYTES, &calib, &calib_len);
                if (r < 0)
                        return r;
                r = sha256_string(calib, calib_sha);
                if (r < 0)
                        return r;
        }
        if (asprintf(&key, "source=%s;type=%s;method=%s;samples=%" PRIu64 ";ctx=%" PRIu64 ";calib=%s", src_sha,
                     type, method, j->samples, j->ctx, calib_sha) < 0)
                return -ENOMEM;
        r = sha256_string(key, param_sha);
        if (r < 0)
                return r;
        if (asprintf(&out, "%s/%.16s-%s-%s-%.16s.gguf", dir, src_sha, type, method, param_sha) < 0 ||
            asprintf(&sidecar, "%s.json", out) < 0 || asprintf(&tmp, "%s.json.tmp", out) < 0)
                return -ENOMEM;

        r = cache_verify(j, out, sidecar, key, out_sha);
        if (r == -ECANCELED)
                return r;
        if (r >= 0) {
                if (stat(out, &st) < 0)
                        return -errno;
                log_info("Job %" PRIu64 ": %s served from the cache.", j->id, out);
                *ret = json_pack("{s:s,s:b,s:s,s:s,s:s,s:s,s:I,s:f}", "path", out, "cached", 1, "type", type,
                                 "method", method, "source_sha256", src_sha, "sha256", out_sha,
                                 "bytes", (json_int_t) st.st_size, "seconds", (now_usec() - t0) / 1e6);
                return *ret ? 0 : -ENOMEM;
        }
        if (r != -ENOENT)
                log_warning("Job %" PRIu64 ": cached %s is corrupt or half-written, rebuilding.", j->id, out);
        (void) unlink(out);
        (void) unlink(sidecar);

        QdQuantizeOptions o = {
                .type = j->type,
                .method = j->method,
                .calib_text = calib,
                .calib_len = calib_len,
                .n_samples = j->samples,
                .n_ctx = j->ctx,
                .n_threads = j->n_threads,
                .log = on_log,
                .userdata = j,
                .progress = on_progress,
        };
        r = qd_quantize_file(j->model_path, out, &o, &err);
        if (r < 0) {
                (void) unlink(out);
                if (r != -ECANCELED && err)
                        log_warning("Job %" PRIu64 ": %s", j->id, err);
                return r;
        }
        if (atomic_load(&j->cancel)) {
                (void) unlink(out);
                return -ECANCELED;
        }
        r = sha256_file(NULL, out, out_sha);
        if (r < 0)
                return r;
        if (stat(out, &st) < 0)
                return -errno;
        side = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:s,s:I}", "key", key, "sha256", out_sha, "source",
                         j->model_path, "type", type, "method", method, "samples", (json_int_t) j->samples,
                         "ctx", (json_int_t) j->ctx, "source_sha256", src_sha, "bytes", (json_int_t) st.st_size);
        if (!side)
                return -ENOMEM;
        /* Written after the output: a sidecar never describes a half-written file. */
        if (json_dump_file(side, tmp, JSON_INDENT(2)) < 0 || rename(tmp, sidecar) < 0) {
                r = -errno ?: -EIO;
                (void) unlink(tmp);
                return r;
        }
        *ret = json_pack("{s:s,s:b,s:s,s:s,s:s,s:s,s:I,s:f}", "path", out, "cached", 0, "type", type, "method",
                         method, "source_sha256", src_sha, "sha256", out_sha, "bytes", (json_int_t) st.st_size,
                         "seconds", (now_usec() - t0) / 1e6);
        return *ret ? 0 : -ENOMEM;
}

static int run_evaluate(Job *j, json_t **ret) {
        _cleanup_free_ char *text = NULL;
        QdEvalReport rep = {};
        size_t len;
        json_t *o;
        int r;

        if (j->text) {
                text = strdup(j->text);
                len = text ? strlen(text) : 0;
                if (!text)
                        return -ENOMEM;
        } else {
                r = read_full_file(j->text_path, MAX_TEXT_BYTES, &text, &len);
                if (r < 0)
                        return r;
        }
        QdEvalOptions eo = {
                .n_ctx = j->ctx,
                .max_windows = j->max_windows,
                .log = on_log,
                .userdata = j,
                .progress = on_progress,
        };
        r = qd_eval_text(j->model_path, j->ref_path, text, len, &eo, &rep);
        if (r < 0)
                return r;
        if (atomic_load(&j->cancel)) {
                qd_eval_report_done(&rep);
                return -ECANCELED;
        }
        o = json_pack("{s:f,s:f,s:I,s:I,s:f,s:I}", "ppl", rep.ppl.ppl, "ppl_err", rep.ppl.ppl_err,
                      "tokens_scored", (json_int_t) rep.ppl.n_scored, "windows", (json_int_t) rep.ppl.n_windows,
                      "bpw", rep.bpw, "file_bytes", (json_int_t) rep.file_bytes);
        if (o && rep.has_ref) {
                json_object_set_new(o, "ref_ppl", json_real(rep.ref_ppl.ppl));
                json_object_set_new(o, "kl_mean", json_real(rep.dist.kl_mean));
                json_object_set_new(o, "kl_p99", json_real(rep.dist.kl_p99));
                json_object_set_new(o, "kl_max", json_real(rep.dist.kl_max));
                json_object_set_new(o, "top1", json_real(rep.dist.top1));
        }
        qd_eval_report_done(&rep);
        if (!o)
                return -ENOMEM;
        *ret = o;
        return 0;
}

static void *job_thread(void *userdata) {
        JobQueue *q = userdata;

        pthread_mutex_lock(&q->lock);
        for (;;) {
                Job *j = NULL;
                json_t *result = NULL;
                int r;

                while (!q->stopping) {
                        for (size_t i = 0; i < q->n_jobs && !j; i++)
                                if (q->jobs[i]->state == JOB_QUEUED)
                                        j = q->jobs[i];
                        if (j)
                                break;
                        pthread_cond_wait(&q->cond, &q->lock);
                }
                if (q->stopping)
                        break;
                j->state = JOB_RUNNING;
                j->dirty = true;
                pthread_mutex_unlock(&q->lock);
                uv_async_send(q->async);

                r = j->kind == JOB_QUANTIZE ? run_quantize(j, &result) : run_evaluate(j, &result);

                pthread_mutex_lock(&q->lock);
                if (r >= 0) {
                        j->state = JOB_DONE;
                        j->progress = 1.0;
                        j->result = result;
                } else if (r == -ECANCELED || atomic_load(&j->cancel))
                        j->state = JOB_CANCELLED;
                else {
                        j->state = JOB_FAILED;
                        if (asprintf(&j->error, "%s", strerror(-r)) < 0)
                                j->error = NULL;
                }
                j->dirty = true;
                uv_async_send(q->async);
        }
        pthread_mutex_unlock(&q->lock);
        return NULL;
}

/* ---- the loop side ---------------------------------------------------------------------- */

static void notify(JobQueue *q, Job *j, bool finished) {
        for (size_t i = 0; i < q->n_listeners; i++)
                if (q->listeners[i].changed)
                        q->listeners[i].changed(q->manager, j, finished, q->listeners[i].userdata);
}

static void on_async(uv_async_t *a) {
        JobQueue *q = a->data;

        for (size_t i = 0; i < q->n_jobs; i++) {
                Job *j = q->jobs[i];
                bool dirty, fin = false;
                JobState s;

                pthread_mutex_lock(&q->lock);
                dirty = j->dirty;
                j->dirty = false;
                s = j->state;
                if (job_state_is_final(s) && !j->announced) {
                        j->announced = fin = true;
                        j->finished_usec = now_usec();
                }
                pthread_mutex_unlock(&q->lock);
                if (fin) {
                        if (s == JOB_DONE)
                                log_info("Job %" PRIu64 " (%s) done.", j->id, job_kind_to_string(j->kind));
                        else
                                log_info("Job %" PRIu64 " (%s) %s%s%s.", j->id, job_kind_to_string(j->kind),
                                         job_state_to_string(s), j->error ? ": " : "", j->error ?: "");
                }
                if (dirty || fin)
                        notify(q, j, fin);
        }
}

static void async_close_cb(uv_handle_t *h) {
        free(h);
}

static int queue_get(Manager *m, JobQueue **ret) {
        JobQueue *q = m->jobs;
        int r;

        if (q) {
                *ret = q;
                return 0;
        }
        q = calloc(1, sizeof(JobQueue));
        if (!q)
                return -ENOMEM;
        q->manager = m;
        q->next_id = 1;
        q->async = calloc(1, sizeof(uv_async_t));
        if (!q->async) {
                free(q);
                return -ENOMEM;
        }
        r = uv_async_init(m->loop, q->async, on_async);
        if (r < 0) {
                free(q->async);
                free(q);
                return r;
        }
        q->async->data = q;
        pthread_mutex_init(&q->lock, NULL);
        pthread_cond_init(&q->cond, NULL);
        m->jobs = q;
        *ret = q;
        return 0;
}

/* Drops finished jobs older than KEEP_FINISHED_USEC (and the oldest finished when full). */
static void queue_expire(JobQueue *q, bool need_room) {
        uint64_t now = now_usec();

        for (size_t i = 0; i < q->n_jobs;) {
                Job *j = q->jobs[i];
                bool drop;

                pthread_mutex_lock(&q->lock);
                drop = j->announced && (now - j->finished_usec > KEEP_FINISHED_USEC || (need_room && q->n_jobs >= MAX_JOBS));
                pthread_mutex_unlock(&q->lock);
                if (!drop) {
                        i++;
                        continue;
                }
                memmove(q->jobs + i, q->jobs + i + 1, (q->n_jobs - i - 1) * sizeof(Job *));
                q->n_jobs--;
                job_free(j);
        }
}

/* A resident model's file, or a path inside the model directories. */
static int resolve_source(Manager *m, const char *model, char **ret) {
        ManagedModel *mm = manager_find_model(m, model);
        char *p;

        if (mm) {
                p = strdup(mm->path);
                if (!p)
                        return -ENOMEM;
                *ret = p;
                return 0;
        }
        return manager_resolve_model_path(m, model, ret);
}

int manager_start_job(Manager *m, const Caller *c, const JobParams *p, Job **ret) {
        _cleanup_(job_freep) Job *j = NULL;
        JobQueue *q;
        Job **nl;
        int r;

        if (!c || !c->privileged)
                return -EACCES;
        if (!p || !p->model || !*p->model || p->kind < 0 || p->kind >= _JOB_KIND_MAX)
                return -EINVAL;
        if (p->samples > 4096 || p->ctx > 65536)
                return -EINVAL;
        j = calloc(1, sizeof(Job));
        if (!j)
                return -ENOMEM;
        j->manager = m;
        j->kind = p->kind;
        j->samples = p->samples;
        j->ctx = p->ctx;
        j->max_windows = p->max_windows;
        r = resolve_source(m, p->model, &j->model_path);
        if (r < 0)
                return r;
        if (p->kind == JOB_QUANTIZE) {
                j->type = qd_quant_type_from_string(p->type ?: "q4_0");
                j->method = qd_quantize_method_from_string(p->method ?: "rtn");
                if ((j->type != QD_QTYPE_Q8_0 && j->type != QD_QTYPE_Q4_0 && j->type != QD_QTYPE_Q4_1) ||
                    j->method == QD_QUANTIZE_METHOD_INVALID)
                        return -EINVAL;
                if (!m->config->state_dir)
                        return -ENXIO;
                j->n_threads = m->config->job_threads;
                if (j->n_threads == 0) {
                        long n = sysconf(_SC_NPROCESSORS_ONLN);
                        j->n_threads = (unsigned) CLAMP(n / 2, 1, 64);
                }
                j->state_dir = strdup(m->config->state_dir);
                if (!j->state_dir)
                        return -ENOMEM;
                if (p->calib && *p->calib) {
                        r = manager_resolve_model_path(m, p->calib, &j->calib_path);
                        if (r < 0)
                                return r;
                }
        } else {
                if (!!p->text == !!p->text_file)
                        return -EINVAL;
                if (p->text) {
                        if (strlen(p->text) > m->config->max_request_bytes)
                                return -E2BIG;
                        j->text = strdup(p->text);
                        if (!j->text)
                                return -ENOMEM;
                } else {
                        r = manager_resolve_model_path(m, p->text_file, &j->text_path);
                        if (r < 0)
                                return r;
                }
                if (p->ref && *p->ref) {
                        r = resolve_source(m, p->ref, &j->ref_path);
                        if (r < 0)
                                return r;
                }
        }
        if (c->id) {
                j->owner = strdup(c->id);
                if (!j->owner)
                        return -ENOMEM;
        }

        r = queue_get(m, &q);
        if (r < 0)
                return r;
        queue_expire(q, true);
        if (q->n_jobs >= MAX_JOBS)
                return -EBUSY;
        nl = realloc(q->jobs, (q->n_jobs + 1) * sizeof(Job *));
        if (!nl)
                return -ENOMEM;
        q->jobs = nl;
        if (!q->thread_started) {
                r = -pthread_create(&q->thread, NULL, job_thread, q);
                if (r < 0)
                        return r;
                q->thread_started = true;
        }
        j->id = q->next_id++;
        j->state = JOB_QUEUED;
        log_info("Job %" PRIu64 ": %s %s for uid %u (%s).", j->id, job_kind_to_string(j->kind), j->model_path,
                 (unsigned) c->uid, strna(c->id));
        pthread_mutex_lock(&q->lock);
        q->jobs[q->n_jobs++] = j;
        pthread_cond_signal(&q->cond);
        pthread_mutex_unlock(&q->lock);
        if (ret)
                *ret = j;
        TAKE_PTR(j);
        return 0;
}

Job *manager_find_job(Manager *m, uint64_t id) {
        JobQueue *q = m->jobs;

        if (!q)
                return NULL;
        queue_expire(q, false);
        for (size_t i = 0; i < q->n_jobs; i++)
                if (q->jobs[i]->id == id)
                        return q->jobs[i];
        return NULL;
}

Job *manager_job_at(Manager *m, size_t i) {
        return m->jobs && i < m->jobs->n_jobs ? m->jobs->jobs[i] : NULL;
}

void manager_job_cancel(Job *j) {
        JobQueue *q;

        if (!j)
                return;
        q = j->manager->jobs;
        pthread_mutex_lock(&q->lock);
        atomic_store(&j->cancel, true);
        if (j->state == JOB_QUEUED) {
                j->state = JOB_CANCELLED;
                j->dirty = true;
        }
        pthread_mutex_unlock(&q->lock);
        uv_async_send(q->async);
}

void manager_cancel_caller_jobs(Manager *m, const char *caller_id) {
        JobQueue *q = m->jobs;

        if (!q || !caller_id)
                return;
        for (size_t i = 0; i < q->n_jobs; i++)
                if (streq_ptr(q->jobs[i]->owner, caller_id) && !job_state_is_final(job_state(q->jobs[i]))) {
                        log_info("Job %" PRIu64 ": %s left, cancelling.", q->jobs[i]->id, caller_id);
                        manager_job_cancel(q->jobs[i]);
                }
}

int manager_add_job_listener(Manager *m, const JobListener *l) {
        JobQueue *q;
        JobListener *nl;
        int r;

        r = queue_get(m, &q);
        if (r < 0)
                return r;
        nl = realloc(q->listeners, (q->n_listeners + 1) * sizeof(JobListener));
        if (!nl)
                return -ENOMEM;
        q->listeners = nl;
        q->listeners[q->n_listeners++] = *l;
        return 0;
}

void manager_remove_job_listener(Manager *m, void *userdata) {
        JobQueue *q = m->jobs;

        if (!q)
                return;
        for (size_t i = 0; i < q->n_listeners;)
                if (q->listeners[i].userdata == userdata) {
                        memmove(q->listeners + i, q->listeners + i + 1, (q->n_listeners - i - 1) * sizeof(JobListener));
                        q->n_listeners--;
                } else
                        i++;
}

uint64_t job_id(const Job *j) {
        return j->id;
}

JobKind job_kind(const Job *j) {
        return j->kind;
}

#define LOCKED(j, expr)                                                 \
        ({                                                              \
                JobQueue *_q = (j)->manager->jobs;                      \
                pthread_mutex_lock(&_q->lock);                          \
                __typeof__(expr) _v = (expr);                           \
                pthread_mutex_unlock(&_q->lock);                        \
                _v;                                                     \
        })

JobState job_state(const Job *j) {
        return LOCKED(j, j->state);
}

double job_progress(const Job *j) {
        return LOCKED(j, j->progress);
}

const char *job_error(const Job *j) {
        return LOCKED(j, (const char *) j->error);
}

const char *job_owner(const Job *j) {
        return j->owner;
}

json_t *job_result(const Job *j) {
        return LOCKED(j, j->result);
}

json_t *job_to_json(const Job *j) {
        JobState s = job_state(j);
        json_t *o;

        o = json_pack("{s:I,s:s,s:s,s:f}", "id", (json_int_t) j->id, "kind", job_kind_to_string(j->kind), "state",
                      job_state_to_string(s), "progress", job_progress(j));
        if (!o)
                return NULL;
        if (job_error(j))
                json_object_set_new(o, "error", json_string(job_error(j)));
        if (job_result(j))
                json_object_set(o, "result", job_result(j));
        return o;
}

void manager_jobs_free(Manager *m) {
        JobQueue *q = m->jobs;

        if (!q)
                return;
        pthread_mutex_lock(&q->lock);
        for (size_t i = 0; i < q->n_jobs; i++) {
                atomic_store(&q->jobs[i]->cancel, true);
                if (q->jobs[i]->state == JOB_QUEUED)
                        q->jobs[i]->state = JOB_CANCELLED;
        }
        q->stopping = true;
        pthread_cond_signal(&q->cond);
        pthread_mutex_unlock(&q->lock);
        if (q->thread_started)
                pthread_join(q->thread, NULL);
        /* The running job ended as cancelled (or done): tell the listeners now. */
        on_async(q->async);
        m->jobs = NULL;
        for (size_t i = 0; i < q->n_jobs; i++)
                job_free(q->jobs[i]);
        free(q->jobs);
        free(q->listeners);
        uv_close((uv_handle_t *) q->async, async_close_cb);
        pthread_mutex_destroy(&q->lock);
        pthread_cond_destroy(&q->cond);
        free(q);
}
