/* Device selection, feature report, logical device creation and memory budget. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "vk-internal.h"

static const char *type_name(VkPhysicalDeviceType t) {
        switch (t) {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
                return "discrete";
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
                return "integrated";
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
                return "virtual";
        case VK_PHYSICAL_DEVICE_TYPE_CPU:
                return "cpu";
        default:
                return "other";
        }
}

static int type_score(VkPhysicalDeviceType t) {
        switch (t) {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
                return 4;
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
                return 3;
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
                return 2;
        case VK_PHYSICAL_DEVICE_TYPE_CPU:
                return 1;
        default:
                return 0;
        }
}

static bool has_extension(const VkExtensionProperties *exts, uint32_t n, const char *name) {
        for (uint32_t i = 0; i < n; i++)
                if (streq(exts[i].extensionName, name))
                        return true;
        return false;
}

static int find_compute_queue(VkPhysicalDevice phys, uint32_t *ret_family, uint32_t *ret_ts_bits) {
        _cleanup_free_ VkQueueFamilyProperties *q = NULL;
        uint32_t n = 0;

        vkGetPhysicalDeviceQueueFamilyProperties(phys, &n, NULL);
        q = calloc(MAX(n, 1u), sizeof(*q));
        if (!q)
                return -ENOMEM;
        vkGetPhysicalDeviceQueueFamilyProperties(phys, &n, q);
        for (uint32_t i = 0; i < n; i++)
                if (q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
                        *ret_family = i;
                        *ret_ts_bits = q[i].timestampValidBits;
                        return 0;
                }
        return -ENODEV;
}

static bool name_matches(const char *name, const char *pattern) {
        size_t ln = strlen(name), lp = strlen(pattern);

        for (size_t i = 0; i + lp <= ln; i++) {
                size_t j = 0;
                while (j < lp && tolower((unsigned char) name[i + j]) == tolower((unsigned char) pattern[j]))
                        j++;
                if (j == lp)
                        return true;
        }
        return false;
}

static int pick_device(VkInstance instance, const char *select, VkPhysicalDevice *ret) {
        _cleanup_free_ VkPhysicalDevice *devs = NULL;
        VkPhysicalDevice best = VK_NULL_HANDLE;
        int best_score = -1;
        uint32_t n = 0;
        bool by_index = false;
        unsigned long index = 0;

        if (vkEnumeratePhysicalDevices(instance, &n, NULL) != VK_SUCCESS || n == 0)
                return log_debug_errno(ENODEV, "No Vulkan device");
        devs = calloc(n, sizeof(*devs));
        if (!devs)
                return -ENOMEM;
        if (vkEnumeratePhysicalDevices(instance, &n, devs) != VK_SUCCESS)
                return -EIO;

        if (select && *select) {
                char *end;
                index = strtoul(select, &end, 10);
                by_index = *end == '\0';
        }

        for (uint32_t i = 0; i < n; i++) {
                VkPhysicalDeviceProperties p;
                uint32_t fam, bits;
                int score;

                vkGetPhysicalDeviceProperties(devs[i], &p);
                if (p.apiVersion < VK_API_VERSION_1_2 || find_compute_queue(devs[i], &fam, &bits) < 0) {
                        log_debug("Skipping Vulkan device %u (%s): needs Vulkan 1.2 and a compute queue",
                                  i, p.deviceName);
                        continue;
                }
                if (by_index && i != index)
                        continue;
                if (select && *select && !by_index && !name_matches(p.deviceName, select))
                        continue;
                score = type_score(p.deviceType);
                if (score > best_score) {
                        best_score = score;
                        best = devs[i];
                }
        }
        if (!best)
                return log_debug_errno(ENODEV, "No Vulkan 1.2 device matches '%s'", strna(select));
        *ret = best;
        return 0;
}

/* The matrix-matrix kernel uses 16x16x16 fp16 x fp16 + fp32 -> fp32 subgroup matrices. */
static bool coopmat_nv_usable(QvkDevice *d, VkPhysicalDevice phys) {
        PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV get =
                (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV) vkGetInstanceProcAddr(
                        d->instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
        VkPhysicalDeviceCooperativeMatrixFeaturesNV cf = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV };
        VkPhysicalDeviceFeatures2 f2 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                .pNext = &cf,
        };
        _cleanup_free_ VkCooperativeMatrixPropertiesNV *props = NULL;
        uint32_t n = 0;

        vkGetPhysicalDeviceFeatures2(phys, &f2);
        if (!get || !cf.cooperativeMatrix || get(phys, &n, NULL) != VK_SUCCESS || n == 0)
                return false;
        props = calloc(n, sizeof(*props));
        if (!props)
                return false;
        for (uint32_t i = 0; i < n; i++)
                props[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
        if (get(phys, &n, props) != VK_SUCCESS)
                return false;
        for (uint32_t i = 0; i < n; i++)
                if (props[i].MSize == 16 && props[i].NSize == 16 && props[i].KSize == 16 &&
                    props[i].AType == VK_COMPONENT_TYPE_FLOAT16_NV &&
                    props[i].BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
                    props[i].CType == VK_COMPONENT_TYPE_FLOAT32_NV &&
                    props[i].DType == VK_COMPONENT_TYPE_FLOAT32_NV && props[i].scope == VK_SCOPE_SUBGROUP_NV)
                        return true;
        return false;
}

/* VK_KHR_cooperative_matrix and VK_NV_cooperative_matrix2 postdate Debian 12's Vulkan headers
 * (1.3.239): their structures as the registry defines them (extensions 507 and 594). */
#define QVK_STYPE_COOPMAT_FEATURES_KHR ((VkStructureType) 1000506000)
#define QVK_STYPE_COOPMAT2_FEATURES_NV ((VkStructureType) 1000593000)
#define QVK_STYPE_COOPMAT_FLEX_PROPERTIES_NV ((VkStructureType) 1000593001)
#define QVK_SCOPE_WORKGROUP 2u
#define QVK_COMPONENT_FLOAT16 0u
#define QVK_COMPONENT_FLOAT32 1u

typedef struct QvkCoopmatFeaturesKHR {
        VkStructureType sType;
        void *pNext;
        VkBool32 cooperativeMatrix;
        VkBool32 cooperativeMatrixRobustBufferAccess;
} QvkCoopmatFeaturesKHR;

typedef struct QvkCoopmat2FeaturesNV {
        VkStructureType sType;
        void *pNext;
        VkBool32 cooperativeMatrixWorkgroupScope;
        VkBool32 cooperativeMatrixFlexibleDimensions;
        VkBool32 cooperativeMatrixReductions;
        VkBool32 cooperativeMatrixConversions;
        VkBool32 cooperativeMatrixPerElementOperations;
        VkBool32 cooperativeMatrixTensorAddressing;
        VkBool32 cooperativeMatrixBlockLoads;
} QvkCoopmat2FeaturesNV;

typedef struct QvkCoopmatFlexPropertiesNV {
        VkStructureType sType;
        void *pNext;
        uint32_t MGranularity, NGranularity, KGranularity;
        uint32_t AType, BType, CType, ResultType;
        VkBool32 saturatingAccumulation;
        uint32_t scope;
        uint32_t workgroupInvocations;
} QvkCoopmatFlexPropertiesNV;

typedef VkResult (*QvkGetFlexProperties)(VkPhysicalDevice, uint32_t *, QvkCoopmatFlexPropertiesNV *);

/* shaders/matmul_coopmat2.comp: workgroup-scope fp16 x fp16 + fp32 matrices of 128 x 64 (A),
 * 64 x 128 (B) and 128 x 128 (accumulator) in workgroups of 256 invocations. */
static bool coopmat2_usable(QvkDevice *d, VkPhysicalDevice phys) {
        QvkGetFlexProperties get = (QvkGetFlexProperties) vkGetInstanceProcAddr(
                d->instance, "vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV");
        QvkCoopmat2FeaturesNV f2nv = { .sType = QVK_STYPE_COOPMAT2_FEATURES_NV };
        QvkCoopmatFeaturesKHR fkhr = { .sType = QVK_STYPE_COOPMAT_FEATURES_KHR, .pNext = &f2nv };
        VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &fkhr };
        _cleanup_free_ QvkCoopmatFlexPropertiesNV *props = NULL;
        uint32_t n = 0;

        vkGetPhysicalDeviceFeatures2(phys, &f2);
        if (!get || !fkhr.cooperativeMatrix || !f2nv.cooperativeMatrixWorkgroupScope ||
            !f2nv.cooperativeMatrixFlexibleDimensions || get(phys, &n, NULL) != VK_SUCCESS || n == 0)
                return false;
        props = calloc(n, sizeof(*props));
        if (!props)
                return false;
        for (uint32_t i = 0; i < n; i++)
                props[i].sType = QVK_STYPE_COOPMAT_FLEX_PROPERTIES_NV;
        if (get(phys, &n, props) != VK_SUCCESS)
                return false;
        for (uint32_t i = 0; i < n; i++)
                if (props[i].scope == QVK_SCOPE_WORKGROUP && props[i].workgroupInvocations == 256 &&
                    props[i].AType == QVK_COMPONENT_FLOAT16 && props[i].BType == QVK_COMPONENT_FLOAT16 &&
                    props[i].CType == QVK_COMPONENT_FLOAT32 && props[i].ResultType == QVK_COMPONENT_FLOAT32 &&
                    props[i].MGranularity && 128 % props[i].MGranularity == 0 &&
                    props[i].NGranularity && 128 % props[i].NGranularity == 0 &&
                    props[i].KGranularity && 64 % props[i].KGranularity == 0)
                        return true;
        return false;
}

/* A limit lowered by $name (bytes, at least 4 KiB so that the small buffers still fit): tests
 * force the tensor-splitting paths with it on any device. */
static uint64_t env_lower(const char *name, uint64_t limit) {
        const char *e = getenv(name);
        unsigned long long v;
        char *end;

        if (!e || !*e)
                return limit;
        errno = 0;
        v = strtoull(e, &end, 0);
        if (errno || *end || v < 4096)
                return limit;
        return MIN(limit, (uint64_t) v);
}

int qvk_device_features_query(QvkDevice *d, VkPhysicalDevice phys) {
        VkPhysicalDeviceVulkan11Features f11 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
        };
        VkPhysicalDeviceVulkan12Features f12 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        };
        VkPhysicalDeviceSubgroupSizeControlFeatures fsc = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES };
        VkPhysicalDeviceShaderIntegerDotProductFeatures fdot = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES };
        VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2 };
        VkPhysicalDeviceVulkan11Properties p11 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES,
        };
        VkPhysicalDeviceVulkan12Properties p12 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_PROPERTIES,
        };
        VkPhysicalDeviceSubgroupSizeControlProperties psc = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES };
        VkPhysicalDeviceShaderIntegerDotProductProperties pdot = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES };
        VkPhysicalDeviceProperties2 p2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2 };
        _cleanup_free_ VkExtensionProperties *exts = NULL;
        QvkFeatures *f = &d->features;
        VkPhysicalDeviceProperties props;
        uint32_t n_ext = 0;
        bool api13, have_sc, have_dot;

        vkGetPhysicalDeviceProperties(phys, &props);
        api13 = props.apiVersion >= VK_API_VERSION_1_3;
        if (vkEnumerateDeviceExtensionProperties(phys, NULL, &n_ext, NULL) != VK_SUCCESS)
                return -EIO;
        exts = calloc(MAX(n_ext, 1u), sizeof(*exts));
        if (!exts)
                return -ENOMEM;
        if (vkEnumerateDeviceExtensionProperties(phys, NULL, &n_ext, exts) != VK_SUCCESS)
                return -EIO;
        /* Core in 1.3; from the extensions on a 1.2 device. The structures are the same. */
        have_sc = api13 || has_extension(exts, n_ext, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
        have_dot = api13 || has_extension(exts, n_ext, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);

        f2.pNext = &f11;
        f11.pNext = &f12;
        f12.pNext = have_sc ? (void *) &fsc : NULL;
        fsc.pNext = have_dot ? (void *) &fdot : NULL;
        if (!have_sc)
                f12.pNext = have_dot ? (void *) &fdot : NULL;
        vkGetPhysicalDeviceFeatures2(phys, &f2);

        p2.pNext = &p11;
        p11.pNext = &p12;
        p12.pNext = have_sc ? (void *) &psc : NULL;
        psc.pNext = have_dot ? (void *) &pdot : NULL;
        if (!have_sc)
                p12.pNext = have_dot ? (void *) &pdot : NULL;
        vkGetPhysicalDeviceProperties2(phys, &p2);

        memset(f, 0, sizeof(*f));
        snprintf(f->name, sizeof(f->name), "%s", props.deviceName);
        snprintf(f->type, sizeof(f->type), "%s", type_name(props.deviceType));
        /* Names are at most 255 bytes; keep what fits. */
        snprintf(f->driver, sizeof(f->driver), "%.60s %.60s", p12.driverName, p12.driverInfo);
        f->vendor_id = props.vendorID;
        f->device_id = props.deviceID;
        f->api_version = props.apiVersion;

        f->fp16 = f12.shaderFloat16 && !qvk_env_flag("QUANTD_VK_DISABLE_F16");
        f->storage16 = f11.storageBuffer16BitAccess && !qvk_env_flag("QUANTD_VK_DISABLE_F16");
        f->int8 = f12.shaderInt8 && !qvk_env_flag("QUANTD_VK_DISABLE_INT8");
        f->storage8 = f12.storageBuffer8BitAccess && !qvk_env_flag("QUANTD_VK_DISABLE_INT8");
        f->subgroup_size = p11.subgroupSize;
        f->subgroup_arith = (p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                            (p11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) &&
                            (p11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
                            !qvk_env_flag("QUANTD_VK_DISABLE_SUBGROUP");
        f->subgroup_size_control = have_sc && fsc.subgroupSizeControl &&
                                   (psc.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                                   !qvk_env_flag("QUANTD_VK_DISABLE_SUBGROUP");
        d->full_subgroups = f->subgroup_size_control && fsc.computeFullSubgroups;
        d->max_subgroup_size = have_sc && psc.maxSubgroupSize ? psc.maxSubgroupSize : p11.subgroupSize;
        f->int_dot = have_dot && fdot.shaderIntegerDotProduct && !qvk_env_flag("QUANTD_VK_DISABLE_INTDOT");
        f->int_dot_accelerated = f->int_dot && pdot.integerDotProduct4x8BitPackedSignedAccelerated;
        f->coopmat_khr = has_extension(exts, n_ext, "VK_KHR_cooperative_matrix");
        f->coopmat_nv = has_extension(exts, n_ext, "VK_NV_cooperative_matrix");
        f->coopmat2_nv = has_extension(exts, n_ext, "VK_NV_cooperative_matrix2");
        f->memory_budget = has_extension(exts, n_ext, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
        f->max_shared_memory = props.limits.maxComputeSharedMemorySize;
        f->max_workgroup_invocations = MIN(props.limits.maxComputeWorkGroupInvocations,
                                           props.limits.maxComputeWorkGroupSize[0]);
        f->max_storage_buffer_range = env_lower("QUANTD_VK_MAX_STORAGE_RANGE", props.limits.maxStorageBufferRange);
        f->max_allocation_size = env_lower("QUANTD_VK_MAX_ALLOCATION", p11.maxMemoryAllocationSize);
        f->timestamp_period_ns = props.limits.timestampPeriod;
        d->min_storage_align = MAX(props.limits.minStorageBufferOffsetAlignment, (VkDeviceSize) 4);

        vkGetPhysicalDeviceMemoryProperties(phys, &d->memprops);
        for (uint32_t i = 0; i < d->memprops.memoryHeapCount; i++)
                if (d->memprops.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
                        f->device_local_bytes += d->memprops.memoryHeaps[i].size;
        d->subgroup_fast = f->subgroup_arith;
        d->coopmat = f->coopmat_nv && f->fp16 && f->storage16 && f->subgroup_arith &&
                     f->subgroup_size == 32 &&
                     !qvk_env_flag("QUANTD_VK_DISABLE_COOPMAT") && coopmat_nv_usable(d, phys);
        d->coopmat2 = d->coopmat && f->coopmat_khr && f->coopmat2_nv &&
                      !qvk_env_flag("QUANTD_VK_DISABLE_COOPMAT2") && coopmat2_usable(d, phys);
        /* A validation layer older than VK_KHR_cooperative_matrix (Debian 12's is 1.3.239) reports
         * its structures as unknown: a test run there would fail on messages about the layer, not
         * about quantd, so the kernel stays off under such a layer. */
        if (d->coopmat2 && qvk_validation_enabled() &&
            qvk_validation_layer_version() < VK_MAKE_API_VERSION(0, 1, 3, 255)) {
                log_debug("Cooperative matrix 2 off: the validation layer predates VK_KHR_cooperative_matrix.");
                d->coopmat2 = false;
        }
        return 0;
}

static int create_logical(QvkDevice *d) {
        VkPhysicalDeviceVulkan11Features f11 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
        };
        VkPhysicalDeviceVulkan12Features f12 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        };
        VkPhysicalDeviceVulkan13Features f13 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES,
        };
        VkPhysicalDeviceSubgroupSizeControlFeatures fsc = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES };
        VkPhysicalDeviceShaderIntegerDotProductFeatures fdot = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES };
        VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2 };
        const QvkFeatures *f = &d->features;
        VkPhysicalDeviceCooperativeMatrixFeaturesNV fcm = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
                .cooperativeMatrix = VK_TRUE,
        };
        QvkCoopmatFeaturesKHR fkhr = { .sType = QVK_STYPE_COOPMAT_FEATURES_KHR, .cooperativeMatrix = VK_TRUE };
        QvkCoopmat2FeaturesNV f2nv = {
                .sType = QVK_STYPE_COOPMAT2_FEATURES_NV,
                .cooperativeMatrixWorkgroupScope = VK_TRUE,
                .cooperativeMatrixFlexibleDimensions = VK_TRUE,
        };
        const char *exts[7];
        uint32_t n_ext = 0;
        float prio = 1.0f;
        VkDeviceQueueCreateInfo qci = {
                .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                .queueFamilyIndex = d->queue_family,
                .queueCount = 1,
                .pQueuePriorities = &prio,
        };
        VkDeviceCreateInfo ci = {
                .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                .pNext = &f2,
                .queueCreateInfoCount = 1,
                .pQueueCreateInfos = &qci,
                .ppEnabledExtensionNames = exts,
        };
        void **tail = &f12.pNext;
        VkResult vr;

        f2.pNext = &f11;
        f11.pNext = &f12;
        f11.storageBuffer16BitAccess = f->storage16;
        f12.storageBuffer8BitAccess = f->storage8;
        f12.shaderFloat16 = f->fp16;
        f12.shaderInt8 = f->int8;
        if (f->api_version >= VK_API_VERSION_1_3) {
                f13.subgroupSizeControl = f->subgroup_size_control;
                f13.computeFullSubgroups = d->full_subgroups;
                f13.shaderIntegerDotProduct = f->int_dot;
                *tail = &f13;
        } else {
                if (f->subgroup_size_control) {
                        fsc.subgroupSizeControl = true;
                        fsc.computeFullSubgroups = d->full_subgroups;
                        exts[n_ext++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
                        *tail = &fsc;
                        tail = &fsc.pNext;
                }
                if (f->int_dot) {
                        fdot.shaderIntegerDotProduct = true;
                        exts[n_ext++] = VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME;
                        *tail = &fdot;
                }
        }
        if (f->memory_budget)
                exts[n_ext++] = VK_EXT_MEMORY_BUDGET_EXTENSION_NAME;
        if (d->coopmat) {
                exts[n_ext++] = VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME;
                fcm.pNext = f2.pNext;
                f2.pNext = &fcm;
        }
        if (d->coopmat2) {
                exts[n_ext++] = "VK_KHR_cooperative_matrix";
                exts[n_ext++] = "VK_NV_cooperative_matrix2";
                f2nv.pNext = f2.pNext;
                fkhr.pNext = &f2nv;
                f2.pNext = &fkhr;
        }
        ci.enabledExtensionCount = n_ext;

        vr = vkCreateDevice(d->phys, &ci, NULL, &d->dev);
        if (vr != VK_SUCCESS)
                return log_debug_errno(qvk_result_to_errno(vr), "vkCreateDevice failed: %d", vr);
        vkGetDeviceQueue(d->dev, d->queue_family, 0, &d->queue);
        return 0;
}

QvkDevice *qvk_device_free(QvkDevice *d) {
        if (!d)
                return NULL;
        if (d->dev) {
                (void) vkDeviceWaitIdle(d->dev);
                qvk_pipelines_free(d);
                qvk_pipeline_cache_close(d);
                if (d->transfer_pool)
                        vkDestroyCommandPool(d->dev, d->transfer_pool, NULL);
                vkDestroyDevice(d->dev, NULL);
        }
        qvk_instance_free(d->instance, d->messenger);
        pthread_mutex_destroy(&d->lock);
        free(d->pipeline_cache_path);
        free(d);
        return NULL;
}


int qvk_device_new(const char *select, const char *pipeline_cache_dir, QvkDevice **ret) {
        _cleanup_(qvk_device_freep) QvkDevice *d = NULL;
        VkCommandPoolCreateInfo pci = {
                .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                .flags = VK_COMMAND_POOL_CREATE_TRANSIENT_BIT,
        };
        int r;

        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        pthread_mutex_init(&d->lock, NULL);

        r = qvk_instance_new(qvk_validation_enabled(), &d->instance, &d->messenger);
        if (r < 0)
                return r;
        if (!select)
                select = getenv("QUANTD_VK_DEVICE");
        r = pick_device(d->instance, select, &d->phys);
        if (r < 0)
                return r;
        r = find_compute_queue(d->phys, &d->queue_family, &d->timestamp_valid_bits);
        if (r < 0)
                return r;
        r = qvk_device_features_query(d, d->phys);
        if (r < 0)
                return r;
        r = create_logical(d);
        if (r < 0)
                return r;

        pci.queueFamilyIndex = d->queue_family;
        if (vkCreateCommandPool(d->dev, &pci, NULL, &d->transfer_pool) != VK_SUCCESS)
                return -EIO;

        r = qvk_pipeline_cache_open(d, pipeline_cache_dir);
        if (r < 0)
                return r;

        log_debug("Vulkan device: %s (%s, %s)", d->features.name, d->features.type, d->features.driver);
        *ret = TAKE_PTR(d);
        return 0;
}

const QvkFeatures *qvk_device_features(QvkDevice *d) {
        return &d->features;
}

int qvk_device_wait_idle(QvkDevice *d) {
        VkResult vr;

        pthread_mutex_lock(&d->lock);
        vr = vkQueueWaitIdle(d->queue);
        pthread_mutex_unlock(&d->lock);
        return qvk_result_to_errno(vr);
}

void qvk_device_memory(QvkDevice *d, uint64_t *ret_budget, uint64_t *ret_used_by_us) {
        VkPhysicalDeviceMemoryBudgetPropertiesEXT budget = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT };
        VkPhysicalDeviceMemoryProperties2 mp = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
                .pNext = d->features.memory_budget ? &budget : NULL,
        };
        uint64_t total = 0;

        vkGetPhysicalDeviceMemoryProperties2(d->phys, &mp);
        for (uint32_t i = 0; i < mp.memoryProperties.memoryHeapCount; i++) {
                if (!(mp.memoryProperties.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT))
                        continue;
                total += d->features.memory_budget ? budget.heapBudget[i]
                                                   : mp.memoryProperties.memoryHeaps[i].size;
        }
        if (ret_budget)
                *ret_budget = total;
        if (ret_used_by_us)
                *ret_used_by_us = atomic_load(&d->used_bytes);
}
