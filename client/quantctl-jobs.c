/* quantctl quantize / eval: starts a daemon job, shows its progress, prints its result. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "quantctl.h"

typedef struct JobWatch {
        const char *path;
        char *state;
        bool done;
        double shown;
} JobWatch;

static int on_job_signal(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        JobWatch *w = userdata;
        const char *path = sd_bus_message_get_path(m);

        if (!w->path || !path || !streq(path, w->path))
                return 0;
        if (sd_bus_message_is_signal(m, JOB_IFACE, "Finished")) {
                const char *state;
                if (sd_bus_message_read(m, "s", &state) >= 0) {
                        free(w->state);
                        w->state = strdup(state);
                        w->done = true;
                }
        }
        return 0;
}

/* Files the user names are passed as absolute paths when they exist here; the daemon checks
 * that they lie inside a model directory (else a name relative to one). */
const char *file_arg(const char *p, char buf[PATH_MAX]) {
        if (p && access(p, R_OK) == 0 && realpath(p, buf))
                return buf;
        return p;
}

static int run_job(sd_bus *bus, const char *method, const char *model, json_t **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_free_ char *result = NULL, *err = NULL;
        char buf[PATH_MAX], buf2[PATH_MAX];
        bool quantize = streq(method, "Quantize");
        JobWatch w = { .shown = -1 };
        int r;

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, method);
        if (r >= 0)
                r = sd_bus_message_append(m, "s", model);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && quantize && arg_type)
                r = sd_bus_message_append(m, "{sv}", "type", "s", arg_type);
        if (r >= 0 && quantize && arg_method)
                r = sd_bus_message_append(m, "{sv}", "method", "s", arg_method);
        if (r >= 0 && quantize && arg_calib)
                r = sd_bus_message_append(m, "{sv}", "calibration", "s", file_arg(arg_calib, buf));
        if (r >= 0 && quantize && arg_samples > 0)
                r = sd_bus_message_append(m, "{sv}", "samples", "t", (uint64_t) arg_samples);
        if (r >= 0 && arg_ctx > 0)
                r = sd_bus_message_append(m, "{sv}", "ctx", "t", (uint64_t) arg_ctx);
        if (r >= 0 && !quantize && arg_text)
                r = sd_bus_message_append(m, "{sv}", "text_file", "s", file_arg(arg_text, buf));
        if (r >= 0 && !quantize && arg_ref)
                r = sd_bus_message_append(m, "{sv}", "reference", "s", file_arg(arg_ref, buf2));
        if (r >= 0 && !quantize && arg_max_windows > 0)
                r = sd_bus_message_append(m, "{sv}", "max_windows", "t", (uint64_t) arg_max_windows);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return error_exit(NULL, r, "Cannot build the request");

        /* Job signals are broadcast: match them before the call so that none is missed. */
        r = sd_bus_add_match(bus, &slot,
                             "type='signal',sender='" BUS_NAME "',path_namespace='/org/quantd/Quantd1/job'",
                             on_job_signal, &w);
        if (r < 0)
                return error_exit(NULL, r, "Cannot subscribe to job signals");
        r = sd_bus_call(bus, m, 0, &error, &reply);
        if (r < 0)
                return error_exit(&error, r, quantize ? "Cannot quantize" : "Cannot evaluate");
        r = sd_bus_message_read(reply, "o", &w.path);
        if (r < 0)
                return error_exit(NULL, r, "Bad reply");

        while (!w.done) {
                double p = 0;
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return error_exit(NULL, r, "Lost the daemon");
                if (r > 0)
                        continue;
                if (!arg_json && isatty(STDERR_FILENO) &&
                    sd_bus_get_property_trivial(bus, BUS_NAME, w.path, JOB_IFACE, "Progress", NULL, 'd', &p) >= 0 &&
                    p != w.shown) {
                        fprintf(stderr, "\r%s: %3.0f%%", quantize ? "quantizing" : "evaluating", p * 100);
                        w.shown = p;
                }
                r = sd_bus_wait(bus, 500000);
                if (r < 0)
                        return error_exit(NULL, r, "Lost the daemon");
        }
        if (w.shown >= 0)
                fputc('\n', stderr);
        r = sd_bus_get_property_string(bus, BUS_NAME, w.path, JOB_IFACE, "Result", &error, &result);
        if (r >= 0)
                r = sd_bus_get_property_string(bus, BUS_NAME, w.path, JOB_IFACE, "Error", &error, &err);
        if (r < 0) {
                free(w.state);
                return error_exit(&error, r, "Cannot read the job's result");
        }
        if (!streq(w.state, "done")) {
                fprintf(stderr, "Job %s: %s%s%s\n", w.state, w.path, *err ? ": " : "", err);
                free(w.state);
                return EXIT_ERROR;
        }
        free(w.state);
        *ret = json_loads(result, 0, NULL);
        if (!*ret)
                return error_exit(NULL, -EBADMSG, "Bad job result");
        return EXIT_OK;
}

static void row(json_t *res, const char *key, const char *label, int decimals) {
        json_t *v = json_object_get(res, key);

        if (json_is_number(v))
                printf("%-22s %.*f\n", label, decimals, json_number_value(v));
}

void print_job_result(bool quantize, json_t *res) {
        if (arg_json)
                json_dumpf(res, stdout, JSON_COMPACT), putchar('\n');
        else if (quantize)
                printf("%s\n", json_string_value(json_object_get(res, "path")) ?: "");
        else {
                row(res, "ppl", "perplexity", 4);
                row(res, "ppl_err", "  ± (stderr)", 4);
                row(res, "ref_ppl", "reference perplexity", 4);
                row(res, "kl_mean", "KL mean (nats)", 6);
                row(res, "kl_p99", "KL p99 (nats)", 6);
                row(res, "top1", "top-1 agreement", 4);
                row(res, "bpw", "bits per weight", 3);
                row(res, "tokens_scored", "tokens scored", 0);
        }
}

int cmd_quantize(sd_bus *bus, char **args, int n) {
        json_t *res = NULL;
        int r;

        r = run_job(bus, "Quantize", args[0], &res);
        if (r != EXIT_OK)
                return r;
        print_job_result(true, res);
        json_decref(res);
        return EXIT_OK;
}

int cmd_eval(sd_bus *bus, char **args, int n) {
        json_t *res = NULL;
        int r;

        r = run_job(bus, "Evaluate", args[0], &res);
        if (r != EXIT_OK)
                return r;
        print_job_result(false, res);
        json_decref(res);
        return EXIT_OK;
}
