/* Private structures shared by the files of vulkan/; nothing here is API. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <vulkan/vulkan.h>

#include "vk.h"

struct QvkPipeline {
        char *key;                  /* "name/spec0,spec1,.../bindings/push" */
        VkDescriptorSetLayout set_layout;
        VkPipelineLayout layout;
        VkPipeline pipeline;
        uint32_t n_bindings, push_size;
        struct QvkPipeline *next;
};

struct QvkDevice {
        VkInstance instance;
        VkDebugUtilsMessengerEXT messenger;
        VkPhysicalDevice phys;
        VkDevice dev;
        VkQueue queue;
        uint32_t queue_family;
        uint32_t timestamp_valid_bits;

        QvkFeatures features;
        VkPhysicalDeviceMemoryProperties memprops;
        uint64_t min_storage_align;
        uint32_t max_subgroup_size;
        bool full_subgroups;        /* computeFullSubgroups enabled */
        bool subgroup_fast;         /* subgroup arithmetic usable by the kernels */
        bool coopmat;               /* NV cooperative matrix 16x16x16 fp16 -> fp32 enabled */
        bool coopmat2;              /* KHR + NV2 workgroup-scope fp16 -> fp32 matrices enabled */

        VkPipelineCache pipeline_cache;
        char *pipeline_cache_path;

        pthread_mutex_t lock;       /* queue submissions, pipeline list, transfer pool */
        QvkPipeline *pipelines;
        VkCommandPool transfer_pool;

        _Atomic uint64_t used_bytes;
};

struct QvkBuffer {
        QvkDevice *device;
        VkBuffer buffer;
        VkDeviceMemory memory;
        uint64_t size, alloc_size;
        QvkMemKind kind;
        void *map;                  /* host-visible mapping (also for UMA device memory) */
};

/* vk-instance.c */
int qvk_instance_new(bool validation, VkInstance *ret, VkDebugUtilsMessengerEXT *ret_messenger);
void qvk_instance_free(VkInstance instance, VkDebugUtilsMessengerEXT messenger);
bool qvk_validation_enabled(void);
/* specVersion of the installed Khronos validation layer, 0 when it is not installed. */
uint32_t qvk_validation_layer_version(void);
int qvk_result_to_errno(VkResult r);
bool qvk_env_flag(const char *name);
/* $name as a number in 1..max (any strtoul base), else def: the tuning switches. */
uint32_t qvk_env_u32(const char *name, uint32_t def, uint32_t max);

/* vk-device.c */
int qvk_device_features_query(QvkDevice *d, VkPhysicalDevice phys);

/* vk-pipeline.c */
void qvk_pipelines_free(QvkDevice *d);
int qvk_pipeline_cache_open(QvkDevice *d, const char *dir);
void qvk_pipeline_cache_close(QvkDevice *d);

/* vk-buffer.c */
int qvk_one_shot_copy(QvkDevice *d, VkBuffer src, uint64_t src_off, VkBuffer dst, uint64_t dst_off,
                      uint64_t size);
