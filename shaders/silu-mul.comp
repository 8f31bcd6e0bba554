#version 450
// The SwiGLU gate after the fused gate/up projection: g[t][i] = silu(gu[t][i]) * gu[t][F + i].
// -DQ8: g is written only as int8 blocks (quant8.glsl) for the int-dot down projection, one
// invocation per block of 32 (n_ff a multiple of 32); p.n counts blocks then.
#extension GL_GOOGLE_include_directive : enable
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer GU { float gu[]; };
layout(push_constant) uniform P { uint n_ff, n; } p;
#ifdef Q8
layout(std430, binding = 0) readonly buffer GU4 { vec4 gu4[]; };
layout(std430, binding = 1) writeonly buffer XQ { uvec4 xq4[]; };
layout(std430, binding = 1) writeonly buffer XD { vec2 xd[]; };
#include "quant8.glsl"
void main() {
    uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (id >= p.n)
        return;
    uint nb = p.n_ff / 32u, t = id / nb, b = id % nb;
    uint g0 = (t * 2u * p.n_ff + 32u * b) / 4u, u0 = g0 + p.n_ff / 4u;
    vec4 gv[8], uv[8];
    for (uint i = 0u; i < 8u; i++) {
        gv[i] = gu4[g0 + i];
        uv[i] = gu4[u0 + i];
    }
    float v[32];
    for (uint i = 0u; i < 8u; i++) {
        vec4 s = gv[i] / (1.0 + exp(-gv[i])) * uv[i];
        v[4u * i] = s.x; v[4u * i + 1u] = s.y; v[4u * i + 2u] = s.z; v[4u * i + 3u] = s.w;
    }
    store_q8_block(id, p.n, v);
}
#else
layout(std430, binding = 1) writeonly buffer G { float g[]; };
void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (i >= p.n)
        return;
    uint t = i / p.n_ff, c = i % p.n_ff;
    float v = gu[t * 2 * p.n_ff + c];
    g[i] = v / (1.0 + exp(-v)) * gu[t * 2 * p.n_ff + p.n_ff + c];
}
#endif
