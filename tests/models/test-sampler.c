/* Sampler tests on fixed logits: greedy, top-k = 1, seeds, top-p/min-p exclusions, repetition
 * penalty, log-probabilities. */
#include <math.h>

#include "formats-fixtures.h"
#include "sampler.h"

static QdSampling params(float temp, int32_t top_k, float top_p, float min_p, uint64_t seed) {
        QdSampling s;
        qd_sampling_init(&s);
        s.temperature = temp;
        s.top_k = top_k;
        s.top_p = top_p;
        s.min_p = min_p;
        s.seed = seed;
        return s;
}

static void test_greedy(void) {
        const float logits[] = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};
        QdSampling p;
        QdSampler *s;
        int32_t tok;
        float lp;

        qd_sampling_init(&p);
        CHECK(p.temperature <= 0);
        CHECK_OK(qd_sampler_new(&p, &s));
        CHECK_OK(qd_sampler_sample(s, logits, 5, &tok, &lp));
        CHECK(tok == 1); /* first maximum */
        double z = exp(1 - 3.0) + 1 + exp(2 - 3.0) + 1 + exp(-1 - 3.0);
        CHECK(fabs(lp - (-log(z))) < 1e-5);
        CHECK(qd_sampler_argmax(logits, 5) == 1);
        CHECK(qd_sampler_sample(s, logits, 0, &tok, NULL) == -EINVAL);
        qd_sampler_free(s);

        /* top-k = 1 at any temperature is greedy */
        for (uint64_t seed = 0; seed < 50; seed++) {
                QdSampling q = params(1.5f, 1, 1.0f, 0.0f, seed);
                CHECK_OK(qd_sampler_new(&q, &s));
                CHECK_OK(qd_sampler_sample(s, logits, 5, &tok, NULL));
                CHECK(tok == 1);
                qd_sampler_free(s);
        }
}

static void draw(const QdSampling *p, const float *logits, size_t n, int32_t *out, size_t count) {
        QdSampler *s;
        CHECK_OK(qd_sampler_new(p, &s));
        for (size_t i = 0; i < count; i++)
                CHECK_OK(qd_sampler_sample(s, logits, n, &out[i], NULL));
        qd_sampler_free(s);
}

static void test_seed(void) {
        float logits[1000];
        int32_t a[200], b[200], c[200];

        for (int i = 0; i < 1000; i++)
                logits[i] = (float)(i % 7) * 0.1f;
        QdSampling p = params(1.0f, 0, 1.0f, 0.0f, 42);
        draw(&p, logits, 1000, a, 200);
        draw(&p, logits, 1000, b, 200);
        CHECK(memcmp(a, b, sizeof(a)) == 0);
        p.seed = 43;
        draw(&p, logits, 1000, c, 200);
        CHECK(memcmp(a, c, sizeof(a)) != 0);
        /* many distinct tokens are drawn from a flat distribution */
        int distinct = 0;
        for (int i = 0; i < 200; i++) {
                bool seen = false;
                for (int j = 0; j < i; j++)
                        seen |= a[j] == a[i];
                distinct += !seen;
        }
        CHECK(distinct > 100);

        /* set_params with the same seed does not reseed; reset does */
        QdSampler *s;
        int32_t x, y;
        CHECK_OK(qd_sampler_new(&p, &s));
        CHECK_OK(qd_sampler_sample(s, logits, 1000, &x, NULL));
        qd_sampler_reset(s);
        CHECK_OK(qd_sampler_sample(s, logits, 1000, &y, NULL));
        CHECK(x == y);
        qd_sampler_free(s);
}

static void counts(const QdSampling *p, const float *logits, size_t n, int *hist) {
        int32_t out[2000];
        draw(p, logits, n, out, 2000);
        memset(hist, 0, n * sizeof(int));
        for (int i = 0; i < 2000; i++)
                hist[out[i]]++;
}

static void test_truncation(void) {
        /* probabilities 0.5, 0.3, 0.15, 0.05 */
        const float logits[] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
        int h[4];

        QdSampling p = params(1.0f, 0, 1.0f, 0.0f, 7);
        counts(&p, logits, 4, h);
        CHECK(h[0] > 850 && h[0] < 1150 && h[3] > 40 && h[3] < 170);

        p = params(1.0f, 0, 0.7f, 0.0f, 7); /* 0.5 + 0.3 >= 0.7: {0, 1} */
        counts(&p, logits, 4, h);
        CHECK(h[0] > 0 && h[1] > 0 && h[2] == 0 && h[3] == 0);
        CHECK(h[0] > h[1]);

        p = params(1.0f, 0, 0.4f, 0.0f, 7); /* at least one token */
        counts(&p, logits, 4, h);
        CHECK(h[0] == 2000);

        p = params(1.0f, 0, 1.0f, 0.5f, 7); /* p >= 0.25: {0, 1} */
        counts(&p, logits, 4, h);
        CHECK(h[0] > 0 && h[1] > 0 && h[2] == 0 && h[3] == 0);

        p = params(1.0f, 0, 1.0f, 0.2f, 7); /* p >= 0.1: {0, 1, 2} */
        counts(&p, logits, 4, h);
        CHECK(h[2] > 0 && h[3] == 0);

        p = params(1.0f, 2, 1.0f, 0.0f, 7); /* top-k 2 */
        counts(&p, logits, 4, h);
        CHECK(h[0] > 0 && h[1] > 0 && h[2] == 0 && h[3] == 0);

        p = params(0.05f, 0, 1.0f, 0.0f, 7); /* low temperature: nearly greedy */
        counts(&p, logits, 4, h);
        CHECK(h[0] > 1990);
}

static void test_top_k_large(void) {
        float logits[1000];
        int32_t out[500];

        /* distinct logits in a scrambled order: token i has rank (i * 7919) % 1000 */
        for (int i = 0; i < 1000; i++)
                logits[i] = -(float)((i * 7919) % 1000) * 0.01f;
        QdSampling p = params(1.0f, 100, 1.0f, 0.0f, 3);
        draw(&p, logits, 1000, out, 500);
        int distinct = 0;
        for (int i = 0; i < 500; i++) {
                CHECK((out[i] * 7919) % 1000 < 100); /* only the 100 best */
                bool seen = false;
                for (int j = 0; j < i; j++)
                        seen |= out[j] == out[i];
                distinct += !seen;
        }
        CHECK(distinct > 50);
        /* top-k 5 with min-p 0.97: rank 0 (p 1) and rank 1 (p e^-0.01 = 0.990) survive, rank 2
         * (0.980) too, rank 3 (0.970) is just under */
        p = params(1.0f, 5, 1.0f, 0.975f, 3);
        draw(&p, logits, 1000, out, 500);
        for (int i = 0; i < 500; i++)
                CHECK((out[i] * 7919) % 1000 < 3);
}

static void test_penalty(void) {
        const float logits[] = {2.0f, 1.9f, -1.0f, -1.1f};
        QdSampling p = params(0.0f, 0, 1.0f, 0.0f, 1);
        QdSampler *s;
        int32_t tok;
        float lp_before, lp_after;

        p.repeat_penalty = 1.2f;
        p.repeat_last_n = 2;
        CHECK_OK(qd_sampler_new(&p, &s));
        CHECK_OK(qd_sampler_sample(s, logits, 4, &tok, &lp_before));
        CHECK(tok == 0);
        qd_sampler_accept(s, 0);
        qd_sampler_accept(s, 0); /* counted once */
        CHECK_OK(qd_sampler_sample(s, logits, 4, &tok, &lp_after));
        CHECK(tok == 1); /* 2.0 / 1.2 = 1.67 < 1.9 */
        /* the window: after two more tokens, 0 leaves the last 2 */
        qd_sampler_accept(s, 3);
        qd_sampler_accept(s, 2);
        CHECK_OK(qd_sampler_sample(s, logits, 4, &tok, NULL));
        CHECK(tok == 0);
        qd_sampler_free(s);

        /* negative logits are multiplied: -1.0 * 1.2 = -1.2 < -1.1 */
        const float neg[] = {-1.0f, -1.1f};
        CHECK_OK(qd_sampler_new(&p, &s));
        qd_sampler_accept(s, 0);
        CHECK_OK(qd_sampler_sample(s, neg, 2, &tok, NULL));
        CHECK(tok == 1);
        qd_sampler_free(s);

        /* penalty 1 is off */
        p.repeat_penalty = 1.0f;
        CHECK_OK(qd_sampler_new(&p, &s));
        qd_sampler_accept(s, 0);
        CHECK_OK(qd_sampler_sample(s, logits, 4, &tok, NULL));
        CHECK(tok == 0);
        qd_sampler_free(s);
}

int main(void) {
        test_greedy();
        test_seed();
        test_truncation();
        test_top_k_large();
        test_penalty();
        printf("sampler tests passed\n");
        return 0;
}
