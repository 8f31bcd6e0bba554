/* Random small llama/qwen2 GGUF files for the engine's tests and their comparison helpers. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "ggml-types.h"

typedef struct FixtureSpec {
        const char *arch;   /* "llama" or "qwen2" */
        uint32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff;
        GgmlType wtype;     /* type of the 2-D weights */
        bool tied;          /* no output.weight */
        bool rope_freqs;    /* add a llama3-style rope_freqs.weight */
        bool rope_llama3;   /* llama3 rope scaling from <arch>.rope.scaling.* metadata instead */
        float rope_base;
        uint64_t seed;
} FixtureSpec;

/* Writes the model to path. */
int fixture_write(const FixtureSpec *spec, const char *path);
/* A fresh directory under $TMPDIR (freed by the caller, removed with fixture_rmdir). */
char *fixture_tmpdir(void);
void fixture_rmdir(char *dir);
/* sum (a-b)^2 / sum b^2 */
double fixture_nmse(const float *a, const float *b, uint32_t n);
uint32_t fixture_rand(uint64_t *state);
