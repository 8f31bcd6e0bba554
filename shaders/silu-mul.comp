#version 450
// The SwiGLU gate after the fused gate/up projection: g[t][i] = silu(gu[t][i]) * gu[t][F + i].
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer GU { float gu[]; };
layout(std430, binding = 1) writeonly buffer G { float g[]; };
layout(push_constant) uniform P { uint n_ff, n; } p;
void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (i >= p.n)
        return;
    uint t = i / p.n_ff, c = i % p.n_ff;
    float v = gu[t * 2 * p.n_ff + c];
    g[i] = v / (1.0 + exp(-v)) * gu[t * 2 * p.n_ff + p.n_ff + c];
}
