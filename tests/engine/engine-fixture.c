/* Builds random llama/qwen2 GGUF fixtures with the GGUF writer for the engine's tests. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine-fixture.h"
#include "gguf.h"
#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(GgufWriter *, gguf_writer_free);

uint32_t fixture_rand(uint64_t *s) {
        /* splitmix64 */
        uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return (uint32_t) ((z ^ (z >> 31)) >> 32);
}

static float frand(uint64_t *s) {
        return (float) fixture_rand(s) / 4294967296.0f * 2.0f - 1.0f;
}

typedef struct Blobs {
        void **p;
        size_t n;
} Blobs;

static void blobs_free(Blobs *b) {
        for (size_t i = 0; i < b->n; i++)
                free(b->p[i]);
        free(b->p);
}

static int add(GgufWriter *w, Blobs *b, uint64_t *seed, const char *name, GgmlType type,
               uint64_t ne0, uint64_t ne1, float scale, float offset) {
        size_t rb, n = b->n;
        void *data, **np;
        int r;

        if (type != GGML_TYPE_F32 && ne0 % 32 != 0)
                type = GGML_TYPE_F16;
        r = ggml_row_size(type, ne0, &rb);
        if (r < 0)
                return r;
        data = malloc(rb * ne1);
        np = realloc(b->p, (n + 1) * sizeof(void *));
        if (!data || !np) {
                free(data);
                return -ENOMEM;
        }
        b->p = np;
        b->p[b->n++] = data;
        _cleanup_free_ float *row = malloc(ne0 * sizeof(float));
        if (!row)
                return -ENOMEM;
        for (uint64_t i = 0; i < ne1; i++) {
                for (uint64_t j = 0; j < ne0; j++)
                        row[j] = offset + scale * frand(seed);
                r = ggml_quantize_row(type, row, (uint8_t *) data + i * rb, ne0);
                if (r < 0)
                        return r;
        }
        uint64_t ne[2] = { ne0, ne1 };
        return gguf_writer_add_tensor(w, name, type, ne1 > 1 ? 2 : 1, ne, data, rb * ne1);
}

int fixture_write(const FixtureSpec *sp, const char *path) {
        _cleanup_(gguf_writer_freep) GgufWriter *w = NULL;
        Blobs b = {};
        uint64_t seed = sp->seed;
        uint32_t E = sp->n_embd, hd = E / sp->n_head, nq = E, nkv = sp->n_head_kv * hd, F = sp->n_ff;
        char k[128];
        int r;

        r = gguf_writer_new(&w);
        if (r < 0)
                return r;
#define KEY(s) (snprintf(k, sizeof(k), "%s.%s", sp->arch, s), k)
        if ((r = gguf_writer_add_string(w, "general.architecture", sp->arch)) < 0 ||
            (r = gguf_writer_add_string(w, "general.name", "fixture")) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("context_length"), 256)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("embedding_length"), E)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("block_count"), sp->n_layer)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("feed_forward_length"), F)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("attention.head_count"), sp->n_head)) < 0 ||
            (r = gguf_writer_add_u32(w, KEY("attention.head_count_kv"), sp->n_head_kv)) < 0 ||
            (r = gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f)) < 0 ||
            (r = gguf_writer_add_f32(w, KEY("rope.freq_base"), sp->rope_base > 0 ? sp->rope_base : 10000.0f)) < 0)
                return r;
        if (sp->rope_llama3 &&
            ((r = gguf_writer_add_string(w, KEY("rope.scaling.type"), "llama3")) < 0 ||
             (r = gguf_writer_add_f32(w, KEY("rope.scaling.factor"), 8.0f)) < 0 ||
             (r = gguf_writer_add_u32(w, KEY("rope.scaling.original_context_length"), 8192)) < 0))
                return r;

        float ws = 1.0f / sqrtf((float) E) * 1.7f;
        r = add(w, &b, &seed, "token_embd.weight", sp->wtype, E, sp->n_vocab, 1.0f, 0);
        if (r >= 0)
                r = add(w, &b, &seed, "output_norm.weight", GGML_TYPE_F32, E, 1, 0.1f, 1.0f);
        if (r >= 0 && !sp->tied)
                r = add(w, &b, &seed, "output.weight", sp->wtype, E, sp->n_vocab, ws, 0);
        if (r >= 0 && sp->rope_freqs) {
                r = add(w, &b, &seed, "rope_freqs.weight", GGML_TYPE_F32, hd / 2, 1, 0.5f, 2.0f);
        }
        for (uint32_t l = 0; r >= 0 && l < sp->n_layer; l++) {
                struct {
                        const char *n;
                        uint64_t ne0, ne1;
                        bool vec;
                } list[] = {
                        { "attn_norm.weight", E, 1, true },
                        { "attn_q.weight", E, nq, false },
                        { "attn_k.weight", E, nkv, false },
                        { "attn_v.weight", E, nkv, false },
                        { "attn_output.weight", nq, E, false },
                        { "ffn_norm.weight", E, 1, true },
                        { "ffn_gate.weight", E, F, false },
                        { "ffn_up.weight", E, F, false },
                        { "ffn_down.weight", F, E, false },
                        { "attn_q.bias", nq, 1, true },
                        { "attn_k.bias", nkv, 1, true },
                        { "attn_v.bias", nkv, 1, true },
                };
                bool bias = streq(sp->arch, "qwen2");
                for (size_t i = 0; r >= 0 && i < ELEMENTSOF(list); i++) {
                        char name[96];
                        if (strstr(list[i].n, ".bias") && !bias)
                                continue;
                        snprintf(name, sizeof(name), "blk.%u.%s", l, list[i].n);
                        if (strstr(list[i].n, ".bias"))
                                r = add(w, &b, &seed, name, GGML_TYPE_F32, list[i].ne0, 1, 0.5f, 0);
                        else if (list[i].vec)
                                r = add(w, &b, &seed, name, GGML_TYPE_F32, list[i].ne0, 1, 0.1f, 1.0f);
                        else
                                r = add(w, &b, &seed, name, sp->wtype, list[i].ne0, list[i].ne1,
                                        1.7f / sqrtf((float) list[i].ne0), 0);
                }
        }
        if (r >= 0)
                r = gguf_writer_write(w, path);
        blobs_free(&b);
        return r;
}

char *fixture_tmpdir(void) {
        const char *t = getenv("TMPDIR");
        char *p = NULL;
        if (asprintf(&p, "%s/qd-engine-XXXXXX", t ? t : "/tmp") < 0)
                return NULL;
        if (!mkdtemp(p))
                return mfree(p);
        return p;
}

void fixture_rmdir(char *dir) {
        DIR *d;
        struct dirent *de;

        if (!dir)
                return;
        d = opendir(dir);
        if (d) {
                while ((de = readdir(d)))
                        if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                                (void) unlinkat(dirfd(d), de->d_name, 0);
                closedir(d);
        }
        (void) rmdir(dir);
        free(dir);
}

double fixture_nmse(const float *a, const float *b, uint32_t n) {
        double num = 0, den = 0;
        for (uint32_t i = 0; i < n; i++) {
                num += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
                den += (double) b[i] * b[i];
        }
        return den > 0 ? num / den : num;
}
