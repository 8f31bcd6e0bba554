#version 450
// Calibration (models/llama-vulkan-capture.c): G += Xᵀ·X over the n rows (tokens) of X (n × cols
// f32, row-major), GPTQ's Hessian up to its 2/N. One workgroup per 64 × 64 tile of the upper
// triangle (the lower tiles return; the CPU mirrors), 4 × 4 sums per thread, f32.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer G { float g[]; };
layout(push_constant) uniform P { uint n, cols; } p;
#define T 64u
#define KT 16u
shared float sa[KT][T];
shared float sb[KT][T];
void main() {
    uint ta = gl_WorkGroupID.y, tb = gl_WorkGroupID.x;
    if (tb < ta)
        return; // uniform over the workgroup
    uint tid = gl_LocalInvocationID.x, tx = tid % 16u, ty = tid / 16u;
    uint a0 = ta * T, b0 = tb * T;
    float acc[4][4];
    for (uint i = 0u; i < 4u; i++)
        for (uint j = 0u; j < 4u; j++)
            acc[i][j] = 0.0;
    for (uint t0 = 0u; t0 < p.n; t0 += KT) {
        for (uint i = tid; i < KT * T; i += 256u) {
            uint kt = i / T, c = i % T, t = t0 + kt;
            sa[kt][c] = t < p.n && a0 + c < p.cols ? x[t * p.cols + a0 + c] : 0.0;
            sb[kt][c] = t < p.n && b0 + c < p.cols ? x[t * p.cols + b0 + c] : 0.0;
        }
        barrier();
        for (uint k = 0u; k < KT; k++) {
            float va[4], vb[4];
            for (uint i = 0u; i < 4u; i++) {
                va[i] = sa[k][ty * 4u + i];
                vb[i] = sb[k][tx * 4u + i];
            }
            for (uint i = 0u; i < 4u; i++)
                for (uint j = 0u; j < 4u; j++)
                    acc[i][j] += va[i] * vb[j];
        }
        barrier();
    }
    for (uint i = 0u; i < 4u; i++)
        for (uint j = 0u; j < 4u; j++) {
            uint a = a0 + ty * 4u + i, b = b0 + tx * 4u + j;
            if (a < p.cols && b < p.cols)
                g[a * p.cols + b] += acc[i][j];
        }
}
