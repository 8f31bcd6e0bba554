/* The Vulkan core on a real device: buffers, the selftest_add pipeline, a chained recording
 * that needs barriers, copy/fill, timestamps, re-submission, and no validation messages. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glob.h>
#include <unistd.h>

#include "vk-test.h"

#define N 1000u  /* not a multiple of the workgroup size */

int main(void) {
        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        _cleanup_(qvk_buffer_freep) QvkBuffer *a = NULL, *b = NULL, *c = NULL, *e = NULL, *host = NULL;
        _cleanup_(qvk_cmd_freep) QvkCmd *cmd = NULL;
        float va[N], vb[N], out[N];
        uint32_t spec[] = { 64 }, n = N, groups = DIV_ROUND_UP(N, 64u);
        uint64_t budget, used;
        double ts[2];
        QvkPipeline *p, *p2;
        const QvkFeatures *f;
        int r;

        r = vk_test_device_new(&d);
        CHECK(r);
        f = qvk_device_features(d);
        printf("device: %s (%s), driver %s, api %u.%u\n", f->name, f->type, f->driver,
               f->api_version >> 22, (f->api_version >> 12) & 0x3ff);
        printf("fp16=%d int8=%d storage8=%d storage16=%d subgroup=%u arith=%d size_control=%d "
               "int_dot=%d (accelerated %d) coopmat khr=%d nv=%d budget=%d\n",
               f->fp16, f->int8, f->storage8, f->storage16, f->subgroup_size, f->subgroup_arith,
               f->subgroup_size_control, f->int_dot, f->int_dot_accelerated, f->coopmat_khr,
               f->coopmat_nv, f->memory_budget);

        /* One scratch buffer sized for a whole batch must also serve shorter calls, which may
         * take the int-dot path (a prompt of 3 tokens after sizing for 512 once failed). */
        if (f->int_dot) {
                ASSERT(qvk_matmul_scratch_bytes(d, 4096, 512) >= qvk_matmul_scratch_bytes(d, 4096, 8));
                ASSERT(qvk_matmul_scratch_bytes(d, 4096, 8) >= qvk_matmul_scratch_bytes(d, 4096, 3));
                ASSERT(qvk_matmul_scratch_bytes(d, 4096, 3) > 0);
        }

        for (unsigned i = 0; i < N; i++) {
                va[i] = (float) i * 0.5f;
                vb[i] = 1000.0f - (float) i;
        }
        CHECK(qvk_buffer_new(d, sizeof(va), QVK_MEM_DEVICE, &a));
        CHECK(qvk_buffer_new(d, sizeof(vb), QVK_MEM_DEVICE, &b));
        CHECK(qvk_buffer_new(d, sizeof(out), QVK_MEM_DEVICE, &c));
        CHECK(qvk_buffer_new(d, sizeof(out), QVK_MEM_DEVICE, &e));
        CHECK(qvk_buffer_new(d, sizeof(out), QVK_MEM_HOST, &host));
        ASSERT(qvk_buffer_size(a) == sizeof(va));
        ASSERT(qvk_buffer_map(host) != NULL);
        ASSERT(qvk_buffer_map(a) == NULL);
        qvk_device_memory(d, &budget, &used);
        ASSERT(used >= 5 * sizeof(va));
        ASSERT(budget > 0);
        CHECK(qvk_buffer_upload(a, 0, va, sizeof(va)));
        CHECK(qvk_buffer_upload(b, 0, vb, sizeof(vb)));

        CHECK(qvk_pipeline_get(d, "selftest_add", spec, 1, 3, sizeof(uint32_t), &p));
        CHECK(qvk_pipeline_get(d, "selftest_add", spec, 1, 3, sizeof(uint32_t), &p2));
        ASSERT(p == p2);  /* cached by (name, constants) */
        ASSERT(qvk_pipeline_get(d, "no_such_shader", spec, 1, 3, 4, &p2) == -ENOENT);

        /* c = a + b; e = c + b (reads what the first wrote: needs a barrier); then e is copied
         * into the host buffer (another read-after-write) and c is poisoned by a fill. */
        CHECK(qvk_cmd_new(d, &cmd));
        CHECK(qvk_cmd_timestamp(cmd, 0));
        CHECK(qvk_cmd_dispatch(cmd, p, (QvkBinding[]) { { a, 0, 0 }, { b, 0, 0 }, { c, 0, 0 } }, 3, 1u << 2,
                               &n, sizeof(n), groups, 1, 1));
        CHECK(qvk_cmd_dispatch(cmd, p, (QvkBinding[]) { { c, 0, 0 }, { b, 0, 0 }, { e, 0, 0 } }, 3, 1u << 2,
                               &n, sizeof(n), groups, 1, 1));
        CHECK(qvk_cmd_copy(cmd, e, 0, host, 0, sizeof(out)));
        CHECK(qvk_cmd_fill(cmd, c, 0, sizeof(out), 0x7fc00000u));
        CHECK(qvk_cmd_timestamp(cmd, 1));
        CHECK(qvk_cmd_end(cmd));

        for (int round = 0; round < 3; round++) {  /* one recording, submitted many times */
                memset(qvk_buffer_map(host), 0, sizeof(out));
                CHECK(qvk_cmd_submit(cmd));
                CHECK(qvk_cmd_wait(cmd));
                memcpy(out, qvk_buffer_map(host), sizeof(out));
                for (unsigned i = 0; i < N; i++)
                        if (out[i] != va[i] + 2.0f * vb[i]) {
                                fprintf(stderr, "round %d: e[%u] = %g, expected %g\n", round, i, out[i],
                                        va[i] + 2.0f * vb[i]);
                                return EXIT_FAILURE;
                        }
        }
        CHECK(qvk_buffer_download(c, 0, out, sizeof(out)));
        for (unsigned i = 0; i < N; i++)
                ASSERT(isnan(out[i]));  /* the fill ran after both dispatches */

        r = qvk_cmd_timestamps_read(cmd, 0, 2, ts);
        if (r != -EOPNOTSUPP) {
                CHECK(r);
                ASSERT(ts[1] >= ts[0]);
                printf("recording took %.1f us\n", (ts[1] - ts[0]) / 1000.0);
        }

        /* A reset recording is empty again and records anew. */
        CHECK(qvk_cmd_reset(cmd));
        CHECK(qvk_cmd_dispatch(cmd, p, (QvkBinding[]) { { a, 0, 0 }, { a, 0, 0 }, { host, 0, 0 } }, 3,
                               1u << 2, &n, sizeof(n), groups, 1, 1));
        CHECK(qvk_cmd_end(cmd));
        CHECK(qvk_cmd_submit(cmd));
        CHECK(qvk_cmd_wait(cmd));
        memcpy(out, qvk_buffer_map(host), sizeof(out));
        for (unsigned i = 0; i < N; i++)
                ASSERT(out[i] == 2.0f * va[i]);

        cmd = qvk_cmd_free(cmd);
        a = qvk_buffer_free(a);
        b = qvk_buffer_free(b);
        c = qvk_buffer_free(c);
        e = qvk_buffer_free(e);
        host = qvk_buffer_free(host);
        qvk_device_memory(d, NULL, &used);
        ASSERT(used == 0);
        d = qvk_device_free(d);

        /* Selection by name substring and by index; a name that matches nothing fails. */
        {
                _cleanup_(qvk_device_freep) QvkDevice *by_name = NULL, *by_index = NULL;
                char name[64];

                CHECK(qvk_device_new("0", NULL, &by_index));
                snprintf(name, sizeof(name), "%.8s", qvk_device_features(by_index)->name);
                CHECK(qvk_device_new(name, NULL, &by_name));
                ASSERT(streq(qvk_device_features(by_name)->name, qvk_device_features(by_index)->name));
                ASSERT(qvk_device_new("no-such-device-name", NULL, &d) == -ENODEV);
                ASSERT(d == NULL);  /* ret untouched on failure */
        }

        /* The pipeline cache is written to the folder when the device goes away. */
        {
                char dir[] = "/tmp/quantd-test-vk-XXXXXX", pattern[64];
                _cleanup_(qvk_device_freep) QvkDevice *cd = NULL;
                glob_t g = {};
                size_t found;

                ASSERT(mkdtemp(dir));
                CHECK(qvk_device_new(NULL, dir, &cd));
                CHECK(qvk_pipeline_get(cd, "selftest_add", spec, 1, 3, sizeof(uint32_t), &p));
                cd = qvk_device_free(cd);
                snprintf(pattern, sizeof(pattern), "%s/pipelines-*.bin", dir);
                (void) glob(pattern, 0, NULL, &g);
                found = g.gl_pathc;
                for (size_t i = 0; i < g.gl_pathc; i++)
                        (void) unlink(g.gl_pathv[i]);
                globfree(&g);
                (void) rmdir(dir);
                ASSERT(found == 1);
        }

        if (qvk_validation_messages() != 0) {
                fprintf(stderr, "%u validation messages, last: %s\n", qvk_validation_messages(),
                        strna(qvk_validation_last_message()));
                return EXIT_FAILURE;
        }
        printf("ok\n");
        return EXIT_SUCCESS;
}
