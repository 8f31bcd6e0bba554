/* Buffers: one allocation each, accounted per device; staging uploads and downloads; matrices
 * split over several allocations where one would exceed maxMemoryAllocationSize. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "vk-internal.h"

#define STAGING_CHUNK (64ull << 20)

static int find_memory_type(QvkDevice *d, uint32_t bits, VkMemoryPropertyFlags want,
                            VkMemoryPropertyFlags prefer, uint32_t *ret) {
        const VkPhysicalDeviceMemoryProperties *mp = &d->memprops;
        int best = -1;

        for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
                VkMemoryPropertyFlags fl = mp->memoryTypes[i].propertyFlags;
                if (!(bits & (1u << i)) || (fl & want) != want)
                        continue;
                if ((fl & prefer) == prefer) {
                        best = (int) i;
                        break;
                }
                if (best < 0)
                        best = (int) i;
        }
        if (best < 0)
                return -ENOMEM;
        *ret = (uint32_t) best;
        return 0;
}

QvkBuffer *qvk_buffer_free(QvkBuffer *b) {
        if (!b)
                return NULL;
        if (b->map)
                vkUnmapMemory(b->device->dev, b->memory);
        if (b->buffer)
                vkDestroyBuffer(b->device->dev, b->buffer, NULL);
        if (b->memory) {
                vkFreeMemory(b->device->dev, b->memory, NULL);
                atomic_fetch_sub(&b->device->used_bytes, b->alloc_size);
        }
        free(b);
        return NULL;
}


int qvk_buffer_new(QvkDevice *d, uint64_t size, QvkMemKind kind, QvkBuffer **ret) {
        _cleanup_(qvk_buffer_freep) QvkBuffer *b = NULL;
        VkBufferCreateInfo bci = {
                .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                         VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
        };
        VkMemoryAllocateInfo mai = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO };
        VkMemoryRequirements req;
        VkMemoryPropertyFlags want, prefer;
        VkResult vr;
        int r;

        if (size == 0)
                return -EINVAL;
        /* Rounded up so that kernels reading 32-bit words may touch the last partial word
         * of a 2-byte-aligned tensor without leaving the buffer. */
        bci.size = ALIGN_TO(size, 16);
        if (bci.size > d->features.max_allocation_size)
                return -EFBIG;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->device = d;
        b->size = size;
        b->kind = kind;

        vr = vkCreateBuffer(d->dev, &bci, NULL, &b->buffer);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        vkGetBufferMemoryRequirements(d->dev, b->buffer, &req);
        if (kind == QVK_MEM_HOST) {
                want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
                prefer = want | VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
        } else {
                want = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
                prefer = want;
        }
        r = find_memory_type(d, req.memoryTypeBits, want, prefer, &mai.memoryTypeIndex);
        if (r < 0 && kind == QVK_MEM_DEVICE)
                r = find_memory_type(d, req.memoryTypeBits, 0, 0, &mai.memoryTypeIndex);
        if (r < 0)
                return r;
        mai.allocationSize = req.size;
        vr = vkAllocateMemory(d->dev, &mai, NULL, &b->memory);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        b->alloc_size = req.size;
        atomic_fetch_add(&d->used_bytes, b->alloc_size);
        vr = vkBindBufferMemory(d->dev, b->buffer, b->memory, 0);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);

        /* Map host-visible memory, also device memory on unified-memory devices (lavapipe,
         * integrated GPUs), where uploads then are a memcpy. */
        if ((d->memprops.memoryTypes[mai.memoryTypeIndex].propertyFlags &
             (VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)) ==
            (VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)) {
                vr = vkMapMemory(d->dev, b->memory, 0, VK_WHOLE_SIZE, 0, &b->map);
                if (vr != VK_SUCCESS)
                        return qvk_result_to_errno(vr);
        } else if (kind == QVK_MEM_HOST)
                return -EOPNOTSUPP;

        *ret = TAKE_PTR(b);
        return 0;
}

uint64_t qvk_buffer_size(QvkBuffer *b) {
        return b->size;
}

void *qvk_buffer_map(QvkBuffer *b) {
        return b->kind == QVK_MEM_HOST ? b->map : NULL;
}

int qvk_one_shot_copy(QvkDevice *d, VkBuffer src, uint64_t src_off, VkBuffer dst, uint64_t dst_off,
                      uint64_t size) {
        VkCommandBufferAllocateInfo ai = {
                .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                .commandPool = d->transfer_pool,
                .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                .commandBufferCount = 1,
        };
        VkCommandBufferBeginInfo bi = {
                .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
        };
        VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
        /* Earlier device work may still use dst/src; later work and the host see the copy. */
        VkMemoryBarrier before = {
                .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        };
        VkMemoryBarrier after = {
                .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                .dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT |
                                 VK_ACCESS_SHADER_WRITE_BIT,
        };
        VkBufferCopy region = { .srcOffset = src_off, .dstOffset = dst_off, .size = size };
        VkCommandBuffer cb = VK_NULL_HANDLE;
        VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1 };
        VkFence fence = VK_NULL_HANDLE;
        VkResult vr;

        pthread_mutex_lock(&d->lock);
        vr = vkAllocateCommandBuffers(d->dev, &ai, &cb);
        if (vr != VK_SUCCESS)
                goto finish;
        vr = vkCreateFence(d->dev, &fci, NULL, &fence);
        if (vr != VK_SUCCESS)
                goto finish;
        (void) vkBeginCommandBuffer(cb, &bi);
        vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                             VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &before, 0, NULL, 0, NULL);
        vkCmdCopyBuffer(cb, src, dst, 1, &region);
        vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                             VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1,
                             &after, 0, NULL, 0, NULL);
        vr = vkEndCommandBuffer(cb);
        if (vr != VK_SUCCESS)
                goto finish;
        si.pCommandBuffers = &cb;
        vr = vkQueueSubmit(d->queue, 1, &si, fence);
        if (vr != VK_SUCCESS)
                goto finish;
        vr = vkWaitForFences(d->dev, 1, &fence, VK_TRUE, UINT64_MAX);
finish:
        if (fence)
                vkDestroyFence(d->dev, fence, NULL);
        if (cb)
                vkFreeCommandBuffers(d->dev, d->transfer_pool, 1, &cb);
        pthread_mutex_unlock(&d->lock);
        return qvk_result_to_errno(vr);
}

static int transfer(QvkBuffer *b, uint64_t offset, void *host, uint64_t size, bool upload) {
        _cleanup_(qvk_buffer_freep) QvkBuffer *staging = NULL;
        QvkDevice *d = b->device;
        uint64_t done = 0;
        int r;

        if (offset > b->size || size > b->size - offset)
                return -ERANGE;
        if (size == 0)
                return 0;
        if (b->map) {
                /* Wait for device work that may still read or write this buffer. */
                pthread_mutex_lock(&d->lock);
                (void) vkQueueWaitIdle(d->queue);
                pthread_mutex_unlock(&d->lock);
                if (upload)
                        memcpy((uint8_t *) b->map + offset, host, size);
                else
                        memcpy(host, (uint8_t *) b->map + offset, size);
                return 0;
        }

        r = qvk_buffer_new(d, MIN(size, STAGING_CHUNK), QVK_MEM_HOST, &staging);
        if (r < 0)
                return r;
        while (done < size) {
                uint64_t n = MIN(size - done, STAGING_CHUNK);
                if (upload) {
                        memcpy(staging->map, (const uint8_t *) host + done, n);
                        r = qvk_one_shot_copy(d, staging->buffer, 0, b->buffer, offset + done, n);
                } else {
                        r = qvk_one_shot_copy(d, b->buffer, offset + done, staging->buffer, 0, n);
                        if (r >= 0)
                                memcpy((uint8_t *) host + done, staging->map, n);
                }
                if (r < 0)
                        return r;
                done += n;
        }
        return 0;
}

int qvk_buffer_upload(QvkBuffer *dst, uint64_t offset, const void *src, uint64_t size) {
        return transfer(dst, offset, (void *) src, size, true);
}

int qvk_buffer_download(QvkBuffer *src, uint64_t offset, void *dst, uint64_t size) {
        return transfer(src, offset, dst, size, false);
}

void qvk_split_free(QvkSplit *s) {
        for (uint32_t i = 0; s->parts && i < s->n_parts; i++)
                qvk_buffer_free(s->parts[i]);
        free(s->parts);
        *s = (QvkSplit) {};
}

int qvk_split_new(QvkDevice *d, uint64_t rows, uint64_t row_bytes, QvkMemKind kind, QvkSplit *ret) {
        /* Parts are allocated rounded up to 16 bytes (qvk_buffer_new), so leave room for that. */
        uint64_t max = d->features.max_allocation_size / 16 * 16;
        QvkSplit s = { .rows = rows, .row_bytes = row_bytes };
        int r;

        if (rows == 0 || row_bytes == 0)
                return -EINVAL;
        if (row_bytes > max)
                return -EFBIG;
        s.part_rows = rows * row_bytes <= max ? rows : max / row_bytes;
        s.n_parts = (uint32_t) DIV_ROUND_UP(rows, s.part_rows);
        s.parts = calloc(s.n_parts, sizeof(QvkBuffer *));
        if (!s.parts)
                return -ENOMEM;
        for (uint32_t i = 0; i < s.n_parts; i++) {
                uint64_t n = MIN(s.part_rows, rows - i * s.part_rows);
                r = qvk_buffer_new(d, n * row_bytes, kind, &s.parts[i]);
                if (r < 0) {
                        qvk_split_free(&s);
                        return r;
                }
        }
        *ret = s;
        return 0;
}

int qvk_split_upload(QvkSplit *s, uint64_t row0, const void *src, uint64_t n) {
        const uint8_t *p = src;

        if (row0 > s->rows || n > s->rows - row0)
                return -ERANGE;
        while (n > 0) {
                uint64_t part = row0 / s->part_rows, in = row0 % s->part_rows;
                uint64_t take = MIN(n, s->part_rows - in);
                int r = qvk_buffer_upload(s->parts[part], in * s->row_bytes, p, take * s->row_bytes);
                if (r < 0)
                        return r;
                p += take * s->row_bytes;
                row0 += take;
                n -= take;
        }
        return 0;
}
