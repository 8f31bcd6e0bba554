/* Argument checks of the extended weight formats' launcher (vulkan/vk-matmul-ext.c): names and
 * row sizes of every type, and clear errors for shapes and bindings the kernels cannot read.
 * Results are checked by quantd-bench --check (the kernels-check tests). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk-test.h"

int main(void) {
        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        _cleanup_(qvk_buffer_freep) QvkBuffer *w = NULL, *x = NULL, *y = NULL;
        _cleanup_(qvk_cmd_freep) QvkCmd *cmd = NULL;
        static const struct {
                QvkWeightType t;
                const char *name;
                uint32_t k;
                uint64_t row_bytes;  /* of k weights */
        } types[] = {
                { QVK_W_Q8_0_G64, "q8_0_g64", 128, 132 },   { QVK_W_Q8_0_G128, "q8_0_g128", 256, 260 },
                { QVK_W_Q4_0_G64, "q4_0_g64", 128, 68 },    { QVK_W_Q4_0_G128, "q4_0_g128", 256, 132 },
                { QVK_W_Q4_1_G64, "q4_1_g64", 128, 72 },    { QVK_W_Q4_1_G128, "q4_1_g128", 256, 136 },
                { QVK_W_NF4_G32, "nf4_g32", 64, 36 },       { QVK_W_NF4_G64, "nf4_g64", 128, 68 },
                { QVK_W_NF4_G128, "nf4_g128", 256, 132 },   { QVK_W_FP8_ROW, "fp8_row", 64, 80 },
                { QVK_W_I8_ROW, "i8_row", 96, 112 },        { QVK_W_Q4_K, "q4_k", 512, 288 },
                { QVK_W_Q6_K, "q6_k", 256, 210 },
        };
        int r;

        /* The formats of the table in docs/QUANTIZATION.md, without a device. */
        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                ASSERT(streq(qvk_weight_type_name(types[i].t), types[i].name));
                ASSERT(qvk_weight_row_bytes(types[i].t, types[i].k) == types[i].row_bytes);
                ASSERT(qvk_weight_row_bytes(types[i].t, types[i].k + 16) == 0);  /* not whole groups */
        }
        ASSERT(qvk_weight_row_bytes(QVK_W_Q4_0, 64) == 36);  /* the GGUF types are unchanged */

        r = vk_test_device_new(&d);
        ASSERT(r >= 0);
        ASSERT(qvk_buffer_new(d, 4096, QVK_MEM_DEVICE, &w) >= 0);
        ASSERT(qvk_buffer_new(d, 4096, QVK_MEM_DEVICE, &x) >= 0);
        ASSERT(qvk_buffer_new(d, 4096, QVK_MEM_DEVICE, &y) >= 0);
        ASSERT(qvk_cmd_new(d, &cmd) >= 0);
        QvkBinding bw = { w, 0, 0 }, bx = { x, 0, 0 }, by = { y, 0, 0 }, none = {};

        ASSERT(strstr(qvk_matmul_kernel(d, QVK_W_NF4_G64, true, 128, 1), "matvec_ext_nf4_f16"));
        ASSERT(strstr(qvk_matmul_kernel(d, QVK_W_FP8_ROW, false, 128, 9), "matmul_ext_fp8_f32"));
        /* k not a multiple of the group */
        ASSERT(qvk_matmul(cmd, QVK_W_Q4_0_G128, bw, 4, 192, bx, false, 1, by, none) == -EINVAL);
        ASSERT(qvk_matmul(cmd, QVK_W_I8_ROW, bw, 4, 48, bx, false, 1, by, none) == -EINVAL);
        ASSERT(qvk_matmul(cmd, QVK_W_Q4_K, bw, 4, 128, bx, false, 1, by, none) == -EINVAL);
        ASSERT(strstr(qvk_matmul_kernel(d, QVK_W_Q6_K, false, 256, 1), "matvec_ext_q6_k_f32"));
        ASSERT(strstr(qvk_matmul_kernel(d, QVK_W_Q4_K, true, 256, 64), "matmul_ext_q4_k_f16"));
        /* binding offsets that break the 16-byte loads */
        ASSERT(qvk_matmul(cmd, QVK_W_Q8_0_G64, (QvkBinding) { w, 8, 0 }, 4, 64, bx, false, 1, by, none) == -EINVAL);
        ASSERT(qvk_matmul(cmd, QVK_W_Q8_0_G64, bw, 4, 64, (QvkBinding) { x, 4, 0 }, false, 1, by, none) == -EINVAL);
        /* bindings too small: 64 rows of 16 + 256 bytes = 17408 bytes > 4096 */
        ASSERT(qvk_matmul(cmd, QVK_W_FP8_ROW, bw, 64, 256, bx, false, 1, by, none) == -EINVAL);
        ASSERT(qvk_matmul(cmd, QVK_W_NF4_G32, bw, 4, 64, (QvkBinding) { x, 0, 64 }, false, 1, by, none) == -EINVAL);
        ASSERT(qvk_matmul(cmd, QVK_W_NF4_G32, bw, 4, 64, bx, false, 1, (QvkBinding) { y, 0, 8 }, none) == -EINVAL);
        ASSERT(qvk_matmul(cmd, QVK_W_NF4_G32, none, 4, 64, bx, false, 1, by, none) == -EINVAL);
        /* empty products record nothing; a valid one records */
        ASSERT(qvk_matmul(cmd, QVK_W_NF4_G32, bw, 0, 64, bx, false, 1, by, none) == 0);
        ASSERT(qvk_matmul(cmd, QVK_W_NF4_G32, bw, 4, 64, bx, true, 3, by, none) == 0);
        ASSERT(qvk_cmd_end(cmd) >= 0);
        ASSERT(qvk_cmd_submit(cmd) >= 0);
        ASSERT(qvk_cmd_wait(cmd) >= 0);

        cmd = qvk_cmd_free(cmd);
        w = qvk_buffer_free(w), x = qvk_buffer_free(x), y = qvk_buffer_free(y);
        d = qvk_device_free(d);
        if (qvk_validation_messages() > 0)
                fprintf(stderr, "validation: %s\n", qvk_validation_last_message());
        ASSERT(qvk_validation_messages() == 0);
        printf("vk-matmul-ext: ok\n");
        return EXIT_SUCCESS;
}
