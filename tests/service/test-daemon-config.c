/* Unit test of the layered configuration: values, overrides, sizes, unknown keys, and the
 * model-directory containment check (symlinks and ".." must not escape). */
#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon-config.h"
#include "log.h"

static char dir[] = "/tmp/qd-config-XXXXXX";

static void write_file(const char *name, const char *text) {
        char p[PATH_MAX];
        FILE *f;

        snprintf(p, sizeof(p), "%s/%s", dir, name);
        f = fopen(p, "we");
        assert(f);
        fputs(text, f);
        fclose(f);
}

int main(void) {
        Config *c = NULL;
        char conf[PATH_MAX * 2], models[PATH_MAX], outside[PATH_MAX], link[PATH_MAX], *resolved = NULL;
        char *dirs[] = { models, NULL };
        uint64_t v;
        bool b;

        assert(mkdtemp(dir));
        snprintf(models, sizeof(models), "%s/models", dir);
        snprintf(outside, sizeof(outside), "%s/outside.gguf", dir);
        snprintf(link, sizeof(link), "%s/models/escape.gguf", dir);
        assert(mkdir(models, 0755) == 0);
        write_file("models/a.gguf", "x");
        write_file("outside.gguf", "x");
        assert(symlink(outside, link) == 0);

        write_file("quantd.conf",
                   "# comment\n"
                   "[daemon]\n"
                   "memory_budget = 2G\n"
                   "idle_timeout = 5min\n"
                   "no_such_key = 1\n"
                   "cpu_only = yes\n"
                   "[limits]\n"
                   "max_batch = 4\n"
                   "queue_length = 3\n"
                   "default_max_tokens = 99999\n"
                   "max_new_tokens = 100\n"
                   "[Policy]\n"
                   "thermal = 80\n"
                   "[bogus]\n"
                   "x = y\n");
        snprintf(conf, sizeof(conf), "%s/quantd.conf", dir);

        log_set_max_level(LOG_DEBUG);
        ConfigOverrides o = { .mode = BUS_MODE_USER, .config_file = conf, .model_dirs = dirs, .cpu_only = -1,
                              .socket_path = "/tmp/x.sock" };
        assert(config_load(&o, &c) == 0);
        assert(c->memory_budget == 2ULL << 30);
        assert(c->idle_timeout_usec == 300ULL * 1000000);
        assert(c->cpu_only);
        assert(c->max_batch == 4);
        assert(c->queue_length == 3);
        assert(c->max_new_tokens == 100);
        assert(c->default_max_tokens == 100); /* clamped to max_new_tokens */
        assert(streq(c->socket_path, "/tmp/x.sock"));
        assert(c->socket_fd < 0);
        assert(streq(config_get(c, "policy", "thermal"), "80"));
        assert(config_get(c, "policy", "nothing") == NULL);
        /* The unknown key is kept for config_get() but not applied. */
        assert(streq(config_get(c, "daemon", "no_such_key"), "1"));

        /* Containment: inside, outside, symlink escaping, "..", missing file. */
        snprintf(conf, sizeof(conf), "%s/a.gguf", models);
        assert(config_model_path_allowed(c, conf, &resolved) == 0);
        assert(strstr(resolved, "/models/a.gguf"));
        free(resolved);
        assert(config_model_path_allowed(c, outside, NULL) == -EPERM);
        assert(config_model_path_allowed(c, link, NULL) == -EPERM);
        snprintf(conf, sizeof(conf), "%s/../outside.gguf", models);
        assert(config_model_path_allowed(c, conf, NULL) == -EPERM);
        snprintf(conf, sizeof(conf), "%s/missing.gguf", models);
        assert(config_model_path_allowed(c, conf, NULL) == -ENOENT);
        c = config_free(c);

        /* A syntax error fails the load. */
        write_file("bad.conf", "[daemon\nx=1\n");
        snprintf(conf, sizeof(conf), "%s/bad.conf", dir);
        o.config_file = conf;
        assert(config_load(&o, &c) < 0);
        assert(!c);

        assert(config_parse_size("512M", &v) == 0 && v == 512ULL << 20);
        assert(config_parse_size("1KiB", &v) == 0 && v == 1024);
        assert(config_parse_size("-1", &v) < 0);
        assert(config_parse_size("12X", &v) < 0);
        assert(config_parse_size("99999999999999999999G", &v) < 0);
        assert(config_parse_bool("off", &b) == 0 && !b);
        assert(config_parse_bool("maybe", &b) < 0);

        unlink(link);
        snprintf(conf, sizeof(conf), "rm -rf '%s'", dir);
        assert(system(conf) == 0);
        printf("ok\n");
        return 0;
}
