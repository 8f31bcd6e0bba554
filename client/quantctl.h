/* Shared between quantctl.c (options, the D-Bus commands, output), quantctl-jobs.c (D-Bus jobs)
 * and quantctl-http.c (every command over the HTTP API on a Unix socket). */
#pragma once

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#define BUS_NAME "org.quantd.Quantd1"
#define MANAGER_PATH "/org/quantd/Quantd1"
#define MANAGER_IFACE "org.quantd.Quantd1.Manager"
#define MODEL_IFACE "org.quantd.Quantd1.Model"
#define REQUEST_IFACE "org.quantd.Quantd1.Request"
#define JOB_IFACE "org.quantd.Quantd1.Job"

enum {
        EXIT_OK = 0,
        EXIT_ERROR = 1,
        EXIT_USAGE = 2,
        EXIT_UNREACHABLE = 3,
        EXIT_BUSY = 4,
};

extern bool arg_json, arg_raw;
extern const char *arg_name, *arg_precision;
extern int64_t arg_max_tokens, arg_seed;       /* -1 when not given */
extern double arg_temperature;                  /* -1 when not given */
/* quantize / eval options (NULL / 0 when not given). */
extern const char *arg_type, *arg_method, *arg_calib, *arg_text, *arg_ref;
extern int64_t arg_samples, arg_ctx, arg_max_windows;

int error_exit(const sd_bus_error *e, int r, const char *what);

/* Output shared by both transports; the JSON has the D-Bus properties' names either way. */
void print_status(json_t *st);
void print_models(json_t *arr);
void print_policy(json_t *o);
void print_job_result(bool quantize, json_t *res);

/* One generation streamed to stdout. */
typedef struct Stream {
        const char *path;
        char *text;
        size_t len;
        char *reason;
        json_t *stats;
        bool done;
} Stream;
int stream_token(Stream *s, const char *text, int token, double logprob);
int stream_end(Stream *s);      /* after Finished: prints the end, returns the exit code */
void stream_done(Stream *s);

typedef int (*GenerateFn)(void *ctx, const char *model, const char *prompt, json_t *messages, Stream *s);
int generate_prompt(GenerateFn gen, void *ctx, const char *model, const char *prompt, bool chat_template);
int chat_loop(GenerateFn gen, void *ctx, const char *model);

/* quantctl-jobs.c */
/* A file the user names, as an absolute path when it exists here (else as given). */
const char *file_arg(const char *p, char buf[PATH_MAX]);
int cmd_quantize(sd_bus *bus, char **args, int n);
int cmd_eval(sd_bus *bus, char **args, int n);

/* quantctl-http.c */
int http_status(const char *socket, char **args, int n);
int http_models(const char *socket, char **args, int n);
int http_load(const char *socket, char **args, int n);
int http_unload(const char *socket, char **args, int n);
int http_generate(const char *socket, char **args, int n);
int http_chat(const char *socket, char **args, int n);
int http_tokenize(const char *socket, char **args, int n);
int http_precision(const char *socket, char **args, int n);
int http_policy(const char *socket, char **args, int n);
int http_quantize(const char *socket, char **args, int n);
int http_eval(const char *socket, char **args, int n);
