/* Shared between quantctl.c (options, the basic commands) and quantctl-jobs.c. */
#pragma once

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

extern bool arg_json;
/* quantize / eval options (NULL / 0 when not given). */
extern const char *arg_type, *arg_method, *arg_calib, *arg_text, *arg_ref;
extern int64_t arg_samples, arg_ctx, arg_max_windows;

int error_exit(const sd_bus_error *e, int r, const char *what);

/* quantctl-jobs.c */
int cmd_quantize(sd_bus *bus, char **args, int n);
int cmd_eval(sd_bus *bus, char **args, int n);
