/* The daemon's configuration: built-in defaults, layered INI files, command-line overrides. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef enum BusMode {
        BUS_MODE_SYSTEM,
        BUS_MODE_USER,
} BusMode;

/* One "key = value" line as read, kept for the sections other parts own ([policy], [http]). */
typedef struct ConfigEntry {
        char *section, *key, *value;
        char *file;
        unsigned line;
} ConfigEntry;

typedef struct Config {
        BusMode mode;

        /* [daemon] */
        char **model_dirs;              /* NULL-terminated, realpath()ed where they exist */
        char **models;                  /* files loaded at start, NULL-terminated */
        char *socket_path;              /* Unix socket of the HTTP API */
        int socket_fd;                  /* from LISTEN_FDS (socket activation), or -EBADF */
        char *device;                   /* engine device selector, NULL: best */
        bool cpu_only;                  /* plain-C engine path (tests, machines without Vulkan) */
        char *cache_dir;                /* pipeline cache, NULL: none */
        char *state_dir;                /* quantized variants (<state_dir>/quantized), NULL: none */
        uint32_t job_threads;           /* CPU threads of a quantize job, 0: half the CPUs */
        int log_level;
        uint64_t memory_budget;         /* bytes of device memory for weights, 0: no limit */
        uint64_t idle_timeout_usec;     /* unload a model idle this long, 0: never */
        uint64_t watchdog_usec;         /* from $WATCHDOG_USEC, 0: off */

        /* [limits] */
        uint32_t max_prompt_tokens;
        uint32_t max_new_tokens;
        uint32_t default_max_tokens;
        uint32_t context_size;
        uint32_t queue_length;          /* requests waiting over all models */
        uint32_t max_batch;             /* sequences decoded together per model */
        uint64_t max_request_bytes;     /* prompt/message bytes, also for the HTTP body */

        /* Every entry read, in order, for config_get() and the policy/http sections. */
        ConfigEntry *entries;
        size_t n_entries;
        char **files;                   /* files read, in order */
} Config;

/* Command-line values that override the files. */
typedef struct ConfigOverrides {
        BusMode mode;
        const char *config_file;        /* only this file instead of the layered set */
        const char *socket_path;
        char **model_dirs;              /* NULL-terminated or NULL */
        char **models;
        const char *log_level;
        int cpu_only;                   /* -1 unset */
} ConfigOverrides;

Config *config_free(Config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Config *, config_free);

/* Reads the layered files (datadir < sysconfdir < sysconfdir/quantd.conf.d/ *.conf, and in user
 * mode $XDG_CONFIG_HOME/quantd/quantd.conf last), then applies the overrides. Unknown keys in
 * the sections this file owns are warned about with file:line; syntax errors fail. */
int config_load(const ConfigOverrides *o, Config **ret);

/* The last value of section.key over all files, or NULL. For the sections owned by others. */
const char *config_get(const Config *c, const char *section, const char *key);
/* Warns (file:line) about every key of section that is not in the NULL-terminated list known. */
void config_warn_unknown(const Config *c, const char *section, const char *const *known);

/* Parses sizes like "512M", "8G", "1024" (bytes). */
int config_parse_size(const char *s, uint64_t *ret);
int config_parse_bool(const char *s, bool *ret);
/* True when realpath(path) lies inside one of the configured model directories (or in
 * <state_dir>/quantized, where quantize jobs write). */
int config_model_path_allowed(const Config *c, const char *path, char **ret_resolved);
