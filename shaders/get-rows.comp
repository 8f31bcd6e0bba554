#version 450
// x[t][i] = table[tokens[t]][i]: the embedding lookup (table in f16 or f32 by -DTABLE_F16).
// The binding holds table rows [row0, row0 + rows) (a large table is looked up in chunks that
// fit maxStorageBufferRange); tokens outside them are left to the other chunks' dispatches.
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
layout(push_constant) uniform P { uint n_embd, row0, rows; } p;
void main() {
    uint i = gl_GlobalInvocationID.x, t = gl_WorkGroupID.y;
    uint row = uint(tokens[t]) - p.row0;
    if (i >= p.n_embd || row >= p.rows)
        return;
    x[t * p.n_embd + i] = float(table[row * p.n_embd + i]);
}
