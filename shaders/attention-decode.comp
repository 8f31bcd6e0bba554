#version 450
// Attention of one new token (the decode step) in one dispatch: workgroup (h, split) takes query
// head h over keys [split*kps, (split+1)*kps) ∩ [0, pos0 + 1), CH keys at a time with one key
// per invocation for the scores and one dimension per invocation for P·V (online softmax).
// The loads of the first CH keys' K and V are issued before the position (host memory) and
// the projection arrive, so that the step waits for one round trip, not a chain of them; rows
// past the position are read (within the cache) and masked.
// With n_split > 1 each workgroup writes (acc[hd], m, l) partials; the last of a head's
// workgroups to finish (an atomic counter per head, reset by it for the next step) combines
// them (each partial rescaled by exp(m - max m), summed, divided by the summed l). -DQ8: the output also as int8 blocks (quant8.glsl) for
// the int-dot output projection (head_dim a multiple of 32). head_dim <= 256. GQA: head h reads
// KV head h / (n_head / n_head_kv).
// -DROPE (-DNEOX): the rotation of rope.comp done here instead of in a dispatch of its own: each
// workgroup rotates its query head and its KV head's new K (and V, plus the qwen2 biases) from
// the fused Q/K/V projection and uses them for the new position; the workgroups whose keys
// include it store K and V into the cache (the same values as rope.comp stores; the group's
// query heads store the same bits twice over).
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
#ifdef ROPE
#define KVQ  // the new position's K and V are written
layout(std430, binding = 0) readonly buffer QKV { float qkv[]; };  // [nq + 2 nkv]
layout(std430, binding = 7) readonly buffer Bias { float bias[]; };  // bq | bk | bv, or unused
layout(std430, binding = 8) readonly buffer Freq { float freq[]; };  // n_rot/2 angles per position
#define XQB 9
#else
#define KVQ readonly
layout(std430, binding = 0) readonly buffer Q { float q[]; };
#define XQB 7
#endif
layout(std430, binding = 1) KVQ buffer KC { KT kc[]; };
#ifdef KV_F16
layout(std430, binding = 1) KVQ buffer KC4 { uvec4 kc4[]; };  // 8 halves a load
#else
layout(std430, binding = 1) KVQ buffer KC4 { vec4 kc4[]; };
#endif
layout(std430, binding = 2) KVQ buffer VC { KT vc[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(std430, binding = 4) readonly buffer Prm { uint pos0; uint n_tokens; } prm;
layout(std430, binding = 5) coherent buffer Part { float part[]; };
layout(std430, binding = 6) coherent buffer Cnt { uint cnt[]; };
#ifdef Q8
layout(std430, binding = XQB) writeonly buffer XQ { uvec4 xq4[]; };
layout(std430, binding = XQB) writeonly buffer XD { vec2 xd[]; };
#include "quant8.glsl"
#endif
layout(push_constant) uniform P { uint n_head, n_head_kv; float scale; uint kps, n_split, n_rot, has_bias, n_ctx; } p;

const uint DPT = (HD + 127) / 128;  // dimensions per invocation in P·V
const uint CH = 64;                  // keys per step
shared float qs[HD];
shared float red[128];
shared float pr[128];
shared float os[HD];
shared bool last;
#ifdef ROPE
shared float kcur[HD], vcur[HD];  // the new position's K and V, as the cache holds them
#endif

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

#ifdef ROPE
// Pair i of a head as rope.comp rotates it: elements a and b, and whether they rotate.
void rope_pair(uint i, out uint a, out uint b, out bool rot) {
#ifdef NEOX
    if (i < p.n_rot / 2) { a = i; b = i + p.n_rot / 2; rot = true; }
    else { a = p.n_rot + 2 * (i - p.n_rot / 2); b = a + 1; rot = false; }
#else
    a = 2 * i; b = a + 1; rot = a < p.n_rot;
#endif
}

// Elements a, b of qkv row offset o (+ the biases) rotated for position pos as rope.comp does.
vec2 rope_at(uint o, uint a, uint b, bool rot, uint i, uint pos) {
    float x0 = qkv[o + a], x1 = qkv[o + b];
    if (p.has_bias != 0) { x0 += bias[o + a]; x1 += bias[o + b]; }
    if (rot) {
        float th = float(pos) * freq[i];
        float c = cos(th), s = sin(th);
        float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
        x0 = y0; x1 = y1;
    }
    return vec2(x0, x1);
}
#endif

#ifdef KV_F16
#define KR uvec4
#define KRN (HD / 8)
#else
#define KR vec4
#define KRN (HD / 4)
#endif

// Key c0 + tid's K row (HD % 8 == 0; invocations tid < CH) into kr and V of keys c0 .. c0 + CH - 1
// at this invocation's dimensions into vv, rows clamped into [0, lim). A macro: arrays sized
// by specialization constants do not pass through function parameters.
#ifdef KV_F16
#define LOAD_K(ko) [[unroll]] for (uint c = 0; c < KRN; c++) kr[c] = kc4[(ko) / 8 + c];
#else
#define LOAD_K(ko) [[unroll]] for (uint c = 0; c < KRN; c++) kr[c] = kc4[(ko) / 4 + c];
#endif
#define LOAD_CHUNK(c0) { \
    if (HD % 8 == 0) { \
        uint ko_ = min((c0) + min(tid, CH - 1), lim - 1) * nkv + kvo; \
        LOAD_K(ko_) \
    } \
    [[unroll]] for (uint e = 0; e < DPT; e++) { \
        uint d_ = min(tid + 128 * e, HD - 1); \
        [[unroll]] for (uint i = 0; i < CH; i++) \
            vv[e][i] = float(vc[min((c0) + i, lim - 1) * nkv + kvo + d_]); \
    } \
}

void main() {
    uint h = gl_WorkGroupID.x, split = gl_WorkGroupID.z, tid = gl_LocalInvocationID.x;
    uint nkv = p.n_head_kv * HD;
    uint kh = h / (p.n_head / p.n_head_kv), kvo = kh * HD;
    uint j_begin = split * p.kps, lim = min(j_begin + p.kps, p.n_ctx);
    uint pos = prm.pos0;
    KR kr[KRN];
    float vv[DPT][CH];
    LOAD_CHUNK(j_begin)  // before anything waits for pos
    uint j_end = min(pos + 1, lim);
#ifdef ROPE
    uint nq = p.n_head * HD;
    bool owner = pos >= j_begin && pos < j_end;  // this split holds the new key: store it
    for (uint i = tid; i < HD / 2; i += 128) {
        uint a, b;
        bool rot;
        rope_pair(i, a, b, rot);
        vec2 xq = rope_at(h * HD, a, b, rot, i, pos);
        qs[a] = xq.x * p.scale;
        qs[b] = xq.y * p.scale;
        vec2 xk = rope_at(nq + kvo, a, b, rot, i, pos);
        vec2 xv = rope_at(nq + nkv + kvo, a, b, false, i, pos);
        kcur[a] = float(KT(xk.x));
        kcur[b] = float(KT(xk.y));
        vcur[a] = float(KT(xv.x));
        vcur[b] = float(KT(xv.y));
        if (owner) {
            uint co = pos * nkv + kvo;
            kc[co + a] = KT(xk.x);
            kc[co + b] = KT(xk.y);
            vc[co + a] = KT(xv.x);
            vc[co + b] = KT(xv.y);
        }
    }
#else
    for (uint d = tid; d < HD; d += 128)
        qs[d] = q[h * HD + d] * p.scale;
#endif
    barrier();

    float m = -1.0 / 0.0, l = 0.0;
    float acc[DPT];
    [[unroll]] for (uint e = 0; e < DPT; e++)
        acc[e] = 0.0;
    for (uint c0 = j_begin; c0 < j_end; c0 += CH) {
        uint j = c0 + tid;
        bool valid = tid < CH && j < j_end;
        float s = 0.0;
        if (HD % 8 == 0) {
            [[unroll]] for (uint c = 0; c < HD / 8; c++) {
#ifdef KV_F16
                uvec4 w = kr[c];
                vec4 k0 = vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
                vec4 k1 = vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w));
#else
                vec4 k0 = kr[2 * c], k1 = kr[2 * c + 1];
#endif
                uint d = 8 * c;
#ifdef ROPE
                if (j == pos) {
                    k0 = vec4(kcur[d], kcur[d + 1], kcur[d + 2], kcur[d + 3]);
                    k1 = vec4(kcur[d + 4], kcur[d + 5], kcur[d + 6], kcur[d + 7]);
                }
#endif
                s += dot(vec4(qs[d], qs[d + 1], qs[d + 2], qs[d + 3]), k0);
                s += dot(vec4(qs[d + 4], qs[d + 5], qs[d + 6], qs[d + 7]), k1);
            }
        } else if (valid) {
            uint ko = j * nkv + kvo;
            for (uint d = 0; d < HD; d++) {
#ifdef ROPE
                float kd = j == pos ? kcur[d] : float(kc[ko + d]);
#else
                float kd = float(kc[ko + d]);
#endif
                s += qs[d] * kd;
            }
        }
        s = valid ? s : -1.0 / 0.0;  // rows past the position may hold anything
        float mn = max(m, block_max(tid, s));
        float corr = exp(m - mn);
        pr[tid] = valid ? exp(s - mn) : 0.0;
        barrier();
        m = mn;
        float sum = 0.0;
        [[unroll]] for (uint e = 0; e < DPT; e++) {
            uint d = min(tid + 128 * e, HD - 1);
            float a = acc[e] * corr;
            [[unroll]] for (uint i = 0; i < CH; i++) {
                float v = vv[e][i];
#ifdef ROPE
                v = c0 + i == pos ? vcur[d] : v;
#endif
                a += c0 + i < j_end ? pr[i] * v : 0.0;
            }
            acc[e] = a;
        }
        [[unroll]] for (uint i = 0; i < CH; i++)
            sum += pr[i];
        l = l * corr + sum;
        barrier();  // pr is rewritten by the next step
        if (c0 + CH < j_end)
            LOAD_CHUNK(c0 + CH)
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
    // the splits' (m, l) read in parallel (128 at a time), then the weights e^(m_s - M) and
    // their sum; empty splits (l = 0) weigh 0
    uint base = h * p.n_split;
    float M = -1.0 / 0.0, den = 0.0;
    for (uint s0 = 0; s0 < p.n_split; s0 += 128) {
        uint sp = min(s0 + tid, p.n_split - 1);  // past the end: the last split again
        float ms = part[(base + sp) * (HD + 2) + HD + 1] > 0.0 ? part[(base + sp) * (HD + 2) + HD] : -1.0 / 0.0;
        M = max(M, block_max(tid, ms));
    }
    for (uint s0 = 0; s0 < p.n_split; s0 += 128) {
        uint sp = min(s0 + tid, p.n_split - 1), cnt_ = min(128u, p.n_split - s0);
        float ls = s0 + tid < p.n_split ? part[(base + sp) * (HD + 2) + HD + 1] : 0.0;
        pr[tid] = ls > 0.0 ? exp(part[(base + sp) * (HD + 2) + HD] - M) : 0.0;
        red[tid] = ls * pr[tid];
        barrier();
        for (uint i = 0; i < cnt_; i++)
            den += red[i];
        [[unroll]] for (uint e = 0; e < DPT; e++) {
            uint d = min(tid + 128 * e, HD - 1);
            float num = 0.0;
            for (uint i0 = 0; i0 < cnt_; i0 += 16) {
                float pv[16];
                [[unroll]] for (uint ii = 0; ii < 16; ii++)
                    pv[ii] = part[(base + s0 + min(i0 + ii, cnt_ - 1)) * (HD + 2) + d];
                [[unroll]] for (uint ii = 0; ii < 16; ii++)
                    num += i0 + ii < cnt_ ? pr[i0 + ii] * pv[ii] : 0.0;
            }
            acc[e] = s0 == 0 ? num : acc[e] + num;
        }
        barrier();
    }
    [[unroll]] for (uint e = 0; e < DPT; e++)
        if (tid + 128 * e < HD)
            os[tid + 128 * e] = acc[e] / den;
    if (tid == 0)
        cnt[h] = 0u;  // ready for the next step
    finish(h, tid);
}
