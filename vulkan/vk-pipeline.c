/* Compute pipelines from the embedded SPIR-V, cached per (shader, constants), and the
 * VkPipelineCache persisted to a folder between runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "log.h"
#include "macro.h"
#include "shaders.h"
#include "vk-internal.h"

static QvkPipeline *pipeline_free(QvkDevice *d, QvkPipeline *p) {
        if (!p)
                return NULL;
        if (p->pipeline)
                vkDestroyPipeline(d->dev, p->pipeline, NULL);
        if (p->layout)
                vkDestroyPipelineLayout(d->dev, p->layout, NULL);
        if (p->set_layout)
                vkDestroyDescriptorSetLayout(d->dev, p->set_layout, NULL);
        free(p->key);
        free(p);
        return NULL;
}

void qvk_pipelines_free(QvkDevice *d) {
        while (d->pipelines) {
                QvkPipeline *next = d->pipelines->next;
                pipeline_free(d, d->pipelines);
                d->pipelines = next;
        }
}

static char *make_key(const char *shader, const uint32_t *spec, size_t n_spec, uint32_t n_bindings,
                      uint32_t push_size) {
        size_t len = strlen(shader) + 32 + n_spec * 11;
        char *key = malloc(len), *p;

        if (!key)
                return NULL;
        p = key + sprintf(key, "%s/", shader);
        for (size_t i = 0; i < n_spec; i++)
                p += sprintf(p, "%u,", spec[i]);
        sprintf(p, "/%u/%u", n_bindings, push_size);
        return key;
}

static int pipeline_create(QvkDevice *d, const QdShader *s, const uint32_t *spec, size_t n_spec,
                           uint32_t n_bindings, uint32_t push_size, QvkPipeline *p) {
        VkDescriptorSetLayoutBinding binds[16];
        VkDescriptorSetLayoutCreateInfo dci = {
                .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                .bindingCount = n_bindings,
                .pBindings = binds,
        };
        VkPushConstantRange pcr = {
                .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
                .size = push_size,
        };
        VkPipelineLayoutCreateInfo lci = {
                .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                .pushConstantRangeCount = push_size ? 1 : 0,
                .pPushConstantRanges = &pcr,
        };
        VkShaderModuleCreateInfo mci = {
                .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                .codeSize = s->size,
                .pCode = s->code,
        };
        VkSpecializationMapEntry entries[16];
        VkSpecializationInfo si = {
                .mapEntryCount = (uint32_t) n_spec,
                .pMapEntries = entries,
                .dataSize = n_spec * sizeof(uint32_t),
                .pData = spec,
        };
        VkComputePipelineCreateInfo pci = {
                .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
                .stage = {
                        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                        .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                        .pName = "main",
                        .pSpecializationInfo = n_spec ? &si : NULL,
                },
        };
        VkShaderModule module = VK_NULL_HANDLE;
        VkResult vr;

        if (n_bindings > ELEMENTSOF(binds) || n_spec > ELEMENTSOF(entries) || push_size % 4)
                return -EINVAL;
        for (uint32_t i = 0; i < n_bindings; i++)
                binds[i] = (VkDescriptorSetLayoutBinding) {
                        .binding = i,
                        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                        .descriptorCount = 1,
                        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
                };
        for (size_t i = 0; i < n_spec; i++)
                entries[i] = (VkSpecializationMapEntry) {
                        .constantID = (uint32_t) i,
                        .offset = (uint32_t) (i * sizeof(uint32_t)),
                        .size = sizeof(uint32_t),
                };

        vr = vkCreateDescriptorSetLayout(d->dev, &dci, NULL, &p->set_layout);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        lci.setLayoutCount = 1;
        lci.pSetLayouts = &p->set_layout;
        vr = vkCreatePipelineLayout(d->dev, &lci, NULL, &p->layout);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        vr = vkCreateShaderModule(d->dev, &mci, NULL, &module);
        if (vr != VK_SUCCESS)
                return qvk_result_to_errno(vr);
        /* Constant 0 is the workgroup size by convention; where it is a multiple of the largest
         * subgroup, ask for full subgroups so that subgroup reductions see every lane. */
        if (d->full_subgroups && n_spec > 0 && d->max_subgroup_size && spec[0] % d->max_subgroup_size == 0)
                pci.stage.flags |= VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT;
        pci.stage.module = module;
        pci.layout = p->layout;
        vr = vkCreateComputePipelines(d->dev, d->pipeline_cache, 1, &pci, NULL, &p->pipeline);
        vkDestroyShaderModule(d->dev, module, NULL);
        if (vr != VK_SUCCESS)
                return log_debug_errno(qvk_result_to_errno(vr), "Pipeline %s: vkCreateComputePipelines: %d",
                                       s->name, vr);
        p->n_bindings = n_bindings;
        p->push_size = push_size;
        return 0;
}

int qvk_pipeline_get(QvkDevice *d, const char *shader, const uint32_t *spec, size_t n_spec,
                     uint32_t n_bindings, uint32_t push_size, QvkPipeline **ret) {
        _cleanup_free_ char *key = NULL;
        const QdShader *s;
        QvkPipeline *p;
        int r;

        key = make_key(shader, spec, n_spec, n_bindings, push_size);
        if (!key)
                return -ENOMEM;

        pthread_mutex_lock(&d->lock);
        for (p = d->pipelines; p; p = p->next)
                if (streq(p->key, key)) {
                        pthread_mutex_unlock(&d->lock);
                        *ret = p;
                        return 0;
                }
        pthread_mutex_unlock(&d->lock);

        s = qd_shader_find(shader);
        if (!s)
                return log_debug_errno(ENOENT, "No embedded shader %s", shader);
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        r = pipeline_create(d, s, spec, n_spec, n_bindings, push_size, p);
        if (r < 0) {
                pipeline_free(d, p);
                return r;
        }
        p->key = TAKE_PTR(key);

        pthread_mutex_lock(&d->lock);
        p->next = d->pipelines;
        d->pipelines = p;
        pthread_mutex_unlock(&d->lock);
        *ret = p;
        return 0;
}

int qvk_pipeline_cache_open(QvkDevice *d, const char *dir) {
        VkPhysicalDeviceProperties props;
        VkPipelineCacheCreateInfo ci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO };
        _cleanup_free_ char *data = NULL;
        size_t size = 0;
        char uuid[2 * VK_UUID_SIZE + 1];
        VkResult vr;

        if (dir && *dir) {
                vkGetPhysicalDeviceProperties(d->phys, &props);
                for (unsigned i = 0; i < VK_UUID_SIZE; i++)
                        sprintf(uuid + 2 * i, "%02x", props.pipelineCacheUUID[i]);
                if (asprintf(&d->pipeline_cache_path, "%s/pipelines-%04x-%04x-%s.bin", dir,
                             props.vendorID, props.deviceID, uuid) < 0) {
                        d->pipeline_cache_path = NULL;
                        return -ENOMEM;
                }
                /* A missing or stale file only costs compile time; the driver validates the
                 * header (vendor, device, cache UUID) and ignores what does not match. */
                if (read_full_file(d->pipeline_cache_path, 256u << 20, &data, &size) >= 0) {
                        ci.initialDataSize = size;
                        ci.pInitialData = data;
                }
        }
        vr = vkCreatePipelineCache(d->dev, &ci, NULL, &d->pipeline_cache);
        if (vr != VK_SUCCESS && ci.initialDataSize) {
                ci.initialDataSize = 0;
                ci.pInitialData = NULL;
                vr = vkCreatePipelineCache(d->dev, &ci, NULL, &d->pipeline_cache);
        }
        return qvk_result_to_errno(vr);
}

int qvk_device_save_pipeline_cache(QvkDevice *d) {
        _cleanup_free_ void *data = NULL;
        size_t size = 0;
        int r;

        if (!d->pipeline_cache || !d->pipeline_cache_path)
                return 0;
        if (vkGetPipelineCacheData(d->dev, d->pipeline_cache, &size, NULL) != VK_SUCCESS || size == 0)
                return -EIO;
        data = malloc(size);
        if (!data)
                return -ENOMEM;
        if (vkGetPipelineCacheData(d->dev, d->pipeline_cache, &size, data) != VK_SUCCESS)
                return -EIO;
        r = write_file_atomic(d->pipeline_cache_path, data, size);
        if (r < 0)
                return log_debug_errno(r, "Cannot write %s: %m", d->pipeline_cache_path);
        return 0;
}

void qvk_pipeline_cache_close(QvkDevice *d) {
        if (!d->pipeline_cache)
                return;
        (void) qvk_device_save_pipeline_cache(d);
        vkDestroyPipelineCache(d->dev, d->pipeline_cache, NULL);
        d->pipeline_cache = VK_NULL_HANDLE;
}
