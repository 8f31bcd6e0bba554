/* Whole-model quantization and evaluation on a random llama fixture: the evaluation forward equals
 * the CPU reference, Q8_0 is closer to F16 than Q4_0 (KL, SQNR), GPTQ beats RTN at Q4_0, the
 * written files keep the metadata, set general.file_type and run through engine.h. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture-model.h"
#include "engine.h"
#include "eval.h"
#include "gguf.h"
#include "macro.h"
#include "model-llama.h"


#define N_CTX 32
#define N_WINDOWS 4
#define N_TOKENS (N_CTX * N_WINDOWS)

static const FixtureSpec spec = {
        .arch = "llama",
        .n_vocab = 96,
        .n_embd = 64,
        .n_layer = 2,
        .n_head = 4,
        .n_head_kv = 2,
        .n_ff = 128,
        .wtype = GGML_TYPE_F16,
        .rope_base = 10000.0f,
        .seed = 7,
};

static int count_sites(void *userdata, uint32_t layer, QdEvalSite site, const float *x, size_t n, size_t cols) {
        unsigned *calls = userdata;

        assert(site < _QD_EVAL_SITE_MAX && layer < spec.n_layer && n == N_CTX && cols > 0 && x);
        calls[site]++;
        return 0;
}

/* The evaluation forward (llama-cpu.c over weights dequantized once, a whole window per call)
 * against llama-cpu.c fed in two parts: row by row (other rounding), and dense (the same). */
static void test_forward(const char *path, const uint32_t *tok) {
        _cleanup_(qd_eval_model_freep) QdEvalModel *m = NULL;
        _cleanup_(gguf_closep) Gguf *g = NULL;
        _cleanup_(llama_cpu_freep) LlamaCpu *c = NULL;
        _cleanup_free_ float *a = malloc(N_CTX * spec.n_vocab * sizeof(float));
        _cleanup_free_ float *b = malloc(N_CTX * spec.n_vocab * sizeof(float));
        LlamaWeights w;
        int32_t t32[N_CTX];

        assert(a && b);
        assert(qd_eval_model_load(path, &m, NULL) == 0);
        assert(qd_eval_model_n_vocab(m) == spec.n_vocab);
        assert(qd_eval_forward(m, tok, N_CTX, a, NULL, NULL) == 0);
        assert(gguf_open(path, &g, NULL) == 0);
        assert(llama_weights_load(g, &w, NULL) == 0);
        assert(llama_cpu_new(&w, N_CTX, &c) == 0);
        for (size_t i = 0; i < N_CTX; i++)
                t32[i] = (int32_t) tok[i];
        assert(llama_cpu_eval(c, t32, N_CTX / 2, NULL, b) == 0);
        assert(llama_cpu_eval(c, t32 + N_CTX / 2, N_CTX - N_CTX / 2, NULL, b + N_CTX / 2 * spec.n_vocab) == 0);
        double err = fixture_nmse(a, b, N_CTX * spec.n_vocab);
        printf("eval forward vs llama-cpu row by row: nmse %.3g\n", err);
        assert(err < 1e-10);
        assert(llama_cpu_reset(c, N_CTX) == 0 && llama_cpu_dequantize(c) == 0);
        assert(llama_cpu_eval(c, t32, N_CTX / 2, NULL, b) == 0);
        assert(llama_cpu_eval(c, t32 + N_CTX / 2, N_CTX - N_CTX / 2, NULL, b + N_CTX / 2 * spec.n_vocab) == 0);
        assert(memcmp(a, b, N_CTX * spec.n_vocab * sizeof(float)) == 0);

        /* The capture sees every site of every layer once per window; the logits stay. */
        unsigned calls[_QD_EVAL_SITE_MAX] = {};
        assert(qd_eval_forward(m, tok, N_CTX, b, count_sites, calls) == 0);
        for (int i = 0; i < _QD_EVAL_SITE_MAX; i++)
                assert(calls[i] == spec.n_layer);
        assert(memcmp(a, b, N_CTX * spec.n_vocab * sizeof(float)) == 0);
        c = llama_cpu_free(c);
        llama_weights_done(&w);
}

static void quantize(const char *in, const char *out, QdQuantType t, QdQuantizeMethod method,
                     const uint32_t *calib, size_t n_calib) {
        QdQuantizeOptions o = {
                .type = t,
                .method = method,
                .calib_tokens = calib,
                .n_calib_tokens = n_calib,
                .n_samples = 4,
                .n_ctx = N_CTX,
        };
        _cleanup_free_ char *err = NULL;
        int r = qd_quantize_file(in, out, &o, &err);
        if (r < 0)
                fprintf(stderr, "quantize %s: %s (%d)\n", out, err ? err : "", r);
        assert(r == 0);
}

static void check_file(const char *ref, const char *path, uint32_t ftype, GgmlType wtype) {
        _cleanup_(gguf_closep) Gguf *a = NULL, *b = NULL;
        uint32_t v;

        assert(gguf_open(ref, &a, NULL) == 0);
        assert(gguf_open(path, &b, NULL) == 0);
        /* Every key of the source is kept with its type; file_type is the new one. */
        for (size_t i = 0; i < gguf_n_kv(a); i++) {
                const char *key = gguf_kv_key(a, i);
                int k = gguf_find_key(b, key);
                assert(k >= 0);
                assert(gguf_kv_type(b, k) == gguf_kv_type(a, i));
        }
        const char *s1, *s2;
        assert(gguf_get_string(a, "general.architecture", &s1, NULL) == 0);
        assert(gguf_get_string(b, "general.architecture", &s2, NULL) == 0);
        assert(streq(s1, s2));
        assert(gguf_get_u32(b, "general.file_type", &v) == 0 && v == ftype);
        assert(gguf_n_tensors(a) == gguf_n_tensors(b));
        assert(gguf_find_tensor(b, "token_embd.weight")->type == gguf_find_tensor(a, "token_embd.weight")->type);
        assert(gguf_find_tensor(b, "blk.0.attn_q.weight")->type == wtype);
        assert(gguf_find_tensor(b, "blk.1.ffn_down.weight")->type == wtype);
        assert(gguf_find_tensor(b, "output.weight")->type == GGML_TYPE_Q8_0);
        assert(gguf_find_tensor(b, "blk.0.attn_norm.weight")->type == GGML_TYPE_F32);
}

/* RTN output is byte for byte what ggml's reference quantizer (llama-quantize) writes. */
static void check_rtn_bytes(const char *ref, const char *path, GgmlType type) {
        _cleanup_(gguf_closep) Gguf *a = NULL, *b = NULL;
        const char *names[] = { "blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output.weight" };

        assert(gguf_open(ref, &a, NULL) == 0);
        assert(gguf_open(path, &b, NULL) == 0);
        for (size_t k = 0; k < ELEMENTSOF(names); k++) {
                const GgufTensor *ta = gguf_find_tensor(a, names[k]), *tb = gguf_find_tensor(b, names[k]);
                GgmlType t = streq(names[k], "output.weight") ? GGML_TYPE_Q8_0 : type;
                size_t n = ta->n_elements, rb;
                _cleanup_free_ float *f = malloc(n * sizeof(float));
                _cleanup_free_ uint8_t *q = NULL;
                assert(f && tb->type == t);
                assert(ggml_dequantize_row(ta->type, ta->data, f, n) == 0);
                assert(ggml_row_size(t, n, &rb) == 0 && rb == tb->size);
                q = malloc(rb);
                assert(q && ggml_quantize_row(t, f, q, n) == 0);
                size_t diff = 0;
                for (size_t i = 0; i < rb; i++)
                        diff += q[i] != ((const uint8_t *) tb->data)[i];
                fprintf(stderr, "%s %s: %zu of %zu bytes differ\n", path, names[k], diff, rb);
                assert(memcmp(q, tb->data, rb) == 0);
        }
}

/* The quantized file through the public engine API, CPU path: finite logits. */
static void check_engine(const char *path, const uint32_t *tok) {
        _cleanup_(qd_engine_freep) QdEngine *e = NULL;
        _cleanup_(qd_model_freep) QdModel *m = NULL;
        _cleanup_(qd_sequence_freep) QdSequence *s = NULL;
        QdEngineOptions opts = { .cpu_only = true };
        int32_t t32[8];

        for (size_t i = 0; i < 8; i++)
                t32[i] = (int32_t) tok[i];
        assert(qd_engine_new(&opts, &e) == 0);
        assert(qd_model_load(e, path, &m) == 0);
        assert(qd_sequence_new(m, 16, &s) == 0);
        assert(qd_sequence_prefill(s, t32, 8) == 0);
        const float *l = qd_sequence_logits(s);
        assert(l);
        for (size_t i = 0; i < spec.n_vocab; i++)
                assert(isfinite(l[i]));
}

static void eval(const char *path, const char *ref, const uint32_t *tok, QdEvalReport *ret) {
        QdEvalOptions o = { .n_ctx = N_CTX };
        assert(qd_eval_tokens(path, ref, tok, N_TOKENS, -1, &o, ret) == 0);
        assert(ret->has_ref && ret->ppl.n_windows == N_WINDOWS);
        assert(ret->ppl.n_scored == N_WINDOWS * (N_CTX / 2 - 1));
        assert(isfinite(ret->ppl.ppl) && ret->ppl.ppl > 1);
        assert(isfinite(ret->dist.kl_mean) && ret->dist.kl_mean >= 0);
        assert(ret->dist.kl_p99 >= ret->dist.kl_mean * 0.999 && ret->dist.top1 <= 1);
        printf("%s: ppl %.4f (ref %.4f) kl mean %.3g p99 %.3g top1 %.3f bpw %.3f, %zu tensors\n", path,
               ret->ppl.ppl, ret->ref_ppl.ppl, ret->dist.kl_mean, ret->dist.kl_p99, ret->dist.top1, ret->bpw,
               ret->n_tensors);
}

/* llama.cpp's Q4_K_M mix on a model with 256-wide rows (8 layers: Q6_K for attn_v/ffn_down in
 * layers 0, 3, 6, 7 and for output.weight, Q4_K elsewhere) and on the 64-wide fixture (the
 * fallbacks Q5_0 / Q8_0): the types, general.file_type 15, ggml's reference bytes, and the file
 * loading back through the evaluation and the engine. */
static void test_kmix(const char *dir, const char *f16, const uint32_t *tok) {
        static const FixtureSpec wide = {
                .arch = "llama", .n_vocab = 96, .n_embd = 256, .n_layer = 8, .n_head = 4, .n_head_kv = 2,
                .n_ff = 512, .wtype = GGML_TYPE_F16, .rope_base = 10000.0f, .seed = 11,
        };
        _cleanup_free_ char *wf16 = NULL, *wq = NULL, *nq = NULL;
        QdEvalReport rep = {};
        uint32_t v;

        assert(asprintf(&wf16, "%s/wide-f16.gguf", dir) > 0 && asprintf(&wq, "%s/wide-q4_k_m.gguf", dir) > 0 &&
               asprintf(&nq, "%s/q4_k_m.gguf", dir) > 0);
        assert(fixture_write(&wide, wf16) == 0);
        QdQuantizeOptions o = { .kmix = QD_KMIX_Q4_K_M, .method = QD_QUANTIZE_RTN, .n_threads = 2 };
        assert(qd_quantize_file(wf16, wq, &o, NULL) == 0);
        assert(qd_quantize_file(f16, nq, &o, NULL) == 0);
        o.method = QD_QUANTIZE_GPTQ;
        assert(qd_quantize_file(wf16, wq, &o, NULL) == -EOPNOTSUPP);

        _cleanup_(gguf_closep) Gguf *a = NULL, *b = NULL, *n = NULL;
        assert(gguf_open(wf16, &a, NULL) == 0 && gguf_open(wq, &b, NULL) == 0 && gguf_open(nq, &n, NULL) == 0);
        assert(gguf_get_u32(b, "general.file_type", &v) == 0 && v == 15);
        assert(gguf_get_u32(n, "general.file_type", &v) == 0 && v == 15);
        size_t n_q = 0;
        for (size_t i = 0; i < gguf_n_tensors(b); i++) {
                const GgufTensor *tb = gguf_tensor(b, i), *ta = gguf_find_tensor(a, tb->name);
                const GgufTensor *tn = gguf_find_tensor(n, tb->name);
                unsigned l = 0;
                bool more = sscanf(tb->name, "blk.%u.", &l) == 1 && (l == 0 || l == 3 || l == 6 || l == 7) &&
                            (strstr(tb->name, "attn_v.") || strstr(tb->name, "ffn_down."));
                GgmlType want = ta->n_dims == 1 ? ta->type :
                                streq(tb->name, "token_embd.weight") ? GGML_TYPE_F16 :
                                streq(tb->name, "output.weight") || more ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_K;
                assert(tb->type == want);
                if (want != GGML_TYPE_Q4_K && want != GGML_TYPE_Q6_K)
                        continue;
                /* ggml's reference quantizer on the F16 weights, byte for byte */
                _cleanup_free_ float *f = malloc(ta->n_elements * sizeof(float));
                _cleanup_free_ uint8_t *q = malloc(tb->size);
                assert(f && q && ggml_dequantize_row(ta->type, ta->data, f, ta->n_elements) == 0);
                assert(ggml_quantize_row(want, f, q, ta->n_elements) == 0);
                assert(memcmp(q, tb->data, tb->size) == 0);
                n_q++;
                /* the 64-wide model of 2 layers (more bits in layer 1): Q4_K falls back to Q5_0,
                 * Q6_K to Q8_0 */
                if (tn && l < 2) {
                        bool nmore = streq(tn->name, "output.weight") ||
                                     (l == 1 && (strstr(tn->name, "attn_v.") || strstr(tn->name, "ffn_down.")));
                        assert(tn->type == (nmore ? GGML_TYPE_Q8_0 : GGML_TYPE_Q5_0));
                }
        }
        assert(n_q == 8 * 7 + 1);
        check_engine(wq, tok);
        check_engine(nq, tok);

        /* Back through the evaluation: 4.5-bit blocks plus Q6_K, between Q4_0's and Q8_0's sizes,
         * and close to F16. */
        QdEvalOptions eo = { .n_ctx = N_CTX };
        assert(qd_eval_tokens(wq, wf16, tok, N_TOKENS, -1, &eo, &rep) == 0);
        printf("q4_k_m (256-wide): ppl %.4f (ref %.4f) kl mean %.3g top1 %.3f bpw %.3f\n", rep.ppl.ppl,
               rep.ref_ppl.ppl, rep.dist.kl_mean, rep.dist.top1, rep.bpw);
        assert(rep.bpw > 4.5 && rep.bpw < 5.5);
        assert(isfinite(rep.dist.kl_mean) && rep.dist.kl_mean < 0.05 && rep.dist.top1 > 0.8);
        assert(rep.n_tensors == n_q);
        for (size_t i = 0; i < rep.n_tensors; i++)
                assert(rep.tensors[i].sqnr_db > (rep.tensors[i].type == GGML_TYPE_Q6_K ? 28 : 18));
        qd_eval_report_done(&rep);
}

/* The progress callback: fractions rise within [0, 1]; a negative answer stops the work. */
typedef struct Prog {
        double last;
        unsigned calls, stop_after;
} Prog;

static int on_progress(void *userdata, double f) {
        Prog *p = userdata;

        assert(f >= p->last && f <= 1);
        p->last = f;
        return ++p->calls == p->stop_after ? -ECANCELED : 0;
}

static void test_progress_cancel(const char *f16, const char *dir, const uint32_t *calib, size_t n_calib,
                                 const uint32_t *tok) {
        _cleanup_free_ char *out = NULL;
        Prog all = {}, stop = { .stop_after = 3 }, estop = { .stop_after = 2 };
        QdQuantizeOptions o = {
                .type = QD_QTYPE_Q4_0,
                .method = QD_QUANTIZE_GPTQ,
                .calib_tokens = calib,
                .n_calib_tokens = n_calib,
                .n_samples = 4,
                .n_ctx = N_CTX,
                .progress = on_progress,
                .userdata = &all,
        };
        QdEvalReport rep = {};

        assert(asprintf(&out, "%s/cancelled.gguf", dir) > 0);
        assert(qd_quantize_file(f16, out, &o, NULL) == 0);
        /* Calibration windows, then every weight matrix. */
        assert(all.calls > 4 + 2 * 7 && all.last > 0.9);
        assert(unlink(out) == 0);
        o.userdata = &stop;
        assert(qd_quantize_file(f16, out, &o, NULL) == -ECANCELED);
        assert(stop.calls == 3 && access(out, F_OK) < 0);
        QdEvalOptions eo = { .n_ctx = N_CTX, .progress = on_progress, .userdata = &estop };
        assert(qd_eval_tokens(f16, f16, tok, N_TOKENS, -1, &eo, &rep) == -ECANCELED);
        assert(estop.calls == 2);
        printf("progress: %u calls, cancel stops quantize and eval\n", all.calls);
}

int main(void) {
        _cleanup_free_ char *dir = fixture_tmpdir();
        _cleanup_free_ char *f16 = NULL, *q8 = NULL, *q4 = NULL, *q4g = NULL, *q4a = NULL;
        uint32_t tok[N_TOKENS], calib[4 * N_CTX];
        uint64_t seed = 1234;
        QdEvalReport r8 = {}, r4 = {}, r4g = {}, r4a = {}, rf = {};

        assert(dir);
        assert(qd_quantize_method_from_string("rtn-clip") == QD_QUANTIZE_RTN_CLIP);
        assert(streq(qd_quantize_method_to_string(QD_QUANTIZE_AWQ), "awq"));
        assert(asprintf(&f16, "%s/f16.gguf", dir) > 0 && asprintf(&q8, "%s/q8.gguf", dir) > 0 &&
               asprintf(&q4, "%s/q4.gguf", dir) > 0 && asprintf(&q4g, "%s/q4g.gguf", dir) > 0 &&
               asprintf(&q4a, "%s/q4a.gguf", dir) > 0);
        assert(fixture_write(&spec, f16) == 0);
        for (size_t i = 0; i < N_TOKENS; i++)
                tok[i] = fixture_rand(&seed) % spec.n_vocab;
        for (size_t i = 0; i < ELEMENTSOF(calib); i++)
                calib[i] = fixture_rand(&seed) % spec.n_vocab;

        test_forward(f16, tok);

        quantize(f16, q8, QD_QTYPE_Q8_0, QD_QUANTIZE_RTN, NULL, 0);
        quantize(f16, q4, QD_QTYPE_Q4_0, QD_QUANTIZE_RTN, NULL, 0);
        quantize(f16, q4g, QD_QTYPE_Q4_0, QD_QUANTIZE_GPTQ, calib, ELEMENTSOF(calib));
        quantize(f16, q4a, QD_QTYPE_Q4_0, QD_QUANTIZE_AWQ, calib, ELEMENTSOF(calib));
        test_progress_cancel(f16, dir, calib, ELEMENTSOF(calib), tok);
        /* Already quantized input is refused. */
        assert(qd_quantize_file(q8, q4, &(QdQuantizeOptions) { .type = QD_QTYPE_Q4_0 }, NULL) == -EINVAL);

        check_file(f16, q8, 7, GGML_TYPE_Q8_0);
        check_file(f16, q4, 2, GGML_TYPE_Q4_0);
        check_file(f16, q4g, 2, GGML_TYPE_Q4_0);
        check_file(f16, q4a, 2, GGML_TYPE_Q4_0);
        check_rtn_bytes(f16, q8, GGML_TYPE_Q8_0);
        check_rtn_bytes(f16, q4, GGML_TYPE_Q4_0);
        check_engine(q4, tok);
        check_engine(q4a, tok);
        test_kmix(dir, f16, tok);

        eval(f16, f16, tok, &rf);
        assert(rf.dist.kl_mean < 1e-9 && rf.dist.top1 == 1 && rf.ppl.ppl == rf.ref_ppl.ppl);
        assert(rf.n_tensors == 0 && rf.bpw == 16);
        eval(q8, f16, tok, &r8);
        eval(q4, f16, tok, &r4);
        eval(q4g, f16, tok, &r4g);
        eval(q4a, f16, tok, &r4a);
        assert(r8.dist.kl_mean < r4.dist.kl_mean);
        assert(r8.dist.top1 >= r4.dist.top1);
        assert(r8.bpw > 8 && r8.bpw < 8.6 && r4.bpw > 4.5 && r4.bpw < r8.bpw);
        /* GPTQ on calibration text of the same distribution lowers the output error of RTN. */
        assert(r4g.dist.kl_mean < r4.dist.kl_mean);
        assert(isfinite(r4a.dist.kl_mean) && r4a.dist.kl_mean < 10 * r4.dist.kl_mean);

        /* SQNR: 14 weight matrices quantized, Q8_0 about 24 dB above Q4_0 tensor by tensor. */
        assert(r8.n_tensors == 2 * 7 + 1 && r4.n_tensors == r8.n_tensors);
        for (size_t i = 0; i < r8.n_tensors; i++) {
                assert(streq(r8.tensors[i].name, r4.tensors[i].name));
                if (streq(r4.tensors[i].name, "output.weight"))
                        continue; /* Q8_0 in both */
                assert(r8.tensors[i].sqnr_db > r4.tensors[i].sqnr_db + 18);
                assert(r8.tensors[i].sqnr_db < r8.tensors[i].ideal_db);
                assert(fabs(r4.tensors[i].ideal_db - (6.02 * 4 + 1.76)) < 1e-6);
        }

        qd_eval_report_done(&rf);
        qd_eval_report_done(&r8);
        qd_eval_report_done(&r4);
        qd_eval_report_done(&r4g);
        qd_eval_report_done(&r4a);
        fixture_rmdir(TAKE_PTR(dir));
        return 0;
}
