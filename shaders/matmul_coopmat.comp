#version 450
#extension GL_GOOGLE_include_directive : require
// Y = W X on tensor cores (GL_NV_cooperative_matrix): 128 x 128 output tiles, k in steps of 32;
// weights dequantized and activations converted to fp16 into shared memory, products
// accumulated in fp32 16 x 16 x 16 matrices. 256 invocations = 8 subgroups of 32, each
// computing 64 x 32 outputs (4 x 2 accumulators). The host uses it only where the device
// lists the 16x16x16 fp16 x fp16 + fp32 configuration and subgroups are 32 wide.
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#define XB 1
#include "types.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;  // must be 256

layout(std430, binding = 2) writeonly buffer Y { float y[]; };

#define BM 128u
#define BN 128u
#define BK 32u
#define ST 40u   // shared row stride in halves (80 bytes: 16-byte aligned, fewer bank conflicts)

shared float16_t as[BM * ST];   // as[i * ST + e] = W[tm + i][kb + e]
shared float16_t bs[BN * ST];   // bs[j * ST + e] = X[tn + j][kb + e]
shared float cs[8u * 256u];     // per-subgroup 16 x 16 staging for partial edge tiles

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint tm = gl_WorkGroupID.x * BM, tn = gl_WorkGroupID.y * BN;
    uint sg = gl_SubgroupID;
    uint wm = (sg % 2u) * 64u, wn = (sg / 2u) * 32u;

    fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[4][2];
    for (uint a = 0u; a < 4u; a++)
        for (uint b = 0u; b < 2u; b++)
            acc[a][b] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);

    for (uint kb = 0u; kb < pc.k; kb += BK) {
        // 128 rows x 4 units of 8 for each of W and X: two of each per invocation
        for (uint h = 0u; h < 2u; h++) {
            uint li = tid + h * WG;
            uint r = li / 4u, j = li % 4u;
            float v[8];
            if (tm + r < pc.m)
                load_w8(tm + r, kb / 8u + j, v);
            else
                for (uint i = 0u; i < 8u; i++)
                    v[i] = 0.0;
            for (uint i = 0u; i < 8u; i++)
                as[r * ST + 8u * j + i] = float16_t(v[i]);
            float xv[8];
            if (tn + r < pc.n)
                load_x8(tn + r, kb / 8u + j, xv);
            else
                for (uint i = 0u; i < 8u; i++)
                    xv[i] = 0.0;
            for (uint i = 0u; i < 8u; i++)
                bs[r * ST + 8u * j + i] = float16_t(xv[i]);
        }
        barrier();
        for (uint ks = 0u; ks < BK; ks += 16u) {
            fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fa[4], fb[2];
            for (uint a = 0u; a < 4u; a++)
                coopMatLoadNV(fa[a], as, (wm + 16u * a) * ST + ks, ST, false);
            for (uint b = 0u; b < 2u; b++)
                coopMatLoadNV(fb[b], bs, (wn + 16u * b) * ST + ks, ST, true);
            for (uint a = 0u; a < 4u; a++)
                for (uint b = 0u; b < 2u; b++)
                    acc[a][b] = coopMatMulAddNV(fa[a], fb[b], acc[a][b]);
        }
        barrier();
    }

    // y[j * m + i]: column-major with stride m
    for (uint a = 0u; a < 4u; a++)
        for (uint b = 0u; b < 2u; b++) {
            uint i0 = tm + wm + 16u * a, j0 = tn + wn + 16u * b;
            if (i0 >= pc.m || j0 >= pc.n)
                continue;  // uniform in the subgroup
            if (i0 + 16u <= pc.m && j0 + 16u <= pc.n && pc.m % 4u == 0u) {  // 16-byte aligned stride
                coopMatStoreNV(acc[a][b], y, j0 * pc.m + i0, pc.m, true);
            } else {
                coopMatStoreNV(acc[a][b], cs, sg * 256u, 16u, true);
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                for (uint e = gl_SubgroupInvocationID; e < 256u; e += 32u) {
                    uint i = e % 16u, j = e / 16u;
                    if (i0 + i < pc.m && j0 + j < pc.n)
                        y[(j0 + j) * pc.m + i0 + i] = cs[sg * 256u + e];
                }
                subgroupBarrier();
            }
        }
}
