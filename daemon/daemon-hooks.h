/* Parts of the daemon that other areas provide, compiled in when they exist:
 *
 *  - The HTTP front end (ipc/http-*.c): when ipc/meson.build defines `http_server_dep`, the
 *    daemon is built with HAVE_HTTP_SERVER and calls http_server_new() after the bus is up and
 *    http_server_free() at shutdown. The server listens on manager_config(m)->socket_fd when it
 *    is >= 0 (socket activation: the daemon took it from LISTEN_FDS), else it binds
 *    manager_config(m)->socket_path itself (mode 0660).
 *
 *  - The precision policy glue (daemon/daemon-policy.c): when that file exists it is compiled
 *    in with HAVE_DAEMON_POLICY. It changes precision with manager_set_precision(m, NULL, ...)
 *    (reason required), evicts with manager_unload_model(m, NULL, name), and listens with
 *    manager_add_listener(). daemon_policy_status() fills the JSON object that D-Bus GetPolicy()
 *    and `quantctl policy` show; the daemon adds its own "models" array beside it.
 */
#pragma once

#include <jansson.h>

#include "manager.h"

typedef struct HttpServer HttpServer;
int http_server_new(Manager *m, HttpServer **ret);
HttpServer *http_server_free(HttpServer *s);

typedef struct DaemonPolicy DaemonPolicy;
int daemon_policy_new(Manager *m, DaemonPolicy **ret);
DaemonPolicy *daemon_policy_free(DaemonPolicy *p);
/* After SIGHUP, once manager_reload() swapped the configuration in. */
int daemon_policy_reload(DaemonPolicy *p);
/* Adds the policy's state (inputs, decisions, thresholds) to obj. */
int daemon_policy_status(DaemonPolicy *p, json_t *obj);

/* The D-Bus front end's hook for GetPolicy(): set by the daemon when a policy exists. */
typedef int (*PolicyStatusHook)(void *userdata, json_t *obj);
