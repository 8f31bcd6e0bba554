#version 450
// RMSNorm of one row (the decode step) spread over n / 512 workgroups: each sums the squares
// of the whole row (a few KiB from L2) in exactly the order of rmsnorm.comp, so that the results
// are the same bits as there (the batched decode and the prompt use that one), and writes only
// its slice of 512 values, so that no single workgroup walks the row alone (one workgroup per
// row is latency-bound at one row). n a multiple of 32, at most NREG * 512. -DADD: the row
// is x + a, written to xo (another buffer: the other workgroups still read x). -DQ8: the
// slice also as int8 blocks (quant8.glsl).
#extension GL_EXT_control_flow_attributes : enable
#extension GL_GOOGLE_include_directive : enable
layout(local_size_x = 512) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
#ifdef ADD
layout(std430, binding = 3) readonly buffer A { float a[]; };
layout(std430, binding = 4) writeonly buffer XO { float xo[]; };
#define XQB 5
#else
#define XQB 3
#endif
#ifdef Q8
layout(std430, binding = XQB) writeonly buffer XQ { uvec4 xq4[]; };
layout(std430, binding = XQB) writeonly buffer XD { vec2 xd[]; };
#include "quant8.glsl"
shared float ys[512 + 16];  // one padding slot per block: conflict-free reads of a block
#endif
layout(push_constant) uniform P { uint n; float eps; } p;
shared float red[512];
#define NREG 16
void main() {
    uint tid = gl_LocalInvocationID.x, g = gl_WorkGroupID.x;
    float v[NREG];
    [[unroll]] for (uint k = 0; k < NREG; k++) {
        uint i = tid + k * 512;
        v[k] = 0.0;
        if (i < p.n) {
#ifdef ADD
            v[k] = x[i] + a[i];
#else
            v[k] = x[i];
#endif
        }
    }
    float s = 0.0;
    [[unroll]] for (uint k = 0; k < NREG; k++)
        s += v[k] * v[k];
    red[tid] = s;
    barrier();
    for (uint k = 256; k > 0; k >>= 1) {
        if (tid < k)
            red[tid] += red[tid + k];
        barrier();
    }
    float scale = inversesqrt(red[0] / float(p.n) + p.eps);
    // this workgroup's slice: elements g * 512 + tid, i.e. v[g] of every invocation
    uint i = g * 512 + tid;
    float u = 0.0;
    [[unroll]] for (uint k = 0; k < NREG; k++)
        if (k == g)
            u = v[k];
    if (i < p.n) {
#ifdef ADD
        xo[i] = u;
#endif
        float yv = u * scale * w[i];
        y[i] = yv;
#ifdef Q8
        ys[tid + tid / 32] = yv;
#endif
    }
#ifdef Q8
    barrier();
    uint nb = p.n / 32, b = g * 16 + tid;
    if (tid < 16 && b < nb) {
        float q[32];
        [[unroll]] for (uint j = 0; j < 32; j++)
            q[j] = ys[33 * tid + j];
        store_q8_block(b, nb, q);
    }
#endif
}
