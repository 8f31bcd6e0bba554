// Sums NR*NC per-invocation partial results over the workgroup; result j is valid in
// invocation j (j < NR*NC) after reduce_all(). Subgroup adds where present (USE_SUBGROUP),
// else a shared-memory tree (WG a power of two). Needs WG, NR, NC constants. RED_EXTRA more
// slots after the NR*NC results (acc[NR*NC ..]) are summed too, for reduce_slot().
#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

#ifndef RED_EXTRA
#define RED_EXTRA 0
#endif
shared float red[WG * (NR * NC + uint(RED_EXTRA))];
float acc[NR * NC + uint(RED_EXTRA)];  // per-invocation partial sums, summed by reduce_all()

float reduce_all(uint tid) {
    const uint J = NR * NC + uint(RED_EXTRA);
#ifdef USE_SUBGROUP
    for (uint j = 0u; j < J; j++) {
        float s = subgroupAdd(acc[j]);
        if (subgroupElect())
            red[gl_SubgroupID * J + j] = s;
    }
    barrier();
    float t = 0.0;
    if (tid < J)
        for (uint g = 0u; g < gl_NumSubgroups; g++)
            t += red[g * J + tid];
    return t;
#else
    for (uint j = 0u; j < J; j++)
        red[tid * J + j] = acc[j];
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
        if (tid < s)
            for (uint j = 0u; j < J; j++)
                red[tid * J + j] += red[(tid + s) * J + j];
        barrier();
    }
    return tid < J ? red[tid] : 0.0;
#endif
}

#if RED_EXTRA > 0
// The workgroup's total of slot j (any j < NR*NC + RED_EXTRA), in any invocation, after
// reduce_all().
float reduce_slot(uint j) {
    const uint J = NR * NC + uint(RED_EXTRA);
#ifdef USE_SUBGROUP
    float t = 0.0;
    for (uint g = 0u; g < gl_NumSubgroups; g++)
        t += red[g * J + j];
    return t;
#else
    return red[j];
#endif
}
#endif
