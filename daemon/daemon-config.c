/* Layered INI configuration (libinih): defaults < datadir < sysconfdir < drop-ins < overrides. */
#include <dirent.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "daemon-config.h"
#include "log.h"

#define DEFAULT_SYSTEM_MODEL_DIR "/var/lib/quantd/models"
#define DEFAULT_SYSTEM_SOCKET "/run/quantd/quantd.sock"

static char **strv_free(char **l) {
        if (l)
                for (char **i = l; *i; i++)
                        free(*i);
        free(l);
        return NULL;
}

static size_t strv_length(char **l) {
        size_t n = 0;
        while (l && l[n])
                n++;
        return n;
}

static int strv_push(char ***l, const char *s) {
        size_t n = strv_length(*l);
        char **nl = realloc(*l, (n + 2) * sizeof(char *));
        if (!nl)
                return -ENOMEM;
        *l = nl;
        nl[n] = strdup(s);
        if (!nl[n])
                return -ENOMEM;
        nl[n + 1] = NULL;
        return 0;
}

/* Splits a list on ':' / ',' / whitespace into a new strv. */
static int strv_split(const char *s, char ***ret) {
        _cleanup_free_ char *copy = strdup(s);
        char **l = NULL, *save = NULL;
        int r;

        if (!copy)
                return -ENOMEM;
        for (char *t = strtok_r(copy, ":, \t", &save); t; t = strtok_r(NULL, ":, \t", &save)) {
                r = strv_push(&l, t);
                if (r < 0) {
                        strv_free(l);
                        return r;
                }
        }
        if (!l) {
                l = calloc(1, sizeof(char *));
                if (!l)
                        return -ENOMEM;
        }
        *ret = l;
        return 0;
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;
        strv_free(c->model_dirs);
        strv_free(c->models);
        strv_free(c->files);
        free(c->socket_path);
        free(c->device);
        free(c->cache_dir);
        free(c->state_dir);
        for (size_t i = 0; i < c->n_entries; i++) {
                free(c->entries[i].section);
                free(c->entries[i].key);
                free(c->entries[i].value);
                free(c->entries[i].file);
        }
        free(c->entries);
        return mfree(c);
}

int config_parse_size(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;
        uint64_t mul = 1;

        if (!s || !*s)
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || s[0] == '-')
                return -EINVAL;
        while (*end == ' ')
                end++;
        switch (*end) {
        case '\0': break;
        case 'K': case 'k': mul = 1ULL << 10; end++; break;
        case 'M': case 'm': mul = 1ULL << 20; end++; break;
        case 'G': case 'g': mul = 1ULL << 30; end++; break;
        case 'T': case 't': mul = 1ULL << 40; end++; break;
        default: return -EINVAL;
        }
        if (*end == 'i')
                end++;
        if (*end == 'B' || *end == 'b')
                end++;
        if (*end != '\0' || (v != 0 && mul > UINT64_MAX / v))
                return -EINVAL;
        *ret = v * mul;
        return 0;
}

int config_parse_bool(const char *s, bool *ret) {
        static const char *const yes[] = { "1", "yes", "true", "on" }, *const no[] = { "0", "no", "false", "off" };
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(s, yes[i]) == 0)
                        return *ret = true, 0;
                if (strcasecmp(s, no[i]) == 0)
                        return *ret = false, 0;
        }
        return -EINVAL;
}

static int parse_u32(const char *s, uint32_t *ret) {
        uint64_t v;
        int r = config_parse_size(s, &v);
        if (r < 0)
                return r;
        if (v > UINT32_MAX)
                return -ERANGE;
        *ret = (uint32_t) v;
        return 0;
}

static int parse_seconds(const char *s, uint64_t *ret_usec) {
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno != 0 || end == s || v < 0 || v > 1e9)
                return -EINVAL;
        if (streq(end, "") || streq(end, "s"))
                ;
        else if (streq(end, "min") || streq(end, "m"))
                v *= 60;
        else if (streq(end, "h"))
                v *= 3600;
        else
                return -EINVAL;
        *ret_usec = (uint64_t) (v * 1e6);
        return 0;
}

typedef struct ParseState {
        Config *config;
        const char *file;
        unsigned line;
        FILE *f;
        int error;
} ParseState;

static char *reader(char *str, int num, void *stream) {
        ParseState *s = stream;
        char *p = fgets(str, num, s->f);
        if (p)
                s->line++;
        return p;
}

/* Applies one key of a section this file owns: 1 applied, 0 unknown key, < 0 bad value. */
static int apply_key(Config *c, const char *section, const char *key, const char *value) {
        int r = 0;

        if (strcasecmp(section, "daemon") == 0) {
                if (streq(key, "ModelDirectories") || streq(key, "model_dirs")) {
                        char **l = NULL;
                        r = strv_split(value, &l);
                        if (r >= 0) {
                                strv_free(c->model_dirs);
                                c->model_dirs = l;
                        }
                } else if (streq(key, "Models") || streq(key, "models")) {
                        char **l = NULL;
                        r = strv_split(value, &l);
                        if (r >= 0) {
                                strv_free(c->models);
                                c->models = l;
                        }
                } else if (streq(key, "socket")) {
                        free(c->socket_path);
                        c->socket_path = *value ? strdup(value) : NULL;
                } else if (streq(key, "device")) {
                        free(c->device);
                        c->device = *value ? strdup(value) : NULL;
                } else if (streq(key, "cpu_only"))
                        r = config_parse_bool(value, &c->cpu_only);
                else if (streq(key, "state_dir")) {
                        free(c->state_dir);
                        c->state_dir = *value ? strdup(value) : NULL;
                } else if (streq(key, "cache_dir")) {
                        free(c->cache_dir);
                        c->cache_dir = *value ? strdup(value) : NULL;
                } else if (streq(key, "log_level")) {
                        r = log_level_from_string(value);
                        if (r >= 0)
                                c->log_level = r;
                } else if (streq(key, "memory_budget"))
                        r = config_parse_size(value, &c->memory_budget);
                else if (streq(key, "idle_timeout"))
                        r = parse_seconds(value, &c->idle_timeout_usec);
                else if (streq(key, "job_threads"))
                        r = parse_u32(value, &c->job_threads);
                else
                        return 0;
        } else if (strcasecmp(section, "limits") == 0) {
                if (streq(key, "max_prompt_tokens"))
                        r = parse_u32(value, &c->max_prompt_tokens);
                else if (streq(key, "max_new_tokens"))
                        r = parse_u32(value, &c->max_new_tokens);
                else if (streq(key, "default_max_tokens"))
                        r = parse_u32(value, &c->default_max_tokens);
                else if (streq(key, "context_size"))
                        r = parse_u32(value, &c->context_size);
                else if (streq(key, "queue_length"))
                        r = parse_u32(value, &c->queue_length);
                else if (streq(key, "max_batch"))
                        r = parse_u32(value, &c->max_batch);
                else if (streq(key, "max_request_bytes"))
                        r = config_parse_size(value, &c->max_request_bytes);
                else
                        return 0;
        } else
                return 0;
        return r < 0 ? r : 1;
}

static bool section_is_ours(const char *section) {
        return strcasecmp(section, "daemon") == 0 || strcasecmp(section, "limits") == 0;
}

/* Sections whose keys the policy and HTTP code read with config_get() and check themselves. */
static bool section_is_known(const char *section) {
        return section_is_ours(section) || strcasecmp(section, "policy") == 0 ||
                strcasecmp(section, "http") == 0;
}

static int handler(void *userdata, const char *section, const char *key, const char *value) {
        ParseState *s = userdata;
        Config *c = s->config;
        ConfigEntry *e;
        int r;

        e = realloc(c->entries, (c->n_entries + 1) * sizeof(ConfigEntry));
        if (!e) {
                s->error = -ENOMEM;
                return 0;
        }
        c->entries = e;
        e = &c->entries[c->n_entries];
        *e = (ConfigEntry) {
                .section = strdup(section), .key = strdup(key), .value = strdup(value),
                .file = strdup(s->file), .line = s->line,
        };
        c->n_entries++;
        if (!e->section || !e->key || !e->value || !e->file) {
                s->error = -ENOMEM;
                return 0;
        }

        if (!section_is_known(section)) {
                log_warning("%s:%u: unknown section [%s], ignoring.", s->file, s->line, section);
                return 1;
        }
        if (!section_is_ours(section))
                return 1;
        r = apply_key(c, section, key, value);
        if (r == 0)
                log_warning("%s:%u: unknown key '%s' in [%s], ignoring.", s->file, s->line, key, section);
        else if (r < 0)
                log_warning("%s:%u: invalid value '%s' for %s, ignoring.", s->file, s->line, value, key);
        return 1;
}

/* Reads one file; a missing optional file is fine. */
static int config_read_file(Config *c, const char *path, bool optional) {
        ParseState s = { .config = c, .file = path };
        int r;

        s.f = fopen(path, "re");
        if (!s.f) {
                if (optional && errno == ENOENT)
                        return 0;
                return log_error_errno(errno, "Failed to open %s: %m", path);
        }
        r = ini_parse_stream(reader, &s, handler, &s);
        fclose(s.f);
        if (s.error < 0)
                return log_error_errno(s.error, "Failed to read %s: %m", path);
        if (r > 0)
                return log_error_errno(EINVAL, "%s:%d: syntax error.", path, r);
        if (r < 0)
                return log_error_errno(EIO, "Failed to parse %s.", path);
        log_debug("Read configuration %s.", path);
        return strv_push(&c->files, path);
}

static int dropin_filter(const struct dirent *d) {
        size_t n = strlen(d->d_name);
        return d->d_name[0] != '.' && n > 5 && streq(d->d_name + n - 5, ".conf");
}

static int config_read_dropins(Config *c, const char *dir) {
        struct dirent **list = NULL;
        int n, r = 0;

        n = scandir(dir, &list, dropin_filter, alphasort);
        if (n < 0) {
                if (errno != ENOENT)
                        log_warning_errno(errno, "Failed to list %s, ignoring: %m", dir);
                return 0;
        }
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *p = NULL;
                if (r >= 0 && asprintf(&p, "%s/%s", dir, list[i]->d_name) < 0)
                        r = -ENOMEM;
                if (r >= 0)
                        r = config_read_file(c, p, true);
                free(list[i]);
        }
        free(list);
        return r;
}

static int set_defaults(Config *c, BusMode mode) {
        const char *xdg;
        _cleanup_free_ char *p = NULL;
        int r;

        c->mode = mode;
        c->socket_fd = -EBADF;
        c->log_level = LOG_INFO;
        c->max_prompt_tokens = 4096;
        c->max_new_tokens = 4096;
        c->default_max_tokens = 256;
        c->context_size = 4096;
        c->queue_length = 64;
        c->max_batch = 8;
        c->max_request_bytes = 1 << 20;

        if (mode == BUS_MODE_SYSTEM) {
                r = strv_push(&c->model_dirs, DEFAULT_SYSTEM_MODEL_DIR);
                if (r < 0)
                        return r;
                c->socket_path = strdup(DEFAULT_SYSTEM_SOCKET);
                c->cache_dir = strdup("/var/cache/quantd");
                c->state_dir = strdup("/var/lib/quantd");
                if (!c->socket_path || !c->cache_dir || !c->state_dir)
                        return -ENOMEM;
        } else {
                xdg = getenv("XDG_DATA_HOME");
                if (xdg && *xdg)
                        r = asprintf(&p, "%s/quantd/models", xdg);
                else
                        r = asprintf(&p, "%s/.local/share/quantd/models", getenv("HOME") ?: "/");
                if (r < 0)
                        return -ENOMEM;
                r = strv_push(&c->model_dirs, p);
                if (r < 0)
                        return r;
                xdg = getenv("XDG_STATE_HOME");
                if ((xdg && *xdg ? asprintf(&c->state_dir, "%s/quantd", xdg)
                                 : asprintf(&c->state_dir, "%s/.local/state/quantd", getenv("HOME") ?: "/")) < 0)
                        return -ENOMEM;
                xdg = getenv("XDG_RUNTIME_DIR");
                if (xdg && *xdg && asprintf(&c->socket_path, "%s/quantd/quantd.sock", xdg) < 0)
                        return -ENOMEM;
        }
        return strv_push(&c->model_dirs, QUANTD_DATADIR "/models");
}

int config_load(const ConfigOverrides *o, Config **ret) {
        _cleanup_(config_freep) Config *c = NULL;
        int r;

        c = calloc(1, sizeof(Config));
        if (!c)
                return log_oom();
        r = set_defaults(c, o->mode);
        if (r < 0)
                return log_oom();

        if (o->config_file) {
                r = config_read_file(c, o->config_file, false);
                if (r < 0)
                        return r;
        } else {
                r = config_read_file(c, QUANTD_DATADIR "/quantd.conf", true);
                if (r >= 0)
                        r = config_read_file(c, QUANTD_SYSCONFDIR "/quantd.conf", true);
                if (r >= 0)
                        r = config_read_dropins(c, QUANTD_SYSCONFDIR "/quantd.conf.d");
                if (r >= 0 && o->mode == BUS_MODE_USER) {
                        _cleanup_free_ char *p = NULL;
                        const char *xdg = getenv("XDG_CONFIG_HOME");
                        if ((xdg && *xdg ? asprintf(&p, "%s/quantd/quantd.conf", xdg)
                                         : asprintf(&p, "%s/.config/quantd/quantd.conf", getenv("HOME") ?: "/")) < 0)
                                return log_oom();
                        r = config_read_file(c, p, true);
                }
                if (r < 0)
                        return r;
        }

        if (o->socket_path) {
                free(c->socket_path);
                c->socket_path = strdup(o->socket_path);
                if (!c->socket_path)
                        return log_oom();
        }
        if (o->model_dirs) {
                strv_free(c->model_dirs);
                c->model_dirs = NULL;
                for (char **i = o->model_dirs; *i; i++)
                        if (strv_push(&c->model_dirs, *i) < 0)
                                return log_oom();
        }
        for (char **i = o->models; i && *i; i++)
                if (strv_push(&c->models, *i) < 0)
                        return log_oom();
        if (o->log_level) {
                r = log_level_from_string(o->log_level);
                if (r < 0)
                        return log_error_errno(r, "Invalid log level '%s'.", o->log_level);
                c->log_level = r;
        }
        if (o->cpu_only >= 0)
                c->cpu_only = o->cpu_only;
        if (c->max_batch == 0)
                c->max_batch = 1;
        if (c->default_max_tokens > c->max_new_tokens)
                c->default_max_tokens = c->max_new_tokens;

        /* Resolve model directories now so that the containment check compares real paths. */
        for (char **i = c->model_dirs; i && *i; i++) {
                char *rp = realpath(*i, NULL);
                if (rp) {
                        free(*i);
                        *i = rp;
                }
        }

        *ret = TAKE_PTR(c);
        return 0;
}

const char *config_get(const Config *c, const char *section, const char *key) {
        for (size_t i = c->n_entries; i > 0; i--)
                if (strcasecmp(c->entries[i - 1].section, section) == 0 && streq(c->entries[i - 1].key, key))
                        return c->entries[i - 1].value;
        return NULL;
}

void config_warn_unknown(const Config *c, const char *section, const char *const *known) {
        for (size_t i = 0; i < c->n_entries; i++) {
                const ConfigEntry *e = &c->entries[i];
                bool found = false;

                if (strcasecmp(e->section, section) != 0)
                        continue;
                for (const char *const *k = known; *k && !found; k++)
                        found = streq(*k, e->key);
                if (!found)
                        log_warning("%s:%u: unknown key '%s' in [%s], ignoring.", e->file, e->line, e->key, section);
        }
}

int config_model_path_allowed(const Config *c, const char *path, char **ret_resolved) {
        _cleanup_free_ char *rp = NULL;

        rp = realpath(path, NULL);
        if (!rp)
                return -errno;
        for (char **i = c->model_dirs; i && *i; i++) {
                size_t n = strlen(*i);
                while (n > 1 && (*i)[n - 1] == '/')
                        n--;
                if (strncmp(rp, *i, n) == 0 && (rp[n] == '/' || (n == 1 && rp[0] == '/'))) {
                        if (ret_resolved)
                                *ret_resolved = TAKE_PTR(rp);
                        return 0;
                }
        }
        if (c->state_dir) {
                _cleanup_free_ char *q = NULL, *rq = NULL;
                size_t n;
                if (asprintf(&q, "%s/quantized", c->state_dir) < 0)
                        return -ENOMEM;
                rq = realpath(q, NULL);
                n = rq ? strlen(rq) : 0;
                if (rq && strncmp(rp, rq, n) == 0 && rp[n] == '/') {
                        if (ret_resolved)
                                *ret_resolved = TAKE_PTR(rp);
                        return 0;
                }
        }
        return -EPERM;
}
