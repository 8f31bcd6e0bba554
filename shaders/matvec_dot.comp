#version 450
#extension GL_GOOGLE_include_directive : require
// Int-dot matrix-vector for Q8_0/Q4_0/Q4_1 weights with int8-quantized activations (scratch
// from quantize_act.comp): each invocation takes whole blocks of 32, eight packed 4 x int8 dot
// products per block, scaled by the weight and activation block scales. NR rows and NC
// columns per workgroup; reduction as in matvec.comp.
#ifndef U32
#define PACKED16
#endif
#include "types.glsl"
#include "dot.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint NR = 2;
layout(constant_id = 2) const uint NC = 1;

layout(std430, binding = 1) readonly buffer XQ { uvec4 xq4[]; };
layout(std430, binding = 1) readonly buffer XD { vec2 xd[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };

#include "reduce.glsl"


// Adds block b of one row (r) times block b of every activation column to acc.
void dot_block(uint r, uint b, uint nb, uint q[8], float d, float mn) {
    uint xd0 = 4u * nb * pc.n;  // XD starts after the packed values (in vec2 units)
    for (uint c = 0u; c < NC; c++) {
        uint xb = c * nb + b;
        uvec4 xa = xq4[2u * xb], xc = xq4[2u * xb + 1u];
        vec2 ds = xd[xd0 + xb];
        int s = sdot4x8(q[0], xa.x, 0) + sdot4x8(q[1], xa.y, 0) + sdot4x8(q[2], xa.z, 0) +
                sdot4x8(q[3], xa.w, 0) + sdot4x8(q[4], xc.x, 0) + sdot4x8(q[5], xc.y, 0) +
                sdot4x8(q[6], xc.z, 0) + sdot4x8(q[7], xc.w, 0);
#if defined(W_Q8_0)
        acc[r * NC + c] += d * ds.x * float(s);
#elif defined(W_Q4_0)
        acc[r * NC + c] += d * ds.x * (float(s) - 8.0 * ds.y);
#else
        acc[r * NC + c] += ds.x * (d * float(s) + mn * ds.y);
#endif
    }
}

void main() {
    uint row0 = (gl_WorkGroupID.x + gl_WorkGroupID.y * pc.gx) * NR;
    uint tid = gl_LocalInvocationID.x;
    if (row0 >= pc.m)
        return;
    uint nb = pc.k / 32u;
    for (uint j = 0u; j < NR * NC; j++)
        acc[j] = 0.0;

    for (uint b = tid; b < nb; b += WG) {
        uint q[NR][8];
        float d[NR], mn[NR];
        for (uint r = 0u; r < NR; r++) {
            uint row = min(row0 + r, pc.m - 1u);
            load_block(row * nb + b, q[r], d[r], mn[r]);  // all rows' loads in flight
        }
        for (uint r = 0u; r < NR; r++)
            dot_block(r, b, nb, q[r], d[r], mn[r]);
    }

    float t = reduce_all(tid);
    if (tid < NR * NC) {
        uint r = tid / NC, c = tid % NC;
        if (row0 + r < pc.m)
            y[c * pc.m + row0 + r] = t;
    }
}
