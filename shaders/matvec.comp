#version 450
#extension GL_GOOGLE_include_directive : require
// y_c = W x_c for NC activation columns (1..8) at once, so W is read once: the decode step
// and small batches. NR rows per workgroup; each invocation dequantizes 8-element units
// (F32/F16, 16-byte loads where k % 8 == 0) or whole blocks (Q8_0/Q4_x) of the rows in
// registers, strided by WG, then the workgroup reduces (reduce.glsl); -DGLU / -DNORM (-DQ8):
// the decode step's epilogues (matvec-epi.glsl); -DPRESCALE (one column): x is an RMSNorm's
// input without its scale, applied to the results as in matvec_dot.comp (binding 3).
#if defined(W_Q8_0) || defined(W_Q4_0) || defined(W_Q4_1)
#define BLOCKWISE  // one whole block of 32 per invocation and step
#if !defined(U32) && !defined(REPACK)
#define PACKED16
#endif
#endif
#define XB 1
#include "types.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint NR = 2;
layout(constant_id = 2) const uint NC = 1;

#include "prescale.glsl"
#include "reduce.glsl"
#include "matvec-epi.glsl"

void main() {
    uint row0 = epi_row0();
    uint tid = gl_LocalInvocationID.x;
    if (row0 >= pc.m)
        return;  // uniform across the workgroup
    for (uint j = 0u; j < NR * NC + uint(RED_EXTRA); j++)
        acc[j] = 0.0;
#if defined(PRESCALE)
    float pv[4];
    ps_load(tid, pv);
#endif

#ifdef BLOCKWISE
    uint nb = pc.k / 32u;
    for (uint b = tid; b < nb; b += WG) {
        uint q[NR][8];
        float d[NR], mn[NR];
        for (uint r = 0u; r < NR; r++) {
            uint row = w_row(row0, r);
            load_block(row * nb + b, q[r], d[r], mn[r]);
        }
        for (uint c = 0u; c < NC; c++) {
            vec4 xv[8];
            for (uint g = 0u; g < 4u; g++) {
                float t8[8];
                load_x8(c, 4u * b + g, t8);
                xv[2u * g] = vec4(t8[0], t8[1], t8[2], t8[3]);
                xv[2u * g + 1u] = vec4(t8[4], t8[5], t8[6], t8[7]);
            }
#if !defined(W_Q8_0)
            float sx = 0.0;
            for (uint i = 0u; i < 8u; i++)
                sx += dot(xv[i], vec4(1.0));
#endif
            for (uint r = 0u; r < NR; r++) {
                float s = 0.0;
                for (uint i = 0u; i < 8u; i++) {
#if defined(W_Q8_0)
                    ivec4 v = ivec4(uvec4(q[r][i]) << uvec4(24u, 16u, 8u, 0u)) >> 24;
#else
                    uvec4 v = (uvec4(q[r][i]) >> uvec4(0u, 8u, 16u, 24u)) & 0xffu;
#endif
                    s += dot(vec4(v), xv[i]);
                }
#if defined(W_Q8_0)
                acc[r * NC + c] += d[r] * s;
#elif defined(W_Q4_0)
                acc[r * NC + c] += d[r] * (s - 8.0 * sx);
#else
                acc[r * NC + c] += d[r] * s + mn[r] * sx;
#endif
            }
        }
    }
#else
    uint units = (pc.k + 7u) / 8u;
    for (uint u = tid; u < units; u += WG) {
        float wv[NR][8];
        for (uint r = 0u; r < NR; r++) {
            uint row = w_row(row0, r);
            load_w8(row, u, wv[r]);
        }
        for (uint c = 0u; c < NC; c++) {
            float xv[8];
            load_x8(c, u, xv);
            for (uint r = 0u; r < NR; r++) {
                float s = 0.0;
                for (uint i = 0u; i < 8u; i++)
                    s = fma(wv[r][i], xv[i], s);
                acc[r * NC + c] += s;
            }
        }
    }

#endif

#if defined(PRESCALE)
    acc[NR * NC] = ps_part(tid, pv);
#endif
    float t = reduce_all(tid);
#if defined(PRESCALE)
    t *= ps_scale(reduce_slot(NR * NC));
#endif
    epi_store(row0, tid, t);
}
