/* The repacked upload layouts (vulkan/vk-repack.c), without a device: names, row sizes, the
 * byte layout of one row, the round trip through qvk_weight_unpack(), type mapping and errors.
 * The kernels on these layouts are checked by quantd-bench --check (the kernels-check tests). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk-test.h"

int main(void) {
        static const struct {
                QvkWeightType t, base;
                const char *name;
                uint32_t k, qb, sb;   /* k, quant and scale bytes per block */
                uint64_t row_bytes;   /* of k weights: GGUF bytes padded to 16 */
        } types[] = {
                { QVK_W_Q8_0_R, QVK_W_Q8_0, "q8_0r", 96, 32, 2, 112 },
                { QVK_W_Q4_0_R, QVK_W_Q4_0, "q4_0r", 96, 16, 2, 64 },
                { QVK_W_Q4_1_R, QVK_W_Q4_1, "q4_1r", 128, 16, 4, 80 },
        };
        uint8_t g[3 * 4 * 34], p[3 * 112], back[sizeof(g)];

        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                uint32_t k = types[i].k, nb = k / 32, qb = types[i].qb, sb = types[i].sb, rows = 3;
                uint64_t gb = qvk_weight_row_bytes(types[i].base, k), rb = types[i].row_bytes;

                ASSERT(streq(qvk_weight_type_name(types[i].t), types[i].name));
                ASSERT(qvk_weight_row_bytes(types[i].t, k) == rb);
                ASSERT(rb % 16 == 0 && rb >= gb && rb - gb < 16);
                ASSERT(qvk_weight_repacked(types[i].t) && !qvk_weight_repacked(types[i].base));
                ASSERT(qvk_weight_base(types[i].t) == types[i].base);
                ASSERT(qvk_weight_base(types[i].base) == types[i].base);
                ASSERT(qvk_weight_repack_type(types[i].base) == types[i].t);

                for (size_t j = 0; j < gb * rows; j++)
                        g[j] = (uint8_t) (j * 7 + i + 1);
                memset(p, 0xa5, sizeof(p));
                ASSERT(qvk_weight_repack(types[i].t, k, g, rows, p) == 0);
                for (uint32_t r = 0; r < rows; r++) {
                        const uint8_t *gr = g + r * gb, *pr = p + r * rb;
                        for (uint32_t b = 0; b < nb; b++) {
                                /* GGUF block b: sb bytes of scale (and min), then qb quant bytes */
                                ASSERT(memcmp(pr + b * qb, gr + b * (qb + sb) + sb, qb) == 0);
                                ASSERT(memcmp(pr + nb * qb + b * sb, gr + b * (qb + sb), sb) == 0);
                        }
                        for (uint64_t e = gb; e < rb; e++)
                                ASSERT(pr[e] == 0);  /* padding zeroed */
                }
                memset(back, 0, sizeof(back));
                ASSERT(qvk_weight_unpack(types[i].t, k, p, rows, back) == 0);
                ASSERT(memcmp(back, g, gb * rows) == 0);

                ASSERT(qvk_weight_repack(types[i].t, k + 16, g, 1, p) == -EINVAL);
                ASSERT(qvk_weight_row_bytes(types[i].t, k + 16) == 0);
                ASSERT(qvk_weight_repack(types[i].base, k, g, 1, p) == -EINVAL);
        }
        ASSERT(qvk_weight_repack_type(QVK_W_F16) == QVK_W_F16);
        ASSERT(qvk_weight_repack_type(QVK_W_Q4_0_G64) == QVK_W_Q4_0_G64);
        ASSERT(setenv("QUANTD_VK_DISABLE_REPACK", "1", 1) == 0);
        ASSERT(qvk_weight_repack_type(QVK_W_Q4_0) == QVK_W_Q4_0);
        return EXIT_SUCCESS;
}
