// Weight and activation access for the matrix kernels, one definition per -D variant.
// Weight type: W_F32, W_F16, W_Q8_0, W_Q4_0, W_Q4_1. Activations: X_F16 or fp32.
// REPACK (with a block type): the rows repacked at upload (vulkan/vk-repack.c), read as 32-bit
// words whatever the storage features: per row the quant bytes of its nb = k/32 blocks (QB
// each), then their fp16 scales (Q4_1: scale, min pairs), padded to 16 bytes.
// U32: no 8/16-bit storage; read 32-bit words and unpack (blocks are 34/18/20 bytes, so
// 2-byte aligned only). Otherwise fp16 values and block bytes are read through
// GL_EXT_shader_{8,16}bit_storage. Arithmetic is always fp32.
// Binding 0: weights, m rows of k values, row-major. Binding XB: activations.
#ifndef U32
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_8bit_storage : require
#endif

layout(push_constant) uniform Push {
    uint m;      // rows of W, length of each output vector
    uint k;      // columns of W, length of each activation vector
    uint n;      // activation vectors
    uint gx;     // workgroups along x (the grid may wrap into y for large m)
#if defined(NORM) || defined(PRESCALE) || defined(BLK)
    float eps;   // RMSNorm epsilon of the epilogue (matvec-epi.glsl, matvec_blk.comp)
#endif
} pc;

#if defined(W_Q8_0)
#define QK 32u
#define BLOCK_BYTES 34u
#elif defined(W_Q4_0)
#define QK 32u
#define BLOCK_BYTES 18u
#elif defined(W_Q4_1)
#define QK 32u
#define BLOCK_BYTES 20u
#endif

// ---- weights ----
#if defined(QK) && defined(REPACK)
#if defined(W_Q8_0)
#define QB 32u
#else
#define QB 16u
#endif
layout(std430, binding = 0) readonly buffer W { uint w32[]; };
// Words per repacked row.
uint rp_row_words() {
    return ((pc.k / 32u) * BLOCK_BYTES + 15u) / 16u * 4u;
}
// Scale d and min mn (Q4_0: -8d, Q8_0: 0) of block b of row `row`.
void rp_scale(uint row, uint b, out float d, out float mn) {
    uint s0 = row * rp_row_words() + (pc.k / 32u) * (QB / 4u);
#if defined(W_Q4_1)
    vec2 dm = unpackHalf2x16(w32[s0 + b]);
    d = dm.x;
    mn = dm.y;
#else
    d = unpackHalf2x16(w32[s0 + (b >> 1)] >> ((b & 1u) * 16u)).x;
#if defined(W_Q4_0)
    mn = -8.0 * d;
#else
    mn = 0.0;
#endif
#endif
}
#elif defined(W_F32)
layout(std430, binding = 0) readonly buffer W { float w[]; };
layout(std430, binding = 0) readonly buffer W4 { vec4 w4[]; };  // same buffer, 16-byte loads
#elif defined(U32) && (defined(W_F16) || defined(QK))
layout(std430, binding = 0) readonly buffer W { uint w32[]; };
#ifdef W_F16
layout(std430, binding = 0) readonly buffer W4 { uvec4 w4[]; };
#endif
// 16 bits at an even byte offset
uint w_rd16(uint off) {
    return (w32[off >> 2] >> ((off & 2u) * 8u)) & 0xffffu;
}
// 32 bits at an even byte offset: one word, or the halves of two
uint w_rd32(uint off) {
    uint i = off >> 2;
    if ((off & 2u) == 0u)
        return w32[i];
    return (w32[i] >> 16) | (w32[i + 1u] << 16);
}
#elif defined(W_F16)
layout(std430, binding = 0) readonly buffer W { float16_t w[]; };
layout(std430, binding = 0) readonly buffer W4 { uvec4 w4[]; };
#elif defined(W_Q8_0) && defined(PACKED16)
struct BlockQ8_0 { float16_t d; uint16_t qs[16]; };
layout(std430, binding = 0) readonly buffer W { BlockQ8_0 w[]; };
#elif defined(W_Q8_0)
struct BlockQ8_0 { float16_t d; int8_t qs[32]; };
layout(std430, binding = 0) readonly buffer W { BlockQ8_0 w[]; };
#elif defined(W_Q4_0) && defined(PACKED16)
struct BlockQ4_0 { float16_t d; uint16_t qs[8]; };
layout(std430, binding = 0) readonly buffer W { BlockQ4_0 w[]; };
#elif defined(W_Q4_0)
struct BlockQ4_0 { float16_t d; uint8_t qs[16]; };
layout(std430, binding = 0) readonly buffer W { BlockQ4_0 w[]; };
#elif defined(W_Q4_1) && defined(PACKED16)
struct BlockQ4_1 { float16_t d; float16_t m; uint16_t qs[8]; };
layout(std430, binding = 0) readonly buffer W { BlockQ4_1 w[]; };
#elif defined(W_Q4_1)
struct BlockQ4_1 { float16_t d; float16_t m; uint8_t qs[16]; };
layout(std430, binding = 0) readonly buffer W { BlockQ4_1 w[]; };
#endif

#if !defined(PACKED16) && (defined(W_F32) || defined(W_F16) || defined(QK))
// Dequantizes unit u (elements 8u .. 8u+7) of row `row`; elements past k read as 0.
// For the block formats unit u is quarter u%4 of block u/4: Q8_0 bytes 8j..8j+7; Q4_x the
// low (j < 2) or high (j >= 2) nibbles of bytes 8(j&1) .. 8(j&1)+7, i.e. elements 8j..8j+7.
void load_w8(uint row, uint u, out float v[8]) {
#if defined(W_F32) || defined(W_F16)
    uint e0 = 8u * u;
    uint base = row * pc.k + e0;
    if (pc.k % 8u == 0u) {  // rows start 16-byte aligned: vector loads
#if defined(W_F32)
        vec4 a = w4[base / 4u], b = w4[base / 4u + 1u];
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
#else
        uvec4 a = w4[base / 8u];
        vec2 h0 = unpackHalf2x16(a.x), h1 = unpackHalf2x16(a.y);
        vec2 h2 = unpackHalf2x16(a.z), h3 = unpackHalf2x16(a.w);
        v[0] = h0.x; v[1] = h0.y; v[2] = h1.x; v[3] = h1.y;
        v[4] = h2.x; v[5] = h2.y; v[6] = h3.x; v[7] = h3.y;
#endif
        return;
    }
    for (uint i = 0u; i < 8u; i++) {
        float t = 0.0;
        if (e0 + i < pc.k) {
#if defined(W_F32)
            t = w[base + i];
#elif defined(U32)
            uint idx = base + i;
            t = unpackHalf2x16(w32[idx >> 1])[idx & 1u];
#else
            t = float(w[base + i]);
#endif
        }
        v[i] = t;
    }
#elif defined(REPACK)
    uint b = u >> 2, j = u & 3u;
    float d, mn;
    rp_scale(row, b, d, mn);
#if defined(W_Q8_0)
    uint wi = row * rp_row_words() + 8u * b + 2u * j;
    uint q0 = w32[wi], q1 = w32[wi + 1u];
    for (uint i = 0u; i < 4u; i++) {
        v[i] = d * float(bitfieldExtract(int(q0), int(8u * i), 8));
        v[i + 4u] = d * float(bitfieldExtract(int(q1), int(8u * i), 8));
    }
#else
    uint wi = row * rp_row_words() + 4u * b + 2u * (j & 1u), shift = (j >> 1) * 4u;
    uint q0 = w32[wi] >> shift, q1 = w32[wi + 1u] >> shift;
    for (uint i = 0u; i < 4u; i++) {
        v[i] = d * float((q0 >> (8u * i)) & 15u) + mn;
        v[i + 4u] = d * float((q1 >> (8u * i)) & 15u) + mn;
    }
#endif
#else
    uint b = row * (pc.k / QK) + (u >> 2);
    uint j = u & 3u;
#if defined(U32)
    uint off = b * BLOCK_BYTES;
    float d = unpackHalf2x16(w_rd16(off)).x;
#if defined(W_Q8_0)
    uint q0 = w_rd32(off + 2u + 8u * j), q1 = w_rd32(off + 6u + 8u * j);
    for (uint i = 0u; i < 4u; i++) {
        v[i] = d * float(bitfieldExtract(int(q0), int(8u * i), 8));
        v[i + 4u] = d * float(bitfieldExtract(int(q1), int(8u * i), 8));
    }
#else
#if defined(W_Q4_0)
    uint qoff = off + 2u + 8u * (j & 1u);
    float mn = -8.0 * d;
#else
    uint qoff = off + 4u + 8u * (j & 1u);
    float mn = unpackHalf2x16(w_rd16(off + 2u)).x;
#endif
    uint shift = (j >> 1) * 4u;
    uint q0 = w_rd32(qoff) >> shift, q1 = w_rd32(qoff + 4u) >> shift;
    for (uint i = 0u; i < 4u; i++) {
        v[i] = d * float((q0 >> (8u * i)) & 15u) + mn;
        v[i + 4u] = d * float((q1 >> (8u * i)) & 15u) + mn;
    }
#endif
#else // 8/16-bit storage
    float d = float(w[b].d);
#if defined(W_Q8_0)
    for (uint i = 0u; i < 8u; i++)
        v[i] = d * float(int(w[b].qs[8u * j + i]));
#else
#if defined(W_Q4_0)
    float mn = -8.0 * d;
#else
    float mn = float(w[b].m);
#endif
    uint shift = (j >> 1) * 4u;
    for (uint i = 0u; i < 8u; i++)
        v[i] = d * float((uint(w[b].qs[8u * (j & 1u) + i]) >> shift) & 15u) + mn;
#endif
#endif
#endif
}
#endif // load_w8

#if defined(QK) && (defined(PACKED16) || defined(U32) || defined(REPACK))
// Block b's bytes as eight words (Q8_0: 32 int8; Q4_x: words 0-3 the 16 bytes of nibbles,
// low nibbles = elements 0-15 in words 0-3, high nibbles = elements 16-31 in words 4-7),
// its scale d and min mn.
void load_block(uint b, out uint q[8], out float d, out float mn) {
#if defined(REPACK)
    uint nb = pc.k / 32u, row = b / nb, bl = b % nb;
    rp_scale(row, bl, d, mn);
#if defined(W_Q4_0)
    mn = 0.0;  // the callers apply the offset of 8
#endif
    uint wi = row * rp_row_words() + (QB / 4u) * bl;
    for (uint i = 0u; i < QB / 4u; i++)
        q[i] = w32[wi + i];
#elif defined(U32)
    uint off = b * BLOCK_BYTES;
    d = unpackHalf2x16(w_rd16(off)).x;
#if defined(W_Q8_0)
    for (uint i = 0u; i < 8u; i++)
        q[i] = w_rd32(off + 2u + 4u * i);
    mn = 0.0;
#else
#if defined(W_Q4_0)
    uint qoff = off + 2u;
    mn = 0.0;
#else
    uint qoff = off + 4u;
    mn = unpackHalf2x16(w_rd16(off + 2u)).x;
#endif
    for (uint i = 0u; i < 4u; i++)
        q[i] = w_rd32(qoff + 4u * i);
#endif
#else
    d = float(w[b].d);
#if defined(W_Q8_0)
    for (uint i = 0u; i < 8u; i++)
        q[i] = uint(w[b].qs[2u * i]) | (uint(w[b].qs[2u * i + 1u]) << 16);
    mn = 0.0;
#else
    for (uint i = 0u; i < 4u; i++)
        q[i] = uint(w[b].qs[2u * i]) | (uint(w[b].qs[2u * i + 1u]) << 16);
#if defined(W_Q4_0)
    mn = 0.0;
#else
    mn = float(w[b].m);
#endif
#endif
#endif
#if !defined(W_Q8_0)
    for (uint i = 0u; i < 4u; i++) {
        q[i + 4u] = (q[i] >> 4) & 0x0f0f0f0fu;
        q[i] &= 0x0f0f0f0fu;
    }
#endif
}
#endif

// ---- activations (float kernels) ----
#ifdef XB
#if defined(X_F16) && defined(U32)
layout(std430, binding = XB) readonly buffer X { uint x32[]; };
float load_x(uint idx) {
    return unpackHalf2x16(x32[idx >> 1])[idx & 1u];
}
#elif defined(X_F16)
layout(std430, binding = XB) readonly buffer X { float16_t x16[]; };
float load_x(uint idx) {
    return float(x16[idx]);
}
#else
layout(std430, binding = XB) readonly buffer X { float x[]; };
float load_x(uint idx) {
    return x[idx];
}
#endif
#if defined(X_F16)
layout(std430, binding = XB) readonly buffer X4 { uvec4 x4[]; };
#else
layout(std430, binding = XB) readonly buffer X4 { vec4 x4[]; };
#endif

// Elements 8u .. 8u+7 of activation column c; those past k read as 0.
void load_x8(uint c, uint u, out float v[8]) {
    uint e0 = 8u * u;
    uint base = c * pc.k + e0;
    if (pc.k % 8u == 0u) {
#if defined(X_F16)
        uvec4 a = x4[base / 8u];
        vec2 h0 = unpackHalf2x16(a.x), h1 = unpackHalf2x16(a.y);
        vec2 h2 = unpackHalf2x16(a.z), h3 = unpackHalf2x16(a.w);
        v[0] = h0.x; v[1] = h0.y; v[2] = h1.x; v[3] = h1.y;
        v[4] = h2.x; v[5] = h2.y; v[6] = h3.x; v[7] = h3.y;
#else
        vec4 a = x4[base / 4u], b = x4[base / 4u + 1u];
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
#endif
        return;
    }
    for (uint i = 0u; i < 8u; i++)
        v[i] = e0 + i < pc.k ? load_x(base + i) : 0.0;
}
#endif
