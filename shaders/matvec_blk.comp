#version 450
#extension GL_GOOGLE_include_directive : require
// Int-dot matrix-vector product of one column (the decode step) on repacked Q8_0/Q4_0/Q4_1
// rows whose workgroup owns whole int8 blocks of 32 outputs, so that its epilogue writes the
// next product's input blocks without any counter or atomic between workgroups
// (docs/PERFORMANCE.md, "blk"); W_F16: F16 rows (k % 8 == 0) with fp32 input and output, the
// same epilogues without the int8 blocks (NORM writes u as floats):
//  NORM  32 rows: xout = xin + W x, and u = xout * nw as one int8 block (quant8.glsl's layout)
//        with the scale of u itself, plus the block's sum of squares of xout. The RMSNorm's
//        scale 1/rms(xout) is left to the consumer (PRESCALE: int8 quantization is invariant
//        under a common scale, the int-dot products are linear in it).
//  GLU   32 gate rows and the 32 matching up rows of the fused matrix (gate rows, then up
//        rows): h = silu(gate) * up as float and as one int8 block.
//  PRESCALE the input blocks are such u: the row results are multiplied by 1/rms from the
//        producer's per-block sums of squares (k/32 floats).
// Threads: T invocations per row (each takes every T-th 16-byte unit, UN units of each of its
// RP rows in flight), WG/T rows at a time, RP = rows / (WG/T); the per-row sums and the
// block's quantization go through shared memory (no subgroup operations needed).
// Bindings: 0 W, 1 input blocks (F16: floats), 2 y (xout / h); NORM: 3 xin, 4 nw, 5 out blocks
// (F16: u), 6 sums of squares out (m/32 floats); GLU: 3 out blocks (not F16); PRESCALE: the
// next binding, sums in (k/32).
// m % 32 == 0, k % 32 == 0.
#define BLK
#if defined(W_F16)
#define XB 1  // types.glsl's fp32 activations, x4
#endif
#include "types.glsl"
#if !defined(W_F16)
#include "dot.glsl"
#endif
#extension GL_EXT_control_flow_attributes : enable

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(constant_id = 1) const uint T = 16;    // invocations per row, WG % T == 0, a power of two
layout(constant_id = 2) const uint UN = 2;    // units of each row per invocation in flight

#if defined(GLU)
const uint RW = 64u;  // weight rows per workgroup
#else
const uint RW = 32u;
#endif
const uint G = WG / T;        // rows at a time
const uint RP = RW / G;       // rows per invocation (WG / T divides RW)

#if !defined(W_F16)
layout(std430, binding = 0) readonly buffer WQ { uvec4 wq4[]; };
layout(std430, binding = 1) readonly buffer XQ { uvec4 xq4[]; };
layout(std430, binding = 1) readonly buffer XD { vec2 xd[]; };
#endif
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
#if defined(NORM)
layout(std430, binding = 3) readonly buffer ResIn { float xin[]; };
layout(std430, binding = 4) readonly buffer NormW { float nw[]; };
#define OUTQ 5
layout(std430, binding = 6) writeonly buffer SsOut { float ss_out[]; };
#define PSB 7
#elif defined(W_F16)
#define PSB 3
#else
#define OUTQ 3
#define PSB 4
#endif
#if defined(W_F16) && defined(NORM)
layout(std430, binding = OUTQ) writeonly buffer OutU { float out_u[]; };
#elif !defined(W_F16)
layout(std430, binding = OUTQ) writeonly buffer OutW { uint out_w[]; };
layout(std430, binding = OUTQ) writeonly buffer OutD { vec2 out_d[]; };
#endif
#if defined(PRESCALE)
layout(std430, binding = PSB) readonly buffer PS { float ps_in[]; };
shared float ps_red[32];
#endif

#if defined(W_Q8_0)
#define UPB 2u  // units per block
#elif defined(W_F16)
#define UPB 4u  // 8 values a unit
#else
#define UPB 1u
#endif

shared float red[WG * RP];   // red[lane * RW + row]: the lanes' partial sums
shared float bq_u[32];       // the block's values
#if defined(NORM)
shared float bq_ss[32];      // their squares of xout
#endif

// Unit u (quant bytes q, scale word sw) of a row times the input.
float dot_unit(uint u, uint nb, uvec4 q, uint sw) {
#if defined(W_F16)
    vec4 x0 = x4[2u * u], x1 = x4[2u * u + 1u];
    return dot(vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y)), x0) +
           dot(vec4(unpackHalf2x16(q.z), unpackHalf2x16(q.w)), x1);
#else
    uint b = u / UPB;
    vec2 ds = xd[4u * nb + b];
#if defined(W_Q4_1)
    vec2 dm = unpackHalf2x16(sw);
#else
    float d = unpackHalf2x16(sw >> ((b & 1u) * 16u)).x;
#endif
#if defined(W_Q8_0)
    uvec4 xa = xq4[2u * b + (u & 1u)];
    int s = sdot4x8(q.x, xa.x, 0) + sdot4x8(q.y, xa.y, 0) + sdot4x8(q.z, xa.z, 0) + sdot4x8(q.w, xa.w, 0);
    return d * ds.x * float(s);
#else
    uvec4 lo = q & 0x0f0f0f0fu, hi = (q >> 4) & 0x0f0f0f0fu;
    uvec4 xa = xq4[2u * b], xc = xq4[2u * b + 1u];
    int s = sdot4x8(lo.x, xa.x, 0) + sdot4x8(lo.y, xa.y, 0) + sdot4x8(lo.z, xa.z, 0) + sdot4x8(lo.w, xa.w, 0) +
            sdot4x8(hi.x, xc.x, 0) + sdot4x8(hi.y, xc.y, 0) + sdot4x8(hi.z, xc.z, 0) + sdot4x8(hi.w, xc.w, 0);
#if defined(W_Q4_0)
    return d * ds.x * (float(s) - 8.0 * ds.y);
#else
    return ds.x * (dm.x * float(s) + dm.y * ds.y);
#endif
#endif
#endif
}

void main() {
    uint tid = gl_LocalInvocationID.x, lane = tid % T, rg = tid / T;
    uint row0 = (gl_WorkGroupID.x + gl_WorkGroupID.y * pc.gx) * 32u;
    if (row0 >= pc.m)
        return;
#if defined(W_F16)
    uint nb = pc.k / 32u, nu = pc.k / 8u, rs4 = nu;  // the row in 16-byte units
#else
    uint nb = pc.k / 32u, nu = nb * UPB, rs4 = rp_row_words() / 4u;
#endif
#if defined(PRESCALE)
    // the producer's sums of squares: up to 4 per invocation of the first 32 loaded now, added
    // after the weights' loop (an add here would wait for them before any weight load)
    float pv[4];
    for (uint i = 0u; i < 4u; i++) {
        float v = ps_in[min(tid % 32u + 32u * i, nb - 1u)];  // in bounds: never a read past k/32
        pv[i] = tid < 32u && tid + 32u * i < nb ? v : 0.0;
    }
#endif
#if defined(NORM)
    // the epilogue's residual and norm weight of row tid % 32, loaded before the weights' loop
    // (not an L2 round trip more at the end of every workgroup)
    float e_xin = xin[row0 + tid % 32u], e_nw = nw[row0 + tid % 32u];
#endif
    // weight row of the invocation's j-th row (local row rg + j*G)
    uint wrow[RP];
    float acc[RP];
    [[unroll]] for (uint j = 0u; j < RP; j++) {
        uint lr = rg + j * G;
#if defined(GLU)
        wrow[j] = (lr < 32u ? 0u : pc.m) + row0 + lr % 32u;
#else
        wrow[j] = row0 + lr;
#endif
        acc[j] = 0.0;
    }

    for (uint u0 = lane; u0 < nu; u0 += UN * T) {
        uvec4 q[UN][RP];
        uint sw[UN][RP];
        [[unroll]] for (uint i = 0u; i < UN; i++) {
            uint u = min(u0 + i * T, nu - 1u);  // past the row: loaded, not added
            [[unroll]] for (uint j = 0u; j < RP; j++) {
                uint base = wrow[j] * rs4;
#if defined(W_F16)
                q[i][j] = w4[base + u];
                sw[i][j] = 0u;
#else
                q[i][j] = wq4[base + u];
#endif
#if defined(W_F16)
#elif defined(W_Q4_1)
                sw[i][j] = w32[(base + nu) * 4u + u];
#else
                sw[i][j] = w32[(base + nu) * 4u + (u / UPB) / 2u];
#endif
            }
        }
        [[unroll]] for (uint i = 0u; i < UN; i++)
            if (u0 + i * T < nu)
                [[unroll]] for (uint j = 0u; j < RP; j++)
                    acc[j] += dot_unit(u0 + i * T, nb, q[i][j], sw[i][j]);
    }

    [[unroll]] for (uint j = 0u; j < RP; j++)
        red[lane * RW + rg + j * G] = acc[j];
#if defined(PRESCALE)
    if (tid < 32u) {
        float ps = pv[0] + pv[1] + pv[2] + pv[3];
        for (uint b = tid + 128u; b < nb; b += 32u)
            ps += ps_in[b];
        ps_red[tid] = ps;
    }
#endif
    barrier();
    uint b = row0 / 32u;
    if (tid < 32u) {
        float t = 0.0;
        for (uint l = 0u; l < T; l++)
            t += red[l * RW + tid];
#if defined(GLU)
        float up = 0.0;
        for (uint l = 0u; l < T; l++)
            up += red[l * RW + 32u + tid];
#endif
#if defined(PRESCALE)
        float ss = 0.0;
        for (uint l = 0u; l < 32u; l++)
            ss += ps_red[l];
        float sc = inversesqrt(ss / float(pc.k) + pc.eps);
        t *= sc;
#if defined(GLU)
        up *= sc;
#endif
#endif
        uint row = row0 + tid;
#if defined(GLU)
        float h = t / (1.0 + exp(-t)) * up;
        y[row] = h;
        bq_u[tid] = h;
#else
        float v = e_xin + t;
        y[row] = v;
#if defined(W_F16)
        out_u[row] = v * e_nw;
#else
        bq_u[tid] = v * e_nw;
#endif
        bq_ss[tid] = v * v;
#endif
    }
#if defined(W_F16)
#if defined(NORM)
    barrier();
    if (tid == 0u) {
        float ss = 0.0;
        for (uint l = 0u; l < 32u; l++)
            ss += bq_ss[l];
        ss_out[b] = ss;
    }
#endif
#else
    barrier();
    // the block: invocation i < 8 packs values 4i .. 4i+3; invocation 0 also its scale and sum
    if (tid < 8u) {
        float amax = 0.0;
        for (uint l = 0u; l < 32u; l++)
            amax = max(amax, abs(bq_u[l]));
        float d = amax / 127.0, inv = d > 0.0 ? 1.0 / d : 0.0;
        vec4 v4 = vec4(bq_u[4u * tid], bq_u[4u * tid + 1u], bq_u[4u * tid + 2u], bq_u[4u * tid + 3u]);
        uvec4 qu = uvec4(clamp(ivec4(roundEven(v4 * inv)), ivec4(-127), ivec4(127))) & 0xffu;
        out_w[8u * b + tid] = qu.x | (qu.y << 8) | (qu.z << 16) | (qu.w << 24);
        if (tid == 0u) {
            int sum = 0;
            float ss = 0.0;
            for (uint l = 0u; l < 32u; l++) {
                sum += clamp(int(roundEven(bq_u[l] * inv)), -127, 127);
#if defined(NORM)
                ss += bq_ss[l];
#endif
            }
            out_d[4u * (pc.m / 32u) + b] = vec2(d, float(sum));
#if defined(NORM)
            ss_out[b] = ss;
#endif
        }
    }
#endif
}
