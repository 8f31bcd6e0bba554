/* Mixed-precision choice under a byte budget: a hand-computed instance, the budget is always met,
 * and on random small instances the greedy choice is compared with brute force. */
#include <errno.h>
#include <math.h>

#include "quant.h"
#include "test-quant-common.h"

static void test_hand(void) {
        /* Q4_0, Q8_0, F16 sizes of a 80-element tensor; costs as sensitivities. */
        static const uint64_t bytes[3] = { 45, 85, 160 };
        static const double ca[3] = { 10, 1, 0 }, cb[3] = { 2, 0.2, 0 };
        QdMixedTensor t[2] = { { 3, bytes, ca }, { 3, bytes, cb } };
        size_t ch[2];
        uint64_t used;
        double cost;

        check(qd_mixed_choose(t, 2, 89, ch, &used, &cost) == -ENOSPC);
        check(qd_mixed_choose(t, 2, 90, ch, &used, &cost) == 0);
        check(ch[0] == 0 && ch[1] == 0 && used == 90 && cost == 12);
        /* A to Q8_0 saves 9 for 40 bytes, the best ratio; then nothing else fits. */
        check(qd_mixed_choose(t, 2, 130, ch, &used, &cost) == 0);
        check(ch[0] == 1 && ch[1] == 0 && used == 130 && fabs(cost - 3.0) < 1e-12);
        check(qd_mixed_choose(t, 2, 170, ch, &used, &cost) == 0);
        check(ch[0] == 1 && ch[1] == 1 && used == 170 && fabs(cost - 1.2) < 1e-12);
        check(qd_mixed_choose(t, 2, UINT64_MAX / 2, ch, &used, &cost) == 0);
        check(ch[0] == 2 && ch[1] == 2 && used == 320 && cost == 0);
}

static void test_random(void) {
        enum { N = 5, K = 3 };
        Rng rng = { 51 };
        double gap = 0;
        int optimal = 0;
        for (int it = 0; it < 200; it++) {
                uint64_t bytes[N][K];
                double cost[N][K];
                QdMixedTensor t[N];
                uint64_t min_total = 0, max_total = 0;
                for (int i = 0; i < N; i++) {
                        uint64_t sz = 100 + rng_u64(&rng) % 900;
                        bytes[i][0] = sz * 9 / 16, bytes[i][1] = sz * 17 / 16, bytes[i][2] = sz * 2;
                        double s = rng_uniform(&rng) * 10;
                        cost[i][0] = s, cost[i][1] = s * rng_uniform(&rng) * 0.2, cost[i][2] = 0;
                        t[i] = (QdMixedTensor) { K, bytes[i], cost[i] };
                        min_total += bytes[i][0];
                        max_total += bytes[i][2];
                }
                uint64_t budget = min_total + rng_u64(&rng) % (max_total - min_total);
                size_t ch[N];
                uint64_t used;
                double c;
                check(qd_mixed_choose(t, N, budget, ch, &used, &c) == 0);
                check(used <= budget);
                uint64_t u2 = 0;
                double c2 = 0;
                for (int i = 0; i < N; i++)
                        u2 += bytes[i][ch[i]], c2 += cost[i][ch[i]];
                check(u2 == used && fabs(c2 - c) < 1e-9);

                double best = INFINITY;
                for (int m = 0; m < 243; m++) {
                        uint64_t u = 0;
                        double cc = 0;
                        for (int i = 0, mm = m; i < N; i++, mm /= K)
                                u += bytes[i][mm % K], cc += cost[i][mm % K];
                        if (u <= budget && cc < best)
                                best = cc;
                }
                check(c >= best - 1e-9);
                gap += c - best;
                optimal += c <= best + 1e-9;
        }
        printf("optimal on %d/200 random instances, mean excess cost %.4f\n", optimal, gap / 200);
        check(optimal >= 160);
}

int main(void) {
        test_hand();
        test_random();
        printf("ok\n");
        return 0;
}
