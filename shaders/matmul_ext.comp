#version 450
#extension GL_GOOGLE_include_directive : require
// Y = W X for n > 8, W in one of the extended formats (types-ext.glsl): 64 x 64 output tiles,
// one 32-weight unit per row and step through shared memory, each of the 256 invocations
// computing 4 x 4 outputs. The unit's slots are not consecutive elements for the 4-bit formats,
// so the activation tile is gathered by slot with the same map; the sum over k does not care
// about the order.
#define XB 1
#define G_ID 1
#include "types-ext.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;  // must be 256: the tile loads assume it

layout(std430, binding = 2) writeonly buffer Y { float y[]; };

shared float ws[32][65];
shared float xs[32][65];

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint tm = gl_WorkGroupID.x * 64u, tn = gl_WorkGroupID.y * 64u;
    uint tx = tid % 16u, ty = tid / 16u;
    uint lr = tid / 4u, lj = tid % 4u;
    float acc[4][4];
    for (uint a = 0u; a < 4u; a++)
        for (uint b = 0u; b < 4u; b++)
            acc[a][b] = 0.0;
    tables_init(tid);

    uint units = pc.k / 32u;
    for (uint u = 0u; u < units; u++) {
        float v[8];
        uint row = tm + lr;
        if (row < pc.m)
            load_quarter(row, u, lj, v);
        else
            for (uint i = 0u; i < 8u; i++)
                v[i] = 0.0;
        for (uint i = 0u; i < 8u; i++)
            ws[quarter_slot(lj, i)][lr] = v[i];

        // activation slots 8lj .. 8lj+7 are 8 consecutive elements
        uint xa, xb, col = tn + lr;
        unit_elems(u, xa, xb);
        uint e0 = lj < 2u ? xa + 8u * lj : xb + 8u * (lj - 2u);
        vec4 a = vec4(0.0), b = vec4(0.0);
        if (col < pc.n)
            load_x8(col, e0, a, b);
        xs[8u * lj + 0u][lr] = a.x; xs[8u * lj + 1u][lr] = a.y;
        xs[8u * lj + 2u][lr] = a.z; xs[8u * lj + 3u][lr] = a.w;
        xs[8u * lj + 4u][lr] = b.x; xs[8u * lj + 5u][lr] = b.y;
        xs[8u * lj + 6u][lr] = b.z; xs[8u * lj + 7u][lr] = b.w;
        barrier();
        for (uint kk = 0u; kk < 32u; kk++) {
            float av[4], bv[4];
            for (uint i = 0u; i < 4u; i++)
                av[i] = ws[kk][tx + 16u * i];
            for (uint i = 0u; i < 4u; i++)
                bv[i] = xs[kk][ty + 16u * i];
            for (uint i = 0u; i < 4u; i++)
                for (uint j = 0u; j < 4u; j++)
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
        barrier();
    }

    for (uint i = 0u; i < 4u; i++)
        for (uint j = 0u; j < 4u; j++) {
            uint r = tm + tx + 16u * i, c = tn + ty + 16u * j;
            if (r < pc.m && c < pc.n)
                y[c * pc.ldy + pc.y0 + r] = acc[i][j];
        }
}
