// Output stage of the matrix-vector kernels (matvec.comp, matvec_dot.comp), with the epilogues
// that fold the op after a product of the decode step into it (models/llama-vulkan.c), so that
// the op needs no dispatch of its own. Epilogues take one column (NC == 1).
//  (none) y = W x.
//  GLU    W holds 2m rows, the m gate rows then the m up rows (the fused gate/up matrix as it is
//         uploaded); the workgroup's NR rows are NRO = NR/2 gate rows and the same up rows, and
//         y = silu(gate) * up (m values).
//  GLU+Q8 y also as int8 blocks (quant8.glsl) for the int-dot down product: the last of the
//         32/NRO workgroups of a block of 32 (a counter per block) quantizes it; m % 32 == 0.
//  NORM   y = xin + W x (the residual after the product); the last workgroup of all (one
//         counter) takes y's sum of squares and writes xb = y / rms(y) * nw, the next product's
//         input (+Q8: also as int8 blocks, m % 32 == 0).
// Counters start at 0; the last workgroup sets its counter back to 0 for the next dispatch.
// Memory model: y and the counters are coherent; every workgroup's writes of y are released at
// device scope (barrier with device-scope acquire-release semantics) before one invocation
// increments the counter with acquire-release semantics, and the last workgroup acquires them
// the same way before it reads y. Nothing relies on a coherent L1.
// Bindings: 2 Y; GLU+Q8: 3 counters, 4 int8 blocks; NORM: 3 xin, 4 nw, 5 xb, 6 counter,
// 7 int8 blocks (Q8). The includer declares pc (types.glsl), WG, NR, NC and red (reduce.glsl).

#if defined(GLU)
const uint NRO = NR / 2u;  // output rows per workgroup
#else
const uint NRO = NR;
#endif

#if defined(NORM) || (defined(GLU) && defined(Q8))
#define EPI_LAST
#extension GL_KHR_memory_scope_semantics : require
layout(std430, binding = 2) coherent buffer Y { float y[]; };
layout(std430, binding = 2) coherent buffer Y4 { vec4 y4[]; };  // m % 4 == 0 only
shared bool epi_last;
#else
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
#endif

#if defined(NORM)
layout(std430, binding = 3) readonly buffer ResIn { float xin[]; };
layout(std430, binding = 4) readonly buffer NormW { float nw[]; };
layout(std430, binding = 5) coherent buffer NormOut { float xb[]; };  // read back for Q8
layout(std430, binding = 5) coherent buffer NormOut4 { vec4 xb4[]; };
layout(std430, binding = 4) readonly buffer NormW4 { vec4 nw4[]; };
layout(std430, binding = 6) coherent buffer Cnt { uint cnt[]; };
#define EPI_XQ 7
#elif defined(EPI_LAST)
layout(std430, binding = 3) coherent buffer Cnt { uint cnt[]; };
#define EPI_XQ 4
#endif

#if defined(Q8)
#extension GL_EXT_control_flow_attributes : enable
// The int8 blocks in the layout of quant8.glsl (which writes them from a 32-value array: an
// array that large in a kernel slows lavapipe's matrix-vector kernels several times over).
layout(std430, binding = EPI_XQ) writeonly buffer EpiQ { uint epi_w[]; };
layout(std430, binding = EPI_XQ) writeonly buffer EpiD { vec2 epi_d[]; };
// Block b of nb from the 32 values SRC[8b .. 8b+7] (vec4): scale max|v| / 127, values
// rounded to even, as quant8.glsl does; the values are read twice, so that none is held.
#define Q8_BLOCK_FN(NAME, SRC)                                                              \
void NAME(uint b, uint nb) {                                                                \
    float amax = 0.0;                                                                       \
    [[unroll]] for (uint j = 0u; j < 8u; j++) {                                             \
        vec4 a = abs(SRC[8u * b + j]);                                                      \
        amax = max(amax, max(max(a.x, a.y), max(a.z, a.w)));                                \
    }                                                                                       \
    float d = amax / 127.0, inv = d > 0.0 ? 1.0 / d : 0.0;                                  \
    int sum = 0;                                                                            \
    [[unroll]] for (uint j = 0u; j < 8u; j++) {                                             \
        ivec4 q = clamp(ivec4(roundEven(SRC[8u * b + j] * inv)), ivec4(-127), ivec4(127));  \
        sum += q.x + q.y + q.z + q.w;                                                       \
        uvec4 u = uvec4(q) & 0xffu;                                                         \
        epi_w[8u * b + j] = u.x | (u.y << 8) | (u.z << 16) | (u.w << 24);                   \
    }                                                                                       \
    epi_d[4u * nb + b] = vec2(d, float(sum));                                               \
}
#if defined(NORM)
Q8_BLOCK_FN(q8_block_xb, xb4)
#else
Q8_BLOCK_FN(q8_block_y, y4)
#endif
#endif

#if defined(GLU)
shared float epi_s[NR];
#endif

// First output row of this workgroup.
uint epi_row0() {
    return (gl_WorkGroupID.x + gl_WorkGroupID.y * pc.gx) * NRO;
}

// Weight row of the workgroup's r-th row; rows past m are clamped (computed, never stored).
uint w_row(uint row0, uint r) {
#if defined(GLU)
    return (r < NRO ? 0u : pc.m) + min(row0 + r % NRO, pc.m - 1u);
#else
    return min(row0 + r, pc.m - 1u);
#endif
}

#if defined(EPI_LAST)
// Device-scope release of this invocation's buffer writes and acquire of others', at a
// workgroup barrier.
void epi_barrier() {
    controlBarrier(gl_ScopeWorkgroup, gl_ScopeDevice, gl_StorageSemanticsBuffer | gl_StorageSemanticsShared,
                   gl_SemanticsAcquireRelease);
}
#endif

#if defined(NORM)
// The last workgroup: y's sum of squares, then xb (and the int8 blocks) from y; vec4 loads,
// four in flight per invocation, where m % 4 == 0.
void norm_finish(uint tid) {
    bool v4 = pc.m % 4u == 0u;
    uint m4 = v4 ? pc.m / 4u : 0u;
    float s = 0.0;
    for (uint i0 = tid; i0 < m4; i0 += 4u * WG) {
        vec4 a0 = y4[i0];
        vec4 a1 = i0 + WG < m4 ? y4[i0 + WG] : vec4(0.0);
        vec4 a2 = i0 + 2u * WG < m4 ? y4[i0 + 2u * WG] : vec4(0.0);
        vec4 a3 = i0 + 3u * WG < m4 ? y4[i0 + 3u * WG] : vec4(0.0);
        s += dot(a0, a0) + dot(a1, a1) + dot(a2, a2) + dot(a3, a3);
    }
    for (uint i = 4u * m4 + tid; i < pc.m; i += WG)
        s += y[i] * y[i];
#ifdef USE_SUBGROUP
    // (a loop of barriers here made lavapipe's kernels several times slower, even when
    // this code did not run)
    float ss = subgroupAdd(s);
    if (subgroupElect())
        red[gl_SubgroupID] = ss;
    barrier();
    float tot = 0.0;
    for (uint g = 0u; g < gl_NumSubgroups; g++)
        tot += red[g];
#else
    red[tid] = s;
    barrier();
    for (uint h = WG / 2u; h > 0u; h >>= 1) {
        if (tid < h)
            red[tid] += red[tid + h];
        barrier();
    }
    float tot = red[0];
#endif
    float scale = inversesqrt(tot / float(pc.m) + pc.eps);
    for (uint i0 = tid; i0 < m4; i0 += 2u * WG) {
        vec4 a0 = y4[i0], w0 = nw4[i0];
        bool two = i0 + WG < m4;
        vec4 a1 = two ? y4[i0 + WG] : vec4(0.0), w1 = two ? nw4[i0 + WG] : vec4(0.0);
        xb4[i0] = a0 * scale * w0;
        if (two)
            xb4[i0 + WG] = a1 * scale * w1;
    }
    for (uint i = 4u * m4 + tid; i < pc.m; i += WG)
        xb[i] = y[i] * scale * nw[i];
#if defined(Q8)
    memoryBarrierBuffer();  // xb of the other invocations
    barrier();
    uint nb = pc.m / 32u;
    for (uint b = tid; b < nb; b += WG)
        q8_block_xb(b, nb);
#endif
}
#endif

// Stores the workgroup's results (result j in invocation j < NR * NC, from reduce_all()) and
// runs the epilogue. Called by every invocation of a workgroup with row0 < m.
void epi_store(uint row0, uint tid, float t) {
#if defined(GLU)
    if (tid < NR)
        epi_s[tid] = t;
    barrier();
    if (tid < NRO && row0 + tid < pc.m) {
        float g = epi_s[tid];
        y[row0 + tid] = g / (1.0 + exp(-g)) * epi_s[NRO + tid];
    }
#elif defined(NORM)
    if (tid < NR && row0 + tid < pc.m)
        y[row0 + tid] = xin[row0 + tid] + t;
#else
    if (tid < NR * NC) {
        uint r = tid / NC, c = tid % NC;
        if (row0 + r < pc.m)
            y[c * pc.m + row0 + r] = t;
    }
#endif
#if defined(EPI_LAST)
#if defined(NORM)
    uint ci = 0u, total = (pc.m + NRO - 1u) / NRO;  // all workgroups with rows
#else
    uint ci = row0 / 32u, total = 32u / NRO;         // the workgroups of one block of 32
#endif
    epi_barrier();
    if (tid == 0u)
        epi_last = atomicAdd(cnt[ci], 1u, gl_ScopeDevice, gl_StorageSemanticsBuffer, gl_SemanticsAcquireRelease) ==
                   total - 1u;
    epi_barrier();
    if (!epi_last)
        return;
#if defined(NORM)
    norm_finish(tid);
#else
    if (tid == 0u)
        q8_block_y(ci, pc.m / 32u);
#endif
    if (tid == 0u)
        cnt[ci] = 0u;  // ready for the next dispatch
#endif
}
