#version 450
// After the fused Q/K/V projection of n tokens: adds the biases (qwen2), rotates Q (into q) and K
// into the KV cache (normal: adjacent pairs; -DNEOX: halves), copies V into the cache.
// One invocation per pair of elements of one head of Q, K or V of one token (y = token).
#ifdef KV_F16
#extension GL_EXT_shader_16bit_storage : require
#endif
layout(local_size_x_id = 0) in;
#ifdef KV_F16
#define KT float16_t
#else
#define KT float
#endif
layout(std430, binding = 0) readonly buffer QKV { float qkv[]; }; // [n][nq + 2 nkv]
layout(std430, binding = 1) writeonly buffer Q { float q[]; };    // [n][nq]
layout(std430, binding = 2) readonly buffer B { float bias[]; };  // bq | bk | bv, or unused
layout(std430, binding = 3) readonly buffer F { float freq[]; };  // n_rot/2 angle per position
layout(std430, binding = 4) writeonly buffer KC { KT kc[]; };     // this layer's [n_ctx][n_kv]
layout(std430, binding = 5) writeonly buffer VC { KT vc[]; };
layout(std430, binding = 6) readonly buffer Prm { uint pos0; uint n_tokens; } prm;
layout(push_constant) uniform P { uint n_head, n_head_kv, head_dim, n_rot, has_bias; } p;
void main() {
    uint half_hd = p.head_dim / 2;
    uint id = gl_GlobalInvocationID.x, t = gl_WorkGroupID.y;
    uint slot = id / half_hd, i = id % half_hd;
    if (slot >= p.n_head + 2 * p.n_head_kv)
        return;
    uint nq = p.n_head * p.head_dim, nkv = p.n_head_kv * p.head_dim, row = t * (nq + 2 * nkv);
    uint pos = prm.pos0 + t;
    // element indices within the head, and whether they rotate
    uint a, b;
    bool rot;
#ifdef NEOX
    if (i < p.n_rot / 2) { a = i; b = i + p.n_rot / 2; rot = true; }
    else { a = p.n_rot + 2 * (i - p.n_rot / 2); b = a + 1; rot = false; }
#else
    a = 2 * i; b = a + 1; rot = a < p.n_rot;
#endif
    uint fi = rot ? i : 0;
    float x0, x1;
    if (slot < p.n_head) {
        uint o = t * nq + slot * p.head_dim, io = row + slot * p.head_dim;
        x0 = qkv[io + a]; x1 = qkv[io + b];
        if (p.has_bias != 0) { x0 += bias[slot * p.head_dim + a]; x1 += bias[slot * p.head_dim + b]; }
        if (rot) {
            float th = float(pos) * freq[fi];
            float c = cos(th), s = sin(th);
            float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
            x0 = y0; x1 = y1;
        }
        q[o + a] = x0; q[o + b] = x1;
    } else if (slot < p.n_head + p.n_head_kv) {
        uint h = slot - p.n_head, o = row + nq + h * p.head_dim;
        x0 = qkv[o + a]; x1 = qkv[o + b];
        if (p.has_bias != 0) { x0 += bias[nq + h * p.head_dim + a]; x1 += bias[nq + h * p.head_dim + b]; }
        if (rot) {
            float th = float(pos) * freq[fi];
            float c = cos(th), s = sin(th);
            float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
            x0 = y0; x1 = y1;
        }
        uint co = pos * nkv + h * p.head_dim;
        kc[co + a] = KT(x0); kc[co + b] = KT(x1);
    } else {
        uint h = slot - p.n_head - p.n_head_kv, o = row + nq + nkv + h * p.head_dim;
        x0 = qkv[o + a]; x1 = qkv[o + b];
        if (p.has_bias != 0) { x0 += bias[nq + nkv + h * p.head_dim + a]; x1 += bias[nq + nkv + h * p.head_dim + b]; }
        uint co = pos * nkv + h * p.head_dim;
        vc[co + a] = KT(x0); vc[co + b] = KT(x1);
    }
}
