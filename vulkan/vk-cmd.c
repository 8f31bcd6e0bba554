/* Command recordings: dispatches, copies and fills in one command buffer, barriers inserted
 * only for read-after-write, write-after-write and write-after-read on overlapping ranges. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "vk-internal.h"

#define QUERY_SLOTS 64
#define SETS_PER_POOL 256

typedef struct Range {
        VkBuffer buf;
        uint64_t begin, end;
} Range;

typedef struct RangeSet {
        Range *r;
        size_t n, cap;
} RangeSet;

struct QvkCmd {
        QvkDevice *d;
        VkCommandPool pool;
        VkCommandBuffer cb;
        VkFence fence;
        VkQueryPool queries;
        VkDescriptorPool *dpools;
        size_t n_dpools, cur_dpool;
        RangeSet written, read;
        QvkBuffer **temps;          /* qvk_cmd_temp(): kept until qvk_cmd_free */
        size_t n_temps;
        bool pending, ended;
        uint32_t n_dispatches, n_barriers;  /* of the current recording (qvk_cmd_stats) */
};

static bool ranges_overlap(const RangeSet *s, const Range *x) {
        for (size_t i = 0; i < s->n; i++)
                if (s->r[i].buf == x->buf && s->r[i].begin < x->end && x->begin < s->r[i].end)
                        return true;
        return false;
}

static int ranges_add(RangeSet *s, const Range *x) {
        if (s->n == s->cap) {
                size_t cap = MAX(s->cap * 2, (size_t) 16);
                Range *r = realloc(s->r, cap * sizeof(*r));
                if (!r)
                        return -ENOMEM;
                s->r = r;
                s->cap = cap;
        }
        s->r[s->n++] = *x;
        return 0;
}

static void full_barrier(QvkCmd *c, VkAccessFlags dst_extra, VkPipelineStageFlags dst_stage_extra) {
        VkMemoryBarrier mb = {
                .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                                 VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT | dst_extra,
        };
        VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;

        vkCmdPipelineBarrier(c->cb, stages, stages | dst_stage_extra, 0, 1, &mb, 0, NULL, 0, NULL);
        c->n_barriers++;
        c->written.n = 0;
        c->read.n = 0;
}

static int begin(QvkCmd *c) {
        VkCommandBufferBeginInfo bi = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO };
        VkResult vr;

        vr = vkBeginCommandBuffer(c->cb, &bi);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        if (c->queries)
                vkCmdResetQueryPool(c->cb, c->queries, 0, QUERY_SLOTS);
        /* Order against whatever earlier submissions (of any recording) wrote. */
        full_barrier(c, 0, 0);
        c->ended = false;
        return 0;
}

QvkCmd *qvk_cmd_free(QvkCmd *c) {
        if (!c)
                return NULL;
        (void) qvk_cmd_wait(c);
        for (size_t i = 0; i < c->n_dpools; i++)
                vkDestroyDescriptorPool(c->d->dev, c->dpools[i], NULL);
        if (c->queries)
                vkDestroyQueryPool(c->d->dev, c->queries, NULL);
        if (c->fence)
                vkDestroyFence(c->d->dev, c->fence, NULL);
        if (c->pool)
                vkDestroyCommandPool(c->d->dev, c->pool, NULL);
        for (size_t i = 0; i < c->n_temps; i++)
                qvk_buffer_free(c->temps[i]);
        free(c->temps);
        free(c->dpools);
        free(c->written.r);
        free(c->read.r);
        free(c);
        return NULL;
}


int qvk_cmd_new(QvkDevice *d, QvkCmd **ret) {
        _cleanup_(qvk_cmd_freep) QvkCmd *c = NULL;
        VkCommandPoolCreateInfo pci = {
                .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                .queueFamilyIndex = d->queue_family,
        };
        VkCommandBufferAllocateInfo ai = {
                .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                .commandBufferCount = 1,
        };
        VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
        VkQueryPoolCreateInfo qci = {
                .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                .queryType = VK_QUERY_TYPE_TIMESTAMP,
                .queryCount = QUERY_SLOTS,
        };
        VkResult vr;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->d = d;
        vr = vkCreateCommandPool(d->dev, &pci, NULL, &c->pool);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        ai.commandPool = c->pool;
        vr = vkAllocateCommandBuffers(d->dev, &ai, &c->cb);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        vr = vkCreateFence(d->dev, &fci, NULL, &c->fence);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        if (d->timestamp_valid_bits > 0) {
                vr = vkCreateQueryPool(d->dev, &qci, NULL, &c->queries);
                if (vr != VK_SUCCESS)
                        return qvk_result_to_errno(vr);
        }
        r = begin(c);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

int qvk_cmd_reset(QvkCmd *c) {
        int r;

        r = qvk_cmd_wait(c);
        if (r < 0)
                return r;
        if (!c->ended)
                (void) vkEndCommandBuffer(c->cb);
        if (vkResetCommandBuffer(c->cb, 0) != VK_SUCCESS)
                return -EIO;
        for (size_t i = 0; i < c->n_dpools; i++)
                (void) vkResetDescriptorPool(c->d->dev, c->dpools[i], 0);
        c->cur_dpool = 0;
        c->written.n = c->read.n = 0;
        c->n_dispatches = c->n_barriers = 0;
        return begin(c);
}

static int new_set(QvkCmd *c, QvkPipeline *p, VkDescriptorSet *ret) {
        VkDescriptorPoolSize ps = {
                .type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                .descriptorCount = SETS_PER_POOL * 8,
        };
        VkDescriptorPoolCreateInfo pci = {
                .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                .maxSets = SETS_PER_POOL,
                .poolSizeCount = 1,
                .pPoolSizes = &ps,
        };
        VkDescriptorSetAllocateInfo ai = {
                .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                .descriptorSetCount = 1,
                .pSetLayouts = &p->set_layout,
        };

        for (;;) {
                VkResult vr;

                if (c->cur_dpool == c->n_dpools) {
                        VkDescriptorPool *np = realloc(c->dpools, (c->n_dpools + 1) * sizeof(*np));
                        if (!np)
                                return -ENOMEM;
                        c->dpools = np;
                        vr = vkCreateDescriptorPool(c->d->dev, &pci, NULL, &c->dpools[c->n_dpools]);
                        if (vr != VK_SUCCESS)
                                return qvk_result_to_errno(vr);
                        c->n_dpools++;
                }
                ai.descriptorPool = c->dpools[c->cur_dpool];
                vr = vkAllocateDescriptorSets(c->d->dev, &ai, ret);
                if (vr == VK_SUCCESS)
                        return 0;
                if (vr != VK_ERROR_OUT_OF_POOL_MEMORY && vr != VK_ERROR_FRAGMENTED_POOL)
                        return qvk_result_to_errno(vr);
                c->cur_dpool++;
        }
}

static int binding_range(QvkDevice *d, const QvkBinding *b, Range *ret_range,
                         VkDescriptorBufferInfo *ret_info) {
        uint64_t alloc = ALIGN_TO(b->buf->size, 16), size;

        if (b->offset % d->min_storage_align)
                return -EINVAL;
        if (b->offset >= b->buf->size || b->size > b->buf->size - b->offset)
                return -ERANGE;
        /* Round to whole words (the buffer is allocated in multiples of 16 bytes), so that
         * shaders reading 32-bit words stay inside the descriptor's range. */
        size = b->size ? MIN(ALIGN_TO(b->size, 4), alloc - b->offset) : alloc - b->offset;
        if (size > d->features.max_storage_buffer_range)
                return -E2BIG;
        *ret_range = (Range) { b->buf->buffer, b->offset, b->offset + size };
        *ret_info = (VkDescriptorBufferInfo) { b->buf->buffer, b->offset, size };
        return 0;
}

int qvk_cmd_dispatch(QvkCmd *c, QvkPipeline *p, const QvkBinding *bindings, size_t n,
                     uint32_t writes_mask, const void *push, uint32_t push_size,
                     uint32_t groups_x, uint32_t groups_y, uint32_t groups_z) {
        VkDescriptorBufferInfo infos[16];
        VkWriteDescriptorSet writes[16];
        Range ranges[16];
        VkDescriptorSet set;
        bool need_barrier = false;
        int r;

        if (c->ended || n != p->n_bindings || n > ELEMENTSOF(infos) || push_size != p->push_size)
                return -EINVAL;
        if (groups_x == 0 || groups_y == 0 || groups_z == 0)
                return 0;

        for (size_t i = 0; i < n; i++) {
                r = binding_range(c->d, &bindings[i], &ranges[i], &infos[i]);
                if (r < 0)
                        return r;
                if (ranges_overlap(&c->written, &ranges[i]) ||
                    ((writes_mask & (1u << i)) && ranges_overlap(&c->read, &ranges[i])))
                        need_barrier = true;
        }
        r = new_set(c, p, &set);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                writes[i] = (VkWriteDescriptorSet) {
                        .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                        .dstSet = set,
                        .dstBinding = (uint32_t) i,
                        .descriptorCount = 1,
                        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                        .pBufferInfo = &infos[i],
                };
        vkUpdateDescriptorSets(c->d->dev, (uint32_t) n, writes, 0, NULL);

        if (need_barrier)
                full_barrier(c, 0, 0);
        for (size_t i = 0; i < n; i++) {
                r = ranges_add((writes_mask & (1u << i)) ? &c->written : &c->read, &ranges[i]);
                if (r < 0)
                        return r;
        }

        vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipeline);
        vkCmdBindDescriptorSets(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, 1, &set, 0, NULL);
        if (push_size)
                vkCmdPushConstants(c->cb, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size, push);
        vkCmdDispatch(c->cb, groups_x, groups_y, groups_z);
        c->n_dispatches++;
        return 0;
}

static int transfer_dst(QvkCmd *c, QvkBuffer *dst, uint64_t off, uint64_t size, QvkBuffer *src,
                        uint64_t src_off) {
        Range rd = { dst->buffer, off, off + size }, rs = { 0 };
        bool need = ranges_overlap(&c->written, &rd) || ranges_overlap(&c->read, &rd);
        int r;

        if (src) {
                rs = (Range) { src->buffer, src_off, src_off + size };
                need = need || ranges_overlap(&c->written, &rs);
        }
        if (need)
                full_barrier(c, 0, 0);
        r = ranges_add(&c->written, &rd);
        if (r >= 0 && src)
                r = ranges_add(&c->read, &rs);
        return r;
}

int qvk_cmd_copy(QvkCmd *c, QvkBuffer *src, uint64_t src_off, QvkBuffer *dst, uint64_t dst_off,
                 uint64_t size) {
        VkBufferCopy region = { .srcOffset = src_off, .dstOffset = dst_off, .size = size };
        int r;

        if (c->ended)
                return -EINVAL;
        if (src_off > src->size || size > src->size - src_off || dst_off > dst->size ||
            size > dst->size - dst_off)
                return -ERANGE;
        if (size == 0)
                return 0;
        r = transfer_dst(c, dst, dst_off, size, src, src_off);
        if (r < 0)
                return r;
        vkCmdCopyBuffer(c->cb, src->buffer, dst->buffer, 1, &region);
        return 0;
}

int qvk_cmd_fill(QvkCmd *c, QvkBuffer *dst, uint64_t off, uint64_t size, uint32_t value) {
        int r;

        if (c->ended || off % 4)
                return -EINVAL;
        if (off > dst->size || size > dst->size - off)
                return -ERANGE;
        size = ALIGN_TO(size, 4);  /* inside the 16-byte-rounded allocation */
        if (size == 0)
                return 0;
        r = transfer_dst(c, dst, off, size, NULL, 0);
        if (r < 0)
                return r;
        vkCmdFillBuffer(c->cb, dst->buffer, off, size, value);
        return 0;
}

int qvk_cmd_timestamp(QvkCmd *c, uint32_t index) {
        if (!c->queries)
                return -EOPNOTSUPP;
        if (c->ended || index >= QUERY_SLOTS)
                return -EINVAL;
        vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, c->queries, index);
        return 0;
}

int qvk_cmd_timestamps_read(QvkCmd *c, uint32_t first, uint32_t count, double *ret_ns) {
        uint64_t v[QUERY_SLOTS];
        uint64_t mask;
        VkResult vr;

        if (!c->queries)
                return -EOPNOTSUPP;
        if (first >= QUERY_SLOTS || count > QUERY_SLOTS - first)
                return -EINVAL;
        if (count == 0)
                return 0;
        vr = vkGetQueryPoolResults(c->d->dev, c->queries, first, count, sizeof(v), v, sizeof(uint64_t),
                                   VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        mask = c->d->timestamp_valid_bits >= 64 ? UINT64_MAX
                                                : (UINT64_C(1) << c->d->timestamp_valid_bits) - 1;
        for (uint32_t i = 0; i < count; i++)
                ret_ns[i] = (double) (v[i] & mask) * c->d->features.timestamp_period_ns;
        return 0;
}

int qvk_cmd_end(QvkCmd *c) {
        VkResult vr;

        if (c->ended)
                return -EINVAL;
        /* Results become visible to the host (mapped buffers) and to later submissions. */
        full_barrier(c, VK_ACCESS_HOST_READ_BIT, VK_PIPELINE_STAGE_HOST_BIT);
        vr = vkEndCommandBuffer(c->cb);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        c->ended = true;
        return 0;
}

int qvk_cmd_submit(QvkCmd *c) {
        VkSubmitInfo si = {
                .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                .commandBufferCount = 1,
                .pCommandBuffers = &c->cb,
        };
        VkResult vr;
        int r;

        if (!c->ended)
                return -EINVAL;
        /* A recording runs once at a time; wait for its previous submission. */
        r = qvk_cmd_wait(c);
        if (r < 0)
                return r;
        vr = vkResetFences(c->d->dev, 1, &c->fence);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        pthread_mutex_lock(&c->d->lock);
        vr = vkQueueSubmit(c->d->queue, 1, &si, c->fence);
        pthread_mutex_unlock(&c->d->lock);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        c->pending = true;
        return 0;
}

int qvk_cmd_wait(QvkCmd *c) {
        VkResult vr;

        if (!c->pending)
                return 0;
        vr = vkWaitForFences(c->d->dev, 1, &c->fence, VK_TRUE, UINT64_MAX);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        c->pending = false;
        return 0;
}

void qvk_cmd_stats(QvkCmd *c, uint32_t *ret_dispatches, uint32_t *ret_barriers) {
        *ret_dispatches = c->n_dispatches;
        *ret_barriers = c->n_barriers;
}

QvkDevice *qvk_cmd_device(QvkCmd *c) {
        return c->d;
}

int qvk_cmd_temp(QvkCmd *c, uint64_t size, QvkBuffer **ret) {
        QvkBuffer **nt;
        int r;

        /* Reuse is safe: the range tracking orders a new use after the earlier ones. */
        for (size_t i = 0; i < c->n_temps; i++)
                if (qvk_buffer_size(c->temps[i]) >= size) {
                        *ret = c->temps[i];
                        return 0;
                }
        nt = realloc(c->temps, (c->n_temps + 1) * sizeof(*nt));
        if (!nt)
                return -ENOMEM;
        c->temps = nt;
        r = qvk_buffer_new(c->d, size, QVK_MEM_DEVICE, &c->temps[c->n_temps]);
        if (r < 0)
                return r;
        *ret = c->temps[c->n_temps++];
        return 0;
}
