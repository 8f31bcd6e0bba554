#version 450
// x[t][i] = table[tokens[t]][i]: the embedding lookup (table in f16 or f32 by -DTABLE_F16).
#ifdef TABLE_F16
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
#ifdef TABLE_F16
#define TT float16_t
#else
#define TT float
#endif
layout(std430, binding = 0) readonly buffer Tok { int tokens[]; };
layout(std430, binding = 1) readonly buffer Tab { TT table[]; };
layout(std430, binding = 2) writeonly buffer X { float x[]; };
layout(push_constant) uniform P { uint n_embd; } p;
void main() {
    uint i = gl_GlobalInvocationID.x, t = gl_WorkGroupID.y;
    if (i >= p.n_embd)
        return;
    x[t * p.n_embd + i] = float(table[uint(tokens[t]) * p.n_embd + i]);
}
