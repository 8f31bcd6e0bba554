/* Mixed precision: choose one format per tensor so the model fits a byte budget with the least
 * total sensitivity (a multiple-choice knapsack: greedy by cost saved per byte, then swaps). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "macro.h"
#include "quant.h"

/* The upgrade of tensor t from its current option with the most cost saved per extra byte that
 * still fits in `left` bytes; false if none. */
static bool best_upgrade(const QdMixedTensor *t, size_t cur, uint64_t left, size_t *ret_k,
                         double *ret_ratio) {
        bool found = false;
        for (size_t k = 0; k < t->n_options; k++) {
                if (t->bytes[k] <= t->bytes[cur] || !(t->cost[k] < t->cost[cur]))
                        continue;
                uint64_t extra = t->bytes[k] - t->bytes[cur];
                if (extra > left)
                        continue;
                double ratio = (t->cost[cur] - t->cost[k]) / (double) extra;
                if (!found || ratio > *ret_ratio) {
                        *ret_ratio = ratio;
                        *ret_k = k;
                        found = true;
                }
        }
        return found;
}

int qd_mixed_choose(const QdMixedTensor *t, size_t n, uint64_t budget, size_t *ret_choice,
                    uint64_t *ret_bytes, double *ret_cost) {
        if (!t || !ret_choice || n == 0)
                return -EINVAL;
        _cleanup_free_ size_t *choice = malloc(n * sizeof(size_t));
        if (!choice)
                return -ENOMEM;

        /* Start from the smallest option of every tensor (the cheapest in cost on ties). */
        uint64_t used = 0;
        for (size_t i = 0; i < n; i++) {
                if (t[i].n_options == 0 || !t[i].bytes || !t[i].cost)
                        return -EINVAL;
                size_t best = 0;
                for (size_t k = 0; k < t[i].n_options; k++) {
                        if (!isfinite(t[i].cost[k]) || t[i].cost[k] < 0)
                                return -EINVAL;
                        if (t[i].bytes[k] < t[i].bytes[best] ||
                            (t[i].bytes[k] == t[i].bytes[best] && t[i].cost[k] < t[i].cost[best]))
                                best = k;
                }
                choice[i] = best;
                if (size_add_overflow(used, t[i].bytes[best], &used))
                        return -EOVERFLOW;
        }
        if (used > budget)
                return -ENOSPC;

        for (;;) {
                size_t bi = SIZE_MAX, bk = 0;
                double br = 0.0;
                for (size_t i = 0; i < n; i++) {
                        size_t k = 0;
                        double ratio = 0.0;
                        if (best_upgrade(&t[i], choice[i], budget - used, &k, &ratio) &&
                            (bi == SIZE_MAX || ratio > br)) {
                                bi = i;
                                bk = k;
                                br = ratio;
                        }
                }
                if (bi == SIZE_MAX)
                        break;
                used += t[bi].bytes[bk] - t[bi].bytes[choice[bi]];
                choice[bi] = bk;
        }

        /* Local search: the best single change or pair of changes (one tensor down, another up)
         * that lowers the cost and fits, until none does. Each step lowers the cost strictly, so
         * it ends; the pass count is capped to bound the time on large models anyway. */
        for (unsigned pass = 0; pass < 64; pass++) {
                double gain = 1e-12;
                size_t bi = SIZE_MAX, ba = 0, bj = SIZE_MAX, bb = 0;
                for (size_t i = 0; i < n; i++)
                        for (size_t a = 0; a < t[i].n_options; a++) {
                                if (a == choice[i])
                                        continue;
                                uint64_t ui = used - t[i].bytes[choice[i]] + t[i].bytes[a];
                                double gi = t[i].cost[choice[i]] - t[i].cost[a];
                                if (ui <= budget && gi > gain) {
                                        gain = gi;
                                        bi = i, ba = a, bj = SIZE_MAX;
                                }
                                if (gi <= gain && t[i].bytes[a] >= t[i].bytes[choice[i]])
                                        continue; /* a pair only helps if this frees bytes or saves cost */
                                for (size_t j = 0; j < n; j++) {
                                        if (j == i)
                                                continue;
                                        for (size_t b = 0; b < t[j].n_options; b++) {
                                                if (b == choice[j])
                                                        continue;
                                                uint64_t u = ui - t[j].bytes[choice[j]] + t[j].bytes[b];
                                                double gg = gi + t[j].cost[choice[j]] - t[j].cost[b];
                                                if (u <= budget && gg > gain) {
                                                        gain = gg;
                                                        bi = i, ba = a, bj = j, bb = b;
                                                }
                                        }
                                }
                        }
                if (bi == SIZE_MAX)
                        break;
                used = used - t[bi].bytes[choice[bi]] + t[bi].bytes[ba];
                choice[bi] = ba;
                if (bj != SIZE_MAX) {
                        used = used - t[bj].bytes[choice[bj]] + t[bj].bytes[bb];
                        choice[bj] = bb;
                }
        }

        double cost = 0.0;
        for (size_t i = 0; i < n; i++) {
                ret_choice[i] = choice[i];
                cost += t[i].cost[choice[i]];
        }
        if (ret_bytes)
                *ret_bytes = used;
        if (ret_cost)
                *ret_cost = cost;
        return 0;
}
