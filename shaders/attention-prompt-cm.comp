#version 450
// Causal attention of a prompt (n tokens at positions pos0 ..) over the fp16 KV cache,
// flash-attention style on tensor cores (GL_NV_cooperative_matrix, 16 x 16 x 16 fp16 -> fp32).
// Workgroup (x, kh): 64 query rows of KV head kh; row R = t * g + i (g = n_head / n_head_kv)
// is query head kh * g + i of token t, so the g heads that share a KV head share its loads.
// 4 subgroups of 32, 16 rows each: Q (scaled, fp16) stays in registers as HD/16 A matrices.
// Per block of 32 keys: K and V rows into shared memory; S = Q K^T per subgroup (two 16 x 16
// accumulators), staged through shared memory for an online softmax (one invocation per row,
// the causal mask applied there); P (fp16) times V into fresh accumulators, staged again and
// added to the output that each invocation holds in registers after rescaling its rows.
// Blocks past a subgroup's last key are skipped by that subgroup (the loads are shared).
// -DHD: head_dim (64 or 128). The host uses it where it uses the coopmat matrix kernel.
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x = 128) in;
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer KC { uvec4 kc4[]; };
layout(std430, binding = 2) readonly buffer VC { uvec4 vc4[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(std430, binding = 4) readonly buffer Prm { uint pos0; uint n_tokens; } prm;
layout(push_constant) uniform P { uint n_head, n_head_kv; float scale; uint n; } p;

#define BK 32u             // keys per block
#define SK (HD + 8u)       // K/V shared row stride in halves (16-byte rows, staggered banks)
#define SP (BK + 8u)       // P row stride in halves
#define SS (BK + 4u)       // S row stride in floats (rows read one per invocation: banks differ)
#define NC (HD / 16u)      // 16-wide column tiles of a head

shared float16_t ks[BK * SK];   // ks[j * SK + d] = K[j0 + j][d]
shared float16_t vs[BK * SK];
shared float ss[4u * 16u * SS]; // per subgroup: S (16 x BK), then one 16 x 16 P V tile
shared float16_t ps[4u * 16u * SP];
shared float cr[4u * 16u];      // per subgroup row: the rescale factor, at the end 1 / l

#define FA fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define FC fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

void main() {
    uint tid = gl_LocalInvocationID.x, sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint kh = gl_WorkGroupID.y, g = p.n_head / p.n_head_kv;
    uint nkv8 = p.n_head_kv * HD / 8u;          // uvec4 units per cache row
    uint rows = p.n * g, R0 = gl_WorkGroupID.x * 64u;
    uint pos0 = prm.pos0;
    uint t_wg = min(p.n - 1u, min(R0 + 63u, rows - 1u) / g);
    uint t_sg = min(p.n - 1u, min(R0 + 16u * sg + 15u, rows - 1u) / g);
    uint n_keys = pos0 + t_wg + 1u;             // keys this workgroup reads
    uint sgk = pos0 + t_sg + 1u;                // keys this subgroup needs

    // Q rows of this subgroup, scaled, to fp16 through the K/V areas (rows of 16 per subgroup)
    {
        uint rr = lane / 2u, hf = lane % 2u;
        uint R = min(R0 + 16u * sg + rr, rows - 1u);
        uint t = R / g, h = kh * g + R % g;
        uint qo = (t * p.n_head + h) * HD;
        uint sb = (16u * (sg % 2u) + rr) * SK;
        for (uint d = hf * (HD / 2u); d < (hf + 1u) * (HD / 2u); d++) {
            float16_t v = float16_t(q[qo + d] * p.scale);
            if (sg < 2u)
                ks[sb + d] = v;
            else
                vs[sb + d] = v;
        }
    }
    barrier();
    FA qf[NC];
    [[unroll]] for (uint c = 0u; c < NC; c++) {
        if (sg < 2u)
            coopMatLoadNV(qf[c], ks, 16u * sg * SK + 16u * c, SK, false);
        else
            coopMatLoadNV(qf[c], vs, 16u * (sg - 2u) * SK + 16u * c, SK, false);
    }

    // output rows of this invocation: lane / 16 + 2 i, column lane % 16 of each tile
    float acc[NC][8];
    [[unroll]] for (uint c = 0u; c < NC; c++)
        [[unroll]] for (uint i = 0u; i < 8u; i++)
            acc[c][i] = 0.0;
    float m = -1.0 / 0.0, l = 0.0;  // softmax state of row `lane` (lanes < 16)
    uint my_t = min(R0 + 16u * sg + lane, rows - 1u) / g;
    uint sbase = sg * 16u * SS, pbase = sg * 16u * SP;

    for (uint j0 = 0u; j0 < n_keys; j0 += BK) {
        barrier();  // the previous block's (or Q's) reads of ks / vs
        for (uint e = tid; e < BK * HD / 8u; e += 128u) {
            uint j = e / (HD / 8u), u = e % (HD / 8u);
            uvec4 kw = uvec4(0u), vw = uvec4(0u);
            if (j0 + j < n_keys) {
                uint a = (j0 + j) * nkv8 + kh * (HD / 8u) + u;
                kw = kc4[a];
                vw = vc4[a];
            }
            uint b = j * SK + 8u * u;
            f16vec2 k0 = unpackFloat2x16(kw.x), k1 = unpackFloat2x16(kw.y);
            f16vec2 k2 = unpackFloat2x16(kw.z), k3 = unpackFloat2x16(kw.w);
            ks[b] = k0.x; ks[b + 1u] = k0.y; ks[b + 2u] = k1.x; ks[b + 3u] = k1.y;
            ks[b + 4u] = k2.x; ks[b + 5u] = k2.y; ks[b + 6u] = k3.x; ks[b + 7u] = k3.y;
            f16vec2 v0 = unpackFloat2x16(vw.x), v1 = unpackFloat2x16(vw.y);
            f16vec2 v2 = unpackFloat2x16(vw.z), v3 = unpackFloat2x16(vw.w);
            vs[b] = v0.x; vs[b + 1u] = v0.y; vs[b + 2u] = v1.x; vs[b + 3u] = v1.y;
            vs[b + 4u] = v2.x; vs[b + 5u] = v2.y; vs[b + 6u] = v3.x; vs[b + 7u] = v3.y;
        }
        barrier();
        // uniform in the subgroup: skipped once all its rows end before this block
        if (j0 < sgk) {
            FC s0 = FC(0.0), s1 = FC(0.0);
            [[unroll]] for (uint c = 0u; c < NC; c++) {
                FA k0, k1;
                coopMatLoadNV(k0, ks, 16u * c, SK, true);
                coopMatLoadNV(k1, ks, 16u * SK + 16u * c, SK, true);
                s0 = coopMatMulAddNV(qf[c], k0, s0);
                s1 = coopMatMulAddNV(qf[c], k1, s1);
            }
            coopMatStoreNV(s0, ss, sbase, SS, false);
            coopMatStoreNV(s1, ss, sbase + 16u, SS, false);
            subgroupMemoryBarrierShared();
            subgroupBarrier();

            if (lane < 16u) {
                uint last = pos0 + my_t;  // keys 0 .. last are visible to this row
                uint so = sbase + lane * SS;
                float bm = -1.0 / 0.0;
                [[unroll]] for (uint i = 0u; i < BK; i++)
                    if (j0 + i <= last)
                        bm = max(bm, ss[so + i]);
                float mn = max(m, bm);  // finite: key 0 is in every row's first block
                float corr = exp(m - mn), sum = 0.0;
                [[unroll]] for (uint i = 0u; i < BK; i++) {
                    float e = j0 + i <= last ? exp(ss[so + i] - mn) : 0.0;
                    float16_t eh = float16_t(e);
                    sum += float(eh);
                    ps[pbase + lane * SP + i] = eh;
                }
                l = l * corr + sum;
                m = mn;
                cr[sg * 16u + lane] = corr;
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();

            float rc[8];
            [[unroll]] for (uint i = 0u; i < 8u; i++)
                rc[i] = cr[sg * 16u + lane / 16u + 2u * i];
            FA pa0, pa1;
            coopMatLoadNV(pa0, ps, pbase, SP, false);
            coopMatLoadNV(pa1, ps, pbase + 16u, SP, false);
            [[unroll]] for (uint c = 0u; c < NC; c++) {
                FA v0, v1;
                coopMatLoadNV(v0, vs, 16u * c, SK, false);
                coopMatLoadNV(v1, vs, 16u * SK + 16u * c, SK, false);
                FC pv = FC(0.0);
                pv = coopMatMulAddNV(pa0, v0, pv);
                pv = coopMatMulAddNV(pa1, v1, pv);
                coopMatStoreNV(pv, ss, sbase, 16u, false);
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                [[unroll]] for (uint i = 0u; i < 8u; i++)
                    acc[c][i] = acc[c][i] * rc[i] + ss[sbase + lane + 32u * i];
                subgroupMemoryBarrierShared();
                subgroupBarrier();
            }
        }
    }

    if (lane < 16u)
        cr[sg * 16u + lane] = l > 0.0 ? 1.0 / l : 0.0;
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    [[unroll]] for (uint i = 0u; i < 8u; i++) {
        uint rr = lane / 16u + 2u * i, R = R0 + 16u * sg + rr;
        if (R >= rows)
            continue;
        uint t = R / g, h = kh * g + R % g;
        uint oo = (t * p.n_head + h) * HD + lane % 16u;
        float inv = cr[sg * 16u + rr];
        [[unroll]] for (uint c = 0u; c < NC; c++)
            o[oo + 16u * c] = acc[c][i] * inv;
    }
}
