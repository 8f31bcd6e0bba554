/* The repacked Q8_0 / Q4_0 / Q4_1 layouts (QVK_W_*_R, docs/QUANTIZATION.md): a permutation of
 * each GGUF row's bytes that puts the quant bytes of all blocks first, 16-byte aligned, and the
 * fp16 scales (and mins) after them, so that the kernels read a block's values with one or two
 * 16-byte loads instead of 2- and 4-byte ones (GGUF blocks are 34, 18 or 20 bytes long). */
#include <errno.h>
#include <string.h>

#include "macro.h"
#include "vk-internal.h"

static const struct {
        QvkWeightType repacked, base;
} packs[] = {
        { QVK_W_Q8_0_R, QVK_W_Q8_0 },
        { QVK_W_Q4_0_R, QVK_W_Q4_0 },
        { QVK_W_Q4_1_R, QVK_W_Q4_1 },
};

static int pack_index(QvkWeightType t) {
        for (size_t i = 0; i < ELEMENTSOF(packs); i++)
                if (packs[i].repacked == t)
                        return (int) i;
        return -1;
}

bool qvk_weight_repacked(QvkWeightType t) {
        return pack_index(t) >= 0;
}

QvkWeightType qvk_weight_base(QvkWeightType t) {
        int i = pack_index(t);

        return i >= 0 ? packs[i].base : t;
}

QvkWeightType qvk_weight_repack_type(QvkWeightType t) {
        if (qvk_env_flag("QUANTD_VK_DISABLE_REPACK"))
                return t;
        for (size_t i = 0; i < ELEMENTSOF(packs); i++)
                if (packs[i].base == t)
                        return packs[i].repacked;
        return t;
}

/* Rows of nb blocks: GGUF blocks (sb bytes of scale fields, then qb quant bytes) <-> the quant
 * bytes of all blocks, then all scale fields, then zero padding (rrb bytes a row). Inlined with
 * constant qb and sb so that the copies compile to plain moves (the upload repacks gigabytes). */
static inline void permute_rows(const uint8_t *src, uint8_t *dst, uint64_t rows, uint32_t nb, uint64_t rrb,
                                const uint32_t qb, const uint32_t sb, bool pack) {
        uint64_t grb = (uint64_t) nb * (qb + sb);

        for (uint64_t r = 0; r < rows; r++) {
                const uint8_t *s = src + r * (pack ? grb : rrb);
                uint8_t *d = dst + r * (pack ? rrb : grb);
                for (uint32_t b = 0; b < nb; b++) {
                        uint64_t g = (uint64_t) b * (qb + sb), q = (uint64_t) b * qb, sc = (uint64_t) nb * qb + b * sb;
                        if (pack) {
                                memcpy(d + q, s + g + sb, qb);
                                memcpy(d + sc, s + g, sb);
                        } else {
                                memcpy(d + g + sb, s + q, qb);
                                memcpy(d + g, s + sc, sb);
                        }
                }
                if (pack)
                        memset(d + grb, 0, rrb - grb);
        }
}

static int permute(QvkWeightType t, uint32_t k, const uint8_t *src, uint64_t rows, uint8_t *dst, bool pack) {
        int i = pack_index(t);

        if (i < 0 || k == 0 || k % 32)
                return -EINVAL;
        uint64_t rrb = qvk_weight_row_bytes(t, k);
        switch (t) {
        case QVK_W_Q8_0_R:
                permute_rows(src, dst, rows, k / 32, rrb, 32, 2, pack);
                break;
        case QVK_W_Q4_0_R:
                permute_rows(src, dst, rows, k / 32, rrb, 16, 2, pack);
                break;
        default:
                permute_rows(src, dst, rows, k / 32, rrb, 16, 4, pack);
                break;
        }
        return 0;
}

int qvk_weight_repack(QvkWeightType t, uint32_t k, const void *src, uint64_t rows, void *dst) {
        return permute(t, k, src, rows, dst, true);
}

int qvk_weight_unpack(QvkWeightType t, uint32_t k, const void *src, uint64_t rows, void *dst) {
        return permute(t, k, src, rows, dst, false);
}
