/* Benchmarks: a random Llama-shaped model built in memory (no file), shared by quantd-engine-bench
 * and quantd-precision-bench. */
#pragma once

#include <stdint.h>

#include "model-llama.h"

typedef struct BenchModel {
        uint16_t *wa, *wb, *wc, *wd, *emb; /* the source matrices the layers share */
        void *kq[7];                       /* bench_model_kmix(): their K-quant copies */
        float *ones;                       /* every norm weight */
        LlamaLayer *layers;
        LlamaWeights w;                    /* points into the fields above: do not copy the struct */
} BenchModel;

/* Builds the weights: L layers of n_embd E, ffn F, H query and HKV KV heads, vocabulary V; all
 * layers share their (random, F16) source matrices, so the bytes read per token are those of a
 * full model of that shape. -EINVAL for an inconsistent shape, -ENOMEM. */
int bench_model_init(BenchModel *m, uint32_t L, uint32_t E, uint32_t F, uint32_t H, uint32_t HKV, uint32_t V);
void bench_model_done(BenchModel *m);
/* Turns the weights into llama.cpp's Q4_K_M mix (ggml's quantizers on n_threads threads): Q4_K,
 * Q6_K for attn_v / ffn_down of the layers qd_kmix_more_bits() picks and for the output head;
 * the embedding table stays F16 (the engine keeps it in fp16 anyway). */
int bench_model_kmix(BenchModel *m, unsigned n_threads);

/* CLOCK_MONOTONIC in seconds. */
double bench_now(void);
