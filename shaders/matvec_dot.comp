#version 450
#extension GL_GOOGLE_include_directive : require
// Int-dot matrix-vector for Q8_0/Q4_0/Q4_1 weights with int8-quantized activations (from
// quantize_act.comp or an op that writes them itself): each invocation takes whole blocks of
// 32, eight packed 4 x int8 dot products per block, scaled by the weight and activation block
// scales. NR rows and NC columns per workgroup; reduction and epilogues as in matvec.comp.
// Weight loads: a block starts at a byte offset that is 4-aligned or 2 past, so it is read as
// aligned 32-bit words plus two 16-bit halves at its end (Q4_0 6 loads, Q8_0 10, Q4_1 5)
// instead of one 16-bit load per pair of bytes (9 / 17 / 10); the _u32 variant (no 16-bit
// storage) keeps the word reads of types.glsl.
#include "types.glsl"
#include "dot.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint NR = 2;
layout(constant_id = 2) const uint NC = 1;

layout(std430, binding = 1) readonly buffer XQ { uvec4 xq4[]; };
layout(std430, binding = 1) readonly buffer XD { vec2 xd[]; };
#include "prescale.glsl"  // -DPRESCALE: REPACK only
#include "reduce.glsl"
#include "matvec-epi.glsl"

#if defined(REPACK)
// Repacked rows (types.glsl): each invocation takes 16-byte units of quant bytes, one aligned
// 16-byte load each (Q4_x: a whole block; Q8_0: half a block), and the block's scale word.
// Measured on the H100 and dropped: loading 2 or 4 units per row before their products, and a
// grid of fewer workgroups each looping over several rows (docs/PERFORMANCE.md).
layout(std430, binding = 0) readonly buffer WQ { uvec4 wq4[]; };
#if defined(W_Q8_0)
#define UPB 2u  // units per block
#else
#define UPB 1u
#endif

// Adds unit u (quant bytes q, its block's scale word sw) of one row (r) times the same values
// of every activation column to acc.
void dot_unit(uint r, uint u, uint nb, uvec4 q, uint sw) {
    uint b = u / UPB, xd0 = 4u * nb * pc.n;
#if defined(W_Q4_1)
    vec2 dm = unpackHalf2x16(sw);
#else
    float d = unpackHalf2x16(sw >> ((b & 1u) * 16u)).x;
#endif
#if !defined(W_Q8_0)
    uvec4 lo = q & 0x0f0f0f0fu, hi = (q >> 4) & 0x0f0f0f0fu;
#endif
    for (uint c = 0u; c < NC; c++) {
        uint xb = c * nb + b;
        vec2 ds = xd[xd0 + xb];
#if defined(W_Q8_0)
        uvec4 xa = xq4[2u * xb + (u & 1u)];
        int s = sdot4x8(q.x, xa.x, 0) + sdot4x8(q.y, xa.y, 0) + sdot4x8(q.z, xa.z, 0) +
                sdot4x8(q.w, xa.w, 0);
        acc[r * NC + c] += d * ds.x * float(s);
#else
        uvec4 xa = xq4[2u * xb], xc = xq4[2u * xb + 1u];
        int s = sdot4x8(lo.x, xa.x, 0) + sdot4x8(lo.y, xa.y, 0) + sdot4x8(lo.z, xa.z, 0) +
                sdot4x8(lo.w, xa.w, 0) + sdot4x8(hi.x, xc.x, 0) + sdot4x8(hi.y, xc.y, 0) +
                sdot4x8(hi.z, xc.z, 0) + sdot4x8(hi.w, xc.w, 0);
#if defined(W_Q4_0)
        acc[r * NC + c] += d * ds.x * (float(s) - 8.0 * ds.y);
#else
        acc[r * NC + c] += ds.x * (dm.x * float(s) + dm.y * ds.y);
#endif
#endif
    }
}

void main() {
    uint row0 = epi_row0();
    uint tid = gl_LocalInvocationID.x;
    if (row0 >= pc.m)
        return;
    uint nb = pc.k / 32u, nu = nb * UPB, rs4 = rp_row_words() / 4u;
    for (uint j = 0u; j < NR * NC + uint(RED_EXTRA); j++)
        acc[j] = 0.0;
#if defined(PRESCALE)
    float pv[4];
    ps_load(tid, pv);
#endif

    for (uint u = tid; u < nu; u += WG) {
        uvec4 q[NR];
        uint sw[NR];
        for (uint r = 0u; r < NR; r++) {
            uint row = w_row(row0, r);
            q[r] = wq4[row * rs4 + u];            // all rows' loads in flight
#if defined(W_Q4_1)
            sw[r] = w32[(row * rs4 + nu) * 4u + u];
#else
            sw[r] = w32[(row * rs4 + nu) * 4u + (u / UPB) / 2u];
#endif
        }
        for (uint r = 0u; r < NR; r++)
            dot_unit(r, u, nb, q[r], sw[r]);
    }

#if defined(PRESCALE)
    acc[NR * NC] = ps_part(tid, pv);
#endif
    float t = reduce_all(tid);
#if defined(PRESCALE)
    t *= ps_scale(reduce_slot(NR * NC));
#endif
    epi_store(row0, tid, t);
}
#else
#if !defined(U32)
layout(std430, binding = 0) readonly buffer WW { uint ww[]; };       // the weights as words
layout(std430, binding = 0) readonly buffer WH { uint16_t wh[]; };   // and as halves

// Block gb: its bytes as eight words as load_block() (types.glsl) gives them, d and mn.
void load_block_w(uint gb, out uint q[8], out float d, out float mn) {
    uint off = gb * BLOCK_BYTES, wi = off >> 2;
#if defined(W_Q4_1)
    // 20 bytes: always 4-aligned
    vec2 dm = unpackHalf2x16(ww[wi]);
    d = dm.x;
    mn = dm.y;
    for (uint i = 0u; i < 4u; i++)
        q[i] = ww[wi + 1u + i];
#else
#if defined(W_Q8_0)
    const uint NQ = 8u;   // words of values
#else
    const uint NQ = 4u;
#endif
    // t[0 .. NQ-1]: the words from wi; t[NQ]: the word after them, assembled from the block's
    // last two halves so that nothing past the block is read (the even case needs only its
    // low half, which is the block's last half).
    uint t[NQ + 1u];
    for (uint i = 0u; i < NQ; i++)
        t[i] = ww[wi + i];
    uint hb = (off + BLOCK_BYTES) >> 1;
    uint h1 = uint(wh[hb - 2u]), h2 = uint(wh[hb - 1u]);
    bool odd = (off & 2u) != 0u;
    t[NQ] = odd ? (h1 | (h2 << 16)) : h2;
    d = unpackHalf2x16(odd ? t[0] >> 16 : t[0]).x;
    mn = 0.0;
    for (uint i = 0u; i < NQ; i++)
        q[i] = odd ? t[i + 1u] : ((t[i] >> 16) | (t[i + 1u] << 16));
#endif
#if !defined(W_Q8_0)
    for (uint i = 0u; i < 4u; i++) {
        q[i + 4u] = (q[i] >> 4) & 0x0f0f0f0fu;
        q[i] &= 0x0f0f0f0fu;
    }
#endif
}
#define LOAD_BLOCK load_block_w
#else
#define LOAD_BLOCK load_block
#endif

// Adds block b of one row (r) times block b of every activation column to acc.
void dot_block(uint r, uint b, uint nb, uint q[8], float d, float mn) {
    uint xd0 = 4u * nb * pc.n;  // XD starts after the packed values (in vec2 units)
    for (uint c = 0u; c < NC; c++) {
        uint xb = c * nb + b;
        uvec4 xa = xq4[2u * xb], xc = xq4[2u * xb + 1u];
        vec2 ds = xd[xd0 + xb];
        int s = sdot4x8(q[0], xa.x, 0) + sdot4x8(q[1], xa.y, 0) + sdot4x8(q[2], xa.z, 0) +
                sdot4x8(q[3], xa.w, 0) + sdot4x8(q[4], xc.x, 0) + sdot4x8(q[5], xc.y, 0) +
                sdot4x8(q[6], xc.z, 0) + sdot4x8(q[7], xc.w, 0);
#if defined(W_Q8_0)
        acc[r * NC + c] += d * ds.x * float(s);
#elif defined(W_Q4_0)
        acc[r * NC + c] += d * ds.x * (float(s) - 8.0 * ds.y);
#else
        acc[r * NC + c] += ds.x * (d * float(s) + mn * ds.y);
#endif
    }
}

void main() {
    uint row0 = epi_row0();
    uint tid = gl_LocalInvocationID.x;
    if (row0 >= pc.m)
        return;
    uint nb = pc.k / 32u;
    for (uint j = 0u; j < NR * NC; j++)
        acc[j] = 0.0;

    for (uint b = tid; b < nb; b += WG) {
        uint q[NR][8];
        float d[NR], mn[NR];
        for (uint r = 0u; r < NR; r++) {
            uint row = w_row(row0, r);
            LOAD_BLOCK(row * nb + b, q[r], d[r], mn[r]);  // all rows' loads in flight
        }
        for (uint r = 0u; r < NR; r++)
            dot_block(r, b, nb, q[r], d[r], mn[r]);
    }

    epi_store(row0, tid, reduce_all(tid));
}
#endif // REPACK
