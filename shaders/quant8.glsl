// Writes block id of the int8-quantized activations (layout in dot.glsl: nblocks blocks of
// packed values, then nblocks (scale, sum) pairs) from its 32 values: scale = max|x| / 127,
// values rounded to even. quantize_act.comp and the ops that produce a matrix product's input
// themselves (rmsnorm, silu-mul, attention) share it, so that all give the same bits.
// The includer declares XQ { uvec4 xq4[]; } and XD { vec2 xd[]; } on one binding.
void store_q8_block(uint id, uint nblocks, float v[32]) {
    float amax = 0.0;
    for (uint i = 0u; i < 32u; i++)
        amax = max(amax, abs(v[i]));
    float d = amax / 127.0;
    float inv = d > 0.0 ? 1.0 / d : 0.0;
    int sum = 0;
    uint packed[8];
    for (uint wd = 0u; wd < 8u; wd++) {
        packed[wd] = 0u;
        for (uint i = 0u; i < 4u; i++) {
            int q = clamp(int(roundEven(v[4u * wd + i] * inv)), -127, 127);
            sum += q;
            packed[wd] |= (uint(q) & 0xffu) << (8u * i);
        }
    }
    xq4[2u * id] = uvec4(packed[0], packed[1], packed[2], packed[3]);
    xq4[2u * id + 1u] = uvec4(packed[4], packed[5], packed[6], packed[7]);
    xd[4u * nblocks + id] = vec2(d, float(sum));
}
