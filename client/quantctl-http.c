/* quantctl --socket PATH: every command over quantd's HTTP API on a Unix socket (the native
 * /api/ endpoints, docs/HTTP.md). One connection per request, "Connection: close"; responses
 * with Content-Length or chunked bodies; /api/generate streams server-sent events. The JSON
 * printed with --json has the same shape as over D-Bus (the D-Bus properties' names). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "macro.h"
#include "quantctl.h"

typedef struct Reader {
        int fd;
        char buf[16384];
        size_t start, end;
} Reader;

/* Called with each piece of the decoded body; < 0 stops reading. */
typedef int (*BodyFn)(const char *data, size_t n, void *userdata);

static int http_connect(const char *path, int *ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        *ret = fd;
        return 0;
}

static int write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

static int fill(Reader *rd) {
        ssize_t k;

        if (rd->start > 0) {
                memmove(rd->buf, rd->buf + rd->start, rd->end - rd->start);
                rd->end -= rd->start;
                rd->start = 0;
        }
        if (rd->end == sizeof(rd->buf))
                return -E2BIG;
        do
                k = read(rd->fd, rd->buf + rd->end, sizeof(rd->buf) - rd->end);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return -errno;
        if (k == 0)
                return -ECONNRESET;
        rd->end += (size_t) k;
        return 0;
}

/* The next line without its CRLF, NUL-terminated in the buffer; valid until the next read. */
static int read_line(Reader *rd, char **ret) {
        for (;;) {
                char *nl = memchr(rd->buf + rd->start, '\n', rd->end - rd->start);
                if (nl) {
                        char *line = rd->buf + rd->start;
                        rd->start = (size_t) (nl - rd->buf) + 1;
                        *nl = 0;
                        if (nl > line && nl[-1] == '\r')
                                nl[-1] = 0;
                        *ret = line;
                        return 0;
                }
                int r = fill(rd);
                if (r < 0)
                        return r;
        }
}

/* n body bytes (n < 0: until the end of the stream) handed to fn as they arrive. */
static int read_bytes(Reader *rd, int64_t n, BodyFn fn, void *userdata) {
        while (n != 0) {
                if (rd->start == rd->end) {
                        int r = fill(rd);
                        if (r == -ECONNRESET && n < 0)
                                return 0;
                        if (r < 0)
                                return r;
                }
                size_t k = rd->end - rd->start;
                if (n > 0 && (uint64_t) n < k)
                        k = (size_t) n;
                int r = fn(rd->buf + rd->start, k, userdata);
                rd->start += k;
                if (n > 0)
                        n -= (int64_t) k;
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Sends one request and reads the answer: *ret_status, and the body through fn. */
static int http_exchange(const char *socket, const char *method, const char *path, json_t *body, BodyFn fn,
                         void *userdata, unsigned *ret_status) {
        _cleanup_free_ char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL, *head = NULL;
        Reader rd = { .fd = -1 };
        int64_t length = -1;
        bool chunked = false;
        char *line;
        int r, n;

        if (body && !payload)
                return -ENOMEM;
        r = http_connect(socket, &rd.fd);
        if (r < 0)
                return r;
        n = asprintf(&head,
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json, "
                     "text/event-stream\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, payload ? strlen(payload) : 0);
        if (n < 0) {
                close(rd.fd);
                return -ENOMEM;
        }
        r = write_all(rd.fd, head, (size_t) n);
        if (r >= 0 && payload)
                r = write_all(rd.fd, payload, strlen(payload));
        /* A refused request may be answered (and closed) before the body is written: read on. */
        if (r < 0 && r != -EPIPE && r != -ECONNRESET)
                goto out;

        do {    /* 1xx answers (100 Continue) come before the real one */
                r = read_line(&rd, &line);
                if (r < 0)
                        goto out;
                if (sscanf(line, "HTTP/1.%*d %u", ret_status) != 1) {
                        r = -EBADMSG;
                        goto out;
                }
                for (;;) {
                        r = read_line(&rd, &line);
                        if (r < 0)
                                goto out;
                        if (!*line)
                                break;
                        if (strncasecmp(line, "Content-Length:", 15) == 0)
                                length = strtoll(line + 15, NULL, 10);
                        else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0 && strcasestr(line + 18, "chunked"))
                                chunked = true;
                }
        } while (*ret_status < 200);

        if (!chunked) {
                r = read_bytes(&rd, length, fn, userdata);
                goto out;
        }
        for (;;) {
                char *end;
                r = read_line(&rd, &line);
                if (r < 0)
                        goto out;
                long long size = strtoll(line, &end, 16);
                if (end == line || size < 0) {
                        r = -EBADMSG;
                        goto out;
                }
                if (size == 0)
                        break;
                r = read_bytes(&rd, size, fn, userdata);
                if (r >= 0)
                        r = read_line(&rd, &line);
                if (r < 0)
                        goto out;
        }
        r = 0;
out:
        close(rd.fd);
        return r;
}

typedef struct Buffer {
        char *data;
        size_t size;
} Buffer;

static int buffer_add(const char *data, size_t n, void *userdata) {
        Buffer *b = userdata;
        char *d = realloc(b->data, b->size + n + 1);

        if (!d)
                return -ENOMEM;
        memcpy(d + b->size, data, n);
        b->data = d;
        b->size += n;
        d[b->size] = 0;
        return 0;
}

/* Prints an HTTP failure like error_exit() and maps it to quantctl's exit codes. */
static int http_error_exit(const char *socket, int r, unsigned status, json_t *reply, const char *what) {
        json_t *e = json_object_get(reply, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        char buf[256];

        if (r < 0) {
                bool unreachable = r == -ENOENT || r == -ECONNREFUSED || r == -ENOTSOCK || r == -EACCES ||
                                   r == -ENAMETOOLONG;
                snprintf(buf, sizeof(buf), "%s%s: %s", unreachable ? "Cannot connect to " : "Lost the daemon at ",
                         socket, strerror(-r));
                msg = buf;
                code = unreachable ? "unreachable" : "disconnected";
        } else if (!msg) {
                snprintf(buf, sizeof(buf), "HTTP status %u", status);
                msg = buf;
        }
        if (arg_json) {
                json_t *o = json_pack("{s:s, s:s, s:s}", "error", what, "name", code ?: "", "message", msg);
                json_dumpf(o, stdout, JSON_COMPACT);
                putchar('\n');
                json_decref(o);
        } else
                fprintf(stderr, "%s: %s\n", what, msg);
        if (r < 0)
                return streq(code, "unreachable") ? EXIT_UNREACHABLE : EXIT_ERROR;
        if (status == 503 && streq_ptr(code, "busy"))
                return EXIT_BUSY;
        return EXIT_ERROR;
}

/* One request with a JSON answer: EXIT_OK and *ret (new reference), or the exit code after the
 * error was printed. body is consumed. */
static int http_call(const char *socket, const char *method, const char *path, json_t *body, const char *what,
                     json_t **ret) {
        Buffer b = {};
        unsigned status = 0;
        json_t *j = NULL;
        int r, x;

        r = http_exchange(socket, method, path, body, buffer_add, &b, &status);
        json_decref(body);
        if (r >= 0)
                j = b.data ? json_loadb(b.data, b.size, 0, NULL) : NULL;
        free(b.data);
        if (r < 0 || status >= 300 || !j) {
                x = http_error_exit(socket, r, status, j, what);
                json_decref(j);
                return x;
        }
        *ret = j;
        return EXIT_OK;
}

/* A path segment, percent-encoded. */
static char *escape_segment(const char *s) {
        char *o = malloc(strlen(s) * 3 + 1), *p = o;

        if (!o)
                return NULL;
        for (; *s; s++) {
                unsigned char ch = (unsigned char) *s;
                if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("-._~", ch))
                        *p++ = (char) ch;
                else
                        p += sprintf(p, "%%%02X", ch);
        }
        *p = 0;
        return o;
}

/* /api/models' entry under the names the D-Bus Model properties have. */
static json_t *model_as_dbus(json_t *m) {
        _cleanup_free_ char *object = NULL;
        const char *name = json_string_value(json_object_get(m, "name"));

        if (!name || sd_bus_path_encode(MANAGER_PATH "/model", name, &object) < 0)
                return json_object();
        return json_pack("{s:s, s:O*, s:O*, s:O*, s:O*, s:O*, s:O*, s:O*, s:O*, s:O*, s:O*, s:O*, s:O*, s:O*}",
                         "object", object, "Name", json_object_get(m, "name"), "Path", json_object_get(m, "path"),
                         "Architecture", json_object_get(m, "arch"), "FileType", json_object_get(m, "file_type"),
                         "Parameters", json_object_get(m, "n_params"), "ContextLength",
                         json_object_get(m, "n_ctx_train"), "HasChatTemplate", json_object_get(m, "has_chat_template"),
                         "Precision", json_object_get(m, "precision"), "Pinned", json_object_get(m, "pinned"),
                         "HostBytes", json_object_get(m, "host_bytes"), "DeviceBytes",
                         json_object_get(m, "device_bytes"), "Active", json_object_get(m, "active_requests"),
                         "Queued", json_object_get(m, "queued_requests"));
}

static int get_models(const char *socket, json_t **ret) {
        json_t *reply = NULL, *arr, *m;
        size_t i;
        int x;

        x = http_call(socket, "GET", "/api/models", NULL, "Cannot list models", &reply);
        if (x != EXIT_OK)
                return x;
        arr = json_array();
        json_array_foreach(json_object_get(reply, "models"), i, m)
                json_array_append_new(arr, model_as_dbus(m));
        json_decref(reply);
        *ret = arr;
        return EXIT_OK;
}

int http_status(const char *socket, char **args, int n) {
        json_t *st = NULL, *models = NULL, *dev, *paths, *m;
        size_t i;
        int x;

        x = http_call(socket, "GET", "/api/status", NULL, "Cannot get the status", &st);
        if (x != EXIT_OK)
                return x;
        x = get_models(socket, &models);
        if (x != EXIT_OK) {
                json_decref(st);
                return x;
        }
        dev = json_object_get(st, "device");
        paths = json_array();
        json_array_foreach(models, i, m)
                json_array_append(paths, json_object_get(m, "object"));
        json_t *o = json_pack("{s:O*, s:O*, s:O*, s:O*, s:o, s:O*, s:O*, s:o}", "Version",
                              json_object_get(st, "version"), "Device", json_object_get(dev, "name"),
                              "DeviceMemoryTotal", json_object_get(dev, "memory_total"), "DeviceMemoryUsed",
                              json_object_get(dev, "memory_used"), "Models", paths, "ActiveRequests",
                              json_object_get(st, "active_requests"), "QueuedRequests",
                              json_object_get(st, "queued_requests"), "Models", models);
        json_decref(st);
        if (!o)
                return http_error_exit(socket, -ENOMEM, 0, NULL, "Cannot get the status");
        print_status(o);
        json_decref(o);
        return EXIT_OK;
}

int http_models(const char *socket, char **args, int n) {
        json_t *models = NULL;
        int x = get_models(socket, &models);

        if (x != EXIT_OK)
                return x;
        print_models(models);
        json_decref(models);
        return EXIT_OK;
}

int http_load(const char *socket, char **args, int n) {
        _cleanup_free_ char *abs = realpath(args[0], NULL), *object = NULL;
        json_t *body, *reply = NULL;
        int x;

        body = json_pack("{s:s, s:s?, s:s?}", "path", abs ?: args[0], "name", arg_name, "precision", arg_precision);
        x = http_call(socket, "POST", "/api/models/load", body, "Cannot load the model", &reply);
        if (x != EXIT_OK)
                return x;
        if (sd_bus_path_encode(MANAGER_PATH "/model", json_string_value(json_object_get(reply, "name")) ?: "",
                               &object) < 0)
                object = NULL;
        json_decref(reply);
        if (arg_json)
                printf("{\"object\": \"%s\"}\n", object ?: "");
        else
                printf("%s\n", object ?: "");
        return EXIT_OK;
}

int http_unload(const char *socket, char **args, int n) {
        json_t *reply = NULL;
        int x = http_call(socket, "POST", "/api/models/unload", json_pack("{s:s}", "name", args[0]),
                          "Cannot unload the model", &reply);
        json_decref(reply);
        return x;
}

int http_precision(const char *socket, char **args, int n) {
        _cleanup_free_ char *seg = escape_segment(args[0]), *path = NULL;
        json_t *reply = NULL;
        int x;

        if (!seg || asprintf(&path, "/api/models/%s/precision", seg) < 0)
                return http_error_exit(socket, -ENOMEM, 0, NULL, "Cannot set the precision");
        x = http_call(socket, "POST", path, json_pack("{s:s}", "precision", args[1]), "Cannot set the precision",
                      &reply);
        json_decref(reply);
        return x;
}

int http_tokenize(const char *socket, char **args, int n) {
        json_t *reply = NULL, *v;
        size_t i;
        int x;

        x = http_call(socket, "POST", "/api/tokenize", json_pack("{s:s, s:s}", "model", args[0], "text", args[1]),
                      "Cannot tokenize", &reply);
        if (x != EXIT_OK)
                return x;
        printf(arg_json ? "[" : "");
        json_array_foreach(json_object_get(reply, "tokens"), i, v)
                printf("%s%" JSON_INTEGER_FORMAT, i == 0 ? "" : arg_json ? ", " : " ", json_integer_value(v));
        printf(arg_json ? "]\n" : "\n");
        json_decref(reply);
        return EXIT_OK;
}

int http_policy(const char *socket, char **args, int n) {
        json_t *o = NULL;
        int x = http_call(socket, "GET", "/api/policy", NULL, "Cannot get the policy", &o);

        if (x != EXIT_OK)
                return x;
        print_policy(o);
        json_decref(o);
        return EXIT_OK;
}

/* Server-sent events of /api/generate, split as they arrive. */
typedef struct SseState {
        Buffer b;
        Stream *s;
        bool failed;
        json_t *error;          /* an error response (status >= 300) is read whole instead */
} SseState;

static int sse_event(SseState *st, char *ev) {
        for (char *line = strtok(ev, "\n"); line; line = strtok(NULL, "\n")) {
                json_t *j;

                if (strncmp(line, "data: ", 6) != 0 || streq(line + 6, "[DONE]"))
                        continue;
                j = json_loads(line + 6, 0, NULL);
                if (!j)
                        return -EBADMSG;
                if (json_object_get(j, "finish_reason")) {
                        free(st->s->reason);
                        st->s->reason = strdup(json_string_value(json_object_get(j, "finish_reason")) ?: "error");
                        json_decref(st->s->stats);
                        st->s->stats = json_incref(json_object_get(j, "stats")) ?: json_object();
                        st->s->done = true;
                } else if (stream_token(st->s, json_string_value(json_object_get(j, "text")) ?: "",
                                        (int) json_integer_value(json_object_get(j, "token")),
                                        json_number_value(json_object_get(j, "logprob"))) < 0) {
                        json_decref(j);
                        return -ENOMEM;
                }
                json_decref(j);
        }
        return 0;
}

static int sse_feed(const char *data, size_t n, void *userdata) {
        SseState *st = userdata;
        char *sep;
        int r;

        r = buffer_add(data, n, &st->b);
        if (r < 0)
                return r;
        while (st->b.data && (sep = strstr(st->b.data, "\n\n"))) {
                size_t k = (size_t) (sep - st->b.data) + 2;
                *sep = 0;
                r = sse_event(st, st->b.data);
                memmove(st->b.data, st->b.data + k, st->b.size - k + 1);
                st->b.size -= k;
                if (r < 0)
                        return r;
        }
        return 0;
}

typedef struct HttpGen {
        const char *socket;
} HttpGen;

static int http_generate_one(void *ctx, const char *model, const char *prompt, json_t *messages, Stream *s) {
        HttpGen *g = ctx;
        SseState st = { .s = s };
        unsigned status = 0;
        json_t *body;
        int r;

        body = json_pack("{s:s, s:b}", "model", model, "stream", true);
        if (!body)
                return http_error_exit(g->socket, -ENOMEM, 0, NULL, "Cannot generate");
        if (messages)
                json_object_set(body, "messages", messages);
        else
                json_object_set_new(body, "prompt", json_string(prompt));
        if (arg_max_tokens > 0)
                json_object_set_new(body, "max_tokens", json_integer(arg_max_tokens));
        if (arg_temperature >= 0)
                json_object_set_new(body, "temperature", json_real(arg_temperature));
        if (arg_seed >= 0)
                json_object_set_new(body, "seed", json_integer(arg_seed));

        /* Errors before the stream (400, 404, 503 busy) come as one JSON body: that is what the
         * SSE splitter then holds, undelimited. */
        r = http_exchange(g->socket, "POST", "/api/generate", body, sse_feed, &st, &status);
        json_decref(body);
        if (r >= 0 && status >= 300) {
                json_t *j = st.b.data ? json_loads(st.b.data, 0, NULL) : NULL;
                free(st.b.data);
                r = http_error_exit(g->socket, 0, status, j, "Cannot generate");
                json_decref(j);
                return r;
        }
        free(st.b.data);
        if (r < 0 || !s->done)
                return http_error_exit(g->socket, r < 0 ? r : -ECONNRESET, status, NULL, "Cannot generate");
        return stream_end(s);
}

/* Whether the model has a chat template; on doubt, no (the prompt is then sent as is). */
static bool http_has_chat_template(const char *socket, const char *model) {
        Buffer b = {};
        unsigned status = 0;
        json_t *j = NULL, *m;
        bool found = false;
        size_t i;

        if (http_exchange(socket, "GET", "/api/models", NULL, buffer_add, &b, &status) >= 0 && status == 200)
                j = json_loadb(b.data ?: "", b.size, 0, NULL);
        free(b.data);
        json_array_foreach(json_object_get(j, "models"), i, m)
                if (streq_ptr(json_string_value(json_object_get(m, "name")), model))
                        found = json_is_true(json_object_get(m, "has_chat_template"));
        json_decref(j);
        return found;
}

int http_generate(const char *socket, char **args, int n) {
        HttpGen g = { socket };
        return generate_prompt(http_generate_one, &g, args[0], args[1], !arg_raw && http_has_chat_template(socket, args[0]));
}

int http_chat(const char *socket, char **args, int n) {
        HttpGen g = { socket };
        return chat_loop(http_generate_one, &g, args[0]);
}

/* Starts a job, polls it (jobs over HTTP are not tied to a connection), prints its result. */
static int http_job(const char *socket, bool quantize, const char *model) {
        const char *what = quantize ? "Cannot quantize" : "Cannot evaluate";
        char buf[PATH_MAX], buf2[PATH_MAX], path[64];
        json_t *body, *reply = NULL;
        double shown = -1;
        int x;

        body = json_pack("{s:s}", "model", model);
        if (!body)
                return http_error_exit(socket, -ENOMEM, 0, NULL, what);
        if (quantize) {
                if (arg_type)
                        json_object_set_new(body, "type", json_string(arg_type));
                if (arg_method)
                        json_object_set_new(body, "method", json_string(arg_method));
                if (arg_calib)
                        json_object_set_new(body, "calibration", json_string(file_arg(arg_calib, buf)));
                if (arg_samples > 0)
                        json_object_set_new(body, "samples", json_integer(arg_samples));
        } else {
                if (arg_text)
                        json_object_set_new(body, "text_file", json_string(file_arg(arg_text, buf)));
                if (arg_ref)
                        json_object_set_new(body, "reference", json_string(file_arg(arg_ref, buf2)));
                if (arg_max_windows > 0)
                        json_object_set_new(body, "max_windows", json_integer(arg_max_windows));
        }
        if (arg_ctx > 0)
                json_object_set_new(body, "ctx", json_integer(arg_ctx));
        x = http_call(socket, "POST", quantize ? "/api/quantize" : "/api/evaluate", body, what, &reply);
        if (x != EXIT_OK)
                return x;
        snprintf(path, sizeof(path), "/api/jobs/%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(reply, "id")));
        json_decref(reply);

        for (;;) {
                const char *state;
                double p;

                reply = NULL;
                x = http_call(socket, "GET", path, NULL, "Cannot read the job", &reply);
                if (x != EXIT_OK)
                        return x;
                state = json_string_value(json_object_get(reply, "state")) ?: "";
                p = json_number_value(json_object_get(reply, "progress"));
                if (!arg_json && isatty(STDERR_FILENO) && p != shown) {
                        fprintf(stderr, "\r%s: %3.0f%%", quantize ? "quantizing" : "evaluating", p * 100);
                        shown = p;
                }
                if (!streq(state, "queued") && !streq(state, "running"))
                        break;
                json_decref(reply);
                usleep(200 * 1000);
        }
        if (shown >= 0)
                fputc('\n', stderr);
        if (!streq(json_string_value(json_object_get(reply, "state")), "done")) {
                const char *err = json_string_value(json_object_get(reply, "error"));
                fprintf(stderr, "Job %s: %s%s%s\n", json_string_value(json_object_get(reply, "state")), path,
                        err && *err ? ": " : "", err ?: "");
                json_decref(reply);
                return EXIT_ERROR;
        }
        print_job_result(quantize, json_object_get(reply, "result"));
        json_decref(reply);
        return EXIT_OK;
}

int http_quantize(const char *socket, char **args, int n) {
        return http_job(socket, true, args[0]);
}

int http_eval(const char *socket, char **args, int n) {
        return http_job(socket, false, args[0]);
}
