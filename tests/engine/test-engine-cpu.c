/* The CPU reference forward pass through the engine API: decoding with the KV cache equals a full
 * re-prefill, attention is causal, greedy steps pick the argmax with its log-softmax, for llama
 * (normal RoPE, GQA, llama3 rope_freqs) and qwen2 (NeoX RoPE, biases, tied embeddings). */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture-model.h"
#include "engine.h"
#include "macro.h"
#include "model-llama.h"
#include "sampler.h"


#define N_TOK 9

static void check_model(const FixtureSpec *spec, const char *dir) {
        _cleanup_(qd_engine_freep) QdEngine *e = NULL;
        _cleanup_(qd_model_freep) QdModel *m = NULL;
        _cleanup_(qd_sequence_freep) QdSequence *a = NULL, *b = NULL;
        _cleanup_free_ char *path = NULL;
        _cleanup_free_ float *la = NULL;
        QdEngineOptions opts = { .cpu_only = true };
        QdModelInfo info;
        int32_t tok[N_TOK];
        uint64_t seed = spec->seed + 99;

        assert(asprintf(&path, "%s/%s.gguf", dir, spec->arch) > 0);
        assert(fixture_write(spec, path) == 0);
        assert(qd_engine_new(&opts, &e) == 0);
        assert(qd_model_load(e, path, &m) == 0);
        qd_model_info(m, &info);
        assert(streq(info.arch, spec->arch));
        assert(info.n_vocab == spec->n_vocab && info.n_layer == spec->n_layer);
        assert(info.n_head_kv == spec->n_head_kv && info.n_embd == spec->n_embd);
        assert(qd_model_variant_bytes(m, QD_PRECISION_F16) > qd_model_variant_bytes(m, QD_PRECISION_INT8));
        assert(qd_model_variant_bytes(m, QD_PRECISION_INT8) > qd_model_variant_bytes(m, QD_PRECISION_INT4));

        for (size_t i = 0; i < N_TOK; i++)
                tok[i] = fixture_rand(&seed) % spec->n_vocab;

        /* a: prompt of 4, then one token at a time through the KV cache; b: all at once. */
        assert(qd_sequence_new(m, 32, &a) == 0);
        assert(qd_sequence_new(m, 32, &b) == 0);
        assert(qd_sequence_logits(a) == NULL);
        assert(qd_sequence_prefill(a, tok, 4) == 0);
        for (size_t i = 4; i < N_TOK; i++)
                assert(qd_sequence_prefill(a, &tok[i], 1) == 0);
        assert(qd_sequence_prefill(b, tok, N_TOK) == 0);
        assert(qd_sequence_length(a) == N_TOK && qd_sequence_length(b) == N_TOK);
        double err = fixture_nmse(qd_sequence_logits(a), qd_sequence_logits(b), spec->n_vocab);
        printf("%s: kv-cache decode vs prefill nmse %.3g\n", spec->arch, err);
        assert(err < 1e-10);

        /* Greedy step: the argmax, its log-softmax, then evaluated. */
        la = malloc(spec->n_vocab * sizeof(float));
        assert(la);
        memcpy(la, qd_sequence_logits(a), spec->n_vocab * sizeof(float));
        int32_t t;
        float lp;
        QdSampling smp;
        qd_sampling_init(&smp);
        assert(qd_sequence_step(a, &smp, &t, &lp) == 0);
        assert(t == qd_sampler_argmax(la, spec->n_vocab));
        double sum = 0;
        for (uint32_t i = 0; i < spec->n_vocab; i++)
                sum += exp((double) la[i] - la[t]);
        assert(fabs(lp + log(sum)) < 1e-4);
        assert(qd_sequence_length(a) == N_TOK + 1);
        /* The step evaluated t: b given t explicitly must agree. */
        assert(qd_sequence_prefill(b, &t, 1) == 0);
        assert(fixture_nmse(qd_sequence_logits(a), qd_sequence_logits(b), spec->n_vocab) < 1e-10);

        /* Context limits and bad tokens. */
        int32_t bad = spec->n_vocab;
        assert(qd_sequence_prefill(a, &bad, 1) == -EINVAL);
        int32_t many[32] = {};
        assert(qd_sequence_prefill(a, many, 32) == -ENOSPC);

        /* Precision is recorded even on the CPU path. */
        assert(qd_model_set_precision(m, QD_PRECISION_INT4) == 0);
        assert(qd_model_get_precision(m) == QD_PRECISION_INT4);
}

/* Causality on the reference itself: the logits at position i do not depend on later tokens,
 * and they change when an earlier token changes. */
static void check_causal(const FixtureSpec *spec, const char *dir) {
        _cleanup_(gguf_closep) Gguf *g = NULL;
        _cleanup_(llama_cpu_freep) LlamaCpu *c1 = NULL, *c2 = NULL;
        _cleanup_free_ float *l1 = NULL, *l2 = NULL;
        _cleanup_free_ char *path = NULL, *err = NULL;
        LlamaWeights w = {};
        int32_t t1[6] = { 1, 2, 3, 4, 5, 6 }, t2[6] = { 1, 2, 3, 4, 9, 10 };
        uint32_t V = spec->n_vocab;

        assert(asprintf(&path, "%s/causal-%s.gguf", dir, spec->arch) > 0);
        assert(fixture_write(spec, path) == 0);
        assert(gguf_open(path, &g, &err) == 0);
        assert(llama_weights_load(g, &w, &err) == 0);
        assert(w.hp.neox == streq(spec->arch, "qwen2"));
        assert(w.hp.qkv_bias == streq(spec->arch, "qwen2"));
        assert(spec->tied == (w.output.data == w.token_embd.data));
        assert(llama_cpu_new(&w, 16, &c1) == 0);
        assert(llama_cpu_new(&w, 16, &c2) == 0);
        l1 = malloc(6 * V * sizeof(float));
        l2 = malloc(6 * V * sizeof(float));
        assert(l1 && l2);
        assert(llama_cpu_eval(c1, t1, 6, NULL, l1) == 0);
        assert(llama_cpu_eval(c2, t2, 6, NULL, l2) == 0);
        assert(memcmp(l1, l2, 4 * V * sizeof(float)) == 0);
        assert(fixture_nmse(l1 + 4 * V, l2 + 4 * V, V) > 1e-6);
        assert(fixture_nmse(l1 + 5 * V, l2 + 5 * V, V) > 1e-6);
        llama_weights_done(&w);
}

/* llama3 RoPE scaling from metadata: high frequencies unchanged, low ones divided by the
 * factor, a smooth blend between (as the Llama 3.1 converter computes rope_freqs). */
static void check_rope_llama3(const char *dir) {
        FixtureSpec sp = {
                .arch = "llama", .n_vocab = 40, .n_embd = 128, .n_layer = 1, .n_head = 2,
                .n_head_kv = 1, .n_ff = 64, .wtype = GGML_TYPE_F16, .rope_llama3 = true,
                .rope_base = 500000.0f, .seed = 3,
        };
        _cleanup_(gguf_closep) Gguf *g = NULL;
        _cleanup_free_ char *path = NULL, *err = NULL;
        LlamaWeights w = {};
        bool blended = false;

        assert(asprintf(&path, "%s/rope3.gguf", dir) > 0);
        assert(fixture_write(&sp, path) == 0);
        assert(gguf_open(path, &g, &err) == 0);
        assert(llama_weights_load(g, &w, &err) == 0);
        assert(w.hp.rope_factors && w.hp.n_rot == 64);
        assert(w.hp.rope_factors[0] == 1.0f);
        assert(w.hp.rope_factors[31] == 8.0f);
        for (uint32_t i = 1; i < 32; i++) {
                assert(w.hp.rope_factors[i] >= w.hp.rope_factors[i - 1]);
                blended |= w.hp.rope_factors[i] > 1.0f && w.hp.rope_factors[i] < 8.0f;
        }
        assert(blended);
        llama_weights_done(&w);
}

int main(void) {
        char *dir = fixture_tmpdir();
        FixtureSpec llama = {
                .arch = "llama", .n_vocab = 97, .n_embd = 64, .n_layer = 2, .n_head = 4,
                .n_head_kv = 2, .n_ff = 96, .wtype = GGML_TYPE_F16, .rope_freqs = true,
                .rope_base = 500000.0f, .seed = 1,
        };
        FixtureSpec qwen = {
                .arch = "qwen2", .n_vocab = 131, .n_embd = 96, .n_layer = 3, .n_head = 6,
                .n_head_kv = 2, .n_ff = 160, .wtype = GGML_TYPE_Q8_0, .tied = true, .seed = 2,
        };

        assert(dir);
        check_model(&llama, dir);
        check_model(&qwen, dir);
        check_causal(&llama, dir);
        check_causal(&qwen, dir);
        check_rope_llama3(dir);
        assert(qd_precision_from_string("int8") == QD_PRECISION_INT8);
        assert(streq(qd_precision_to_string(QD_PRECISION_F16), "fp16"));
        assert(qd_precision_from_string("fp8") == QD_PRECISION_INVALID);
        fixture_rmdir(dir);
        return 0;
}
