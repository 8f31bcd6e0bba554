// Output stage of the matrix-vector kernels (matvec.comp, matvec_dot.comp), with the epilogues
// that fold the op after a product of the decode step into it (models/llama-vulkan.c), so that
// the op needs no dispatch of its own. Epilogues take one column (NC == 1).
//  (none) y = W x.
//  GLU    W holds 2m rows, the m gate rows then the m up rows (the fused gate/up matrix as it is
//         uploaded); the workgroup's NR rows are NRO = NR/2 gate rows and the same up rows, and
//         y = silu(gate) * up (m values).
//  GLU+Q8 y also as int8 blocks (quant8.glsl's layout) for the int-dot down product: the last of
//         the 32/NRO workgroups of a block of 32 (a counter per block) quantizes it; m % 32 == 0.
//  NORM   y = xin + W x (the residual after the product); the last workgroup of all (one
//         counter) takes y's sum of squares and writes xb = y / rms(y) * nw, the next product's
//         input.
//  NORM+Q8 the same input as int8 blocks only (xb is not written), m % 32 == 0, without a
//         workgroup that walks all of y: the last workgroup to finish rows of a block of 32 (a
//         counter per block) quantizes u = y * nw of the block and keeps its sum of squares of
//         y; the last such block (one more counter) sums those and multiplies every block's
//         scale by 1 / rms(y) (u * c quantizes to the same int8 values as u, scale times c).
// Counters start at 0; their last workgroup sets them back to 0 for the next dispatch.
// Memory model: y, the blocks and the counters are coherent. Invocation 0 writes the
// workgroup's rows of y itself and then increments the counter with device-scope
// acquire-release semantics (which releases its own writes: no device-scope barrier for the
// whole workgroup on the common path); a workgroup that finishes acquires through that atomic
// and passes it on to its other invocations with a barrier of device-scope acquire-release
// semantics; writes of several invocations are released the same way before the next counter.
// Nothing relies on a coherent L1 or on lavapipe's ordering.
// Bindings: 2 Y; GLU+Q8: 3 counters, 4 int8 blocks; NORM: 3 xin, 4 nw, 5 xb, 6 counters (NORM:
// one; NORM+Q8: m/32 + 1, then m/32 floats), 7 int8 blocks (Q8). The includer declares pc
// (types.glsl), WG, NR, NC and red (reduce.glsl).

#if defined(GLU)
const uint NRO = NR / 2u;  // output rows per workgroup
#else
const uint NRO = NR;
#endif

#if defined(NORM) || (defined(GLU) && defined(Q8))
#define EPI_LAST
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_control_flow_attributes : enable
layout(std430, binding = 2) coherent buffer Y { float y[]; };
layout(std430, binding = 2) coherent buffer Y4 { vec4 y4[]; };  // m % 4 == 0 only
shared bool epi_last;
#else
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
#endif

#if defined(NORM)
layout(std430, binding = 3) readonly buffer ResIn { float xin[]; };
layout(std430, binding = 4) readonly buffer NormW { float nw[]; };
layout(std430, binding = 5) writeonly buffer NormOut { float xb[]; };  // NORM without Q8
layout(std430, binding = 5) writeonly buffer NormOut4 { vec4 xb4[]; };
layout(std430, binding = 4) readonly buffer NormW4 { vec4 nw4[]; };
layout(std430, binding = 6) coherent buffer Cnt { uint cnt[]; };
layout(std430, binding = 6) coherent buffer CntF { float cntf[]; };  // NORM+Q8: block sums of squares
#define EPI_XQ 7
#elif defined(EPI_LAST)
layout(std430, binding = 3) coherent buffer Cnt { uint cnt[]; };
#define EPI_XQ 4
#endif

#if defined(Q8)
// The int8 blocks in the layout of quant8.glsl (which writes them from a 32-value array: an
// array that large in a kernel slows lavapipe's matrix-vector kernels several times over).
layout(std430, binding = EPI_XQ) writeonly buffer EpiQ { uint epi_w[]; };
layout(std430, binding = EPI_XQ) coherent buffer EpiD { vec2 epi_d[]; };  // NORM+Q8: rescaled
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
#if !defined(NORM)
Q8_BLOCK_FN(q8_block_y, y4)
#endif
#endif

#if defined(GLU) || defined(EPI_LAST)
shared float epi_s[NR];  // the workgroup's results
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
// The sum of s over the workgroup, in every invocation (uniform control flow; red is free).
float wg_sum(uint tid, float s) {
#ifdef USE_SUBGROUP
    // (a loop of barriers here made lavapipe's kernels several times slower, even where this
    // code did not run)
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
    return tot;
}
#endif

#if defined(NORM) && !defined(Q8)
// The last workgroup: y's sum of squares, then xb from y; vec4 loads, four in flight per
// invocation, where m % 4 == 0.
void norm_finish(uint tid) {
    uint m4 = pc.m % 4u == 0u ? pc.m / 4u : 0u;
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
    float scale = inversesqrt(wg_sum(tid, s) / float(pc.m) + pc.eps);
    for (uint i0 = tid; i0 < m4; i0 += 4u * WG) {
        vec4 a[4], w[4];
        [[unroll]] for (uint j = 0u; j < 4u; j++) {
            uint i = min(i0 + j * WG, m4 - 1u);
            a[j] = y4[i];
            w[j] = nw4[i];
        }
        [[unroll]] for (uint j = 0u; j < 4u; j++)
            if (i0 + j * WG < m4)
                xb4[i0 + j * WG] = a[j] * scale * w[j];
    }
    for (uint i = 4u * m4 + tid; i < pc.m; i += WG)
        xb[i] = y[i] * scale * nw[i];
}
#endif

#if defined(NORM) && defined(Q8)
shared bool nq_fin[2];      // this workgroup finished its first / second block
shared float nq_f[32];      // per lane: max |u| (0..15), sum of squares (16..31)
shared int nq_i[16];        // per lane: sum of the int8 values
shared float nq_d[16];      // per lane: its block's scale

// y of this workgroup's rows is written; finishes the blocks whose last rows these were, and
// the whole vector if they were the last blocks. Lanes 8i .. 8i+7 take block b0 + i, one vec4
// (one packed word) each.
void norm_q8(uint row0, uint tid) {
    uint nb = pc.m / 32u, b0 = row0 / 32u, nbl = min(row0 + NRO - 1u, pc.m - 1u) / 32u - b0 + 1u;
    if (tid == 0u)
        for (uint j = 0u; j < 2u; j++) {
            uint b = b0 + j, rows = (32u * b + 31u) / NRO - (32u * b) / NRO + 1u;  // workgroups of b
            nq_fin[j] = j < nbl && atomicAdd(cnt[b], 1u, gl_ScopeDevice, gl_StorageSemanticsBuffer,
                                             gl_SemanticsAcquireRelease) == rows - 1u;
        }
    barrier();
    uint nfin = uint(nq_fin[0]) + uint(nq_fin[1]);
    if (nfin == 0u)
        return;
    epi_barrier();  // the other workgroups' y, acquired by invocation 0
    uint i = tid / 8u, lane = tid % 8u, b = b0 + min(i, 1u);
    bool mine = tid < 16u && nq_fin[min(i, 1u)];
    vec4 u = vec4(0.0);
    if (mine) {
        vec4 v = y4[8u * b + lane];
        u = v * nw4[8u * b + lane];
        vec4 a = abs(u);
        nq_f[tid] = max(max(a.x, a.y), max(a.z, a.w));
        nq_f[16u + tid] = dot(v, v);
    }
    barrier();
    if (mine) {
        float amax = 0.0;
        for (uint j = 0u; j < 8u; j++)
            amax = max(amax, nq_f[8u * i + j]);
        float d = amax / 127.0, inv = d > 0.0 ? 1.0 / d : 0.0;
        ivec4 q = clamp(ivec4(roundEven(u * inv)), ivec4(-127), ivec4(127));
        uvec4 qu = uvec4(q) & 0xffu;
        epi_w[8u * b + lane] = qu.x | (qu.y << 8) | (qu.z << 16) | (qu.w << 24);
        nq_i[tid] = q.x + q.y + q.z + q.w;
        nq_d[tid] = d;
    }
    barrier();
    if (mine && lane == 0u) {
        int sum = 0;
        float ss = 0.0;
        for (uint j = 0u; j < 8u; j++) {
            sum += nq_i[tid + j];
            ss += nq_f[16u + tid + j];
        }
        epi_d[4u * nb + b] = vec2(nq_d[tid], float(sum));  // scale times rms(y) until rescaled
        cntf[nb + 1u + b] = ss;
        cnt[b] = 0u;
    }
    epi_barrier();
    if (tid == 0u)
        epi_last = atomicAdd(cnt[nb], nfin, gl_ScopeDevice, gl_StorageSemanticsBuffer, gl_SemanticsAcquireRelease) ==
                   nb - nfin;
    epi_barrier();
    if (!epi_last)
        return;
    float s = 0.0;
    for (uint bb = tid; bb < nb; bb += WG)
        s += cntf[nb + 1u + bb];
    float scale = inversesqrt(wg_sum(tid, s) / float(pc.m) + pc.eps);
    for (uint bb = tid; bb < nb; bb += WG)
        epi_d[4u * nb + bb].x *= scale;
    if (tid == 0u)
        cnt[nb] = 0u;
}
#endif

// Stores the workgroup's results (result j in invocation j < NR * NC, from reduce_all()) and
// runs the epilogue. Called by every invocation of a workgroup with row0 < m.
void epi_store(uint row0, uint tid, float t) {
#if !defined(EPI_LAST)
#if defined(GLU)
    if (tid < NR)
        epi_s[tid] = t;
    barrier();
    if (tid < NRO && row0 + tid < pc.m) {
        float g = epi_s[tid];
        y[row0 + tid] = g / (1.0 + exp(-g)) * epi_s[NRO + tid];
    }
#else
    if (tid < NR * NC) {
        uint r = tid / NC, c = tid % NC;
        if (row0 + r < pc.m)
            y[c * pc.m + row0 + r] = t;
    }
#endif
#else
    // invocation 0 writes the rows and counts them (see the memory model above)
    if (tid < NR)
        epi_s[tid] = t;
    barrier();
    if (tid == 0u)
        for (uint r = 0u; r < NRO; r++)
            if (row0 + r < pc.m) {
#if defined(GLU)
                float g = epi_s[r];
                y[row0 + r] = g / (1.0 + exp(-g)) * epi_s[NRO + r];
#else
                y[row0 + r] = xin[row0 + r] + epi_s[r];
#endif
            }
#if defined(NORM) && defined(Q8)
    norm_q8(row0, tid);
#elif defined(NORM)
    uint total = (pc.m + NRO - 1u) / NRO;  // all workgroups with rows
    if (tid == 0u)
        epi_last = atomicAdd(cnt[0], 1u, gl_ScopeDevice, gl_StorageSemanticsBuffer, gl_SemanticsAcquireRelease) ==
                   total - 1u;
    barrier();
    if (!epi_last)
        return;
    epi_barrier();  // the other workgroups' y, acquired by invocation 0
    norm_finish(tid);
    if (tid == 0u)
        cnt[0] = 0u;  // ready for the next dispatch
#else
    // GLU+Q8: the last of the block's workgroups quantizes it, all in invocation 0
    uint ci = row0 / 32u;
    if (tid == 0u &&
        atomicAdd(cnt[ci], 1u, gl_ScopeDevice, gl_StorageSemanticsBuffer, gl_SemanticsAcquireRelease) == 32u / NRO - 1u) {
        q8_block_y(ci, pc.m / 32u);
        cnt[ci] = 0u;  // ready for the next dispatch
    }
#endif
#endif
}
