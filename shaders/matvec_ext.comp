#version 450
#extension GL_GOOGLE_include_directive : require
// y_c = W x_c for NC activation columns (1..8) at once, W in one of the extended formats
// (types-ext.glsl): the decode step and small batches. NR rows per workgroup; each invocation
// decodes 32-weight units of the rows in registers (strided by WG) and multiplies them with
// every column, then the workgroup sums (subgroup adds with USE_SUBGROUP, else a shared-memory
// tree; WG a power of two).
#define XB 1
#define G_ID 3
#include "types-ext.glsl"

#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint NR = 2;
layout(constant_id = 2) const uint NC = 1;

layout(std430, binding = 2) writeonly buffer Y { float y[]; };

shared float red[WG * NR * NC];
float acc[NR * NC];

// Sum of acc[j] over the workgroup, valid in invocation j (j < NR*NC).
float reduce_all(uint tid) {
    const uint J = NR * NC;
#ifdef USE_SUBGROUP
    for (uint j = 0u; j < J; j++) {
        float s = subgroupAdd(acc[j]);
        if (subgroupElect())
            red[gl_SubgroupID * J + j] = s;
    }
    barrier();
    float t = 0.0;
    if (tid < J)
        for (uint g = 0u; g < gl_NumSubgroups; g++)
            t += red[g * J + tid];
    return t;
#else
    for (uint j = 0u; j < J; j++)
        red[tid * J + j] = acc[j];
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
        if (tid < s)
            for (uint j = 0u; j < J; j++)
                red[tid * J + j] += red[(tid + s) * J + j];
        barrier();
    }
    return tid < J ? red[tid] : 0.0;
#endif
}

void main() {
    uint row0 = (gl_WorkGroupID.x + gl_WorkGroupID.y * pc.gx) * NR;
    uint tid = gl_LocalInvocationID.x;
    tables_init(tid);
    if (row0 >= pc.m)
        return;  // uniform across the workgroup
    for (uint j = 0u; j < NR * NC; j++)
        acc[j] = 0.0;

    uint units = pc.k / 32u;
    for (uint u = tid; u < units; u += WG) {
        vec4 wv[NR][8];
        for (uint r = 0u; r < NR; r++)
            load_unit(min(row0 + r, pc.m - 1u), u, wv[r]);  // rows past m: computed, never stored
        uint xa, xb;
        unit_elems(u, xa, xb);
        for (uint c = 0u; c < NC; c++) {
            vec4 xv[8];
            load_x8(c, xa, xv[0], xv[1]);
            load_x8(c, xa + 8u, xv[2], xv[3]);
            load_x8(c, xb, xv[4], xv[5]);
            load_x8(c, xb + 8u, xv[6], xv[7]);
            for (uint r = 0u; r < NR; r++) {
                float s = 0.0;
                for (uint i = 0u; i < 8u; i++)
                    s += dot(wv[r][i], xv[i]);
                acc[r * NC + c] += s;
            }
        }
    }

    float t = reduce_all(tid);
    if (tid < NR * NC) {
        uint r = tid / NC, c = tid % NC;
        if (row0 + r < pc.m)
            y[c * pc.ldy + pc.y0 + row0 + r] = t;
    }
}
