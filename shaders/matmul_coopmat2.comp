#version 450
// Y = W X for F16 weights on workgroup-scope cooperative matrices (VK_NV_cooperative_matrix2 on
// top of VK_KHR_cooperative_matrix): each workgroup owns a 128 x 128 output tile as one fp32
// matrix; per k step of 64 it stages the W and X tiles in shared memory (16-byte global loads of
// the next step issued before this step's product, stored as 8 halves per 16-byte store, rows
// padded by 8 halves), loads them as one 128 x 64 and one 64 x 128 fp16 matrix and lets the
// driver split the product among the subgroups. Loading the matrices straight from the buffers
// instead was 4-6x slower on the H100 (docs/PERFORMANCE.md).
// Written with GL_NV_cooperative_matrix (the only cooperative-matrix syntax Debian's glslang 12
// has) and rewritten to the KHR instructions by spv-coopmat-khr.py at build time.
// Full tiles only: the host dispatches it where 128 | m and 64 | k, for the first n - n % 128
// columns, and runs the rest on matmul_coopmat. -DX_F16: fp16 activations, else fp32 ones
// converted to fp16 on the way into shared memory.
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_control_flow_attributes : require

#define BM 128u
#define BN 128u
#define BK 64u
#define NT 256u

// The invocation count must be one that the device lists for workgroup-scope matrices
// (VkCooperativeMatrixFlexibleDimensionsPropertiesNV); the host checks 256.
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
    uint m, k, n, gx;
} pc;

// 16-bit data read through fp32 views: 16-byte loads, as in matmul_coopmat.
layout(std430, binding = 0) readonly buffer WV { vec4 wv[]; };
layout(std430, binding = 1) readonly buffer XV { vec4 xv[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };

#define MA fcoopmatNV<16, gl_ScopeWorkgroup, BM, BK>
#define MB fcoopmatNV<16, gl_ScopeWorkgroup, BK, BN>
#define MC fcoopmatNV<32, gl_ScopeWorkgroup, BM, BN>

#define SV (BK / 8u + 1u)         // shared row stride in units of 8 halves (staggered banks)
#define UPR (BK / 8u)             // units per tile row
#define RSTEP (NT / UPR)          // rows between one invocation's units
shared uvec4 as4[BM * SV];        // as4[i * SV + u] = W[tm + i][kb + 8u .. 8u + 7]
shared uvec4 bs4[BN * SV];        // bs4[j * SV + u] = X[tn + j][kb + 8u .. 8u + 7]

#ifdef X_F16
struct XR { vec4 a; };
#else
struct XR { vec4 a, b; };
#endif

// This invocation's units of k step kb: rows r0 + h * RSTEP, unit j of each row.
void fetch(uint tm, uint tn, uint r0, uint j, uint kb, out vec4 wr[BM / RSTEP], out XR xr[BN / RSTEP]) {
    uint ku = pc.k / 8u, u = kb / 8u + j;
    [[unroll]] for (uint h = 0u; h < BM / RSTEP; h++)
        wr[h] = wv[(tm + r0 + h * RSTEP) * ku + u];
    [[unroll]] for (uint h = 0u; h < BN / RSTEP; h++) {
#ifdef X_F16
        xr[h].a = xv[(tn + r0 + h * RSTEP) * ku + u];
#else
        xr[h].a = xv[((tn + r0 + h * RSTEP) * ku + u) * 2u];
        xr[h].b = xv[((tn + r0 + h * RSTEP) * ku + u) * 2u + 1u];
#endif
    }
}

// The fetched units into shared memory, the activations as fp16.
void put(uint r0, uint j, vec4 wr[BM / RSTEP], XR xr[BN / RSTEP]) {
    [[unroll]] for (uint h = 0u; h < BM / RSTEP; h++)
        as4[(r0 + h * RSTEP) * SV + j] = floatBitsToUint(wr[h]);
    [[unroll]] for (uint h = 0u; h < BN / RSTEP; h++) {
#ifdef X_F16
        bs4[(r0 + h * RSTEP) * SV + j] = floatBitsToUint(xr[h].a);
#else
        bs4[(r0 + h * RSTEP) * SV + j] =
            uvec4(packFloat2x16(f16vec2(xr[h].a.xy)), packFloat2x16(f16vec2(xr[h].a.zw)),
                  packFloat2x16(f16vec2(xr[h].b.xy)), packFloat2x16(f16vec2(xr[h].b.zw)));
#endif
    }
}

void main() {
    uint tm = gl_WorkGroupID.x * BM, tn = gl_WorkGroupID.y * BN;
    uint tid = gl_LocalInvocationID.x, r0 = tid / UPR, j = tid % UPR;
    MC acc = MC(0.0);
    vec4 wr[BM / RSTEP];
    XR xr[BN / RSTEP];

    fetch(tm, tn, r0, j, 0u, wr, xr);
    for (uint kb = 0u; kb < pc.k; kb += BK) {
        barrier();  // the previous step's matrix loads before these stores
        put(r0, j, wr, xr);
        barrier();
        if (kb + BK < pc.k)  // uniform; the next step's loads are in flight during the product
            fetch(tm, tn, r0, j, kb + BK, wr, xr);
        MA a;
        MB b;
        coopMatLoadNV(a, as4, 0u, SV, false);  // W rows: row-major
        coopMatLoadNV(b, bs4, 0u, SV, true);   // X columns: column-major
        acc = coopMatMulAddNV(a, b, acc);
    }
    coopMatStoreNV(acc, y, tn * pc.m + tm, pc.m, true);  // Y column-major, stride m
}
