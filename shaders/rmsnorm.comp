#version 450
// One workgroup per row: y = x / sqrt(mean(x^2) + eps) * w. With -DADD first x += a (the
// residual add fused with the next norm). Rows up to 16 * 512 values stay in registers, so
// that all loads of a thread are issued at once (a single row is latency-bound otherwise).
#extension GL_EXT_control_flow_attributes : enable
layout(local_size_x = 512) in;
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
#ifdef ADD
layout(std430, binding = 3) readonly buffer A { float a[]; };
#endif
layout(push_constant) uniform P { uint n; float eps; } p;
shared float red[512];
#define NREG 16
void main() {
    uint row = gl_WorkGroupID.x, tid = gl_LocalInvocationID.x, base = row * p.n;
    float v[NREG];
    float s = 0.0;
    [[unroll]] for (uint k = 0; k < NREG; k++) {
        uint i = tid + k * 512;
        v[k] = 0.0;
        if (i < p.n) {
#ifdef ADD
            v[k] = x[base + i] + a[base + i];
#else
            v[k] = x[base + i];
#endif
        }
    }
    [[unroll]] for (uint k = 0; k < NREG; k++) {
        uint i = tid + k * 512;
#ifdef ADD
        if (i < p.n)
            x[base + i] = v[k];
#endif
        s += v[k] * v[k];
    }
    // rows longer than the registers hold
    for (uint i = tid + NREG * 512; i < p.n; i += 512) {
#ifdef ADD
        float u = x[base + i] + a[base + i];
        x[base + i] = u;
#else
        float u = x[base + i];
#endif
        s += u * u;
    }
    red[tid] = s;
    barrier();
    for (uint k = 256; k > 0; k >>= 1) {
        if (tid < k)
            red[tid] += red[tid + k];
        barrier();
    }
    float scale = inversesqrt(red[0] / float(p.n) + p.eps);
    [[unroll]] for (uint k = 0; k < NREG; k++) {
        uint i = tid + k * 512;
        if (i < p.n)
            y[base + i] = v[k] * scale * w[i];
    }
    for (uint i = tid + NREG * 512; i < p.n; i += 512)
        y[base + i] = x[base + i] * scale * w[i];
}
