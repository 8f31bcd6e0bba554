#version 450
#extension GL_GOOGLE_include_directive : require
// Y = W X for larger n: 64 x 64 output tiles, k in steps of 32 through shared memory, each of
// the 256 invocations computing 4 x 4 outputs. Weights dequantized while loading the tile.
#define XB 1
#include "types.glsl"

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

    for (uint kb = 0u; kb < pc.k; kb += 32u) {
        float v[8];
        uint row = tm + lr;
        if (row < pc.m)
            load_w8(row, kb / 8u + lj, v);
        else
            for (uint i = 0u; i < 8u; i++)
                v[i] = 0.0;
        for (uint i = 0u; i < 8u; i++)
            ws[8u * lj + i][lr] = v[i];

        uint col = tn + lr;
        for (uint i = 0u; i < 8u; i++) {
            uint e = kb + 8u * lj + i;
            xs[8u * lj + i][lr] = (col < pc.n && e < pc.k) ? load_x(col * pc.k + e) : 0.0;
        }
        barrier();
        for (uint kk = 0u; kk < 32u; kk++) {
            float av[4], bv[4];
            for (uint a = 0u; a < 4u; a++)
                av[a] = ws[kk][tx + 16u * a];
            for (uint b = 0u; b < 4u; b++)
                bv[b] = xs[kk][ty + 16u * b];
            for (uint a = 0u; a < 4u; a++)
                for (uint b = 0u; b < 4u; b++)
                    acc[a][b] = fma(av[a], bv[b], acc[a][b]);
        }
        barrier();
    }

    for (uint a = 0u; a < 4u; a++)
        for (uint b = 0u; b < 4u; b++) {
            uint r = tm + tx + 16u * a, c = tn + ty + 16u * b;
            if (r < pc.m && c < pc.n)
                y[c * pc.m + r] = acc[a][b];
        }
}
