#version 450
#extension GL_GOOGLE_include_directive : require
// W in one of the extended formats (types-ext.glsl) to fp16, for the cooperative-matrix kernel
// of vk-matmul.c (vulkan/vk-matmul-ext.c: products of n > 8 columns on devices that have one).
// One invocation per 32-weight unit: rows pc.y0 .. pc.y0 + m - 1 of the output, pc.k halves each,
// written as 16-byte vectors (no 16-bit storage needed).
#define G_ID 1
#include "types-ext.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;

layout(std430, binding = 1) writeonly buffer O { uvec4 o4[]; };

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint idx = (gl_WorkGroupID.x + gl_WorkGroupID.y * pc.gx) * WG + tid;
    uint units = pc.k / 32u;
    tables_init(tid);
    if (idx >= pc.m * units)
        return;
    uint row = idx / units, u = idx % units;
    vec4 wv[8];
    load_unit(row, u, wv);
    uint xa, xb;
    unit_elems(u, xa, xb);
    // slots 0-15 are elements xa.., 16-31 elements xb..; both runs start on 16 halves
    uint base = (pc.y0 + row) * pc.k;
    uint a = (base + xa) / 8u, b = (base + xb) / 8u;
    o4[a] = uvec4(packHalf2x16(wv[0].xy), packHalf2x16(wv[0].zw), packHalf2x16(wv[1].xy), packHalf2x16(wv[1].zw));
    o4[a + 1u] = uvec4(packHalf2x16(wv[2].xy), packHalf2x16(wv[2].zw), packHalf2x16(wv[3].xy), packHalf2x16(wv[3].zw));
    o4[b] = uvec4(packHalf2x16(wv[4].xy), packHalf2x16(wv[4].zw), packHalf2x16(wv[5].xy), packHalf2x16(wv[5].zw));
    o4[b + 1u] = uvec4(packHalf2x16(wv[6].xy), packHalf2x16(wv[6].zw), packHalf2x16(wv[7].xy), packHalf2x16(wv[7].zw));
}
