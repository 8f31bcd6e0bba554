/* Generation requests: admission, the per-model worker thread (fair queue, batched decode) and
 * delivery of tokens to the loop thread through uv_async. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "manager-internal.h"

/* Callers remembered by a worker for round-robin admission. */
#define FAIR_SLOTS 64

typedef struct FairSlot {
        char *caller_id;
        uint64_t last_admit;
} FairSlot;

static GenRequest *gen_request_free(GenRequest *r) {
        if (!r)
                return NULL;
        r->seq = qd_sequence_free(r->seq);
        r->ts = qd_text_stream_free(r->ts);
        for (size_t i = 0; i < r->n_stop; i++)
                free(r->stop[i]);
        free(r->stop);
        free(r->tokens);
        free(r->caller_id);
        return mfree(r);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(GenRequest *, gen_request_free);

uint64_t gen_request_id(GenRequest *r) {
        return r->id;
}

void gen_request_cancel(GenRequest *r) {
        ManagedModel *mm = r->model;

        atomic_store(&r->cancel, true);
        pthread_mutex_lock(&mm->lock);
        pthread_cond_signal(&mm->cond);
        pthread_mutex_unlock(&mm->lock);
}

static void post_event(ManagedModel *mm, Event *e) {
        pthread_mutex_lock(&mm->ev_lock);
        if (mm->ev_tail)
                mm->ev_tail->next = e;
        else
                mm->ev_head = e;
        mm->ev_tail = e;
        pthread_mutex_unlock(&mm->ev_lock);
        uv_async_send(&mm->async);
}

void model_deliver_events(ManagedModel *mm) {
        Manager *m = mm->manager;
        Event *e;

        pthread_mutex_lock(&mm->ev_lock);
        e = mm->ev_head;
        mm->ev_head = mm->ev_tail = NULL;
        pthread_mutex_unlock(&mm->ev_lock);

        while (e) {
                Event *next = e->next;
                GenRequest *r = e->req;

                switch (e->type) {
                case EVENT_TOKEN:
                        if (r->cb.token)
                                r->cb.token(r, e->text ?: "", e->token, e->logprob, r->userdata);
                        break;
                case EVENT_FINISHED:
                        manager_request_done(m, r);
                        log_debug("Request %" PRIu64 " of %s finished: %s (%u prompt, %u generated tokens).",
                                  r->id, strna(r->caller_id), e->reason, e->stats.prompt_tokens,
                                  e->stats.completion_tokens);
                        if (r->cb.finished)
                                r->cb.finished(r, e->reason, &e->stats, r->userdata);
                        gen_request_free(r);
                        break;
                case EVENT_PRECISION:
                        if (e->error < 0)
                                log_warning_errno(e->error, "Model %s: switching to %s failed: %m", mm->name,
                                                  qd_precision_to_string(e->to));
                        else if (!mm->removed)
                                manager_notify_precision_changed(m, mm, e->from, e->to, e->text);
                        break;
                }
                free(e->text);
                free(e);
                e = next;
        }
}

static void post_token(ManagedModel *mm, GenRequest *r, char *text, int32_t token, float logprob) {
        Event *e = calloc(1, sizeof(Event));
        if (!e) {
                free(text);
                return;
        }
        *e = (Event) { .type = EVENT_TOKEN, .req = r, .text = text, .token = token, .logprob = logprob };
        post_event(mm, e);
}

/* Ends a request on the worker: flushes held-back text, frees the engine state, posts the
 * Finished event. r must not be touched afterwards. */
static void finish_request(ManagedModel *mm, GenRequest *r, const char *reason, bool flush) {
        Event *e;
        uint64_t now = now_usec();

        if (flush && r->ts) {
                char *text = NULL;
                if (qd_text_stream_flush(r->ts, &text) >= 0 && text && *text)
                        post_token(mm, r, text, -1, 0.0f);
                else
                        free(text);
        }
        r->seq = qd_sequence_free(r->seq);
        r->ts = qd_text_stream_free(r->ts);

        e = calloc(1, sizeof(Event));
        if (!e) {
                /* Cannot report: better a delay than a lost Finished. Retry until memory frees. */
                while (!(e = calloc(1, sizeof(Event))))
                        usleep(1000);
        }
        e->type = EVENT_FINISHED;
        e->req = r;
        e->reason = reason;
        e->stats = (GenStats) {
                .prompt_tokens = (uint32_t) r->n_tokens,
                .completion_tokens = r->generated,
                .prompt_ms = r->t_prefilled > r->t_start ? (r->t_prefilled - r->t_start) / 1000.0 : 0,
                .generate_ms = r->t_prefilled > 0 ? (now - r->t_prefilled) / 1000.0 : 0,
                .precision = mm->model ? qd_model_get_precision(mm->model) : QD_PRECISION_INVALID,
        };
        post_event(mm, e);
}

/* Picks the pending request to admit: the caller with the fewest running sequences, then the
 * one admitted longest ago (round-robin), then arrival order. Called with mm->lock held. */
static size_t pick_pending(ManagedModel *mm, GenRequest **active, size_t n_active, FairSlot *slots) {
        size_t best = 0;
        unsigned best_running = UINT32_MAX;
        uint64_t best_last = UINT64_MAX;

        for (size_t i = 0; i < mm->n_pending; i++) {
                const char *cid = mm->pending[i]->caller_id;
                unsigned running = 0;
                uint64_t last = 0;

                for (size_t j = 0; j < n_active; j++)
                        running += streq_ptr(active[j]->caller_id, cid);
                for (size_t j = 0; j < FAIR_SLOTS; j++)
                        if (slots[j].caller_id && streq_ptr(slots[j].caller_id, cid)) {
                                last = slots[j].last_admit;
                                break;
                        }
                if (running < best_running || (running == best_running && last < best_last)) {
                        best = i;
                        best_running = running;
                        best_last = last;
                }
        }
        return best;
}

static void fair_note_admit(FairSlot *slots, const char *cid, uint64_t tick) {
        size_t victim = 0;

        for (size_t j = 0; j < FAIR_SLOTS; j++) {
                if (slots[j].caller_id && streq_ptr(slots[j].caller_id, cid)) {
                        slots[j].last_admit = tick;
                        return;
                }
                if (!slots[j].caller_id || slots[j].last_admit < slots[victim].last_admit)
                        victim = j;
        }
        free(slots[victim].caller_id);
        slots[victim].caller_id = cid ? strdup(cid) : NULL;
        slots[victim].last_admit = tick;
}

static GenRequest *take_pending(ManagedModel *mm, size_t i) {
        GenRequest *r = mm->pending[i];
        memmove(mm->pending + i, mm->pending + i + 1, (mm->n_pending - i - 1) * sizeof(GenRequest *));
        mm->n_pending--;
        atomic_fetch_sub(&mm->manager->n_waiting, 1);
        return r;
}

/* Creates the sequence and evaluates the prompt. */
static int start_request(ManagedModel *mm, GenRequest *r) {
        uint32_t n_ctx = (uint32_t) r->n_tokens + r->max_tokens;
        int k;

        r->t_start = now_usec();
        k = qd_sequence_new(mm->model, n_ctx, &r->seq);
        if (k >= 0)
                k = qd_text_stream_new(mm->model, r->stop, r->n_stop, &r->ts);
        if (k >= 0)
                k = qd_sequence_prefill(r->seq, r->tokens, r->n_tokens);
        r->t_prefilled = now_usec();
        return k;
}

/* Handles one sampled token; returns a finish reason or NULL to go on. */
static const char *consume_token(ManagedModel *mm, GenRequest *r, int32_t token, float logprob) {
        char *text = NULL;
        int k;

        r->generated++;
        if (qd_model_token_is_eog(mm->model, token))
                return "stop";
        k = qd_text_stream_push(r->ts, token, &text);
        if (k < 0) {
                free(text);
                return "error";
        }
        post_token(mm, r, text, token, r->want_logprobs ? logprob : 0.0f);
        if (k > 0)
                return "stop";
        if (r->generated >= r->max_tokens)
                return "length";
        if (atomic_load(&r->cancel))
                return "cancelled";
        return NULL;
}

static void post_precision(ManagedModel *mm, QdPrecision from, QdPrecision to, char *reason, int error) {
        Event *e = calloc(1, sizeof(Event));
        if (!e) {
                free(reason);
                return;
        }
        *e = (Event) { .type = EVENT_PRECISION, .from = from, .to = to, .text = reason, .error = error };
        post_event(mm, e);
}

/* Switches now (fast when the variant is resident) and drops the others. Worker thread, with
 * no preparation running (it could lose its variant to the drop). */
static void apply_precision(ManagedModel *mm, QdPrecision p, char *reason) {
        QdPrecision from = qd_model_get_precision(mm->model);
        int k = 0;

        if (from != p)
                k = qd_model_set_precision(mm->model, p);
        if (k >= 0)
                (void) qd_model_drop_variants(mm->model, true);
        if (from == p && k >= 0) {
                free(reason);
                return;
        }
        post_precision(mm, from, p, reason, k);
}

static void *prep_main(void *userdata) {
        ManagedModel *mm = userdata;
        int k = qd_model_prepare_precision(mm->model, mm->prep_target);

        pthread_mutex_lock(&mm->lock);
        mm->prep_done = true;
        mm->prep_result = k;
        pthread_cond_signal(&mm->cond);
        pthread_mutex_unlock(&mm->lock);
        return NULL;
}

static void prep_join(ManagedModel *mm) {
        if (!mm->prep_running)
                return;
        pthread_join(mm->prep_thread, NULL);
        mm->prep_running = false;
        pthread_mutex_lock(&mm->lock);
        mm->prep_done = false;
        pthread_mutex_unlock(&mm->lock);
}

/* Goes towards the wanted precision: a switch when its variant is resident, else the start of
 * its preparation on prep_thread (one at a time: a newer target waits for the running one and
 * then supersedes it). Worker thread. */
static void precision_advance(ManagedModel *mm) {
        QdPrecision p = mm->target_precision;
        int k;

        if (!mm->target_set || mm->prep_running)
                return;
        if (p == qd_model_get_precision(mm->model) || qd_model_has_variant(mm->model, p)) {
                mm->target_set = false;
                apply_precision(mm, p, TAKE_PTR(mm->target_reason));
                return;
        }
        /* Two variants are resident while it is built: drop those not in use first. */
        (void) qd_model_drop_variants(mm->model, true);
        mm->prep_target = p;
        mm->prep_stepped = false;
        k = pthread_create(&mm->prep_thread, NULL, prep_main, mm);
        if (k != 0) {
                /* No thread: build here, the generations pause meanwhile. */
                log_debug_errno(-k, "Model %s: no thread to prepare %s, switching in place: %m", mm->name,
                                qd_precision_to_string(p));
                mm->target_set = false;
                apply_precision(mm, p, TAKE_PTR(mm->target_reason));
                return;
        }
        mm->prep_running = true;
        log_debug("Model %s: preparing %s in the background.", mm->name, qd_precision_to_string(p));
}

/* The preparation ended: switch if it is still wanted, else go on towards the newer target. */
static void precision_prepared(ManagedModel *mm, int result) {
        QdPrecision built = mm->prep_target;

        prep_join(mm);
        if (!mm->target_set)
                return;
        if (mm->target_precision == built && result < 0) {
                /* Logged once by the loop; the model stays at its precision. */
                mm->target_set = false;
                (void) qd_model_drop_variants(mm->model, true);
                post_precision(mm, qd_model_get_precision(mm->model), built, TAKE_PTR(mm->target_reason),
                               result);
                return;
        }
        precision_advance(mm);
}

static void precision_wanted(ManagedModel *mm, QdPrecision p, char *reason) {
        free(mm->target_reason);
        mm->target_reason = reason;
        mm->target_precision = p;
        mm->target_set = true;
        precision_advance(mm);
}

static void *worker_main(void *userdata) {
        ManagedModel *mm = userdata;
        GenRequest **active;
        size_t n_active = 0, max_active;
        FairSlot slots[FAIR_SLOTS] = {};
        uint64_t tick = 0, next_step = 0;
        QdSequence **seqs;
        const QdSampling **smps;
        int32_t *toks;
        float *lps;

        pthread_mutex_lock(&mm->lock);
        max_active = MAX(mm->max_batch, 1u);
        pthread_mutex_unlock(&mm->lock);
        /* Sized for the largest batch a reload may configure. */
        max_active = MAX(max_active, 256u);
        active = calloc(max_active, sizeof(GenRequest *));
        seqs = calloc(max_active, sizeof(QdSequence *));
        smps = calloc(max_active, sizeof(QdSampling *));
        toks = calloc(max_active, sizeof(int32_t));
        lps = calloc(max_active, sizeof(float));

        pthread_mutex_lock(&mm->lock);
        for (;;) {
                GenRequest *admitted[256];
                size_t n_admitted = 0, limit;

                while (!mm->stopping && mm->n_pending == 0 && n_active == 0 &&
                       mm->want_precision == QD_PRECISION_INVALID && !mm->prep_done)
                        pthread_cond_wait(&mm->cond, &mm->lock);
                if (mm->stopping || !active || !seqs || !smps || !toks || !lps)
                        break;

                /* A prepared variant is switched to at a token boundary, after at least one
                 * step at the old precision when generations are running. */
                if (mm->prep_done && (mm->prep_stepped || n_active == 0)) {
                        int result = mm->prep_result;
                        pthread_mutex_unlock(&mm->lock);
                        precision_prepared(mm, result);
                        pthread_mutex_lock(&mm->lock);
                        continue;
                }

                if (mm->want_precision != QD_PRECISION_INVALID) {
                        QdPrecision p = mm->want_precision;
                        char *reason = TAKE_PTR(mm->want_reason);
                        mm->want_precision = QD_PRECISION_INVALID;
                        pthread_mutex_unlock(&mm->lock);
                        precision_wanted(mm, p, reason);
                        pthread_mutex_lock(&mm->lock);
                        continue;
                }

                /* Cancelled requests still in the queue end now, not when a slot frees. */
                for (size_t i = 0; i < mm->n_pending;)
                        if (atomic_load(&mm->pending[i]->cancel))
                                admitted[n_admitted++] = take_pending(mm, i);
                        else
                                i++;
                limit = MIN((size_t) MAX(mm->max_batch, 1u), max_active);
                while (n_active + n_admitted < limit && mm->n_pending > 0 &&
                       n_admitted < ELEMENTSOF(admitted)) {
                        size_t i = pick_pending(mm, active, n_active, slots);
                        GenRequest *r = take_pending(mm, i);
                        fair_note_admit(slots, r->caller_id, ++tick);
                        admitted[n_admitted++] = r;
                }
                mm->n_active = (unsigned) (n_active + n_admitted);
                pthread_mutex_unlock(&mm->lock);

                for (size_t i = 0; i < n_admitted; i++) {
                        GenRequest *r = admitted[i];
                        int k;

                        if (atomic_load(&r->cancel)) {
                                finish_request(mm, r, "cancelled", false);
                                continue;
                        }
                        k = start_request(mm, r);
                        if (k < 0) {
                                log_debug_errno(k, "Request %" PRIu64 ": prefill failed: %m", r->id);
                                finish_request(mm, r, k == -ENOSPC ? "length" : "error", false);
                                continue;
                        }
                        active[n_active++] = r;
                }

                /* A sequence whose context is full would make the whole batch fail with
                 * -ENOSPC: end it alone, before stepping the others. */
                for (size_t i = 0; i < n_active;) {
                        GenRequest *r = active[i];
                        if (qd_sequence_length(r->seq) < (uint32_t) r->n_tokens + r->max_tokens) {
                                i++;
                                continue;
                        }
                        finish_request(mm, r, "length", true);
                        active[i] = active[--n_active];
                }

                /* The token-rate cap: steps are spaced so that the model produces at most
                 * token_rate tokens/s over all its sequences. The worker waits on its condition
                 * (a new request, a cancel, a stop, a precision change or a new cap wakes it and
                 * is handled first); the loop thread never waits. */
                if (n_active > 0) {
                        uint64_t now = now_usec();
                        bool cancelled = false;
                        double rate;

                        for (size_t i = 0; i < n_active; i++)
                                cancelled = cancelled || atomic_load(&active[i]->cancel);
                        pthread_mutex_lock(&mm->lock);
                        rate = mm->token_rate;
                        if (rate > 0 && now < next_step && !cancelled && !mm->stopping) {
                                struct timespec ts = {
                                        .tv_sec = (time_t) (next_step / 1000000u),
                                        .tv_nsec = (long) (next_step % 1000000u) * 1000,
                                };
                                mm->n_active = (unsigned) n_active;
                                (void) pthread_cond_timedwait(&mm->cond, &mm->lock, &ts);
                                continue;
                        }
                        pthread_mutex_unlock(&mm->lock);
                        /* No credit is saved up while idle or uncapped: at most one step's burst. */
                        next_step = rate > 0 ? MAX(next_step, now) + (uint64_t) (n_active * 1e6 / rate) : 0;
                }

                if (n_active > 0) {
                        int k;

                        for (size_t i = 0; i < n_active; i++) {
                                seqs[i] = active[i]->seq;
                                smps[i] = &active[i]->sampling;
                        }
                        if (n_active == 1)
                                k = qd_sequence_step(seqs[0], smps[0], &toks[0], &lps[0]);
                        else
                                k = qd_model_step_batch(mm->model, seqs, smps, n_active, toks, lps);
                        mm->prep_stepped = mm->prep_running;
                        for (size_t i = 0; i < n_active;) {
                                GenRequest *r = active[i];
                                const char *reason;

                                if (k < 0)
                                        reason = k == -ENOSPC ? "length" : "error";
                                else
                                        reason = consume_token(mm, r, toks[i], lps[i]);
                                if (!reason && atomic_load(&r->cancel))
                                        reason = "cancelled";
                                if (reason) {
                                        if (k < 0)
                                                log_debug_errno(k, "Request %" PRIu64 ": step failed: %m", r->id);
                                        finish_request(mm, r, reason, !streq(reason, "error"));
                                        active[i] = active[--n_active];
                                        toks[i] = toks[n_active];
                                        lps[i] = lps[n_active];
                                        continue;
                                }
                                i++;
                        }
                }
                pthread_mutex_lock(&mm->lock);
                mm->n_active = (unsigned) n_active;
        }

        /* Stopping (unload, shutdown) or out of memory: end everything with the reason. */
        while (mm->n_pending > 0)
                finish_request(mm, take_pending(mm, 0), mm->stop_reason ?: "error", false);
        for (size_t i = 0; i < n_active; i++)
                finish_request(mm, active[i], mm->stop_reason ?: "error", true);
        mm->n_active = 0;
        pthread_mutex_unlock(&mm->lock);

        /* A preparation cannot be interrupted: unload and shutdown wait for it. */
        prep_join(mm);
        mm->target_set = false;
        mm->target_reason = mfree(mm->target_reason);

        for (size_t j = 0; j < FAIR_SLOTS; j++)
                free(slots[j].caller_id);
        free(active);
        free(seqs);
        free(smps);
        free(toks);
        free(lps);
        return NULL;
}

int model_worker_start(ManagedModel *mm) {
        int k = pthread_create(&mm->thread, NULL, worker_main, mm);
        if (k != 0)
                return -k;
        mm->thread_started = true;
        return 0;
}

void model_worker_stop(ManagedModel *mm, const char *reason) {
        if (mm->thread_started) {
                pthread_mutex_lock(&mm->lock);
                mm->stopping = true;
                mm->stop_reason = reason;
                pthread_cond_signal(&mm->cond);
                pthread_mutex_unlock(&mm->lock);
                pthread_join(mm->thread, NULL);
                mm->thread_started = false;
        }
        model_deliver_events(mm);
}

void model_request_precision(ManagedModel *mm, QdPrecision p, const char *reason) {
        pthread_mutex_lock(&mm->lock);
        mm->want_precision = p;
        free(mm->want_reason);
        mm->want_reason = reason ? strdup(reason) : NULL;
        pthread_cond_signal(&mm->cond);
        pthread_mutex_unlock(&mm->lock);
}

static int copy_stop(GenRequest *r, char *const *stop, size_t n) {
        if (n == 0)
                return 0;
        if (n > 16)
                return -E2BIG;
        r->stop = calloc(n, sizeof(char *));
        if (!r->stop)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (!stop[i] || !*stop[i] || strlen(stop[i]) > 256)
                        return -EINVAL;
                r->stop[i] = strdup(stop[i]);
                if (!r->stop[i])
                        return -ENOMEM;
                r->n_stop++;
        }
        return 0;
}

/* Turns the prompt or the chat messages into tokens. */
static int prepare_prompt(Manager *m, ManagedModel *mm, const GenParams *p, GenRequest *r) {
        _cleanup_free_ char *text = NULL;
        bool add_bos = true, special = false;
        size_t bytes = 0;
        int k;

        if (p->messages && p->n_messages > 0) {
                for (size_t i = 0; i < p->n_messages; i++) {
                        if (!p->messages[i].role || !p->messages[i].content)
                                return -EINVAL;
                        bytes += strlen(p->messages[i].content) + strlen(p->messages[i].role);
                }
                if (bytes > m->config->max_request_bytes)
                        return -E2BIG;
                k = qd_model_chat_format(mm->model, p->messages, p->n_messages, true, &text);
                if (k < 0)
                        return k;
                special = true;
                {
                        /* Templates that spell out the BOS token must not get a second one. */
                        char bos[64];
                        int32_t b = qd_model_token_bos(mm->model);
                        int n = b >= 0 ? qd_model_token_piece(mm->model, b, bos, sizeof(bos) - 1) : -1;
                        if (n > 0 && (size_t) n < sizeof(bos) && strncmp(text, bos, (size_t) n) == 0)
                                add_bos = false;
                }
        } else if (p->prompt) {
                if (strlen(p->prompt) > m->config->max_request_bytes)
                        return -E2BIG;
                text = strdup(p->prompt);
                if (!text)
                        return -ENOMEM;
        } else
                return -EINVAL;

        k = qd_model_tokenize(mm->model, text, strlen(text), add_bos, special, &r->tokens, &r->n_tokens);
        if (k < 0)
                return k;
        if (r->n_tokens == 0)
                return -EINVAL;
        if (r->n_tokens > m->config->max_prompt_tokens || r->n_tokens >= m->config->context_size)
                return -E2BIG;
        return 0;
}

int manager_generate(Manager *m, const Caller *c, const GenParams *p, const GenCallbacks *cb,
                     void *userdata, GenRequest **ret) {
        _cleanup_(gen_request_freep) GenRequest *r = NULL;
        ManagedModel *mm;
        int32_t max_tokens;
        int k;

        if (!p || !cb)
                return -EINVAL;
        mm = manager_find_model(m, p->model);
        if (!mm)
                return -ENOENT;
        if (atomic_load(&m->n_waiting) >= m->config->queue_length)
                return -EBUSY;
        max_tokens = p->max_tokens > 0 ? p->max_tokens : (int32_t) m->config->default_max_tokens;
        if ((uint32_t) max_tokens > m->config->max_new_tokens)
                return -E2BIG;
        if (p->sampling.temperature < 0 || p->sampling.top_p < 0 || p->sampling.min_p < 0 ||
            p->sampling.repeat_penalty < 0 || p->sampling.temperature != p->sampling.temperature)
                return -EINVAL;

        r = calloc(1, sizeof(GenRequest));
        if (!r)
                return -ENOMEM;
        r->manager = m;
        r->model = mm;
        r->cb = *cb;
        r->userdata = userdata;
        r->sampling = p->sampling;
        r->want_logprobs = true;
        r->caller_id = c && c->id ? strdup(c->id) : NULL;
        if (c && c->id && !r->caller_id)
                return -ENOMEM;
        k = copy_stop(r, p->stop, p->n_stop);
        if (k < 0)
                return k;
        k = prepare_prompt(m, mm, p, r);
        if (k < 0)
                return k;
        /* The context holds the prompt and the answer; the answer is cut at the context size. */
        r->max_tokens = (uint32_t) MIN((uint64_t) max_tokens, (uint64_t) m->config->context_size - r->n_tokens);

        pthread_mutex_lock(&mm->lock);
        if (mm->n_pending == mm->n_pending_alloc) {
                size_t na = MAX(mm->n_pending_alloc * 2, 16u);
                GenRequest **np = realloc(mm->pending, na * sizeof(GenRequest *));
                if (!np) {
                        pthread_mutex_unlock(&mm->lock);
                        return -ENOMEM;
                }
                mm->pending = np;
                mm->n_pending_alloc = na;
        }
        r->id = m->next_request_id++;
        mm->pending[mm->n_pending++] = r;
        atomic_fetch_add(&m->n_waiting, 1);
        mm->n_live++;
        r->live_next = m->live;
        if (m->live)
                m->live->live_prev = r;
        m->live = r;
        mm->last_used_usec = now_usec();
        log_debug("Request %" PRIu64 " from %s queued on %s: %zu prompt tokens, up to %u new.", r->id,
                  strna(r->caller_id), mm->name, r->n_tokens, r->max_tokens);
        if (ret)
                *ret = r;
        TAKE_PTR(r);
        pthread_cond_signal(&mm->cond);
        pthread_mutex_unlock(&mm->lock);
        return 0;
}
