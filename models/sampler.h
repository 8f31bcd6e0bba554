/* Token sampling over a row of logits, with the parameters of QdSampling (models/engine.h).
 *
 * Order (llama.cpp's default chain): repetition penalty over the last repeat_last_n accepted
 * tokens (positive logits divided by, negative multiplied by repeat_penalty, once per distinct
 * token) → if temperature <= 0: argmax (greedy, first maximum) → else top-k → top-p (smallest
 * set of the best tokens whose probability mass, at temperature 1 over the top-k candidates,
 * reaches top_p; at least one token) → min-p (drop tokens with p < min_p * p_max) → softmax of
 * what is left at the temperature → draw with the seeded RNG (xoshiro256**, seeded by
 * splitmix64 from QdSampling.seed): the same seed, logits and history give the same tokens.
 * Cost per call: O(n_vocab) for greedy and min-p, O(n_vocab log k) for top-k; a full sort of
 * the vocabulary only for top-p with neither top-k nor min-p. The history keeps the last 4096
 * accepted tokens (repeat_last_n < 0: all of those).
 *
 * qd_sampling_init() (engine.h) gives: temperature 0 (greedy), top_k 40, top_p 0.95,
 * min_p 0.05, repeat_penalty 1 (off), repeat_last_n 64, seed 0 — llama.cpp's defaults, so that
 * setting only a temperature gives the usual truncation.
 *
 * Log-probability returned: the log-softmax of the penalised logits at temperature 1 before any
 * truncation (the model's own probability of the token after repetition penalty), for greedy and
 * sampled tokens alike. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "engine.h" /* QdSampling, qd_sampling_init() (implemented in models/sampler.c) */

typedef struct QdSampler QdSampler;

/* A sampler holds the RNG state and the history of accepted tokens of one sequence. */
int qd_sampler_new(const QdSampling *params, QdSampler **ret);
QdSampler *qd_sampler_free(QdSampler *s);
/* Replaces the parameters; the RNG is reseeded only when the seed changes. */
void qd_sampler_set_params(QdSampler *s, const QdSampling *params);
/* Records a token for the repetition penalty (prompt tokens and each generated token). */
void qd_sampler_accept(QdSampler *s, int32_t token);
void qd_sampler_reset(QdSampler *s); /* forget history, reseed */

/* Picks a token from n_vocab logits (not modified). Does not accept it: call
 * qd_sampler_accept() afterwards. ret_logprob may be NULL. -EINVAL for n_vocab 0. */
int qd_sampler_sample(QdSampler *s, const float *logits, size_t n_vocab, int32_t *ret_token,
                      float *ret_logprob);

/* Plain argmax (first maximum), for callers without a sampler. */
int32_t qd_sampler_argmax(const float *logits, size_t n_vocab);
