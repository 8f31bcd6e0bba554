#version 450
#extension GL_GOOGLE_include_directive : require
// Quantizes activations to int8 per block of 32 (scale = max|x| / 127) for the int-dot
// kernels; one invocation per block. Layout in dot.glsl.
#define XB 0
#include "types.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;

layout(std430, binding = 1) writeonly buffer XQ { uvec4 xq4[]; };
layout(std430, binding = 1) writeonly buffer XD { vec2 xd[]; };

#include "quant8.glsl"

void main() {
    uint nb = pc.k / 32u;
    uint id = (gl_WorkGroupID.x + gl_WorkGroupID.y * pc.gx) * WG + gl_LocalInvocationID.x;
    if (id >= nb * pc.n)
        return;
    uint c = id / nb, b = id % nb;
    uint base = c * pc.k + b * 32u;
    float v[32];
    for (uint i = 0u; i < 32u; i++)
        v[i] = load_x(base + i);
    store_q8_block(id, nb * pc.n, v);
}
