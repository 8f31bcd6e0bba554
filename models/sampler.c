/* Token sampling: repetition penalty, greedy, top-k, temperature, top-p, min-p, seeded RNG. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "sampler.h"

#define HISTORY_MAX 4096

struct QdSampler {
        QdSampling params;
        uint64_t rng[4];
        int32_t history[HISTORY_MAX]; /* ring of accepted tokens */
        size_t n_history, head;
        /* scratch, grown to n_vocab */
        float *logits;
        int32_t *idx;
        float *probs;
        size_t cap;
};

void qd_sampling_init(QdSampling *s) {
        *s = (QdSampling){
                .temperature = 0.0f,
                .top_k = 40,
                .top_p = 0.95f,
                .min_p = 0.05f,
                .repeat_penalty = 1.0f,
                .repeat_last_n = 64,
                .seed = 0,
        };
}

static uint64_t splitmix64(uint64_t *x) {
        uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
        z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
        return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) {
        return (x << k) | (x >> (64 - k));
}

/* xoshiro256** */
static uint64_t rng_next(uint64_t s[4]) {
        const uint64_t result = rotl(s[1] * 5, 7) * 9;
        const uint64_t t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return result;
}

static void seed_rng(QdSampler *s) {
        uint64_t x = s->params.seed;
        for (int i = 0; i < 4; i++)
                s->rng[i] = splitmix64(&x);
}

int qd_sampler_new(const QdSampling *params, QdSampler **ret) {
        QdSampler *s = calloc(1, sizeof(QdSampler));
        if (!s)
                return -ENOMEM;
        if (params)
                s->params = *params;
        else
                qd_sampling_init(&s->params);
        seed_rng(s);
        *ret = s;
        return 0;
}

QdSampler *qd_sampler_free(QdSampler *s) {
        if (!s)
                return NULL;
        free(s->logits);
        free(s->idx);
        free(s->probs);
        return mfree(s);
}

void qd_sampler_set_params(QdSampler *s, const QdSampling *params) {
        bool reseed = params->seed != s->params.seed;
        s->params = *params;
        if (reseed)
                seed_rng(s);
}

void qd_sampler_accept(QdSampler *s, int32_t token) {
        s->history[s->head] = token;
        s->head = (s->head + 1) % HISTORY_MAX;
        if (s->n_history < HISTORY_MAX)
                s->n_history++;
}

void qd_sampler_reset(QdSampler *s) {
        s->n_history = s->head = 0;
        seed_rng(s);
}

int32_t qd_sampler_argmax(const float *logits, size_t n_vocab) {
        size_t best = 0;
        for (size_t i = 1; i < n_vocab; i++)
                if (logits[i] > logits[best])
                        best = i;
        return (int32_t)best;
}

static int grow(QdSampler *s, size_t n) {
        if (n <= s->cap)
                return 0;
        float *l = reallocarray(s->logits, n, sizeof(float));
        if (l)
                s->logits = l;
        int32_t *ix = reallocarray(s->idx, n, sizeof(int32_t));
        if (ix)
                s->idx = ix;
        float *p = reallocarray(s->probs, n, sizeof(float));
        if (p)
                s->probs = p;
        if (!l || !ix || !p)
                return -ENOMEM;
        s->cap = n;
        return 0;
}

static void apply_penalty(QdSampler *s, float *logits, size_t n_vocab) {
        const QdSampling *p = &s->params;
        size_t last = p->repeat_last_n < 0 ? s->n_history : MIN((size_t)p->repeat_last_n, s->n_history);

        if (p->repeat_penalty == 1.0f || p->repeat_penalty <= 0.0f || last == 0)
                return;
        /* each distinct token of the window is penalised once */
        for (size_t k = 0; k < last; k++) {
                int32_t tok = s->history[(s->head + HISTORY_MAX - 1 - k) % HISTORY_MAX];
                if (tok < 0 || (size_t)tok >= n_vocab)
                        continue;
                bool seen = false;
                for (size_t j = 0; j < k && !seen; j++)
                        seen = s->history[(s->head + HISTORY_MAX - 1 - j) % HISTORY_MAX] == tok;
                if (seen)
                        continue;
                if (logits[tok] > 0)
                        logits[tok] /= p->repeat_penalty;
                else
                        logits[tok] *= p->repeat_penalty;
        }
}

static int cmp_desc(const void *a, const void *b, void *userdata) {
        const float *l = userdata;
        int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
        if (l[x] != l[y])
                return l[x] > l[y] ? -1 : 1;
        return x < y ? -1 : 1;
}

/* true when token x ranks before y: higher logit, then lower id */
static inline bool ranks_before(const float *l, int32_t x, int32_t y) {
        return l[x] > l[y] || (l[x] == l[y] && x < y);
}

/* Top k of n tokens into idx[0..k), best first: a min-heap of size k over one pass, O(n log k). */
static void select_top_k(const float *l, size_t n, int32_t *idx, size_t k, void *userdata) {
        size_t h = 0;
        for (size_t i = 0; i < n; i++) {
                int32_t t = (int32_t)i;
                if (h == k) {
                        if (!ranks_before(l, t, idx[0]))
                                continue;
                        /* replace the root (the worst kept) and sift down */
                        size_t j = 0;
                        for (;;) {
                                size_t c = 2 * j + 1;
                                if (c >= k)
                                        break;
                                if (c + 1 < k && ranks_before(l, idx[c], idx[c + 1]))
                                        c++;
                                if (!ranks_before(l, t, idx[c]))
                                        break;
                                idx[j] = idx[c];
                                j = c;
                        }
                        idx[j] = t;
                        continue;
                }
                /* sift up: the root is the worst */
                size_t j = h++;
                while (j > 0 && ranks_before(l, idx[(j - 1) / 2], t)) {
                        idx[j] = idx[(j - 1) / 2];
                        j = (j - 1) / 2;
                }
                idx[j] = t;
        }
        qsort_r(idx, k, sizeof(int32_t), cmp_desc, userdata);
}

int qd_sampler_sample(QdSampler *s, const float *logits, size_t n_vocab, int32_t *ret_token,
                      float *ret_logprob) {
        const QdSampling *p = &s->params;
        int r;

        if (n_vocab == 0 || n_vocab > INT32_MAX)
                return -EINVAL;
        r = grow(s, n_vocab);
        if (r < 0)
                return r;
        float *l = s->logits;
        memcpy(l, logits, n_vocab * sizeof(float));
        apply_penalty(s, l, n_vocab);

        int32_t best = qd_sampler_argmax(l, n_vocab);
        int32_t token = best;
        const float mx = l[best];

        if (p->temperature > 0.0f) {
                size_t n;
                double sum = 0;

                /* candidates: the top k (sorted), or every token */
                if (p->top_k > 0 && (size_t)p->top_k < n_vocab) {
                        n = (size_t)p->top_k;
                        select_top_k(l, n_vocab, s->idx, n, l);
                } else {
                        n = n_vocab;
                        for (size_t i = 0; i < n; i++)
                                s->idx[i] = (int32_t)i;
                }
                /* probabilities at temperature 1 (as llama.cpp, which applies the temperature
                 * after top-p and min-p) */
                for (size_t i = 0; i < n; i++) {
                        s->probs[i] = expf(l[s->idx[i]] - mx);
                        sum += s->probs[i];
                }
                /* min-p keeps tokens with p >= min_p * p_max; done before sorting, which it
                 * makes cheap (the best token has probs = 1 before normalisation) */
                if (p->min_p > 0.0f) {
                        size_t k = 0;
                        for (size_t i = 0; i < n; i++)
                                if (s->probs[i] >= p->min_p) {
                                        s->idx[k] = s->idx[i];
                                        s->probs[k] = s->probs[i];
                                        k++;
                                }
                        n = MAX(k, (size_t)1);
                }
                /* top-k candidates are sorted already and min-p keeps their order */
                if (n > 1 && !(p->top_k > 0 && (size_t)p->top_k < n_vocab)) {
                        qsort_r(s->idx, n, sizeof(int32_t), cmp_desc, l);
                        for (size_t i = 0; i < n; i++)
                                s->probs[i] = expf(l[s->idx[i]] - mx);
                }
                /* top-p: the smallest prefix whose mass (over the top-k candidates) reaches top_p */
                if (p->top_p < 1.0f) {
                        double cum = 0;
                        for (size_t i = 0; i < n; i++) {
                                cum += s->probs[i] / sum;
                                if (cum >= p->top_p) {
                                        n = i + 1;
                                        break;
                                }
                        }
                }
                /* temperature over what is left, then draw */
                double total = 0;
                for (size_t i = 0; i < n; i++) {
                        s->probs[i] = expf((l[s->idx[i]] - mx) / p->temperature);
                        total += s->probs[i];
                }
                /* uniform in [0, total) from the top 53 bits */
                double u = (double)(rng_next(s->rng) >> 11) * 0x1.0p-53 * total;
                size_t pick = n - 1;
                double cum = 0;
                for (size_t i = 0; i < n; i++) {
                        cum += s->probs[i];
                        if (u < cum) {
                                pick = i;
                                break;
                        }
                }
                token = s->idx[pick];
        }

        if (ret_logprob) {
                /* log-softmax of the penalised logits at temperature 1 */
                double sum = 0;
                for (size_t i = 0; i < n_vocab; i++)
                        sum += exp((double)l[i] - mx);
                *ret_logprob = (float)((double)l[token] - mx - log(sum));
        }
        *ret_token = token;
        return 0;
}
