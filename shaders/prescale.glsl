// -DPRESCALE for the matrix-vector kernels (matvec.comp, matvec_dot.comp; one column): the
// input is an RMSNorm's u = x * w without its scale 1/rms(x) (matvec_blk.comp's NORM wrote it),
// binding 3 holds x's sum of squares per block of 32 (k/32 floats), and the row results are
// multiplied by that scale (the products are linear in a common scale of the activations). The
// sum rides one more reduction slot (RED_EXTRA): include before reduce.glsl; needs pc and WG.
#if defined(PRESCALE)
#define RED_EXTRA 1
layout(std430, binding = 3) readonly buffer PS { float ps_in[]; };

// Up to 4 of the sums per invocation, loaded before the weights' loop and added only after it
// (an add here would make every invocation wait for them before its first weight load).
void ps_load(uint tid, out float pv[4]) {
    for (uint i = 0u; i < 4u; i++) {
        float v = ps_in[min(tid + i * WG, pc.k / 32u - 1u)];  // in bounds: never a read past k/32
        pv[i] = tid + i * WG < pc.k / 32u ? v : 0.0;
    }
}

// This invocation's part of the sum of squares: pv and the sums past the first 4 * WG.
float ps_part(uint tid, float pv[4]) {
    float s = pv[0] + pv[1] + pv[2] + pv[3];
    for (uint b = tid + 4u * WG; b < pc.k / 32u; b += WG)
        s += ps_in[b];
    return s;
}

// The RMSNorm scale from the workgroup's total sum of squares.
float ps_scale(float total) {
    return inversesqrt(total / float(pc.k) + pc.eps);
}
#endif
