#version 450
// Combines the split-K partials of attention.comp: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
layout(local_size_x = 128) in;
layout(std430, binding = 0) readonly buffer Part { float part[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { uint n_head, head_dim, n_split; } p;
void main() {
    uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
    uint hd = p.head_dim, base = (t * p.n_head + h) * p.n_split;
    float M = -1.0 / 0.0;
    for (uint s = 0; s < p.n_split; s++)
        if (part[(base + s) * (hd + 2) + hd + 1] > 0.0)
            M = max(M, part[(base + s) * (hd + 2) + hd]);
    for (uint d = tid; d < hd; d += 128) {
        float num = 0.0, den = 0.0;
        for (uint s = 0; s < p.n_split; s++) {
            uint po = (base + s) * (hd + 2);
            float l = part[po + hd + 1];
            if (l > 0.0) {
                float w = exp(part[po + hd] - M);
                num += part[po + d] * w;
                den += l * w;
            }
        }
        o[(t * p.n_head + h) * hd + d] = num / den;
    }
}
