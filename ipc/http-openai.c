/* OpenAI-compatible endpoints: /v1/models, /v1/completions and /v1/chat/completions, with
 * server-sent events for "stream": true, usage and logprobs; and the native POST /api/generate,
 * which mirrors D-Bus Generate (one event per token with its id, a final event with the
 * Finished reason and stats) through the same request machinery. */
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "http-router.h"
#include "log.h"

#define MAX_STOP 16

typedef struct Job {
        HttpConn *conn;
        const HttpBackend *backend;
        void *backend_ctx;
        GenRequest *req;
        json_t *body;                   /* owns the strings that params point to */
        QdChatMessage *msgs;
        char **parts;                   /* contents joined from text parts, per message or NULL */
        size_t n_msgs;
        char *stop[MAX_STOP];
        size_t n_stop;

        bool chat, native, stream, include_usage, logprobs;
        bool in_generate, done;
        char *sync_reason;              /* finished() inside generate() */
        GenStats sync_stats;
        char id[64];
        json_int_t created;

        char *text;
        size_t text_size, text_alloc;
        json_t *lp_tokens, *lp_values, *lp_offsets;    /* completions */
        json_t *lp_content;                             /* chat */
} Job;

static Job *job_free(Job *j) {
        if (!j)
                return NULL;
        http_conn_unref(j->conn);
        json_decref(j->body);
        free(j->msgs);
        for (size_t i = 0; j->parts && i < j->n_msgs; i++)
                free(j->parts[i]);
        free(j->parts);
        for (size_t i = 0; i < j->n_stop; i++)
                free(j->stop[i]);
        free(j->text);
        free(j->sync_reason);
        json_decref(j->lp_tokens);
        json_decref(j->lp_values);
        json_decref(j->lp_offsets);
        json_decref(j->lp_content);
        free(j);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Job *, job_free);

int http_openai_models(HttpConn *c, const HttpRequest *req, const char *arg) {
        HttpContext *ctx = http_conn_context(c);
        json_t *a = json_array(), *j;

        for (size_t i = 0; a && ctx->backend->model_at; i++) {
                ModelStatus st = {};
                if (ctx->backend->model_at(ctx->backend_ctx, i, &st) < 0)
                        break;
                json_array_append_new(a, json_pack("{s:s,s:s,s:i,s:s}", "id", st.name, "object", "model",
                                                   "created", 0, "owned_by", "quantd"));
        }
        j = a ? json_pack("{s:s,s:o}", "object", "list", "data", a) : NULL;
        if (!j)
                return -ENOMEM;
        http_conn_reply_json(c, 200, j);
        json_decref(j);
        return 0;
}

int http_openai_model(HttpConn *c, const HttpRequest *req, const char *arg) {
        HttpContext *ctx = http_conn_context(c);

        for (size_t i = 0; ctx->backend->model_at; i++) {
                ModelStatus st = {};
                if (ctx->backend->model_at(ctx->backend_ctx, i, &st) < 0)
                        break;
                if (streq(st.name, arg)) {
                        json_t *j = json_pack("{s:s,s:s,s:i,s:s}", "id", st.name, "object", "model",
                                              "created", 0, "owned_by", "quantd");
                        if (!j)
                                return -ENOMEM;
                        http_conn_reply_json(c, 200, j);
                        json_decref(j);
                        return 0;
                }
        }
        return http_conn_reply_error(c, 404, "invalid_request_error", "model_not_found",
                                     "The model '%s' does not exist", arg);
}

static int bad_param(HttpConn *c, const char *param, const char *what) {
        (void) http_conn_reply_error(c, 400, "invalid_request_error", "invalid_value",
                                     "Invalid value for '%s': %s", param, what);
        return -EBADMSG;
}

/* A number member within [lo, hi]; absent or null leaves *v as it is. */
static int get_number(HttpConn *c, json_t *o, const char *key, double lo, double hi, double *v) {
        json_t *x = json_object_get(o, key);

        if (!x || json_is_null(x))
                return 0;
        if (!json_is_number(x))
                return bad_param(c, key, "expected a number");
        double d = json_number_value(x);
        if (!isfinite(d) || d < lo || d > hi) {
                char msg[96];
                snprintf(msg, sizeof msg, "expected a number from %g to %g", lo, hi);
                return bad_param(c, key, msg);
        }
        *v = d;
        return 0;
}

static int parse_stop(HttpConn *c, Job *j, json_t *stop) {
        if (!stop || json_is_null(stop))
                return 0;
        if (json_is_string(stop)) {
                if (json_string_length(stop) == 0)
                        return 0;
                j->stop[0] = strndup(json_string_value(stop), json_string_length(stop));
                if (!j->stop[0])
                        return -ENOMEM;
                j->n_stop = 1;
                return 0;
        }
        if (!json_is_array(stop) || json_array_size(stop) > MAX_STOP)
                return bad_param(c, "stop", "expected a string or an array of at most 16 strings");
        for (size_t i = 0; i < json_array_size(stop); i++) {
                json_t *s = json_array_get(stop, i);
                if (!json_is_string(s))
                        return bad_param(c, "stop", "expected a string or an array of at most 16 strings");
                if (json_string_length(s) == 0)
                        continue;
                j->stop[j->n_stop] = strndup(json_string_value(s), json_string_length(s));
                if (!j->stop[j->n_stop])
                        return -ENOMEM;
                j->n_stop++;
        }
        return 0;
}

/* Options common to both endpoints. Returns <0 after answering 400. */
static int parse_options(HttpConn *c, Job *j, GenParams *p) {
        json_t *b = j->body, *x;
        double v;

        x = json_object_get(b, "model");
        if (!json_is_string(x) || strlen(json_string_value(x)) != json_string_length(x))
                return bad_param(c, "model", "expected the name of a loaded model");
        p->model = json_string_value(x);

        /* OpenAI's defaults (temperature 1), or D-Bus Generate's (greedy) for the native endpoint. */
        if (j->native && j->backend->sampling_defaults)
                j->backend->sampling_defaults(j->backend_ctx, &p->sampling);
        else if (j->native)
                p->sampling = (QdSampling) { .top_p = 1.0f, .repeat_penalty = 1.0f, .repeat_last_n = 64 };
        else
                p->sampling = (QdSampling) {
                        .temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                        .repeat_penalty = 1.0f, .repeat_last_n = 64,
                };
        v = p->sampling.temperature;
        if (get_number(c, b, "temperature", 0, 2, &v) < 0)
                return -EBADMSG;
        p->sampling.temperature = (float) v;
        v = p->sampling.top_p;
        if (get_number(c, b, "top_p", 0, 1, &v) < 0)
                return -EBADMSG;
        p->sampling.top_p = v <= 0 ? 1.0f : (float) v;
        v = p->sampling.top_k;
        if (get_number(c, b, "top_k", 0, 1 << 20, &v) < 0)
                return -EBADMSG;
        p->sampling.top_k = (int32_t) v;
        v = p->sampling.min_p;
        if (get_number(c, b, "min_p", 0, 1, &v) < 0)
                return -EBADMSG;
        p->sampling.min_p = (float) v;
        v = p->sampling.repeat_penalty;
        if (get_number(c, b, "repeat_penalty", 0.01, 10, &v) < 0)
                return -EBADMSG;
        p->sampling.repeat_penalty = (float) v;
        v = p->sampling.repeat_last_n;
        if (get_number(c, b, "repeat_last_n", 0, 1 << 20, &v) < 0)
                return -EBADMSG;
        p->sampling.repeat_last_n = (int32_t) v;

        x = json_object_get(b, "seed");
        if (x && !json_is_null(x)) {
                if (!json_is_integer(x))
                        return bad_param(c, "seed", "expected an integer");
                p->sampling.seed = (uint64_t) json_integer_value(x);
        } else if (!j->native && /* native: qd_sampling_init()'s fixed seed, as over D-Bus */
                   getrandom(&p->sampling.seed, sizeof p->sampling.seed, GRND_NONBLOCK) != sizeof p->sampling.seed)
                p->sampling.seed = (uint64_t) time(NULL);

        x = json_object_get(b, j->chat && json_object_get(b, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens");
        if (x && !json_is_null(x)) {
                if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > INT32_MAX)
                        return bad_param(c, "max_tokens", "expected a positive integer");
                p->max_tokens = (int32_t) json_integer_value(x);
        }

        x = json_object_get(b, "n");
        if (x && !json_is_null(x) && !(json_is_integer(x) && json_integer_value(x) == 1))
                return bad_param(c, "n", "only n = 1 is supported");

        x = json_object_get(b, "stream");
        if (x && !json_is_null(x) && !json_is_boolean(x))
                return bad_param(c, "stream", "expected a boolean");
        /* D-Bus Generate always streams; so does /api/generate unless told otherwise. */
        j->stream = j->native && (!x || json_is_null(x)) ? true : json_is_true(x);
        x = json_object_get(b, "stream_options");
        if (x && !json_is_null(x)) {
                json_t *u = json_object_get(x, "include_usage");
                if (!json_is_object(x) || (u && !json_is_boolean(u)))
                        return bad_param(c, "stream_options", "expected {\"include_usage\": boolean}");
                j->include_usage = json_is_true(u);
        }

        x = json_object_get(b, "logprobs");
        if (x && !json_is_null(x)) {
                if (j->chat || j->native ? !json_is_boolean(x) : !(json_is_integer(x) && json_integer_value(x) >= 0 && json_integer_value(x) <= 20))
                        return bad_param(c, "logprobs", j->chat || j->native ? "expected a boolean" : "expected an integer from 0 to 20");
                j->logprobs = j->chat || j->native ? json_is_true(x) : true;
        }
        p->want_logprobs = j->logprobs;

        int r = parse_stop(c, j, json_object_get(b, "stop"));
        if (r < 0)
                return r == -EBADMSG ? r : (http_conn_reply_errno(c, r, "stop"), -EBADMSG);
        p->stop = j->stop;
        p->n_stop = j->n_stop;
        return 0;
}

/* Message content: a string, null, or an array of {"type": "text", "text": ...} parts. */
static int message_content(HttpConn *c, Job *j, json_t *content, size_t i, const char **ret) {
        if (!content || json_is_null(content)) {
                *ret = "";
                return 0;
        }
        if (json_is_string(content) && strlen(json_string_value(content)) == json_string_length(content)) {
                *ret = json_string_value(content);
                return 0;
        }
        if (!json_is_array(content))
                return bad_param(c, "messages", "content must be a string or an array of text parts");

        size_t n = 0;
        for (size_t k = 0; k < json_array_size(content); k++) {
                json_t *part = json_array_get(content, k), *t = json_object_get(part, "text");
                if (!json_is_string(t) || !streq_ptr(json_string_value(json_object_get(part, "type")), "text") ||
                    strlen(json_string_value(t)) != json_string_length(t))
                        return bad_param(c, "messages", "only text content parts are supported");
                n += json_string_length(t);
        }
        char *s = malloc(n + 1), *o = s;
        if (!s)
                return -ENOMEM;
        for (size_t k = 0; k < json_array_size(content); k++) {
                json_t *t = json_object_get(json_array_get(content, k), "text");
                memcpy(o, json_string_value(t), json_string_length(t));
                o += json_string_length(t);
        }
        *o = 0;
        j->parts[i] = s;
        *ret = s;
        return 0;
}

static int parse_messages(HttpConn *c, Job *j, GenParams *p) {
        json_t *m = json_object_get(j->body, "messages");
        size_t n;

        if (!json_is_array(m) || json_array_size(m) == 0)
                return bad_param(c, "messages", "expected a non-empty array of messages");
        n = json_array_size(m);
        j->msgs = calloc(n, sizeof(QdChatMessage));
        j->parts = calloc(n + 1, sizeof(char *));
        if (!j->msgs || !j->parts)
                return -ENOMEM;
        j->n_msgs = n;
        for (size_t i = 0; i < n; i++) {
                json_t *msg = json_array_get(m, i);
                const char *role = json_string_value(json_object_get(msg, "role"));
                int r;

                if (!json_is_object(msg) || !role ||
                    !(streq(role, "system") || streq(role, "user") || streq(role, "assistant") ||
                      streq(role, "developer") || streq(role, "tool")))
                        return bad_param(c, "messages", "each message needs a role: system, user or assistant");
                r = message_content(c, j, json_object_get(msg, "content"), i, &j->msgs[i].content);
                if (r < 0)
                        return r;
                /* "developer" is OpenAI's newer name for "system". */
                j->msgs[i].role = streq(role, "developer") ? "system" : role;
        }
        p->messages = j->msgs;
        p->n_messages = n;
        return 0;
}

static json_t *chunk_new(Job *j) {
        return json_pack("{s:s,s:s,s:I,s:s}", "id", j->id, "object",
                         j->chat ? "chat.completion.chunk" : "text_completion", "created", j->created,
                         "model", json_string_value(json_object_get(j->body, "model")));
}

static json_t *usage_json(const GenStats *st) {
        return json_pack("{s:i,s:i,s:i}", "prompt_tokens", (int) st->prompt_tokens, "completion_tokens",
                         (int) st->completion_tokens, "total_tokens",
                         (int) (st->prompt_tokens + st->completion_tokens));
}

/* One token's logprob entry, appended to the job's arrays (or, for stream chunks, to fresh ones). */
static void logprob_add(Job *j, const char *text, float logprob, json_t *content, json_t *tokens,
                        json_t *values, json_t *offsets) {
        if (j->chat) {
                json_t *bytes = json_array();
                for (const unsigned char *p = (const unsigned char *) text; bytes && *p; p++)
                        json_array_append_new(bytes, json_integer(*p));
                json_array_append_new(content, json_pack("{s:o,s:f,s:o,s:[]}", "token",
                                                         http_json_text(text, strlen(text)), "logprob",
                                                         (double) logprob, "bytes", bytes, "top_logprobs"));
        } else {
                json_array_append_new(tokens, http_json_text(text, strlen(text)));
                json_array_append_new(values, json_real(logprob));
                json_array_append_new(offsets, json_integer((json_int_t) j->text_size));
        }
}

static json_t *completion_logprobs(json_t *tokens, json_t *values, json_t *offsets) {
        return json_pack("{s:O,s:O,s:n,s:O}", "tokens", tokens, "token_logprobs", values,
                         "top_logprobs", "text_offset", offsets);
}

static void on_token(GenRequest *r, const char *text, int32_t token, float logprob, void *userdata) {
        Job *j = userdata;
        size_t n = strlen(text);

        if (j->done || !j->conn || http_conn_detached(j->conn))
                return;

        if (j->native && j->stream) {
                /* Every token, as D-Bus Token(text, token, logprob), even when its text is held back. */
                json_t *ev = json_pack("{s:o,s:i,s:f}", "text", http_json_text(text, n), "token", (int) token,
                                       "logprob", (double) logprob);
                if (ev)
                        (void) http_conn_stream_event(j->conn, ev);
                json_decref(ev);
                j->text_size += n;
                return;
        }
        if (j->stream) {
                if (n == 0 && !j->logprobs)
                        return;
                json_t *ch = chunk_new(j), *choice, *lp = json_null();
                if (!ch)
                        return;
                if (j->logprobs) {
                        json_t *content = json_array(), *tk = json_array(), *va = json_array(), *of = json_array();
                        logprob_add(j, text, logprob, content, tk, va, of);
                        json_decref(lp);
                        lp = j->chat ? json_pack("{s:O}", "content", content) : completion_logprobs(tk, va, of);
                        json_decref(content), json_decref(tk), json_decref(va), json_decref(of);
                }
                if (j->chat)
                        choice = json_pack("{s:i,s:{s:o},s:o,s:n}", "index", 0, "delta", "content",
                                           http_json_text(text, n), "logprobs", lp, "finish_reason");
                else
                        choice = json_pack("{s:o,s:i,s:o,s:n}", "text", http_json_text(text, n), "index", 0,
                                           "logprobs", lp, "finish_reason");
                json_object_set_new(ch, "choices", json_pack("[o]", choice));
                if (j->include_usage)
                        json_object_set_new(ch, "usage", json_null());
                (void) http_conn_stream_event(j->conn, ch);
                json_decref(ch);
                j->text_size += n;
                return;
        }

        if (j->logprobs && !j->native)
                logprob_add(j, text, logprob, j->lp_content, j->lp_tokens, j->lp_values, j->lp_offsets);
        if (j->text_size + n + 1 > j->text_alloc) {
                size_t a = MAX(j->text_size + n + 1, j->text_alloc * 2);
                char *t = realloc(j->text, a);
                if (!t)
                        return;
                j->text = t;
                j->text_alloc = a;
        }
        memcpy(j->text + j->text_size, text, n);
        j->text_size += n;
        j->text[j->text_size] = 0;
}

static const char *finish_reason(const char *reason) {
        /* The engine's reasons are OpenAI's for normal ends; others pass through. */
        return reason;
}

/* D-Bus Finished's stats. */
static json_t *stats_json(const GenStats *st) {
        return json_pack("{s:i,s:i,s:f,s:f,s:s}", "prompt_tokens", (int) st->prompt_tokens, "completion_tokens",
                         (int) st->completion_tokens, "prompt_ms", st->prompt_ms, "generate_ms", st->generate_ms,
                         "precision", st->precision >= 0 ? http_precision_to_string(st->precision) : "");
}

static void finish_stream(Job *j, const char *reason, const GenStats *st) {
        json_t *ch;

        if (j->native) {
                /* Every reason, errors included, ends the stream as D-Bus Finished does. */
                ch = json_pack("{s:s,s:s,s:o}", "id", j->id, "finish_reason", reason, "stats", stats_json(st));
                if (ch)
                        (void) http_conn_stream_event(j->conn, ch);
                json_decref(ch);
                (void) http_conn_stream_end(j->conn);
                return;
        }

        if (streq(reason, "error") || streq(reason, "shutdown")) {
                ch = json_pack("{s:{s:s,s:s,s:s}}", "error", "message",
                               streq(reason, "error") ? "Generation failed" : "The server is shutting down",
                               "type", "server_error", "code", reason);
                if (ch)
                        (void) http_conn_stream_event(j->conn, ch);
                json_decref(ch);
        } else {
                ch = chunk_new(j);
                if (ch) {
                        json_t *choice = j->chat ? json_pack("{s:i,s:{},s:n,s:s}", "index", 0, "delta", "logprobs",
                                                             "finish_reason", finish_reason(reason))
                                                 : json_pack("{s:s,s:i,s:n,s:s}", "text", "", "index", 0, "logprobs",
                                                             "finish_reason", finish_reason(reason));
                        json_object_set_new(ch, "choices", json_pack("[o]", choice));
                        if (j->include_usage)
                                json_object_set_new(ch, "usage", json_null());
                        (void) http_conn_stream_event(j->conn, ch);
                        json_decref(ch);
                }
                if (j->include_usage) {
                        ch = chunk_new(j);
                        if (ch) {
                                json_object_set_new(ch, "choices", json_array());
                                json_object_set_new(ch, "usage", usage_json(st));
                                (void) http_conn_stream_event(j->conn, ch);
                                json_decref(ch);
                        }
                }
        }
        (void) http_conn_stream_end(j->conn);
}

static void finish_whole(Job *j, const char *reason, const GenStats *st) {
        json_t *resp, *choice, *lp = json_null();

        if (streq(reason, "error")) {
                (void) http_conn_reply_error(j->conn, 500, "server_error", "generation_failed", "Generation failed");
                return;
        }
        if (streq(reason, "shutdown")) {
                (void) http_conn_reply_errno(j->conn, -ESHUTDOWN, "generation");
                return;
        }
        if (j->native) {
                json_decref(lp);
                resp = json_pack("{s:s,s:o,s:s,s:o}", "id", j->id, "text",
                                 http_json_text(j->text ? j->text : "", j->text_size), "finish_reason", reason,
                                 "stats", stats_json(st));
                (void) http_conn_reply_json_take(j->conn, 200, resp);
                return;
        }
        if (j->logprobs) {
                json_decref(lp);
                lp = j->chat ? json_pack("{s:O}", "content", j->lp_content)
                             : completion_logprobs(j->lp_tokens, j->lp_values, j->lp_offsets);
        }
        json_t *text = http_json_text(j->text ? j->text : "", j->text_size);
        if (j->chat)
                choice = json_pack("{s:i,s:{s:s,s:o},s:o,s:s}", "index", 0, "message", "role", "assistant",
                                   "content", text, "logprobs", lp, "finish_reason", finish_reason(reason));
        else
                choice = json_pack("{s:o,s:i,s:o,s:s}", "text", text, "index", 0, "logprobs", lp,
                                   "finish_reason", finish_reason(reason));
        resp = json_pack("{s:s,s:s,s:I,s:s,s:[o],s:o}", "id", j->id, "object",
                         j->chat ? "chat.completion" : "text_completion", "created", j->created, "model",
                         json_string_value(json_object_get(j->body, "model")), "choices", choice, "usage",
                         usage_json(st));
        (void) http_conn_reply_json_take(j->conn, 200, resp);
}

static void on_finished(GenRequest *r, const char *reason, const GenStats *st, void *userdata) {
        Job *j = userdata;

        j->done = true;
        j->req = NULL;
        if (j->in_generate) {
                /* The handler finishes once generate() returns. */
                j->sync_reason = strdup(reason);
                j->sync_stats = *st;
                return;
        }
        http_conn_set_pending(j->conn, NULL, NULL);
        if (!http_conn_detached(j->conn)) {
                if (j->stream)
                        finish_stream(j, reason, st);
                else
                        finish_whole(j, reason, st);
        }
        job_free(j);
}

static void job_cancel(void *userdata) {
        Job *j = userdata;

        if (!j->done && j->req && j->backend->cancel)
                j->backend->cancel(j->backend_ctx, j->req);
}

static const GenCallbacks callbacks = {
        .token = on_token,
        .finished = on_finished,
};

static int generate(HttpConn *c, const HttpRequest *req, bool chat, bool native) {
        HttpContext *ctx = http_conn_context(c);
        _cleanup_(job_freep) Job *j = NULL;
        Job *job;
        GenParams p = {};
        int r;

        j = calloc(1, sizeof(Job));
        if (!j)
                return -ENOMEM;
        j->chat = chat;
        j->native = native;
        j->backend = ctx->backend;
        j->backend_ctx = ctx->backend_ctx;
        if (http_request_json(c, req, &j->body) < 0)
                return 0;
        r = parse_options(c, j, &p);
        if (r == -EBADMSG)
                return 0;
        if (r < 0)
                return r;
        if (native && json_object_get(j->body, "messages") && json_object_get(j->body, "prompt"))
                r = bad_param(c, "messages", "give either a prompt or messages, not both");
        else if (chat || (native && json_object_get(j->body, "messages")))
                r = parse_messages(c, j, &p);
        else {
                json_t *prompt = json_object_get(j->body, "prompt");
                if (json_is_array(prompt) && json_array_size(prompt) == 1)
                        prompt = json_array_get(prompt, 0);
                if (!json_is_string(prompt) || strlen(json_string_value(prompt)) != json_string_length(prompt))
                        r = bad_param(c, "prompt", "expected a string");
                else
                        p.prompt = json_string_value(prompt);
        }
        if (r == -EBADMSG)
                return 0;
        if (r < 0)
                return r;
        if (j->logprobs && !native) {
                j->lp_content = json_array();
                j->lp_tokens = json_array();
                j->lp_values = json_array();
                j->lp_offsets = json_array();
                if (!j->lp_content || !j->lp_tokens || !j->lp_values || !j->lp_offsets)
                        return -ENOMEM;
        }
        j->created = (json_int_t) time(NULL);

        if (!ctx->backend->generate)
                return -EOPNOTSUPP;
        j->in_generate = true;
        r = ctx->backend->generate(ctx->backend_ctx, http_conn_caller(c), &p, &callbacks, j, &j->req);
        j->in_generate = false;
        if (r == -ENOENT)
                return http_conn_reply_error(c, 404, "invalid_request_error", "model_not_found",
                                             "The model '%s' does not exist", p.model);
        if (r < 0)
                return http_conn_reply_errno(c, r, p.model);

        uint64_t id = j->req && !j->done && ctx->backend->request_id ? ctx->backend->request_id(ctx->backend_ctx, j->req) : 0;
        snprintf(j->id, sizeof j->id, "%s-%" PRIu64, native ? "gen" : chat ? "chatcmpl" : "cmpl", id);
        j->conn = http_conn_ref(c);
        job = TAKE_PTR(j);
        if (!job->done)
                http_conn_set_pending(c, job_cancel, job);
        /* A failed write below detaches the connection and cancels the request; should the
         * backend finish it at once, in_generate keeps the job alive until we are done here. */
        job->in_generate = true;
        if (job->stream) {
                (void) http_conn_stream_begin(c);
                if (chat && !native) {
                        json_t *ch = chunk_new(job);
                        if (ch) {
                                json_object_set_new(ch, "choices",
                                                    json_pack("[{s:i,s:{s:s,s:s},s:n,s:n}]", "index", 0, "delta",
                                                              "role", "assistant", "content", "", "logprobs",
                                                              "finish_reason"));
                                if (job->include_usage)
                                        json_object_set_new(ch, "usage", json_null());
                                (void) http_conn_stream_event(c, ch);
                                json_decref(ch);
                        }
                }
        }
        job->in_generate = false;
        if (job->done) {
                /* The backend already finished: answer now. */
                const char *reason = job->sync_reason ? job->sync_reason : "error";
                http_conn_set_pending(c, NULL, NULL);
                if (!http_conn_detached(c)) {
                        if (job->stream)
                                finish_stream(job, reason, &job->sync_stats);
                        else
                                finish_whole(job, reason, &job->sync_stats);
                }
                job_free(job);
        }
        return 0;
}

int http_openai_completions(HttpConn *c, const HttpRequest *req, const char *arg) {
        return generate(c, req, false, false);
}

int http_openai_chat(HttpConn *c, const HttpRequest *req, const char *arg) {
        return generate(c, req, true, false);
}

int http_native_generate(HttpConn *c, const HttpRequest *req, const char *arg) {
        return generate(c, req, false, true);
}
