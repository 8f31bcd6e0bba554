/* The D-Bus front end: org.quantd.Quantd1 on the system or session bus, attached to the loop. */
#pragma once

#include <stdbool.h>

#include "daemon-hooks.h"
#include "manager.h"

typedef struct DbusServer DbusServer;

/* Connects (system bus, or session bus when user), exports the objects and takes the name.
 * $QUANTD_BUS_ADDRESS overrides the bus address (tests). */
int dbus_server_new(Manager *m, bool user, DbusServer **ret);
DbusServer *dbus_server_free(DbusServer *s);
/* Writes out everything queued (Finished signals at shutdown). */
int dbus_server_flush(DbusServer *s);
void dbus_server_set_policy_hook(DbusServer *s, PolicyStatusHook hook, void *userdata);
