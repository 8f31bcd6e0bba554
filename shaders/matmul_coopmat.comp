#version 450
#extension GL_GOOGLE_include_directive : require
// Y = W X on tensor cores (GL_NV_cooperative_matrix): 128 x 128 output tiles (128 x 64 with
// -DN64), k in steps of 64 through shared memory; the next step's global loads are issued
// before the current step's products and converted and stored after them (F16 weights as
// their raw bits). Weights dequantized and activations converted to fp16 on the way into shared
// memory; products accumulated in fp32 16 x 16 x 16 matrices. 256 invocations = 8 subgroups of 32, each computing 64 x 32 outputs (4 x 2
// accumulators; 32 x 32, 2 x 2, with N64), all in named variables so that nothing is indexed at
// run time. Both operands are k-contiguous ("TN"): W rows load row-major as A, X columns
// column-major as B. -DFASTLD: k % 8 == 0 only (the host checks), unconditional loads.
// The host uses it only where the device lists the 16x16x16 fp16 x fp16 + fp32 configuration
// and subgroups are 32 wide.
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#define XB 1
#include "types.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;  // must be NT

layout(std430, binding = 2) writeonly buffer Y { float y[]; };

#define BM 128u
#ifdef N64
#define BN 64u
#else
#define BN 128u
#endif
#define BK 64u
#define NT 256u
#define ST (BK + 8u)          // shared row stride in halves (16-byte rows, staggered banks)
#define UPR (BK / 8u)         // units of 8 values per tile row
#define RSTEP (NT / UPR)      // rows between one invocation's units
#define NUW (BM / RSTEP)      // W units per invocation
#define NUX (BN / RSTEP)      // X units per invocation

#if defined(FASTLD) && defined(W_F16)
// F16 weights: the tiles as 8 halves per element, each unit stored with one 16-byte store of the
// raw weight bits (and of the converted activations); the matrices load in units of 8 halves.
// The block formats keep 2-byte stores of converted values: with 16-byte ones their
// dequantization ran 1.5x slower on the H100 (see docs/PERFORMANCE.md).
#define VSTORE
#define SV (ST / 8u)            // the row stride in units
shared uvec4 as4[BM * SV];      // as4[i * SV + u] = W[tm + i][kb + 8u .. 8u + 7]
shared uvec4 bs4[BN * SV];
#define LOADA(m_, row_, ks_) coopMatLoadNV(m_, as4, (row_) * SV + (ks_) / 8u, SV, false)
#define LOADB(m_, row_, ks_) coopMatLoadNV(m_, bs4, (row_) * SV + (ks_) / 8u, SV, true)
#else
shared float16_t as[BM * ST];   // as[i * ST + e] = W[tm + i][kb + e]
shared float16_t bs[BN * ST];   // bs[j * ST + e] = X[tn + j][kb + e]
#define LOADA(m_, row_, ks_) coopMatLoadNV(m_, as, (row_) * ST + (ks_), ST, false)
#define LOADB(m_, row_, ks_) coopMatLoadNV(m_, bs, (row_) * ST + (ks_), ST, true)
#endif
shared float cs[(NT / 32u) * 256u];  // per-subgroup 16 x 16 staging for partial edge tiles

#define FA fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define FC fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

#ifdef FASTLD
// Indices clamped into the matrices, the loads unconditional (all issued before the first use);
// what they return stays raw in registers (WRaw / XRaw) until after the step's products, when
// put_w / put_x convert it, zero what lies outside the matrices and store it to shared memory.
// A conversion right after the load made every step wait for its loads before its products.
// 16-bit data read through fp32 views, the same 16-byte loads as the fp32 formats (measured 2x
// faster than the uvec4 views on the H100); block formats through a 16-bit view (blocks are
// 2-byte aligned), one unit = the scale (and min) and the 8 bytes that hold its 8 values.
layout(std430, binding = 0) readonly buffer WV { vec4 wv[]; };
layout(std430, binding = XB) readonly buffer XV { vec4 xv4[]; };
#if defined(QK) && !defined(U32)
layout(std430, binding = 0) readonly buffer WH { uint16_t wh[]; };
#if defined(REPACK)
layout(std430, binding = 0) readonly buffer WV2 { vec2 wv2[]; };  // a unit's 8 quant bytes
#endif
#endif

void unpack8(uvec4 a, out float v[8]) {
    vec2 h0 = unpackHalf2x16(a.x), h1 = unpackHalf2x16(a.y);
    vec2 h2 = unpackHalf2x16(a.z), h3 = unpackHalf2x16(a.w);
    v[0] = h0.x; v[1] = h0.y; v[2] = h1.x; v[3] = h1.y;
    v[4] = h2.x; v[5] = h2.y; v[6] = h3.x; v[7] = h3.y;
}

#if defined(W_F16)
struct WRaw { vec4 a; };
#elif defined(W_F32)
struct WRaw { vec4 a, b; };
#elif defined(QK) && !defined(U32)
struct WRaw { uint h[6]; };  // scale, min (Q4_1), 4 halves of quants (16 bits each)
#else
struct WRaw { float v[8]; };
#endif
#if defined(X_F16)
struct XRaw { vec4 a; };
#else
struct XRaw { vec4 a, b; };
#endif

// Unit j (8 values) of row r of step kb's W tile, raw.
void fetch_w(uint tm, uint kb, uint r, uint j, out WRaw raw) {
    uint u = min(kb / 8u + j, pc.k / 8u - 1u);
    uint wr = min(tm + r, pc.m - 1u);
#if defined(W_F16)
    raw.a = wv[wr * (pc.k / 8u) + u];
#elif defined(W_F32)
    raw.a = wv[(wr * (pc.k / 8u) + u) * 2u];
    raw.b = wv[(wr * (pc.k / 8u) + u) * 2u + 1u];
#elif defined(QK) && !defined(U32) && defined(REPACK)
    // rows repacked at upload (types.glsl): the quant bytes of all blocks, then the scales
    uint nb = pc.k / QK, rh = wr * (rp_row_words() * 2u), bl = u >> 2, q = u & 3u;
    uint hs = rh + nb * (QB / 2u) + bl * (BLOCK_BYTES / 2u - QB / 2u);
#if defined(W_Q8_0)
    uint hq = rh + 16u * bl + 4u * q;
#else
    uint hq = rh + 8u * bl + 4u * (q & 1u);
#endif
#if defined(W_Q4_1)
    raw.h[1] = uint(wh[hs + 1u]);
#endif
    raw.h[0] = uint(wh[hs]);
    // rows start 16-byte aligned and units are 8 bytes: one 8-byte load, not four 16-bit ones
    uvec2 t = floatBitsToUint(wv2[hq / 4u]);
    raw.h[2] = t.x & 0xffffu;
    raw.h[3] = t.x >> 16;
    raw.h[4] = t.y & 0xffffu;
    raw.h[5] = t.y >> 16;
#elif defined(QK) && !defined(U32)
    uint b = wr * (pc.k / QK) + (u >> 2), q = u & 3u;
    uint hb = b * (BLOCK_BYTES / 2u);
#if defined(W_Q8_0)
    uint hq = hb + 1u + 4u * q;
#elif defined(W_Q4_0)
    uint hq = hb + 1u + 4u * (q & 1u);
#else
    uint hq = hb + 2u + 4u * (q & 1u);
    raw.h[1] = uint(wh[hb + 1u]);
#endif
    raw.h[0] = uint(wh[hb]);
    raw.h[2] = uint(wh[hq]);
    raw.h[3] = uint(wh[hq + 1u]);
    raw.h[4] = uint(wh[hq + 2u]);
    raw.h[5] = uint(wh[hq + 3u]);
#else
    load_w8(wr, u, raw.v);
#endif
}

void fetch_x(uint tn, uint kb, uint r, uint j, out XRaw raw) {
    uint u = min(kb / 8u + j, pc.k / 8u - 1u);
    uint xc = min(tn + r, pc.n - 1u);
#if defined(X_F16)
    raw.a = xv4[xc * (pc.k / 8u) + u];
#else
    raw.a = xv4[(xc * (pc.k / 8u) + u) * 2u];
    raw.b = xv4[(xc * (pc.k / 8u) + u) * 2u + 1u];
#endif
}

void put_w(uint base, uint tm, uint kb, uint r, uint j, WRaw raw) {
#ifdef VSTORE
    bool ok16 = tm + r < pc.m && kb + 8u * j < pc.k;
    as4[base] = ok16 ? floatBitsToUint(raw.a) : uvec4(0u);
#else
    float v[8];
#if defined(W_F32)
    v[0] = raw.a.x; v[1] = raw.a.y; v[2] = raw.a.z; v[3] = raw.a.w;
    v[4] = raw.b.x; v[5] = raw.b.y; v[6] = raw.b.z; v[7] = raw.b.w;
#elif defined(QK) && !defined(U32)
    float d = unpackHalf2x16(raw.h[0]).x;
#if defined(W_Q8_0)
    [[unroll]] for (uint i = 0u; i < 4u; i++) {
        int h = int(raw.h[2u + i]);
        v[2u * i] = d * float(bitfieldExtract(h, 0, 8));
        v[2u * i + 1u] = d * float(bitfieldExtract(h, 8, 8));
    }
#else
#if defined(W_Q4_0)
    float mn = -8.0 * d;
#else
    float mn = unpackHalf2x16(raw.h[1]).x;
#endif
    uint shift = ((kb / 8u + j) & 2u) * 2u;  // units 2, 3 of a block: the high nibbles
    [[unroll]] for (uint i = 0u; i < 4u; i++) {
        uint h = raw.h[2u + i] >> shift;
        v[2u * i] = d * float(h & 15u) + mn;
        v[2u * i + 1u] = d * float((h >> 8) & 15u) + mn;
    }
#endif
#else
    v = raw.v;
#endif
    bool ok = tm + r < pc.m && kb + 8u * j < pc.k;
    [[unroll]] for (uint i = 0u; i < 8u; i++)
        as[base + i] = float16_t(ok ? v[i] : 0.0);
#endif
}

void put_x(uint base, uint tn, uint kb, uint r, uint j, XRaw raw) {
#ifdef VSTORE
    bool ok = tn + r < pc.n && kb + 8u * j < pc.k;
#if defined(X_F16)
    bs4[base] = ok ? floatBitsToUint(raw.a) : uvec4(0u);
#else
    uvec4 h = uvec4(packFloat2x16(f16vec2(raw.a.xy)), packFloat2x16(f16vec2(raw.a.zw)),
                    packFloat2x16(f16vec2(raw.b.xy)), packFloat2x16(f16vec2(raw.b.zw)));
    bs4[base] = ok ? h : uvec4(0u);
#endif
#else
    float v[8];
#if defined(X_F16)
    unpack8(floatBitsToUint(raw.a), v);
#else
    v[0] = raw.a.x; v[1] = raw.a.y; v[2] = raw.a.z; v[3] = raw.a.w;
    v[4] = raw.b.x; v[5] = raw.b.y; v[6] = raw.b.z; v[7] = raw.b.w;
#endif
    bool ok = tn + r < pc.n && kb + 8u * j < pc.k;
    [[unroll]] for (uint i = 0u; i < 8u; i++)
        bs[base + i] = float16_t(ok ? v[i] : 0.0);
#endif
}
#else
void fetch_w(uint tm, uint kb, uint r, uint j, out float v[8]) {
    if (tm + r < pc.m && kb + 8u * j < pc.k) {
        load_w8(tm + r, kb / 8u + j, v);
    } else {
        [[unroll]] for (uint i = 0u; i < 8u; i++)
            v[i] = 0.0;
    }
}

void fetch_x(uint tn, uint kb, uint r, uint j, out float xv[8]) {
    if (tn + r < pc.n && kb + 8u * j < pc.k) {
        load_x8(tn + r, kb / 8u + j, xv);
    } else {
        [[unroll]] for (uint i = 0u; i < 8u; i++)
            xv[i] = 0.0;
    }
}

void put_w(uint base, float v[8]) {
    [[unroll]] for (uint i = 0u; i < 8u; i++)
        as[base + i] = float16_t(v[i]);
}

void put_x(uint base, float v[8]) {
    [[unroll]] for (uint i = 0u; i < 8u; i++)
        bs[base + i] = float16_t(v[i]);
}
#endif

void store_tile(FC acc, uint i0, uint j0, uint sg) {
    if (i0 >= pc.m || j0 >= pc.n)
        return;  // uniform in the subgroup
    // y[j * m + i]: column-major with stride m
    if (i0 + 16u <= pc.m && j0 + 16u <= pc.n && pc.m % 4u == 0u) {  // 16-byte aligned stride
        coopMatStoreNV(acc, y, j0 * pc.m + i0, pc.m, true);
    } else {
        coopMatStoreNV(acc, cs, sg * 256u, 16u, true);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        for (uint e = gl_SubgroupInvocationID; e < 256u; e += 32u) {
            uint i = e % 16u, j = e / 16u;
            if (i0 + i < pc.m && j0 + j < pc.n)
                y[(j0 + j) * pc.m + i0 + i] = cs[sg * 256u + e];
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();
    }
}

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint tm = gl_WorkGroupID.x * BM, tn = gl_WorkGroupID.y * BN;
    uint sg = gl_SubgroupID;
#ifdef N64
    uint wm = (sg % 4u) * 32u, wn = (sg / 4u) * 32u;
#else
    uint wm = (sg % 2u) * 64u, wn = (sg / 2u) * 32u;
#endif
    // this invocation's units: rows r0 + h * RSTEP, unit j
    uint r0 = tid / UPR, j = tid % UPR;
#ifdef VSTORE
    uint o0 = r0 * SV + j, ostep = RSTEP * SV;  // in units
#else
    uint o0 = r0 * ST + 8u * j, ostep = RSTEP * ST;
#endif

    FC c00 = FC(0.0), c01 = FC(0.0), c10 = FC(0.0), c11 = FC(0.0);
#ifndef N64
    FC c20 = FC(0.0), c21 = FC(0.0), c30 = FC(0.0), c31 = FC(0.0);
#endif

#ifdef FASTLD
    WRaw v[NUW];
    XRaw x[NUX];
    [[unroll]] for (uint h = 0u; h < NUW; h++)
        fetch_w(tm, 0u, r0 + h * RSTEP, j, v[h]);
    [[unroll]] for (uint h = 0u; h < NUX; h++)
        fetch_x(tn, 0u, r0 + h * RSTEP, j, x[h]);
    [[unroll]] for (uint h = 0u; h < NUW; h++)
        put_w(o0 + h * ostep, tm, 0u, r0 + h * RSTEP, j, v[h]);
    [[unroll]] for (uint h = 0u; h < NUX; h++)
        put_x(o0 + h * ostep, tn, 0u, r0 + h * RSTEP, j, x[h]);
#else
    float v[NUW][8], x[NUX][8];
    [[unroll]] for (uint h = 0u; h < NUW; h++)
        fetch_w(tm, 0u, r0 + h * RSTEP, j, v[h]);
    [[unroll]] for (uint h = 0u; h < NUX; h++)
        fetch_x(tn, 0u, r0 + h * RSTEP, j, x[h]);
    [[unroll]] for (uint h = 0u; h < NUW; h++)
        put_w(o0 + h * ostep, v[h]);
    [[unroll]] for (uint h = 0u; h < NUX; h++)
        put_x(o0 + h * ostep, x[h]);
#endif
    barrier();

    for (uint kb = 0u; kb < pc.k; kb += BK) {
        uint kn = kb + BK;
        bool more = kn < pc.k;  // uniform
#ifdef FASTLD
        // the next step's loads, in the same block as the products (clamped: always in bounds)
        [[unroll]] for (uint h = 0u; h < NUW; h++)
            fetch_w(tm, kn, r0 + h * RSTEP, j, v[h]);
        [[unroll]] for (uint h = 0u; h < NUX; h++)
            fetch_x(tn, kn, r0 + h * RSTEP, j, x[h]);
#else
        if (more) {
            [[unroll]] for (uint h = 0u; h < NUW; h++)
                fetch_w(tm, kn, r0 + h * RSTEP, j, v[h]);
            [[unroll]] for (uint h = 0u; h < NUX; h++)
                fetch_x(tn, kn, r0 + h * RSTEP, j, x[h]);
        }
#endif
        [[unroll]] for (uint ks = 0u; ks < BK; ks += 16u) {
            FA a0, a1, b0, b1;
            LOADA(a0, wm, ks);
            LOADA(a1, wm + 16u, ks);
            LOADB(b0, wn, ks);
            LOADB(b1, wn + 16u, ks);
            c00 = coopMatMulAddNV(a0, b0, c00);
            c01 = coopMatMulAddNV(a0, b1, c01);
            c10 = coopMatMulAddNV(a1, b0, c10);
            c11 = coopMatMulAddNV(a1, b1, c11);
#ifndef N64
            FA a2, a3;
            LOADA(a2, wm + 32u, ks);
            LOADA(a3, wm + 48u, ks);
            c20 = coopMatMulAddNV(a2, b0, c20);
            c21 = coopMatMulAddNV(a2, b1, c21);
            c30 = coopMatMulAddNV(a3, b0, c30);
            c31 = coopMatMulAddNV(a3, b1, c31);
#endif
        }
        barrier();  // this step's reads before the next step's stores
        if (more) {
#ifdef FASTLD
            [[unroll]] for (uint h = 0u; h < NUW; h++)
                put_w(o0 + h * ostep, tm, kn, r0 + h * RSTEP, j, v[h]);
            [[unroll]] for (uint h = 0u; h < NUX; h++)
                put_x(o0 + h * ostep, tn, kn, r0 + h * RSTEP, j, x[h]);
#else
            [[unroll]] for (uint h = 0u; h < NUW; h++)
                put_w(o0 + h * ostep, v[h]);
            [[unroll]] for (uint h = 0u; h < NUX; h++)
                put_x(o0 + h * ostep, x[h]);
#endif
        }
        barrier();  // the stores before the next step's reads
    }

    uint i0 = tm + wm, j0 = tn + wn;
    store_tile(c00, i0, j0, sg);
    store_tile(c01, i0, j0 + 16u, sg);
    store_tile(c10, i0 + 16u, j0, sg);
    store_tile(c11, i0 + 16u, j0 + 16u, sg);
#ifndef N64
    store_tile(c20, i0 + 32u, j0, sg);
    store_tile(c21, i0 + 32u, j0 + 16u, sg);
    store_tile(c30, i0 + 48u, j0, sg);
    store_tile(c31, i0 + 48u, j0 + 16u, sg);
#endif
}
