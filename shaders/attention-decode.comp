#version 450
// Attention of one new token (the decode step) in one dispatch: workgroup (h, split) takes query
// head h over keys [split*kps, (split+1)*kps) ∩ [0, pos0 + 1), 128 keys at a time with one key
// per invocation for the scores and one dimension per invocation for P·V (online softmax).
// With n_split > 1 each workgroup writes (acc[hd], m, l) partials; the last of a head's
// workgroups to finish (an atomic counter per head, reset by it for the next step) combines
// them as attention-reduce.comp does. -DQ8: the output also as int8 blocks (quant8.glsl) for
// the int-dot output projection (head_dim a multiple of 32). head_dim <= 256. GQA: head h reads
// KV head h / (n_head / n_head_kv).
#extension GL_EXT_control_flow_attributes : enable
#extension GL_GOOGLE_include_directive : enable
#ifdef KV_F16
#extension GL_EXT_shader_16bit_storage : require
#define KT float16_t
#else
#define KT float
#endif
layout(local_size_x = 128) in;
layout(constant_id = 0) const uint HD = 128;  // head_dim, constant so that the loops unroll
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer KC { KT kc[]; };
#ifdef KV_F16
layout(std430, binding = 1) readonly buffer KC4 { uvec4 kc4[]; };  // 8 halves a load
#else
layout(std430, binding = 1) readonly buffer KC4 { vec4 kc4[]; };
#endif
layout(std430, binding = 2) readonly buffer VC { KT vc[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(std430, binding = 4) readonly buffer Prm { uint pos0; uint n_tokens; } prm;
layout(std430, binding = 5) coherent buffer Part { float part[]; };
layout(std430, binding = 6) coherent buffer Cnt { uint cnt[]; };
#ifdef Q8
layout(std430, binding = 7) writeonly buffer XQ { uvec4 xq4[]; };
layout(std430, binding = 7) writeonly buffer XD { vec2 xd[]; };
#include "quant8.glsl"
#endif
layout(push_constant) uniform P { uint n_head, n_head_kv; float scale; uint kps, n_split; } p;

const uint DPT = (HD + 127) / 128;  // dimensions per invocation in P·V
shared float qs[HD];
shared float red[128];
shared float pr[128];
shared float os[HD];
shared bool last;

float block_max(uint tid, float v) {
    red[tid] = v;
    barrier();
    [[unroll]] for (uint k = 64; k > 0; k >>= 1) {
        if (tid < k)
            red[tid] = max(red[tid], red[tid + k]);
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

// The normalised output of head h (in os) to o and, with Q8, to its int8 blocks.
void finish(uint h, uint tid) {
    barrier();
    for (uint d = tid; d < HD; d += 128)
        o[h * HD + d] = os[d];
#ifdef Q8
    if (tid < HD / 32) {
        float v[32];
        for (uint i = 0; i < 32; i++)
            v[i] = os[32 * tid + i];
        store_q8_block(h * (HD / 32) + tid, p.n_head * (HD / 32), v);
    }
#endif
}

void main() {
    uint h = gl_WorkGroupID.x, split = gl_WorkGroupID.z, tid = gl_LocalInvocationID.x;
    uint nkv = p.n_head_kv * HD;
    uint kh = h / (p.n_head / p.n_head_kv);
    uint n_kv = prm.pos0 + 1;
    uint j_begin = split * p.kps, j_end = min(n_kv, j_begin + p.kps);
    for (uint d = tid; d < HD; d += 128)
        qs[d] = q[h * HD + d] * p.scale;
    barrier();

    float m = -1.0 / 0.0, l = 0.0;
    float acc[DPT];
    [[unroll]] for (uint e = 0; e < DPT; e++)
        acc[e] = 0.0;
    for (uint c0 = j_begin; c0 < j_end; c0 += 128) {
        uint j = c0 + tid, cnt_ = min(128u, j_end - c0);
        float s = -1.0 / 0.0;
        if (j < j_end) {
            uint ko = j * nkv + kh * HD;
            s = 0.0;
            if (HD % 8 == 0) {
                [[unroll]] for (uint c = 0; c < HD / 8; c++) {
#ifdef KV_F16
                    uvec4 w = kc4[ko / 8 + c];
                    vec4 k0 = vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
                    vec4 k1 = vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w));
#else
                    vec4 k0 = kc4[ko / 4 + 2 * c], k1 = kc4[ko / 4 + 2 * c + 1];
#endif
                    uint d = 8 * c;
                    s += dot(vec4(qs[d], qs[d + 1], qs[d + 2], qs[d + 3]), k0);
                    s += dot(vec4(qs[d + 4], qs[d + 5], qs[d + 6], qs[d + 7]), k1);
                }
            } else {
                for (uint d = 0; d < HD; d++)
                    s += qs[d] * float(kc[ko + d]);
            }
        }
        float mn = max(m, block_max(tid, s));
        float corr = exp(m - mn);
        pr[tid] = j < j_end ? exp(s - mn) : 0.0;
        barrier();
        m = mn;
        float sum = 0.0;
        [[unroll]] for (uint e = 0; e < DPT; e++)
            acc[e] *= corr;
        uint vo = c0 * nkv + kh * HD;
        for (uint i = 0; i < cnt_; i++) {
            float pj = pr[i];
            sum += pj;
            [[unroll]] for (uint e = 0; e < DPT; e++) {
                uint d = tid + 128 * e;
                if (d < HD)
                    acc[e] += pj * float(vc[vo + i * nkv + d]);
            }
        }
        l = l * corr + sum;
        barrier();  // pr is rewritten by the next chunk
    }

    if (p.n_split == 1) {
        float inv = l > 0.0 ? 1.0 / l : 0.0;
        [[unroll]] for (uint e = 0; e < DPT; e++)
            if (tid + 128 * e < HD)
                os[tid + 128 * e] = acc[e] * inv;
        finish(h, tid);
        return;
    }
    uint po = (h * p.n_split + split) * (HD + 2);
    [[unroll]] for (uint e = 0; e < DPT; e++)
        if (tid + 128 * e < HD)
            part[po + tid + 128 * e] = acc[e];
    if (tid == 0) {
        part[po + HD] = m;
        part[po + HD + 1] = l;
    }
    // the last workgroup of head h to get here combines the partials of all
    memoryBarrierBuffer();
    barrier();
    if (tid == 0)
        last = atomicAdd(cnt[h], 1u) == p.n_split - 1;
    barrier();
    if (!last)
        return;
    memoryBarrierBuffer();
    uint base = h * p.n_split;
    float M = -1.0 / 0.0;
    for (uint s = 0; s < p.n_split; s++)
        if (part[(base + s) * (HD + 2) + HD + 1] > 0.0)
            M = max(M, part[(base + s) * (HD + 2) + HD]);
    for (uint d = tid; d < HD; d += 128) {
        float num = 0.0, den = 0.0;
        for (uint s = 0; s < p.n_split; s++) {
            uint pb = (base + s) * (HD + 2);
            float ls = part[pb + HD + 1];
            if (ls > 0.0) {
                float w = exp(part[pb + HD] - M);
                num += part[pb + d] * w;
                den += ls * w;
            }
        }
        os[d] = num / den;
    }
    if (tid == 0)
        cnt[h] = 0u;  // ready for the next step
    finish(h, tid);
}
