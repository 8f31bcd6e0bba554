#version 450
// Causal attention over the KV cache with an online softmax, in blocks of 32 keys.
// Workgroup (h, t, split): query head h of token t over keys [split*kps, (split+1)*kps) ∩ [0, n_kv).
// n_split == 1: writes the normalised output; else writes (acc[hd], m, l) partials for a
// caller to combine. The prompt path (models/llama-vulkan-attn.c) runs it with n_split == 1 where
// the flash kernel does not apply; the decode step has attention-decode.comp.
// head_dim <= 256. GQA: query head h reads KV head h / (n_head / n_head_kv).
#ifdef KV_F16
#extension GL_EXT_shader_16bit_storage : require
#define KT float16_t
#else
#define KT float
#endif
#extension GL_EXT_control_flow_attributes : enable
layout(local_size_x = 128) in;
layout(constant_id = 0) const uint HD = 128; // head_dim, constant so that the loops unroll
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer KC { KT kc[]; };
layout(std430, binding = 1) readonly buffer KC4 { uvec4 kc4[]; }; // the same, 16 bytes a load
layout(std430, binding = 2) readonly buffer VC { KT vc[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(std430, binding = 4) readonly buffer Prm { uint pos0; uint n_tokens; } prm;
layout(std430, binding = 5) writeonly buffer Part { float part[]; };
layout(push_constant) uniform P { uint n_head, n_head_kv, head_dim; float scale; uint kps, n_split; } p;
shared float qs[256];
shared float red[128];
shared float sc[32];
shared float acc_sh[256];
void main() {
    uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y, split = gl_WorkGroupID.z;
    uint tid = gl_LocalInvocationID.x;
    const uint hd = HD;
    uint nkv = p.n_head_kv * hd;
    uint kh = h / (p.n_head / p.n_head_kv);
    uint n_kv = prm.pos0 + t + 1;
    uint j_begin = split * p.kps, j_end = min(n_kv, j_begin + p.kps);
    uint qo = (t * p.n_head + h) * hd;
    for (uint d = tid; d < hd; d += 128)
        qs[d] = q[qo + d] * p.scale;
    barrier();

    uint kk = tid >> 2, qq = tid & 3;      // QK: 4 threads per key
    uint dp = tid & 63, half_ = tid >> 6;  // PV: dimension pairs dp, dp+64; keys of one half
    float m = -1.0 / 0.0, l = 0.0;
    vec2 acc0 = vec2(0.0), acc1 = vec2(0.0);
    for (uint j0 = j_begin; j0 < j_end; j0 += 32) {
        uint j = j0 + kk;
        float s = 0.0;
        if (j < j_end) {
            uint ko = j * nkv + kh * hd;
#ifdef KV_F16
            if (hd % 32 == 0) {
                // a quarter of the head's dimensions each, 8 halves per load
                uint d0 = qq * (hd / 4);
                [[unroll]] for (uint c = 0; c < hd / 32; c++) {
                    uvec4 w = kc4[(ko + d0) / 8 + c];
                    uint d = d0 + 8 * c;
                    s += dot(vec4(qs[d], qs[d + 1], qs[d + 2], qs[d + 3]),
                             vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)));
                    s += dot(vec4(qs[d + 4], qs[d + 5], qs[d + 6], qs[d + 7]),
                             vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w)));
                }
            } else
#endif
            {
                [[unroll]] for (uint d = qq; d < hd; d += 4)
                    s += qs[d] * float(kc[ko + d]);
            }
        }
        red[tid] = s;
        barrier();
        if (qq == 0)
            sc[kk] = j < j_end ? red[tid] + red[tid + 1] + red[tid + 2] + red[tid + 3] : -1.0 / 0.0;
        barrier();
        uint cnt = min(32u, j_end - j0);
        float cm = sc[0];
        for (uint i = 1; i < cnt; i++)
            cm = max(cm, sc[i]);
        float mn = max(m, cm);
        float corr = exp(m - mn);
        float sum = 0.0;
        for (uint i = 0; i < cnt; i++)
            sum += exp(sc[i] - mn);
        l = l * corr + sum;
        m = mn;
        acc0 *= corr;
        acc1 *= corr;
        uint i0 = half_ * 16;
        [[unroll]] for (uint ii = 0; ii < 16; ii++) {
            uint i = i0 + ii;
            if (i >= cnt)
                break;
            float pj = exp(sc[i] - mn);
            uint vo = (j0 + i) * nkv + kh * hd;
            if (2 * dp < hd)
                acc0 += pj * vec2(float(vc[vo + 2 * dp]), float(vc[vo + 2 * dp + 1]));
            if (2 * dp + 128 < hd)
                acc1 += pj * vec2(float(vc[vo + 2 * dp + 128]), float(vc[vo + 2 * dp + 129]));
        }
        barrier();
    }
    // combine the two key halves
    if (half_ == 1) {
        acc_sh[2 * dp] = acc0.x; acc_sh[2 * dp + 1] = acc0.y;
        acc_sh[2 * dp + 128] = acc1.x; acc_sh[2 * dp + 129] = acc1.y;
    }
    barrier();
    if (half_ == 0) {
        acc0 += vec2(acc_sh[2 * dp], acc_sh[2 * dp + 1]);
        acc1 += vec2(acc_sh[2 * dp + 128], acc_sh[2 * dp + 129]);
        if (p.n_split == 1) {
            float inv = l > 0.0 ? 1.0 / l : 0.0;
            if (2 * dp < hd) { o[qo + 2 * dp] = acc0.x * inv; o[qo + 2 * dp + 1] = acc0.y * inv; }
            if (2 * dp + 128 < hd) { o[qo + 2 * dp + 128] = acc1.x * inv; o[qo + 2 * dp + 129] = acc1.y * inv; }
        } else {
            uint po = ((t * p.n_head + h) * p.n_split + split) * (hd + 2);
            if (2 * dp < hd) { part[po + 2 * dp] = acc0.x; part[po + 2 * dp + 1] = acc0.y; }
            if (2 * dp + 128 < hd) { part[po + 2 * dp + 128] = acc1.x; part[po + 2 * dp + 129] = acc1.y; }
            if (dp == 0) { part[po + hd] = m; part[po + hd + 1] = l; }
        }
    }
}
