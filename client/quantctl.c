/* quantctl: command-line client of quantd over D-Bus (status, models, generate, chat, ...). */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include "bus-util.h"
#include "config.h"
#include "macro.h"
#include "quantctl.h"

static enum { BUS_DEFAULT, BUS_SYSTEM, BUS_USER } arg_bus = BUS_DEFAULT;
static const char *arg_address, *arg_socket;
const char *arg_name, *arg_precision;
bool arg_raw, arg_json;
const char *arg_type, *arg_method, *arg_calib, *arg_text, *arg_ref;
int64_t arg_samples, arg_ctx, arg_max_windows;
int64_t arg_max_tokens = -1, arg_seed = -1;
double arg_temperature = -1;

static void help(void) {
        printf("quantctl [OPTIONS...] COMMAND ...\n\n"
               "Talks to quantd over D-Bus, or over its HTTP API with --socket.\n\n"
               "Commands:\n"
               "  status                         Daemon, device and models\n"
               "  models                         Resident models\n"
               "  load FILE [--name N] [--precision P]\n"
               "  unload NAME\n"
               "  generate NAME PROMPT [--max-tokens K] [--temperature T] [--seed S] [--raw]\n"
               "                                 Stream an answer (PROMPT as a user message when the model has\n"
               "                                 a chat template, else as is; --raw: always as is)\n"
               "  chat NAME                      Chat, one user message per line of stdin\n"
               "  tokenize NAME TEXT\n"
               "  precision NAME fp16|int8|int4|auto\n"
               "  policy                         What the precision policy sees and decided\n"
               "  quantize NAME [--type q8_0|q4_0|q4_1] [--method rtn|rtn-clip|gptq|awq] [--calib FILE]\n"
               "           [--samples N] [--ctx N]  Quantize a model (name or file in a model dir) into the\n"
               "                                 daemon's cache; prints the output file\n"
               "  eval NAME --text FILE [--ref MODEL] [--ctx N] [--max-windows N]\n"
               "                                 Perplexity (and KL / top-1 against --ref)\n\n"
               "Options:\n"
               "  --system | --user | --address ADDRESS   Which bus (default: system as root, else user)\n"
               "  --socket PATH                  Use the HTTP API on this Unix socket instead of D-Bus\n"
               "  --json                         Machine-readable output\n\n"
               "Exit status: 0 ok, 1 error, 2 usage, 3 daemon unreachable, 4 busy.\n");
}

int error_exit(const sd_bus_error *e, int r, const char *what) {
        const char *name = e && e->name ? e->name : NULL;

        if (arg_json) {
                json_t *o = json_pack("{s:s, s:s, s:s}", "error", what, "name", name ?: "", "message",
                                      e && e->message ? e->message : strerror(r < 0 ? -r : r));
                json_dumpf(o, stdout, JSON_COMPACT);
                putchar('\n');
                json_decref(o);
        } else
                fprintf(stderr, "%s: %s\n", what, e && e->message ? e->message : strerror(r < 0 ? -r : r));
        if (name && (streq(name, "org.freedesktop.DBus.Error.ServiceUnknown") ||
                     streq(name, "org.freedesktop.DBus.Error.NameHasNoOwner") ||
                     streq(name, "org.freedesktop.DBus.Error.NoReply") ||
                     streq(name, "org.freedesktop.DBus.Error.Disconnected")))
                return EXIT_UNREACHABLE;
        if (name && streq(name, "org.quantd.Quantd1.Error.Busy"))
                return EXIT_BUSY;
        return EXIT_ERROR;
}

static int connect_bus(sd_bus **ret) {
        sd_bus *bus = NULL;
        int r;

        if (arg_address)
                r = bus_open_address(arg_address, &bus);
        else if (arg_bus == BUS_SYSTEM || (arg_bus == BUS_DEFAULT && getuid() == 0))
                r = sd_bus_open_system(&bus);
        else
                r = sd_bus_open_user(&bus);
        if (r < 0) {
                fprintf(stderr, "Cannot connect to the bus: %s\n", strerror(-r));
                return -EXIT_UNREACHABLE;
        }
        (void) sd_bus_set_allow_interactive_authorization(bus, true);
        *ret = bus;
        return 0;
}

/* Reads a{sv} of simple types into a JSON object. */
static int read_dict(sd_bus_message *m, json_t *obj) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *contents;
                char type;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                r = sd_bus_message_peek_type(m, &type, &contents);
                if (r < 0)
                        return r;
                if (streq(contents, "s")) {
                        const char *s;
                        r = sd_bus_message_read(m, "v", "s", &s);
                        json_object_set_new(obj, key, json_string(s));
                } else if (streq(contents, "t") || streq(contents, "u")) {
                        uint64_t t = 0;
                        uint32_t u = 0;
                        r = streq(contents, "t") ? sd_bus_message_read(m, "v", "t", &t)
                                                 : sd_bus_message_read(m, "v", "u", &u);
                        json_object_set_new(obj, key, json_integer((json_int_t) (t + u)));
                } else if (streq(contents, "d")) {
                        double d;
                        r = sd_bus_message_read(m, "v", "d", &d);
                        json_object_set_new(obj, key, json_real(d));
                } else if (streq(contents, "b")) {
                        int b;
                        r = sd_bus_message_read(m, "v", "b", &b);
                        json_object_set_new(obj, key, json_boolean(b));
                } else if (streq(contents, "ao") || streq(contents, "as")) {
                        json_t *a = json_array();
                        r = sd_bus_message_enter_container(m, 'v', contents);
                        if (r >= 0)
                                r = sd_bus_message_enter_container(m, 'a', contents + 1);
                        while (r >= 0) {
                                const char *s;
                                r = sd_bus_message_read_basic(m, contents[1], &s);
                                if (r <= 0)
                                        break;
                                json_array_append_new(a, json_string(s));
                        }
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        json_object_set_new(obj, key, a);
                } else
                        r = sd_bus_message_skip(m, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int get_all(sd_bus *bus, const char *path, const char *iface, json_t *obj, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_call_method(bus, BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", error, &reply, "s",
                               iface);
        return r < 0 ? r : read_dict(reply, obj);
}

static int collect_models(sd_bus *bus, json_t *arr, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *name, *path;
        int r;

        r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "ListModels", error, &reply, NULL);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "(so)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(so)", &name, &path)) > 0) {
                json_t *o = json_object();
                json_object_set_new(o, "object", json_string(path));
                r = get_all(bus, path, MODEL_IFACE, o, error);
                json_array_append_new(arr, o);
        }
        return r;
}

static void print_model_table(json_t *arr) {
        size_t i;
        json_t *o;

        printf("%-24s %-10s %-6s %-6s %14s %12s %7s\n", "NAME", "ARCH", "TYPE", "PREC", "PARAMETERS", "DEVICE MiB",
               "ACTIVE");
        json_array_foreach(arr, i, o) {
                printf("%-24s %-10s %-6s %-6s %14" JSON_INTEGER_FORMAT " %12.1f %7" JSON_INTEGER_FORMAT "%s\n",
                       json_string_value(json_object_get(o, "Name")),
                       json_string_value(json_object_get(o, "Architecture")),
                       json_string_value(json_object_get(o, "FileType")),
                       json_string_value(json_object_get(o, "Precision")),
                       json_integer_value(json_object_get(o, "Parameters")),
                       json_integer_value(json_object_get(o, "DeviceBytes")) / 1048576.0,
                       json_integer_value(json_object_get(o, "Active")),
                       streq_ptr(json_string_value(json_object_get(o, "Pinned")), "auto") ? "" : " (pinned)");
        }
}

static int cmd_status(sd_bus *bus, char **args, int n) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        json_t *st = json_object(), *models = json_array();
        int r;

        r = get_all(bus, MANAGER_PATH, MANAGER_IFACE, st, &error);
        if (r >= 0)
                r = collect_models(bus, models, &error);
        if (r < 0) {
                json_decref(st);
                json_decref(models);
                return error_exit(&error, r, "Cannot get the status");
        }
        json_object_set_new(st, "Models", models);
        print_status(st);
        json_decref(st);
        return EXIT_OK;
}

/* The status as the Manager's properties plus "Models" (the models' properties). */
void print_status(json_t *st) {
        json_t *models = json_object_get(st, "Models");

        if (arg_json) {
                json_dumpf(st, stdout, JSON_INDENT(2));
                putchar('\n');
        } else {
                printf("quantd %s\n", json_string_value(json_object_get(st, "Version")));
                printf("Device: %s, %.0f MiB, %.1f MiB used by quantd\n",
                       json_string_value(json_object_get(st, "Device")),
                       json_integer_value(json_object_get(st, "DeviceMemoryTotal")) / 1048576.0,
                       json_integer_value(json_object_get(st, "DeviceMemoryUsed")) / 1048576.0);
                printf("Requests: %" JSON_INTEGER_FORMAT " running, %" JSON_INTEGER_FORMAT " queued\n",
                       json_integer_value(json_object_get(st, "ActiveRequests")),
                       json_integer_value(json_object_get(st, "QueuedRequests")));
                print_model_table(models);
        }
}

/* The models' properties: the JSON array, or a table. */
void print_models(json_t *arr) {
        if (arg_json) {
                json_dumpf(arr, stdout, JSON_INDENT(2));
                putchar('\n');
        } else
                print_model_table(arr);
}

static int cmd_models(sd_bus *bus, char **args, int n) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        json_t *models = json_array();
        int r;

        r = collect_models(bus, models, &error);
        if (r < 0) {
                json_decref(models);
                return error_exit(&error, r, "Cannot list models");
        }
        print_models(models);
        json_decref(models);
        return EXIT_OK;
}

static int cmd_load(sd_bus *bus, char **args, int n) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *path;
        _cleanup_free_ char *abs = NULL;
        int r;

        /* Relative names that exist here are sent as absolute paths; others are looked up in
         * the daemon's model directories. */
        abs = realpath(args[0], NULL);
        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "LoadModel");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", abs ?: args[0]);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg_name)
                r = sd_bus_message_append(m, "{sv}", "name", "s", arg_name);
        if (r >= 0 && arg_precision)
                r = sd_bus_message_append(m, "{sv}", "precision", "s", arg_precision);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_call(bus, m, 0, &error, &reply);
        if (r < 0)
                return error_exit(&error, r, "Cannot load the model");
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return error_exit(NULL, r, "Bad reply");
        if (arg_json)
                printf("{\"object\": \"%s\"}\n", path);
        else
                printf("%s\n", path);
        return EXIT_OK;
}

static int cmd_unload(sd_bus *bus, char **args, int n) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "UnloadModel", &error, NULL, "s",
                                   args[0]);
        return r < 0 ? error_exit(&error, r, "Cannot unload the model") : EXIT_OK;
}

static int cmd_precision(sd_bus *bus, char **args, int n) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "SetPrecision", &error, NULL, "ss",
                                   args[0], args[1]);
        return r < 0 ? error_exit(&error, r, "Cannot set the precision") : EXIT_OK;
}

static int cmd_tokenize(sd_bus *bus, char **args, int n) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const int32_t *tokens;
        size_t size;
        int r;

        r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "Tokenize", &error, &reply, "ss", args[0],
                               args[1]);
        if (r < 0)
                return error_exit(&error, r, "Cannot tokenize");
        r = sd_bus_message_read_array(reply, 'i', (const void **) &tokens, &size);
        if (r < 0)
                return error_exit(NULL, r, "Bad reply");
        printf(arg_json ? "[" : "");
        for (size_t i = 0; i < size / sizeof(int32_t); i++)
                printf("%s%" PRIi32, i == 0 ? "" : arg_json ? ", " : " ", tokens[i]);
        printf(arg_json ? "]\n" : "\n");
        return EXIT_OK;
}

/* Human view of GetPolicy()'s JSON: sources, rules, the decision per model, recent switches.
 * Missing fields print as "-" so an older daemon still reads. */
static const char *jstr(json_t *o, const char *key) {
        const char *v = json_string_value(json_object_get(o, key));
        return v && *v ? v : "-";
}

static void print_num(const char *label, json_t *v, const char *unit) {
        if (json_is_number(v))
                printf("  %-22s %.1f%s\n", label, json_number_value(v), unit);
        else
                printf("  %-22s -\n", label);
}

/* The policy's JSON as one line, or as text. */
void print_policy(json_t *o) {
        json_t *src = json_object_get(o, "sources"), *dec = json_object_get(o, "decision"), *v;
        size_t i;

        if (arg_json) {
                json_dumpf(o, stdout, JSON_COMPACT);
                putchar('\n');
                return;
        }
        printf("Policy: %s; cap %s (%s)\n", jstr(o, "policy"), jstr(dec, "cap"), jstr(dec, "reason"));
        if (json_is_true(json_object_get(dec, "dwell_holding")))
                printf("  holding %s until the dwell time has passed\n", jstr(dec, "cap"));
        if (json_is_number(json_object_get(dec, "token_rate_cap")))
                printf("  token rate: at most %.1f tokens/s per model\n",
                       json_number_value(json_object_get(dec, "token_rate_cap")));

        printf("\nSources\n");
        json_t *ps = json_object_get(src, "power_supply"), *up = json_object_get(src, "upower");
        json_t *pp = json_object_get(src, "power_profile"), *mem = json_object_get(src, "memory");
        printf("  %-22s %s\n", "on battery",
               json_is_true(json_object_get(src, "on_battery")) ? "yes" : "no");
        print_num("battery", json_object_get(src, "battery_percent"), " %");
        printf("  %-22s %s\n", "AC (sysfs)",
               !json_is_true(json_object_get(ps, "ac_present")) ? "absent" :
               json_is_true(json_object_get(ps, "ac_online")) ? "online" : "offline");
        printf("  %-22s %s\n", "UPower",
               json_is_true(json_object_get(up, "present")) ? "present" : jstr(up, "bus"));
        printf("  %-22s %s%s%s\n", "power profile",
               json_is_true(json_object_get(pp, "present")) ? jstr(pp, "active") : "absent",
               json_is_true(json_object_get(pp, "present")) ? " via " : "",
               json_is_true(json_object_get(pp, "present")) ? jstr(pp, "service") : "");
        json_array_foreach(json_object_get(json_object_get(src, "thermal"), "sensors"), i, v) {
                char label[64];
                snprintf(label, sizeof(label), "%s%s", jstr(v, "name"),
                         json_is_true(json_object_get(v, "gpu")) ? " (GPU)" : "");
                print_num(label, json_object_get(v, "temp_c"), " °C");
        }
        if (json_array_size(json_object_get(json_object_get(src, "thermal"), "sensors")) == 0)
                printf("  %-22s absent\n", "temperature");
        if (json_is_true(json_object_get(mem, "meminfo_present")))
                printf("  %-22s %.0f of %.0f MiB\n", "memory available",
                       json_number_value(json_object_get(mem, "mem_available")) / 1048576.0,
                       json_number_value(json_object_get(mem, "mem_total")) / 1048576.0);
        if (json_is_true(json_object_get(mem, "psi_present")))
                printf("  %-22s some %.1f %%, full %.1f %% (%s)\n", "memory pressure (avg10)",
                       json_number_value(json_object_get(mem, "psi_some_avg10")),
                       json_number_value(json_object_get(mem, "psi_full_avg10")), jstr(mem, "psi_mode"));

        printf("\nRules\n");
        json_array_foreach(json_object_get(o, "rules"), i, v)
                printf("  %-22s -> %-5s %s\n", jstr(v, "rule"), jstr(v, "precision"),
                       json_is_true(json_object_get(v, "fires")) ? "FIRES" : "");

        printf("\nModels\n");
        json_array_foreach(json_object_get(dec, "models"), i, v) {
                char rate[48] = "";
                if (json_is_number(json_object_get(v, "token_rate_cap")))
                        snprintf(rate, sizeof(rate), " (<= %.1f tokens/s)",
                                 json_number_value(json_object_get(v, "token_rate_cap")));
                printf("  %-22s now %-5s wanted %-5s%s%s%s%s\n", jstr(v, "name"), jstr(v, "precision"),
                       jstr(v, "wanted"), json_is_true(json_object_get(v, "pinned")) ? " (pinned)" : "",
                       json_is_true(json_object_get(v, "budget_limited")) ? " (memory budget)" : "",
                       json_is_true(json_object_get(v, "evict")) ? " (evict)" : "", rate);
        }

        json_t *h = json_object_get(o, "history");
        if (json_array_size(h) > 0) {
                printf("\nRecent changes (oldest first)\n");
                json_array_foreach(h, i, v) {
                        time_t t = (time_t) (json_number_value(json_object_get(v, "time_usec")) / 1e6);
                        char when[32];
                        strftime(when, sizeof(when), "%H:%M:%S", localtime(&t));
                        printf("  %s %-7s %-16s %s -> %s  %s\n", when, jstr(v, "kind"), jstr(v, "model"),
                               jstr(v, "from"), jstr(v, "to"), jstr(v, "reason"));
                }
        }
}

static int cmd_policy(sd_bus *bus, char **args, int n) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *text;
        json_t *o;
        int r;

        r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "GetPolicy", &error, &reply, NULL);
        if (r < 0)
                return error_exit(&error, r, "Cannot get the policy");
        r = sd_bus_message_read(reply, "s", &text);
        if (r < 0)
                return error_exit(NULL, r, "Bad reply");
        o = json_loads(text, 0, NULL);
        if (!o) {
                fputs(text, stdout);
                putchar('\n');
        } else
                print_policy(o);
        json_decref(o);
        return EXIT_OK;
}

/* One token: printed at once, and kept for the conversation (chat). */
int stream_token(Stream *s, const char *text, int token, double logprob) {
        size_t k = strlen(text);
        char *nt = realloc(s->text, s->len + k + 1);

        if (!nt)
                return -ENOMEM;
        s->text = nt;
        memcpy(s->text + s->len, text, k + 1);
        s->len += k;
        if (arg_json) {
                json_t *o = json_pack("{s:s, s:i, s:f}", "text", text, "token", token, "logprob", logprob);
                json_dumpf(o, stdout, JSON_COMPACT);
                putchar('\n');
                json_decref(o);
        } else
                fputs(text, stdout);
        fflush(stdout);
        return 0;
}

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Stream *s = userdata;
        const char *path = sd_bus_message_get_path(m);

        if (!s->path || !path || !streq(path, s->path) || !sd_bus_message_is_signal(m, REQUEST_IFACE, NULL))
                return 0;
        if (sd_bus_message_is_signal(m, REQUEST_IFACE, "Token")) {
                const char *text;
                int32_t token;
                double lp;

                if (sd_bus_message_read(m, "sid", &text, &token, &lp) < 0)
                        return 0;
                return stream_token(s, text, token, lp) < 0 ? -ENOMEM : 1;
        } else if (sd_bus_message_is_signal(m, REQUEST_IFACE, "Finished")) {
                const char *reason;
                if (sd_bus_message_read(m, "s", &reason) < 0)
                        return 0;
                s->reason = strdup(reason);
                s->stats = json_object();
                (void) read_dict(m, s->stats);
                s->done = true;
        }
        return 1;
}

static int generate(sd_bus *bus, const char *model, const char *prompt, json_t *messages, Stream *s) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "Generate");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", model, messages ? "" : prompt);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg_max_tokens > 0)
                r = sd_bus_message_append(m, "{sv}", "max_tokens", "i", (int32_t) arg_max_tokens);
        if (r >= 0 && arg_temperature >= 0)
                r = sd_bus_message_append(m, "{sv}", "temperature", "d", arg_temperature);
        if (r >= 0 && arg_seed >= 0)
                r = sd_bus_message_append(m, "{sv}", "seed", "t", (uint64_t) arg_seed);
        if (r >= 0 && messages) {
                size_t i;
                json_t *o;
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", "messages");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', "a(ss)");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'a', "(ss)");
                json_array_foreach(messages, i, o)
                        if (r >= 0)
                                r = sd_bus_message_append(m, "(ss)", json_string_value(json_object_get(o, "role")),
                                                          json_string_value(json_object_get(o, "content")));
                for (int k = 0; k < 3 && r >= 0; k++)
                        r = sd_bus_message_close_container(m);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return error_exit(NULL, r, "Cannot build the request");

        /* Signals are sent to us only, after the reply: a filter installed before the call sees
         * every one of them, even those queued while we wait for the reply. */
        r = sd_bus_add_filter(bus, &slot, on_signal, s);
        if (r >= 0)
                r = sd_bus_call(bus, m, 0, &error, &reply);
        if (r < 0)
                return error_exit(&error, r, "Cannot generate");
        r = sd_bus_message_read(reply, "o", &s->path);
        if (r < 0)
                return error_exit(NULL, r, "Bad reply");
        while (!s->done) {
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return error_exit(NULL, r, "Lost the daemon");
                if (r == 0) {
                        r = sd_bus_wait(bus, UINT64_MAX);
                        if (r < 0)
                                return error_exit(NULL, r, "Lost the daemon");
                }
        }
        s->path = NULL;
        return stream_end(s);
}

/* After Finished: the summary line (--json) and the exit code for the reason. */
int stream_end(Stream *s) {
        if (arg_json) {
                json_t *o = json_pack("{s:s, s:s, s:O}", "text", s->text ?: "", "finish_reason", s->reason, "stats",
                                      s->stats);
                json_dumpf(o, stdout, JSON_COMPACT);
                putchar('\n');
                json_decref(o);
        } else
                putchar('\n');
        if (!streq(s->reason, "stop") && !streq(s->reason, "length")) {
                fprintf(stderr, "Generation ended: %s\n", s->reason);
                return streq(s->reason, "busy") ? EXIT_BUSY : EXIT_ERROR;
        }
        return EXIT_OK;
}

void stream_done(Stream *s) {
        free(s->text);
        free(s->reason);
        json_decref(s->stats);
        *s = (Stream) {};
}

/* Whether the model has a chat template; on doubt, no (the prompt is then sent as is). */
static bool model_has_chat_template(sd_bus *bus, const char *model) {
        _cleanup_free_ char *path = NULL;
        int b = 0;

        if (sd_bus_path_encode("/org/quantd/Quantd1/model", model, &path) < 0)
                return false;
        if (sd_bus_get_property_trivial(bus, BUS_NAME, path, MODEL_IFACE, "HasChatTemplate", NULL, 'b', &b) < 0)
                return false;
        return b;
}

/* generate: PROMPT as one user message when the model has a chat template (unless --raw). */
int generate_prompt(GenerateFn gen, void *ctx, const char *model, const char *prompt, bool chat_template) {
        Stream s = {};
        json_t *msgs = NULL;
        int r;

        if (!arg_raw && chat_template)
                msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", prompt);
        r = gen(ctx, model, prompt, msgs, &s);
        json_decref(msgs);
        stream_done(&s);
        return r;
}

/* chat: one user message per line of stdin, the whole conversation sent each turn. */
int chat_loop(GenerateFn gen, void *ctx, const char *model) {
        json_t *history = json_array();
        char *line = NULL;
        size_t size = 0;
        ssize_t k;
        int r = EXIT_OK;

        while ((k = getline(&line, &size, stdin)) >= 0) {
                Stream s = {};

                if (k > 0 && line[k - 1] == '\n')
                        line[--k] = '\0';
                if (k == 0)
                        continue;
                json_array_append_new(history, json_pack("{s:s, s:s}", "role", "user", "content", line));
                r = gen(ctx, model, NULL, history, &s);
                if (r == EXIT_OK)
                        json_array_append_new(history,
                                              json_pack("{s:s, s:s}", "role", "assistant", "content", s.text ?: ""));
                stream_done(&s);
                if (r != EXIT_OK)
                        break;
        }
        free(line);
        json_decref(history);
        return r;
}

static int bus_generate(void *ctx, const char *model, const char *prompt, json_t *messages, Stream *s) {
        return generate(ctx, model, prompt, messages, s);
}

static int cmd_generate(sd_bus *bus, char **args, int n) {
        return generate_prompt(bus_generate, bus, args[0], args[1], model_has_chat_template(bus, args[0]));
}

static int cmd_chat(sd_bus *bus, char **args, int n) {
        return chat_loop(bus_generate, bus, args[0]);
}

static const struct {
        const char *name;
        int min_args, max_args;
        int (*run)(sd_bus *bus, char **args, int n);
        int (*run_http)(const char *socket, char **args, int n);        /* quantctl-http.c */
} commands[] = {
        { "status", 0, 0, cmd_status, http_status },
        { "models", 0, 0, cmd_models, http_models },
        { "load", 1, 1, cmd_load, http_load },
        { "unload", 1, 1, cmd_unload, http_unload },
        { "generate", 2, 2, cmd_generate, http_generate },
        { "chat", 1, 1, cmd_chat, http_chat },
        { "tokenize", 2, 2, cmd_tokenize, http_tokenize },
        { "precision", 2, 2, cmd_precision, http_precision },
        { "policy", 0, 0, cmd_policy, http_policy },
        { "quantize", 1, 1, cmd_quantize, http_quantize },
        { "eval", 1, 1, cmd_eval, http_eval },
};

static int parse_number(const char *s, double *ret) {
        char *end;
        errno = 0;
        *ret = strtod(s, &end);
        return errno != 0 || end == s || *end ? -EINVAL : 0;
}

int main(int argc, char *argv[]) {
        enum { ARG_SYSTEM = 0x100, ARG_USER, ARG_ADDRESS, ARG_SOCKET, ARG_JSON, ARG_NAME, ARG_PRECISION,
               ARG_MAX_TOKENS, ARG_TEMPERATURE, ARG_SEED, ARG_RAW, ARG_VERSION, ARG_TYPE, ARG_METHOD, ARG_CALIB,
               ARG_TEXT, ARG_REF, ARG_SAMPLES, ARG_CTX, ARG_MAX_WINDOWS };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "system", no_argument, NULL, ARG_SYSTEM },
                { "user", no_argument, NULL, ARG_USER },
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "socket", required_argument, NULL, ARG_SOCKET },
                { "json", no_argument, NULL, ARG_JSON },
                { "name", required_argument, NULL, ARG_NAME },
                { "precision", required_argument, NULL, ARG_PRECISION },
                { "max-tokens", required_argument, NULL, ARG_MAX_TOKENS },
                { "temperature", required_argument, NULL, ARG_TEMPERATURE },
                { "seed", required_argument, NULL, ARG_SEED },
                { "raw", no_argument, NULL, ARG_RAW },
                { "type", required_argument, NULL, ARG_TYPE },
                { "method", required_argument, NULL, ARG_METHOD },
                { "calib", required_argument, NULL, ARG_CALIB },
                { "text", required_argument, NULL, ARG_TEXT },
                { "ref", required_argument, NULL, ARG_REF },
                { "samples", required_argument, NULL, ARG_SAMPLES },
                { "ctx", required_argument, NULL, ARG_CTX },
                { "max-windows", required_argument, NULL, ARG_MAX_WINDOWS },
                {}
        };
        sd_bus *bus = NULL;
        double v;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return EXIT_OK;
                case ARG_VERSION:
                        printf("quantctl %s\n", QUANTD_VERSION);
                        return EXIT_OK;
                case ARG_SYSTEM: arg_bus = BUS_SYSTEM; break;
                case ARG_USER: arg_bus = BUS_USER; break;
                case ARG_ADDRESS: arg_address = optarg; break;
                case ARG_SOCKET: arg_socket = optarg; break;
                case ARG_JSON: arg_json = true; break;
                case ARG_NAME: arg_name = optarg; break;
                case ARG_PRECISION: arg_precision = optarg; break;
                case ARG_RAW: arg_raw = true; break;
                case ARG_TYPE: arg_type = optarg; break;
                case ARG_METHOD: arg_method = optarg; break;
                case ARG_CALIB: arg_calib = optarg; break;
                case ARG_TEXT: arg_text = optarg; break;
                case ARG_REF: arg_ref = optarg; break;
                case ARG_SAMPLES:
                case ARG_CTX:
                case ARG_MAX_WINDOWS:
                        if (parse_number(optarg, &v) < 0 || v < 1 || v > 1e6) {
                                fprintf(stderr, "Invalid number: %s\n", optarg);
                                return EXIT_USAGE;
                        }
                        *(c == ARG_SAMPLES ? &arg_samples : c == ARG_CTX ? &arg_ctx : &arg_max_windows) = (int64_t) v;
                        break;
                case ARG_MAX_TOKENS:
                        if (parse_number(optarg, &v) < 0 || v < 1 || v > INT32_MAX) {
                                fprintf(stderr, "Invalid --max-tokens: %s\n", optarg);
                                return EXIT_USAGE;
                        }
                        arg_max_tokens = (int64_t) v;
                        break;
                case ARG_TEMPERATURE:
                        if (parse_number(optarg, &v) < 0 || v < 0 || v > 100) {
                                fprintf(stderr, "Invalid --temperature: %s\n", optarg);
                                return EXIT_USAGE;
                        }
                        arg_temperature = v;
                        break;
                case ARG_SEED:
                        if (parse_number(optarg, &v) < 0 || v < 0) {
                                fprintf(stderr, "Invalid --seed: %s\n", optarg);
                                return EXIT_USAGE;
                        }
                        arg_seed = (int64_t) v;
                        break;
                default:
                        return EXIT_USAGE;
                }

        if (optind >= argc) {
                help();
                return EXIT_USAGE;
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                int n = argc - optind - 1;
                if (!streq(commands[i].name, argv[optind]))
                        continue;
                if (n < commands[i].min_args || n > commands[i].max_args) {
                        fprintf(stderr, "Wrong number of arguments for '%s'; see quantctl --help.\n", commands[i].name);
                        return EXIT_USAGE;
                }
                if (streq(commands[i].name, "precision") && !streq(argv[optind + 2], "fp16") &&
                    !streq(argv[optind + 2], "int8") && !streq(argv[optind + 2], "int4") &&
                    !streq(argv[optind + 2], "auto")) {
                        fprintf(stderr, "Precision must be fp16, int8, int4 or auto.\n");
                        return EXIT_USAGE;
                }
                if (streq(commands[i].name, "eval") && !arg_text) {
                        fprintf(stderr, "eval needs --text FILE.\n");
                        return EXIT_USAGE;
                }
                if (arg_socket)
                        return commands[i].run_http(arg_socket, argv + optind + 1, n);
                r = connect_bus(&bus);
                if (r < 0)
                        return -r;
                r = commands[i].run(bus, argv + optind + 1, n);
                sd_bus_flush_close_unref(bus);
                return r;
        }
        fprintf(stderr, "Unknown command '%s'; see quantctl --help.\n", argv[optind]);
        return EXIT_USAGE;
}
