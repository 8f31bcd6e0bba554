/* The Vulkan instance: API version, the Khronos validation layer and its message counter. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "vk-internal.h"

#define VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"

static atomic_uint validation_messages;
static char validation_last[1024];
static pthread_mutex_t validation_lock = PTHREAD_MUTEX_INITIALIZER;

unsigned qvk_validation_messages(void) {
        return atomic_load(&validation_messages);
}

const char *qvk_validation_last_message(void) {
        return validation_last[0] ? validation_last : NULL;
}

bool qvk_env_flag(const char *name) {
        const char *e = getenv(name);

        return e && *e && !streq(e, "0");
}

uint32_t qvk_env_u32(const char *name, uint32_t def, uint32_t max) {
        const char *e = getenv(name);
        char *end;
        unsigned long v;

        if (!e || !*e)
                return def;
        v = strtoul(e, &end, 0);
        return *end || v == 0 || v > max ? def : (uint32_t) v;
}

bool qvk_validation_enabled(void) {
        return qvk_env_flag("QUANTD_VK_VALIDATION");
}

int qvk_result_to_errno(VkResult r) {
        switch (r) {
        case VK_SUCCESS:
                return 0;
        case VK_ERROR_OUT_OF_HOST_MEMORY:
                return -ENOMEM;
        case VK_ERROR_OUT_OF_DEVICE_MEMORY:
                return -ENOSPC;
        case VK_ERROR_INITIALIZATION_FAILED:
        case VK_ERROR_INCOMPATIBLE_DRIVER:
                return -ENODEV;
        case VK_ERROR_LAYER_NOT_PRESENT:
        case VK_ERROR_EXTENSION_NOT_PRESENT:
        case VK_ERROR_FEATURE_NOT_PRESENT:
                return -EOPNOTSUPP;
        case VK_TIMEOUT:
                return -ETIMEDOUT;
        case VK_ERROR_DEVICE_LOST:
                return -ENXIO;
        default:
                return -EIO;
        }
}

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_cb(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                               VkDebugUtilsMessageTypeFlagsEXT types,
                                               const VkDebugUtilsMessengerCallbackDataEXT *data,
                                               void *userdata) {
        if (!(severity & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                          VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)))
                return VK_FALSE;
        atomic_fetch_add(&validation_messages, 1);
        pthread_mutex_lock(&validation_lock);
        snprintf(validation_last, sizeof(validation_last), "%s",
                 data && data->pMessage ? data->pMessage : "?");
        pthread_mutex_unlock(&validation_lock);
        /* Only reachable with QUANTD_VK_VALIDATION=1, a debugging switch: the text goes to the
         * debug log, and qvk_validation_last_message() lets tests print it. */
        log_debug("Vulkan validation: %s", data && data->pMessage ? data->pMessage : "?");
        return VK_FALSE;
}

/* The spec version of an installed layer, 0 when it is not installed. */
static uint32_t layer_spec_version(const char *name) {
        _cleanup_free_ VkLayerProperties *layers = NULL;
        uint32_t n = 0;

        if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0)
                return 0;
        layers = calloc(n, sizeof(*layers));
        if (!layers || vkEnumerateInstanceLayerProperties(&n, layers) != VK_SUCCESS)
                return 0;
        for (uint32_t i = 0; i < n; i++)
                if (streq(layers[i].layerName, name))
                        return MAX(layers[i].specVersion, 1u);
        return 0;
}

static bool layer_present(const char *name) {
        return layer_spec_version(name) > 0;
}

uint32_t qvk_validation_layer_version(void) {
        return layer_spec_version(VALIDATION_LAYER);
}

int qvk_instance_new(bool validation, VkInstance *ret, VkDebugUtilsMessengerEXT *ret_messenger) {
        VkDebugUtilsMessengerCreateInfoEXT dci = {
                .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
                .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                                   VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
                .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                               VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                               VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
                .pfnUserCallback = debug_cb,
        };
        VkApplicationInfo app = {
                .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                .pApplicationName = "quantd",
                .pEngineName = "quantd",
                .apiVersion = VK_API_VERSION_1_3,
        };
        const char *layers[] = { VALIDATION_LAYER };
        const char *exts[] = { VK_EXT_DEBUG_UTILS_EXTENSION_NAME };
        VkInstanceCreateInfo ci = {
                .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                .pApplicationInfo = &app,
        };
        VkDebugUtilsMessengerEXT messenger = VK_NULL_HANDLE;
        VkInstance instance;
        uint32_t loader_version = VK_API_VERSION_1_0;
        VkResult vr;

        (void) vkEnumerateInstanceVersion(&loader_version);
        if (loader_version < VK_API_VERSION_1_2)
                return log_debug_errno(ENODEV, "Vulkan loader too old (%u.%u)",
                                       VK_API_VERSION_MAJOR(loader_version),
                                       VK_API_VERSION_MINOR(loader_version));
        if (loader_version < VK_API_VERSION_1_3)
                app.apiVersion = VK_API_VERSION_1_2;

        if (validation) {
                /* Asked for validation and cannot have it: fail rather than silently test
                 * nothing. */
                if (!layer_present(VALIDATION_LAYER))
                        return log_debug_errno(EOPNOTSUPP, "QUANTD_VK_VALIDATION=1 but %s is not installed",
                                               VALIDATION_LAYER);
                ci.enabledLayerCount = 1;
                ci.ppEnabledLayerNames = layers;
                ci.enabledExtensionCount = 1;
                ci.ppEnabledExtensionNames = exts;
                ci.pNext = &dci;  /* also catches messages of vkCreate/DestroyInstance */
        }

        vr = vkCreateInstance(&ci, NULL, &instance);
        if (vr != VK_SUCCESS)
                return log_debug_errno(qvk_result_to_errno(vr), "vkCreateInstance failed: %d", vr);

        if (validation) {
                PFN_vkCreateDebugUtilsMessengerEXT create = (PFN_vkCreateDebugUtilsMessengerEXT)
                        vkGetInstanceProcAddr(instance, "vkCreateDebugUtilsMessengerEXT");
                if (!create || create(instance, &dci, NULL, &messenger) != VK_SUCCESS) {
                        vkDestroyInstance(instance, NULL);
                        return log_debug_errno(EOPNOTSUPP, "Cannot create the debug messenger");
                }
        }

        *ret = instance;
        *ret_messenger = messenger;
        return 0;
}

void qvk_instance_free(VkInstance instance, VkDebugUtilsMessengerEXT messenger) {
        if (!instance)
                return;
        if (messenger) {
                PFN_vkDestroyDebugUtilsMessengerEXT destroy = (PFN_vkDestroyDebugUtilsMessengerEXT)
                        vkGetInstanceProcAddr(instance, "vkDestroyDebugUtilsMessengerEXT");
                if (destroy)
                        destroy(instance, messenger, NULL);
        }
        vkDestroyInstance(instance, NULL);
}
