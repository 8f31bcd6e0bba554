/* Fake backend for the HTTP tests: echoes the prompt's words as tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http-fake.h"

struct GenRequest {
        Fake *fake;
        GenRequest *next;
        uint64_t id;
        char **words;
        size_t n_words, n_emitted;
        int32_t max_tokens;
        char **stop;
        size_t n_stop;
        bool cancelled;
        GenCallbacks cb;
        void *userdata;
};

static void request_free(GenRequest *r) {
        for (size_t i = 0; i < r->n_words; i++)
                free(r->words[i]);
        free(r->words);
        for (size_t i = 0; i < r->n_stop; i++)
                free(r->stop[i]);
        free(r->stop);
        free(r);
}

static int split_words(GenRequest *r, const char *text) {
        const char *p = text;

        while (*p) {
                while (*p == ' ' || *p == '\n')
                        p++;
                if (!*p)
                        break;
                const char *e = p;
                while (*e && *e != ' ' && *e != '\n')
                        e++;
                char **nw = realloc(r->words, (r->n_words + 1) * sizeof(char *));
                if (!nw)
                        return -ENOMEM;
                r->words = nw;
                if (asprintf(&r->words[r->n_words], "%.*s ", (int) (e - p), p) < 0)
                        return -ENOMEM;
                r->n_words++;
                p = e;
        }
        return 0;
}

static void finish(GenRequest *r, const char *reason);

static int fake_generate(void *ctx, const Caller *c, const GenParams *p, const GenCallbacks *cb,
                         void *userdata, GenRequest **ret) {
        Fake *f = ctx;
        GenRequest *r;

        if (!p->model || strcmp(p->model, "tiny") != 0)
                return -ENOENT;
        if (f->max_live > 0 && f->n_live >= f->max_live)
                return -EBUSY;
        r = calloc(1, sizeof(GenRequest));
        if (!r)
                return -ENOMEM;
        r->fake = f;
        r->id = ++f->n_started;
        r->max_tokens = p->max_tokens > 0 ? p->max_tokens : 8;
        if (p->prompt) {
                if (split_words(r, p->prompt) < 0)
                        goto fail;
        } else {
                if (p->n_messages == 0)
                        goto fail;
                if (split_words(r, p->messages[p->n_messages - 1].content) < 0)
                        goto fail;
        }
        if (r->n_words == 0 && split_words(r, "empty") < 0)
                goto fail;
        r->stop = calloc(p->n_stop + 1, sizeof(char *));
        if (!r->stop)
                goto fail;
        for (size_t i = 0; i < p->n_stop; i++) {
                r->stop[i] = strdup(p->stop[i]);
                if (!r->stop[i])
                        goto fail;
                r->n_stop++;
        }
        r->cb = *cb;
        r->userdata = userdata;
        r->next = f->live;
        f->live = r;
        f->n_live++;
        if (ret)
                *ret = r;
        /* A first word "!now" finishes inside generate(), as a backend may for a request it
         * ends before queueing it. */
        if (strcmp(r->words[0], "!now ") == 0)
                finish(r, "stop");
        return 0;
fail:
        request_free(r);
        return -ENOMEM;
}

static void finish(GenRequest *r, const char *reason) {
        Fake *f = r->fake;
        GenStats st = {
                .prompt_tokens = (uint32_t) r->n_words,
                .completion_tokens = (uint32_t) r->n_emitted,
        };

        for (GenRequest **p = &f->live; *p; p = &(*p)->next)
                if (*p == r) {
                        *p = r->next;
                        break;
                }
        f->n_live--;
        f->n_finished++;
        if (strcmp(reason, "cancelled") == 0)
                f->n_cancelled++;
        r->cb.finished(r, reason, &st, r->userdata);
        request_free(r);
}

static void fake_cancel(void *ctx, GenRequest *r) {
        r->cancelled = true;
}

static void fake_cancel_caller(void *ctx, const char *caller_id) {
}

static uint64_t fake_request_id(void *ctx, GenRequest *r) {
        return r->id;
}

unsigned fake_pump(Fake *f) {
        GenRequest *r, *next;

        for (r = f->live; r; r = next) {
                next = r->next;
                if (r->cancelled) {
                        finish(r, "cancelled");
                        continue;
                }
                const char *w = r->words[r->n_emitted % r->n_words];
                bool stop = false;
                for (size_t i = 0; i < r->n_stop; i++)
                        if (strncmp(w, r->stop[i], strlen(w) - 1) == 0 && strlen(r->stop[i]) == strlen(w) - 1)
                                stop = true;
                if (stop) {
                        finish(r, "stop");
                        continue;
                }
                r->cb.token(r, w, (int32_t) (r->n_emitted % r->n_words), -0.25f * (float) (r->n_emitted + 1),
                            r->userdata);
                r->n_emitted++;
                if ((int32_t) r->n_emitted >= r->max_tokens)
                        finish(r, "length");
        }
        return f->n_live;
}

void fake_finish_all(Fake *f, const char *reason) {
        while (f->live)
                finish(f->live, reason);
}

static int fake_model_at(void *ctx, size_t i, ModelStatus *ret) {
        if (i > 0)
                return -ENOENT;
        *ret = (ModelStatus) {
                .name = "tiny",
                .path = "/models/tiny.gguf",
                .precision = QD_PRECISION_INT8,
                .pinned = QD_PRECISION_AUTO,
                .active_requests = ((Fake *) ctx)->n_live,
        };
        snprintf(ret->info.arch, sizeof ret->info.arch, "llama");
        snprintf(ret->info.file_type, sizeof ret->info.file_type, "F16");
        ret->info.n_vocab = 256;
        return 0;
}

static int fake_load(void *ctx, const Caller *c, const char *path, const char *name, QdPrecision p,
                     char **ret_name) {
        Fake *f = ctx;

        if (strncmp(path, "/models/", 8) != 0)
                return -EPERM;
        *ret_name = strdup(name ? name : "loaded");
        if (!*ret_name)
                return -ENOMEM;
        f->n_loaded++;
        return 0;
}

static int fake_unload(void *ctx, const Caller *c, const char *name) {
        return strcmp(name, "tiny") == 0 ? 0 : -ENOENT;
}

static int fake_tokenize(void *ctx, const char *model, const char *text, bool add_bos,
                         int32_t **ret_tokens, size_t *ret_n) {
        size_t n = strlen(text) + add_bos, k = 0;
        int32_t *t;

        if (strcmp(model, "tiny") != 0)
                return -ENOENT;
        t = malloc((n + 1) * sizeof(int32_t));
        if (!t)
                return -ENOMEM;
        if (add_bos)
                t[k++] = 1;
        for (const unsigned char *p = (const unsigned char *) text; *p; p++)
                t[k++] = *p;
        *ret_tokens = t;
        *ret_n = k;
        return 0;
}

static int fake_detokenize(void *ctx, const char *model, const int32_t *tokens, size_t n, char **ret) {
        char *s;
        size_t k = 0;

        if (strcmp(model, "tiny") != 0)
                return -ENOENT;
        s = malloc(n + 1);
        if (!s)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (tokens[i] > 255) {
                        free(s);
                        return -EINVAL;
                }
                if (tokens[i] > 1)
                        s[k++] = (char) tokens[i];
        }
        s[k] = 0;
        *ret = s;
        return 0;
}

static int fake_set_precision(void *ctx, const Caller *c, const char *model, QdPrecision p,
                              const char *reason) {
        Fake *f = ctx;

        if (strcmp(model, "tiny") != 0)
                return -ENOENT;
        snprintf(f->precision, sizeof f->precision, "%d", (int) p);
        return 0;
}

static int fake_status(void *ctx, json_t **ret) {
        *ret = json_pack("{s:{s:s},s:i}", "device", "name", "fake", "models", 1);
        return *ret ? 0 : -ENOMEM;
}

const HttpBackend fake_backend = {
        .generate = fake_generate,
        .cancel = fake_cancel,
        .cancel_caller = fake_cancel_caller,
        .request_id = fake_request_id,
        .model_at = fake_model_at,
        .load_model = fake_load,
        .unload_model = fake_unload,
        .tokenize = fake_tokenize,
        .detokenize = fake_detokenize,
        .set_precision = fake_set_precision,
        .status = fake_status,
};
