#version 450
#extension GL_GOOGLE_include_directive : require
// Quantizes activations to int8 per block of 32 (scale = max|x| / 127) for the int-dot
// kernels; one invocation per block. Layout in dot.glsl.
#define XB 0
#include "types.glsl"
#include "dot.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;

layout(std430, binding = 1) writeonly buffer XQ { uvec4 xq4[]; };
layout(std430, binding = 1) writeonly buffer XD { vec2 xd[]; };

void main() {
    uint nb = pc.k / 32u;
    uint id = (gl_WorkGroupID.x + gl_WorkGroupID.y * pc.gx) * WG + gl_LocalInvocationID.x;
    if (id >= nb * pc.n)
        return;
    uint c = id / nb, b = id % nb;
    uint base = c * pc.k + b * 32u;
    float v[32];
    float amax = 0.0;
    for (uint i = 0u; i < 32u; i++) {
        v[i] = load_x(base + i);
        amax = max(amax, abs(v[i]));
    }
    float d = amax / 127.0;
    float inv = d > 0.0 ? 1.0 / d : 0.0;
    int sum = 0;
    uint packed[8];
    for (uint wd = 0u; wd < 8u; wd++) {
        packed[wd] = 0u;
        for (uint i = 0u; i < 4u; i++) {
            int q = clamp(int(roundEven(v[4u * wd + i] * inv)), -127, 127);
            sum += q;
            packed[wd] |= (uint(q) & 0xffu) << (8u * i);
        }
    }
    xq4[2u * id] = uvec4(packed[0], packed[1], packed[2], packed[3]);
    xq4[2u * id + 1u] = uvec4(packed[4], packed[5], packed[6], packed[7]);
    xd[4u * nb * pc.n + id] = vec2(d, float(sum));
}
