/* Real vocabularies: the tokenizer of each .gguf in models/ of the source tree (the bundled
 * model) must load and round-trip mixed text; with $QUANTD_TOKENIZER_COMPAT_DIR set, token ids
 * are also compared with reference tokenizers (tests/models/tokenizer-compat/README).
 * Skipped when neither exists. */
#include <dirent.h>
#include <jansson.h>

#include "formats-fixtures.h"

static int check_one(const char *dir, const char *name) {
        char gpath[4096], jpath[4096];
        Gguf *g = NULL;
        QdTokenizer *tok = NULL;
        char *err = NULL;
        int bad = 0;
        size_t i;
        json_t *e;

        snprintf(gpath, sizeof(gpath), "%s/%s.gguf", dir, name);
        snprintf(jpath, sizeof(jpath), "%s/%s.json", dir, name);
        json_t *j = json_load_file(jpath, 0, NULL);
        if (!j)
                return 0;
        if (gguf_open(gpath, &g, &err) < 0 || qd_tokenizer_new_from_gguf(g, &tok, &err) < 0) {
                fprintf(stderr, "%s: %s\n", gpath, err);
                abort();
        }
        json_array_foreach(j, i, e) {
                const char *text = json_string_value(json_object_get(e, "text"));
                json_t *ids = json_object_get(e, "ids");
                bool special = json_is_true(json_object_get(e, "special"));
                int32_t *v;
                size_t n;
                char *out;
                CHECK(text && json_is_array(ids));
                CHECK_OK(qd_tokenizer_tokenize(tok, text, strlen(text), false, special, &v, &n));
                bool ok = n == json_array_size(ids);
                for (size_t k = 0; ok && k < n; k++)
                        ok = v[k] == json_integer_value(json_array_get(ids, k));
                CHECK_OK(qd_tokenizer_detokenize(tok, v, n, false, &out, NULL));
                if (!ok || !streq(out, text)) {
                        bad++;
                        fprintf(stderr, "%s: mismatch for [%s]\n", name, text);
                }
                free(v);
                free(out);
        }
        printf("%s: %zu texts, %d mismatches\n", name, json_array_size(j), bad);
        json_decref(j);
        qd_tokenizer_free(tok);
        gguf_close(g);
        return bad ? -1 : 1;
}

static const char *const texts[] = {
        "In the beginning God created the heaven and the earth.",
        "caf\xc3\xa9 na\xc3\xafve \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x99\x82 12345\n\n  two  spaces\ttab",
        " leading and trailing ",
};

/* Every GGUF shipped in models/: all tensors valid, the tokenizer round-trips. */
static int check_bundled(void) {
        const char *root = getenv("QUANTD_SOURCE_ROOT");
        char path[4096];
        int checked = 0;

        if (!root)
                return 0;
        snprintf(path, sizeof(path), "%s/models", root);
        DIR *d = opendir(path);
        if (!d)
                return 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);
                if (l <= 5 || !streq(de->d_name + l - 5, ".gguf"))
                        continue;
                char file[8192];
                Gguf *g = NULL;
                QdTokenizer *tok = NULL;
                char *err = NULL;
                snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
                if (gguf_open(file, &g, &err) < 0 || qd_tokenizer_new_from_gguf(g, &tok, &err) < 0) {
                        fprintf(stderr, "%s: %s\n", file, err);
                        abort();
                }
                CHECK(gguf_n_tensors(g) > 0);
                for (size_t i = 0; i < ELEMENTSOF(texts); i++) {
                        int32_t *v;
                        size_t n;
                        char *out;
                        CHECK_OK(
                                qd_tokenizer_tokenize(tok, texts[i], strlen(texts[i]), true, false, &v, &n));
                        CHECK(n > 1 && (!qd_tokenizer_add_bos(tok) || v[0] == qd_tokenizer_bos(tok)));
                        CHECK_OK(qd_tokenizer_detokenize(tok, v, n, true, &out, NULL));
                        if (!streq(out, texts[i]))
                                fprintf(stderr, "%s: [%s] -> [%s]\n", de->d_name, texts[i], out);
                        CHECK(streq(out, texts[i]));
                        free(out);
                        free(v);
                }
                printf("%s: %zu tensors, %u tokens, round trips ok\n", de->d_name, gguf_n_tensors(g),
                       qd_tokenizer_n_vocab(tok));
                qd_tokenizer_free(tok);
                gguf_close(g);
                checked++;
        }
        closedir(d);
        return checked;
}

int main(void) {
        const char *dir = getenv("QUANTD_TOKENIZER_COMPAT_DIR");
        int checked = check_bundled();

        if (!dir)
                return checked > 0 ? 0 : 77;
        DIR *d = opendir(dir);
        if (!d)
                return checked > 0 ? 0 : 77;
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);
                if (l > 5 && streq(de->d_name + l - 5, ".gguf")) {
                        char name[256];
                        snprintf(name, sizeof(name), "%.*s", (int)(l - 5), de->d_name);
                        int r = check_one(dir, name);
                        CHECK(r >= 0);
                        checked += r;
                }
        }
        closedir(d);
        return checked > 0 ? 0 : 77;
}
