/* The SPIR-V compiled from the shaders folder at build time, embedded in the binary. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct QdShader {
        const char *name;     /* variant name, e.g. "matvec_q4_0_f32" */
        const uint32_t *code;
        size_t size;          /* in bytes */
} QdShader;

extern const QdShader qd_shaders[];
extern const size_t qd_shaders_count;

/* Binary search in the sorted table; NULL when absent. */
const QdShader *qd_shader_find(const char *name);
