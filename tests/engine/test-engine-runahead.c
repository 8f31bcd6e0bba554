/* Greedy run-ahead (llama_vk_seq_set_runahead): 64 greedy decode steps with the next step queued
 * on the GPU's argmax give the tokens and the final logits of the same steps without it, bit for
 * bit, on F16 and Q4_0 fixtures; so does a caller that leaves the argmax now and then (the queued
 * step is discarded), asks for logits mid-way, steps the sequence in a batch and switches the
 * precision (dropping the variant a queued step reads) in between. A step stays queued after
 * every greedy step but the one that fills the context. Sequences freed with a step queued, and
 * the engine's greedy qd_sequence_step() (run-ahead on) against the same tokens fed one by one
 * (off). The validation layer must stay silent. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture-model.h"
#include "gguf.h"
#include "llama-vulkan-internal.h"
#include "macro.h"
#include "model-llama.h"
#include "vk.h"


#define N_PROMPT 9
#define N_STEPS 64
#define N_CTX (N_PROMPT + N_STEPS + 1) /* the final logits step fills the context */

static int failures;

/* What the caller does at a decode step. */
typedef enum Act {
        GREEDY,  /* the last argmax */
        DEVIATE, /* another token */
        LOGITS,  /* the last argmax, logits wanted */
        BATCH,   /* the last argmax through llama_vk_batch_eval() */
        SWITCH,  /* a precision switch and drop of the other variants, then the last argmax */
} Act;

static Act act_mixed(uint32_t i) {
        switch (i) {
        case 3:
        case 13:
        case 14:
        case 50:
                return DEVIATE;
        case 20:
                return LOGITS;
        case 27:
                return BATCH;
        case 41:
                return SWITCH;
        default:
                return GREEDY;
        }
}

static Act act_greedy(uint32_t i) {
        (void) i;
        return GREEDY;
}

/* The prompt, N_STEPS steps as act() says (tokens into ret_tok) and a final step with logits
 * (into ret_logits, then the logits of step 20 when LOGITS is used there). */
static int run(LlamaVk *v, uint32_t V, QdPrecision p0, QdPrecision p1, bool ahead, Act (*act)(uint32_t),
               const int32_t *prompt, int32_t *ret_tok, float *ret_logits) {
        _cleanup_(llama_vk_seq_freep) LlamaVkSeq *s = NULL;
        int32_t tok;
        int r;

        if ((r = llama_vk_set_precision(v, p0)) < 0 || (r = llama_vk_seq_new(v, N_CTX, &s)) < 0)
                return r;
        llama_vk_seq_set_runahead(s, ahead);
        if ((r = llama_vk_seq_eval(s, prompt, N_PROMPT, false, NULL, &tok, NULL)) < 0)
                return r;
        for (uint32_t i = 0; i < N_STEPS; i++) {
                Act a = act(i);
                int32_t in = a == DEVIATE ? (tok + 1 + (int32_t) i) % (int32_t) V : tok;

                if (a == SWITCH && ((r = llama_vk_set_precision(v, p1)) < 0 || (r = llama_vk_drop_variants(v, true)) < 0))
                        return r;
                if (a == BATCH)
                        r = llama_vk_batch_eval(v, &s, &in, 1, &tok, NULL);
                else
                        r = llama_vk_seq_eval(s, &in, 1, a == LOGITS, ret_logits + V, &tok, NULL);
                if (r < 0)
                        return r;
                ret_tok[i] = tok;
                /* the queue holds the next step after each greedy one (but the context's last) */
                bool want = ahead && a != LOGITS && a != BATCH && s->len < N_CTX;
                if ((s->spec >= 0) != want) {
                        printf("  step %u: %s step queued ahead  FAILED\n", i, want ? "no" : "a");
                        failures++;
                }
        }
        return llama_vk_seq_eval(s, &tok, 1, true, ret_logits, NULL, NULL);
}

static void compare(QvkDevice *d, const char *path, QdPrecision p0, QdPrecision p1, const char *what,
                    Act (*act)(uint32_t)) {
        _cleanup_(gguf_closep) Gguf *g = NULL;
        _cleanup_(llama_vk_freep) LlamaVk *v = NULL;
        _cleanup_free_ char *err = NULL;
        LlamaWeights w = {};
        int32_t prompt[N_PROMPT], ta[N_STEPS], tb[N_STEPS];
        uint64_t seed = 5;

        assert(gguf_open(path, &g, &err) == 0);
        assert(llama_weights_load(g, &w, &err) == 0);
        uint32_t V = w.hp.n_vocab;
        _cleanup_free_ float *la = calloc(2 * (size_t) V, sizeof(float));
        _cleanup_free_ float *lb = calloc(2 * (size_t) V, sizeof(float));
        assert(la && lb);
        for (size_t i = 0; i < N_PROMPT; i++)
                prompt[i] = fixture_rand(&seed) % V;

        int r = llama_vk_new(d, &w, &v);
        int ra = r < 0 ? r : run(v, V, p0, p1, false, act, prompt, ta, la);
        int rb = r < 0 ? r : run(v, V, p0, p1, true, act, prompt, tb, lb);
        size_t same = 0;
        for (size_t i = 0; i < N_STEPS; i++)
                same += ta[i] == tb[i];
        bool ok = ra >= 0 && rb >= 0 && same == N_STEPS && memcmp(la, lb, 2 * (size_t) V * sizeof(float)) == 0;
        printf("  %-34s %s: %zu of %d tokens the same, logits %s%s\n", what,
               ra < 0 || rb < 0 ? strerror(-(ra < 0 ? ra : rb)) : "ran", same, N_STEPS,
               memcmp(la, lb, 2 * (size_t) V * sizeof(float)) ? "differ" : "the same", ok ? "" : "  FAILED");
        failures += !ok;
        v = llama_vk_free(v);
        llama_weights_done(&w);
}

/* Sequences freed with a step queued ahead, one of them in the middle of a batch's life. */
static void free_queued(QvkDevice *d, const char *path, QdPrecision p) {
        _cleanup_(gguf_closep) Gguf *g = NULL;
        _cleanup_(llama_vk_freep) LlamaVk *v = NULL;
        _cleanup_free_ char *err = NULL;
        LlamaWeights w = {};
        int32_t prompt[N_PROMPT] = {}, tok;
        bool queued = true;
        int r;

        assert(gguf_open(path, &g, &err) == 0);
        assert(llama_weights_load(g, &w, &err) == 0);
        r = llama_vk_new(d, &w, &v);
        if (r >= 0)
                r = llama_vk_set_precision(v, p);
        for (uint32_t k = 0; r >= 0 && k < 3; k++) {
                LlamaVkSeq *s = NULL;
                if ((r = llama_vk_seq_new(v, N_CTX, &s)) < 0)
                        break;
                llama_vk_seq_set_runahead(s, true);
                r = llama_vk_seq_eval(s, prompt, N_PROMPT, false, NULL, &tok, NULL);
                for (uint32_t i = 0; r >= 0 && i <= k; i++)
                        r = llama_vk_seq_eval(s, &tok, 1, false, NULL, &tok, NULL);
                queued &= s->spec >= 0;
                s = llama_vk_seq_free(s); /* the queued step still runs */
        }
        bool ok = r >= 0 && queued;
        printf("  %-34s %s%s\n", "freed with a step queued", r < 0 ? strerror(-r) : queued ? "ran" : "nothing queued",
               ok ? "" : "  FAILED");
        failures += !ok;
        v = llama_vk_free(v);
        llama_weights_done(&w);
}

/* The engine: greedy qd_sequence_step() (run-ahead on) against its tokens fed back by
 * qd_sequence_prefill() one at a time (run-ahead off there). */
static void engine(QdEngine *e, const char *path) {
        _cleanup_(qd_model_freep) QdModel *m = NULL;
        _cleanup_(qd_sequence_freep) QdSequence *a = NULL, *b = NULL;
        int32_t prompt[N_PROMPT] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, tok[N_STEPS];
        size_t same = 0;

        assert(qd_model_load(e, path, &m) == 0);
        QdModelInfo info;
        qd_model_info(m, &info);
        uint32_t V = info.n_vocab;
        assert(qd_sequence_new(m, N_CTX, &a) == 0 && qd_sequence_new(m, N_CTX, &b) == 0);
        assert(qd_sequence_prefill(a, prompt, N_PROMPT) == 0 && qd_sequence_prefill(b, prompt, N_PROMPT) == 0);
        for (uint32_t i = 0; i < N_STEPS; i++)
                assert(qd_sequence_step(a, NULL, &tok[i], NULL) == 0);
        for (uint32_t i = 0; i < N_STEPS; i++) {
                assert(qd_sequence_prefill(b, &tok[i], 1) == 0);
                /* b's argmax after token i is a's next token */
                int32_t next;
                if (i + 1 < N_STEPS) {
                        const float *lg = qd_sequence_logits(b);
                        next = 0;
                        for (uint32_t j = 1; j < V; j++)
                                if (lg[j] > lg[next])
                                        next = (int32_t) j;
                        same += next == tok[i + 1];
                }
        }
        const float *la = qd_sequence_logits(a), *lb = qd_sequence_logits(b);
        bool ok = same == N_STEPS - 1 && la && lb && memcmp(la, lb, V * sizeof(float)) == 0;
        printf("  %-34s %zu of %d next tokens the host's argmax, last logits %s%s\n", "engine greedy steps", same,
               N_STEPS - 1, la && lb && !memcmp(la, lb, V * sizeof(float)) ? "the same" : "differ", ok ? "" : "  FAILED");
        failures += !ok;
}

int main(void) {
        _cleanup_(qd_engine_freep) QdEngine *gpu = NULL;
        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        char *dir;

        if (!fixture_engines(&gpu, NULL))
                return 77;
        assert(qvk_device_new(NULL, NULL, &d) == 0); /* the LlamaVk-level cases' */
        dir = fixture_tmpdir();
        assert(dir);
        static const struct {
                GgmlType t;
                QdPrecision p0, p1;
        } formats[] = {
                { GGML_TYPE_F16, QD_PRECISION_F16, QD_PRECISION_INT4 },
                { GGML_TYPE_Q4_0, QD_PRECISION_INT4, QD_PRECISION_INT8 },
        };
        for (size_t f = 0; f < ELEMENTSOF(formats); f++) {
                _cleanup_free_ char *path = NULL;
                FixtureSpec spec = { .arch = "llama", .n_vocab = 300, .n_embd = 128, .n_layer = 2, .n_head = 4,
                                     .n_head_kv = 2, .n_ff = 224, .rope_base = 10000.0f, .wtype = formats[f].t,
                                     .seed = 51 + f, .output_gain = 4.0f };
                assert(asprintf(&path, "%s/m%zu.gguf", dir, f) > 0);
                assert(fixture_write(&spec, path) == 0);
                printf("%s:\n", ggml_type_name(formats[f].t));
                compare(d, path, formats[f].p0, formats[f].p1, "greedy", act_greedy);
                compare(d, path, formats[f].p0, formats[f].p1, "deviating, logits, batch, switch", act_mixed);
                free_queued(d, path, formats[f].p0);
                engine(gpu, path);
        }
        fixture_rmdir(dir);
        failures += !fixture_validation_clean();
        return failures ? 1 : 0;
}
