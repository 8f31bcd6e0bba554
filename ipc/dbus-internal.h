/* Private to ipc/dbus-*.c. */
#pragma once

#include <systemd/sd-bus.h>

#include "dbus-server.h"

#define QD_BUS_NAME "org.quantd.Quantd1"
#define QD_MANAGER_PATH "/org/quantd/Quantd1"
#define QD_MANAGER_IFACE "org.quantd.Quantd1.Manager"
#define QD_MODEL_PREFIX "/org/quantd/Quantd1/model"
#define QD_MODEL_IFACE "org.quantd.Quantd1.Model"
#define QD_REQUEST_PREFIX "/org/quantd/Quantd1/request"
#define QD_REQUEST_IFACE "org.quantd.Quantd1.Request"
#define QD_JOB_PREFIX "/org/quantd/Quantd1/job"
#define QD_JOB_IFACE "org.quantd.Quantd1.Job"
#define QD_ERROR_NO_SUCH_MODEL "org.quantd.Quantd1.Error.NoSuchModel"
#define QD_ERROR_BUSY "org.quantd.Quantd1.Error.Busy"
#define QD_ERROR_NOT_ALLOWED "org.quantd.Quantd1.Error.PathNotAllowed"
#define QD_ERROR_TOO_LARGE "org.quantd.Quantd1.Error.TooLarge"
#define QD_ERROR_EXISTS "org.quantd.Quantd1.Error.Exists"
#define QD_ERROR_FAILED "org.quantd.Quantd1.Error.Failed"

typedef struct DbusRequest DbusRequest;
typedef struct BusLoop BusLoop;
typedef struct AuthQuery AuthQuery;

struct DbusServer {
        Manager *manager;
        sd_bus *bus;
        BusLoop *loop;
        bool user;
        sd_bus_slot *manager_slot, *model_slot, *model_enum_slot, *request_slot, *request_enum_slot,
                *owner_slot, *job_slot, *job_enum_slot;
        DbusRequest *requests;          /* live requests, newest first */
        AuthQuery *auth_queries;        /* polkit checks in flight or answered */
        sd_bus *polkit_bus;             /* --user: the system bus, for polkit only */
        BusLoop *polkit_loop;
        PolicyStatusHook policy_hook;
        void *policy_userdata;
};

/* dbus-loop.c: sd-bus driven by libuv. */
int bus_loop_attach(sd_bus *bus, uv_loop_t *loop, BusLoop **ret);
BusLoop *bus_loop_detach(BusLoop *l);

/* dbus-auth.c: fills c for the sender of m; c->privileged after the uid/polkit check when
 * check_privileged. c->id points into m. Returns 1 when a polkit check was started: the
 * handler must return 1 at once; m is dispatched again, from the start, once polkit answered
 * (the method's reply waits, other clients are served meanwhile). */
int dbus_caller(DbusServer *s, sd_bus_message *m, bool check_privileged, Caller *c);
void dbus_auth_free(DbusServer *s);

/* dbus-request.c */
int dbus_request_generate(DbusServer *s, sd_bus_message *m, sd_bus_error *error);
int dbus_request_register(DbusServer *s);
void dbus_requests_free(DbusServer *s);

/* dbus-job.c: Quantize()/Evaluate() (Manager methods) and the Job objects. */
int dbus_method_quantize(sd_bus_message *m, void *userdata, sd_bus_error *error);
int dbus_method_evaluate(sd_bus_message *m, void *userdata, sd_bus_error *error);
int dbus_job_register(DbusServer *s);
void dbus_job_unregister(DbusServer *s);

/* dbus-manager.c */
int dbus_reply_errno(sd_bus_message *m, int r, sd_bus_error *error, const char *what);
char *dbus_model_path(const char *name);
