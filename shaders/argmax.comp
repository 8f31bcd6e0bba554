#version 450
// Greedy pick on the GPU in two passes. Pass 0 (workgroup g): first maximum of its slice of the
// logits and the sum of e^(x - max) over the slice -> part[g] = (max, index bits, sum).
// Pass 1 (one workgroup): combines the parts; res[0] = index, res[1] = log-probability bits.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer L { float logits[]; };
layout(std430, binding = 1) buffer Part { float part[]; };
layout(std430, binding = 2) writeonly buffer R { uint res[]; };
layout(push_constant) uniform P { uint n, per_group, n_groups, pass_; } p;
shared float mv[256];
shared uint mi[256];
shared float sv[256];

void reduce_max(uint tid) {
    for (uint k = 128; k > 0; k >>= 1) {
        if (tid < k) {
            float o = mv[tid + k];
            uint oi = mi[tid + k];
            if (oi != 0xffffffffu && (mi[tid] == 0xffffffffu || o > mv[tid] || (o == mv[tid] && oi < mi[tid]))) {
                mv[tid] = o;
                mi[tid] = oi;
            }
        }
        barrier();
    }
}

void main() {
    uint tid = gl_LocalInvocationID.x, g = gl_WorkGroupID.x;
    if (p.pass_ == 0) {
        uint b = g * p.per_group, e = min(p.n, b + p.per_group);
        float best = -1.0 / 0.0;
        uint bi = 0xffffffffu;
        for (uint i = b + tid; i < e; i += 256) {
            float v = logits[i];
            if (bi == 0xffffffffu || v > best) { best = v; bi = i; }
        }
        mv[tid] = best;
        mi[tid] = bi;
        barrier();
        reduce_max(tid);
        float mx = mv[0];
        uint idx = mi[0];
        barrier();
        float s = 0.0;
        for (uint i = b + tid; i < e; i += 256)
            s += exp(logits[i] - mx);
        sv[tid] = s;
        barrier();
        for (uint k = 128; k > 0; k >>= 1) {
            if (tid < k)
                sv[tid] += sv[tid + k];
            barrier();
        }
        if (tid == 0) {
            part[3 * g] = mx;
            part[3 * g + 1] = uintBitsToFloat(idx);
            part[3 * g + 2] = sv[0];
        }
    } else {
        mv[tid] = -1.0 / 0.0;
        mi[tid] = 0xffffffffu;
        if (tid < p.n_groups) {
            mv[tid] = part[3 * tid];
            mi[tid] = floatBitsToUint(part[3 * tid + 1]);
        }
        barrier();
        reduce_max(tid);
        float mx = mv[0];
        uint idx = mi[0];
        barrier();
        sv[tid] = tid < p.n_groups ? part[3 * tid + 2] * exp(part[3 * tid] - mx) : 0.0;
        barrier();
        for (uint k = 128; k > 0; k >>= 1) {
            if (tid < k)
                sv[tid] += sv[tid + k];
            barrier();
        }
        if (tid == 0) {
            res[0] = idx;
            res[1] = floatBitsToUint(-log(sv[0]));
        }
    }
}
