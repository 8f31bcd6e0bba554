/* quantd: command line, the libuv loop, signals, sd_notify and the front ends' lifetime. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "config.h"
#include "daemon-config.h"
#include "daemon-hooks.h"
#include "dbus-server.h"
#if HAVE_HTTP_SERVER
#include "http-server.h"
#endif
#include "log.h"
#include "manager.h"

typedef struct Daemon {
        uv_loop_t loop;
        Manager *manager;
        DbusServer *bus;
#if HAVE_HTTP_SERVER
        HttpServer *http;
#endif
#if HAVE_DAEMON_POLICY
        DaemonPolicy *policy;
#endif
        ConfigOverrides overrides;
        uv_signal_t sig_term, sig_int, sig_hup;
        uv_timer_t watchdog, status;
        bool stopping;
} Daemon;

static char **arg_model_dirs, **arg_models;

static int strv_append(char ***l, const char *s) {
        size_t n = 0;
        char **nl;

        while (*l && (*l)[n])
                n++;
        nl = realloc(*l, (n + 2) * sizeof(char *));
        if (!nl)
                return -ENOMEM;
        nl[n] = strdup(s);
        nl[n + 1] = NULL;
        *l = nl;
        return nl[n] ? 0 : -ENOMEM;
}

static void help(void) {
        printf("quantd [OPTIONS...]\n\n"
               "Keeps quantized language models resident and serves them over D-Bus and a Unix socket.\n\n"
               "  -h --help            Show this help\n"
               "     --version         Show the version\n"
               "     --system          Serve on the system bus, /run/quantd/ (default as root)\n"
               "     --user            Serve on the session bus, $XDG_RUNTIME_DIR/quantd/\n"
               "     --config FILE     Read only FILE instead of the layered configuration\n"
               "     --socket PATH     Unix socket of the HTTP API\n"
               "     --model-dir DIR   Directory models may be loaded from (repeatable)\n"
               "     --model FILE      Load FILE at start (repeatable)\n"
               "     --log-level LEVEL debug, info, notice, warning, err\n"
               "     --cpu             Use the plain-C engine instead of Vulkan\n");
}

static int parse_argv(int argc, char *argv[], ConfigOverrides *o) {
        enum { ARG_VERSION = 0x100, ARG_SYSTEM, ARG_USER, ARG_CONFIG, ARG_SOCKET, ARG_MODEL_DIR, ARG_MODEL,
               ARG_LOG_LEVEL, ARG_CPU };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "system", no_argument, NULL, ARG_SYSTEM },
                { "user", no_argument, NULL, ARG_USER },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "socket", required_argument, NULL, ARG_SOCKET },
                { "model-dir", required_argument, NULL, ARG_MODEL_DIR },
                { "model", required_argument, NULL, ARG_MODEL },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "cpu", no_argument, NULL, ARG_CPU },
                {}
        };
        int c;

        *o = (ConfigOverrides) { .mode = getuid() == 0 ? BUS_MODE_SYSTEM : BUS_MODE_USER, .cpu_only = -1 };
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("quantd %s\n", QUANTD_VERSION);
                        return 0;
                case ARG_SYSTEM:
                        o->mode = BUS_MODE_SYSTEM;
                        break;
                case ARG_USER:
                        o->mode = BUS_MODE_USER;
                        break;
                case ARG_CONFIG:
                        o->config_file = optarg;
                        break;
                case ARG_SOCKET:
                        o->socket_path = optarg;
                        break;
                case ARG_MODEL_DIR:
                        if (strv_append(&arg_model_dirs, optarg) < 0)
                                return log_oom();
                        o->model_dirs = arg_model_dirs;
                        break;
                case ARG_MODEL:
                        if (strv_append(&arg_models, optarg) < 0)
                                return log_oom();
                        o->models = arg_models;
                        break;
                case ARG_LOG_LEVEL:
                        if (log_level_from_string(optarg) < 0)
                                return log_error_errno(EINVAL, "Invalid log level: %s", optarg);
                        o->log_level = optarg;
                        break;
                case ARG_CPU:
                        o->cpu_only = 1;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        return -EINVAL;
                }
        if (optind < argc)
                return log_error_errno(EINVAL, "This program takes no positional arguments.");
        return 1;
}

static void update_status(Daemon *d) {
        char buf[512];
        size_t n = 0;
        Manager *m = d->manager;

        n += (size_t) snprintf(buf, sizeof(buf), "STATUS=%zu model(s)", manager_n_models(m));
        for (size_t i = 0; n < sizeof(buf) - 64; i++) {
                ModelStatus st;
                ManagedModel *mm = manager_model_at(m, i);
                if (!mm)
                        break;
                managed_model_status(mm, &st);
                n += (size_t) snprintf(buf + n, sizeof(buf) - n, "%s %s:%s", i == 0 ? ":" : ",", st.name,
                                       qd_precision_to_string(st.precision));
        }
        if (n < sizeof(buf) - 48)
                snprintf(buf + n, sizeof(buf) - n, "; %u request(s), %u queued", manager_n_live(m),
                         manager_n_waiting(m));
        (void) sd_notify(false, buf);
}

static void status_cb(uv_timer_t *t) {
        update_status(t->data);
}

static void watchdog_cb(uv_timer_t *t) {
        (void) sd_notify(false, "WATCHDOG=1");
}

static void models_changed(Manager *m, void *userdata) {
        Daemon *d = userdata;
        if (!d->stopping)
                update_status(d);
}

static void close_cb(uv_handle_t *h) {
}

static void daemon_stop(Daemon *d, const char *why) {
        if (d->stopping)
                return;
        d->stopping = true;
        log_info("%s, stopping.", why);
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping");

        /* In-flight requests end with "shutdown"; their Finished signals go out before the bus. */
        if (d->manager)
                manager_shutdown(d->manager, "shutdown");
#if HAVE_HTTP_SERVER
        d->http = http_server_free(d->http);
#endif
#if HAVE_DAEMON_POLICY
        d->policy = daemon_policy_free(d->policy);
#endif
        if (d->bus)
                (void) dbus_server_flush(d->bus);
        d->bus = dbus_server_free(d->bus);
        d->manager = manager_free(d->manager);
        uv_close((uv_handle_t *) &d->sig_term, close_cb);
        uv_close((uv_handle_t *) &d->sig_int, close_cb);
        uv_close((uv_handle_t *) &d->sig_hup, close_cb);
        uv_close((uv_handle_t *) &d->watchdog, close_cb);
        uv_close((uv_handle_t *) &d->status, close_cb);
}

static void daemon_reload(Daemon *d) {
        Config *c = NULL;
        char buf[64];
        int r;

        snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, uv_hrtime() / 1000);
        (void) sd_notify(false, buf);
        log_info("Reloading configuration.");
        r = config_load(&d->overrides, &c);
        if (r < 0)
                log_warning_errno(r, "Reloading failed, keeping the old configuration: %m");
        else {
                c->socket_fd = manager_config(d->manager)->socket_fd;
                c->watchdog_usec = manager_config(d->manager)->watchdog_usec;
                log_set_max_level(c->log_level);
                (void) manager_reload(d->manager, c);
#if HAVE_HTTP_SERVER
                if (d->http)
                        (void) http_server_reload(d->http, d->manager);
#endif
#if HAVE_DAEMON_POLICY
                if (d->policy)
                        (void) daemon_policy_reload(d->policy);
#endif
        }
        (void) sd_notify(false, "READY=1");
        update_status(d);
}

static void signal_cb(uv_signal_t *s, int signum) {
        Daemon *d = s->data;

        if (signum == SIGHUP)
                daemon_reload(d);
        else
                daemon_stop(d, signum == SIGTERM ? "Received SIGTERM" : "Received SIGINT");
}

#if HAVE_DAEMON_POLICY
static int policy_status_hook(void *userdata, json_t *obj) {
        Daemon *d = userdata;
        return d->policy ? daemon_policy_status(d->policy, obj) : 0;
}
#endif

static int daemon_start(Daemon *d) {
        Config *c = NULL;
        int r, n;

        /* Handles first, so that daemon_stop() can close them whatever fails below. */
        uv_signal_init(&d->loop, &d->sig_term);
        uv_signal_init(&d->loop, &d->sig_int);
        uv_signal_init(&d->loop, &d->sig_hup);
        d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
        uv_timer_init(&d->loop, &d->watchdog);
        uv_timer_init(&d->loop, &d->status);
        d->watchdog.data = d->status.data = d;

        r = config_load(&d->overrides, &c);
        if (r < 0)
                return r;
        log_set_max_level(c->log_level);

        n = sd_listen_fds(true);
        if (n < 0)
                log_warning_errno(n, "Failed to read LISTEN_FDS, ignoring: %m");
        else if (n >= 1) {
                c->socket_fd = SD_LISTEN_FDS_START;
                log_info("Using the socket passed by the service manager (fd %d).", c->socket_fd);
        }
        if (sd_watchdog_enabled(false, &c->watchdog_usec) <= 0)
                c->watchdog_usec = 0;

        r = manager_new(&d->loop, c, &d->manager);
        if (r < 0)
                return r;
        r = manager_add_listener(d->manager, &(ManagerListener) { .models_changed = models_changed, .userdata = d });
        if (r < 0)
                return log_oom();
        manager_load_configured_models(d->manager);

        r = dbus_server_new(d->manager, manager_config(d->manager)->mode == BUS_MODE_USER, &d->bus);
        if (r < 0)
                return r;
#if HAVE_DAEMON_POLICY
        r = daemon_policy_new(d->manager, &d->policy);
        if (r < 0)
                log_warning_errno(r, "Failed to start the precision policy, continuing without: %m");
        dbus_server_set_policy_hook(d->bus, policy_status_hook, d);
#endif
#if HAVE_HTTP_SERVER
        r = http_server_new(d->manager, &d->http);
        if (r < 0)
                return log_error_errno(r, "Failed to start the HTTP server: %m");
#if HAVE_DAEMON_POLICY
        http_server_set_policy_hook(d->http, policy_status_hook, d);
#endif
#endif

        uv_signal_start(&d->sig_term, signal_cb, SIGTERM);
        uv_signal_start(&d->sig_int, signal_cb, SIGINT);
        uv_signal_start(&d->sig_hup, signal_cb, SIGHUP);
        if (c->watchdog_usec > 0) {
                uint64_t ms = MAX(c->watchdog_usec / 2000, 1u);
                uv_timer_start(&d->watchdog, watchdog_cb, ms, ms);
        }
        uv_timer_start(&d->status, status_cb, 5000, 5000);

        (void) sd_notify(false, "READY=1");
        update_status(d);
        log_info("quantd %s ready on the %s bus.", QUANTD_VERSION,
                 manager_config(d->manager)->mode == BUS_MODE_USER ? "session" : "system");
        return 0;
}

int main(int argc, char *argv[]) {
        Daemon d = {};
        int r;

        r = parse_argv(argc, argv, &d.overrides);
        if (r <= 0)
                goto finish;
        signal(SIGPIPE, SIG_IGN);
        r = uv_loop_init(&d.loop);
        if (r < 0) {
                log_error("Failed to create the event loop: %s", uv_strerror(r));
                goto finish;
        }
        r = daemon_start(&d);
        if (r < 0) {
                log_error_errno(r, "Failed to start: %m");
                (void) sd_notifyf(false, "ERRNO=%d", -r);
                daemon_stop(&d, "Startup failed");
        } else
                uv_run(&d.loop, UV_RUN_DEFAULT);

        /* Let close callbacks run, then insist nothing is left. */
        uv_run(&d.loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&d.loop) != 0)
                log_debug("Event loop still had handles at exit.");
finish:
        for (char **i = arg_models; i && *i; i++)
                free(*i);
        for (char **i = arg_model_dirs; i && *i; i++)
                free(*i);
        free(arg_models);
        free(arg_model_dirs);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
