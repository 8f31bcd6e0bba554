// Weight and activation access for the extended storage formats (docs/QUANTIZATION.md), read
// by matvec_ext.comp and matmul_ext.comp. One format per variant:
//   W_Q8_0, W_Q4_0, W_Q4_1, W_NF4  blocks of G elements (G = 32, 64, 128, a specialization
//                                  constant with id G_ID): fp16 d [fp16 m] then qs bytes
//   W_Q5_0, W_Q5_1                 ggml's Q5_0 / Q5_1 (G = 32): fp16 d [fp16 m], 4 bytes qh
//                                  (bit j: the 5th bit of element j), 16 qs bytes as Q4_0's;
//                                  value d(q - 16) / dq + m
//   W_FP8, W_I8                    per row a 16-byte header (f32 scale, 12 zero bytes), then
//                                  k code bytes (E4M3 / int8); row stride k + 16, k % 32 == 0
//   W_Q4_K, W_Q5_K, W_Q6_K         ggml's K-quant super-blocks of 256 (G = 256): 144 bytes
//                                  (fp16 d, dmin, 12 bytes of 6-bit scales/mins, 128 qs), 176
//                                  bytes (the same with 32 qh bytes before the qs) and 210
//                                  bytes (128 ql, 64 qh, 16 int8 scales, fp16 d)
// Everything is read as 32-bit words and unpacked (blocks of 18/34/66/130 bytes are only 2-byte
// aligned), so no variant needs 8/16-bit storage or fp16 arithmetic; arithmetic is fp32.
//
// A "unit" is 32 weights of one row that one invocation decodes at once: for the 4-bit formats
// 16 consecutive qs bytes of a block, whose low nibbles are row elements xa..xa+15 and high
// nibbles xb..xb+15 (xb = xa + G/2, ggml's nibble order); for the 8-bit formats 32 consecutive
// code bytes, elements xa..xa+31 (xb = xa + 16). Slot s (0..31) of a unit is element xa + s for
// s < 16, else xb + s - 16. Units of a row: k/32, disjoint, covering the row. The K-quants'
// units are 4-bit-style too (16 bytes of ql/qs, low nibbles 16 elements, high nibbles another
// 16), each half with its own scale: Q4_K unit j (0..7) of a super-block is qs bytes 16j..16j+15,
// elements 64(j/2) + 16(j%2) + i (scale 2(j/2)) and those + 32 (scale 2(j/2) + 1), Q5_K's the
// same with their 5th bits in qh bytes 16(j%2) + i at bits 2(j/2) and 2(j/2) + 1; Q6_K unit j
// is ql bytes 16j.., elements 128(j/4) + 16(j%4) + i (scale 8(j/4) + j%4) and those + 64 (scale
// + 4), their upper 2 bits in qh bytes 32(j/4) + 16(j%2) + i at bit 2(j%4/2) (and + 4).

layout(push_constant) uniform Push {
    uint m;      // rows of W, length of each output vector
    uint k;      // columns of W, length of each activation vector
    uint n;      // activation vectors
    uint gx;     // workgroups along x (the grid may wrap into y for large m)
    uint ldy;    // values per output column (m, or more where these rows are a block of Y)
    uint y0;     // output row of W's first row
} pc;

layout(constant_id = G_ID) const uint G = 32;  // group size of the block formats

#if defined(W_Q4_K) || defined(W_Q5_K) || defined(W_Q6_K)
#define KQUANT
#endif
#if defined(W_Q5_0) || defined(W_Q5_1)
#define Q5_BITS      // ggml's Q5_0 / Q5_1: 32 fifth bits after the header's scale(s)
#endif
#if defined(W_Q6_K) || defined(W_Q5_K) || defined(Q5_BITS)
#define HIBITS       // a fifth/sixth bit per code, from separate bytes
#endif
#if defined(W_Q4_0) || defined(W_Q4_1) || defined(W_NF4) || defined(KQUANT) || defined(Q5_BITS)
#define NIBBLES
#define UW 4u        // words per unit
#else
#define UW 8u
#endif
#if defined(W_FP8) || defined(W_I8)
#define ROWSCALE
#endif
#if defined(W_Q5_1)
#define HDR 8u       // header bytes of a block
#elif defined(W_Q5_0)
#define HDR 6u
#elif defined(W_Q4_1)
#define HDR 4u
#else
#define HDR 2u
#endif
#if defined(W_Q4_K)
#define BLOCK_BYTES 144u
#elif defined(W_Q5_K)
#define BLOCK_BYTES 176u
#elif defined(W_Q6_K)
#define BLOCK_BYTES 210u
#elif defined(NIBBLES)
#define BLOCK_BYTES (HDR + G / 2u)
#else
#define BLOCK_BYTES (HDR + G)
#endif

layout(std430, binding = 0) readonly buffer W { uint w32[]; };
#ifdef ROWSCALE
layout(std430, binding = 0) readonly buffer W4 { uvec4 w4[]; };  // same buffer, 16-byte loads
#endif

// 16 bits at an even byte offset
uint w_rd16(uint off) {
    return (w32[off >> 2] >> ((off & 2u) * 8u)) & 0xffffu;
}

// the byte at any offset
uint w_rd8(uint off) {
    return (w32[off >> 2] >> ((off & 3u) * 8u)) & 0xffu;
}

// nw (<= 8) words starting at an even byte offset; at offsets 2 mod 4 each word is the upper
// half of one stored word and the lower half of the next (never reads past the last byte).
void w_words(uint off, uint nw, out uint q[8]) {
    uint i0 = off >> 2;
#ifdef ROWSCALE
    // units are 16-byte aligned
    uvec4 a = w4[i0 >> 2], b = w4[(i0 >> 2) + 1u];
    q[0] = a.x; q[1] = a.y; q[2] = a.z; q[3] = a.w;
    q[4] = b.x; q[5] = b.y; q[6] = b.z; q[7] = b.w;
#else
    for (uint i = 0u; i < 8u; i++)
        q[i] = 0u;
    if ((off & 2u) == 0u) {
        for (uint i = 0u; i < nw; i++)
            q[i] = w32[i0 + i];
    } else {
        uint a = w32[i0];
        for (uint i = 0u; i < nw; i++) {
            uint b = w32[i0 + i + 1u];
            q[i] = (a >> 16) | (b << 16);
            a = b;
        }
    }
#endif
}

#ifdef W_NF4
// QLoRA's levels, the same f32 values as qd_nf4_levels[] (models/quant/quant-rtn.c)
const float NF4_LEVELS[16] = float[16](
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0);
shared float nf4_lut[16];
#endif

// Per-workgroup tables; call once at the start, before any barrier-free early return.
void tables_init(uint tid) {
#ifdef W_NF4
    if (tid < 16u)
        nf4_lut[tid] = NF4_LEVELS[tid];
    barrier();
#endif
}

#if defined(W_Q4_K) || defined(W_Q5_K)
// Scale and min j (0..7) of a Q4_K super-block whose 12 packed bytes start at byte off (6 bits
// each: j < 4 in the low bits of bytes j and j + 4, j >= 4 split over byte j + 4's nibbles and
// the top 2 bits of bytes j - 4 and j).
void q4k_scale_min(uint off, uint j, out float sc, out float mn) {
    if (j < 4u) {
        sc = float(w_rd8(off + j) & 63u);
        mn = float(w_rd8(off + j + 4u) & 63u);
    } else {
        uint b = w_rd8(off + j + 4u);
        sc = float((b & 15u) | ((w_rd8(off + j - 4u) >> 6) << 4));
        mn = float((b >> 4) | ((w_rd8(off + j) >> 6) << 4));
    }
}
#endif

// Byte offset of unit u's first code byte in row `row`, the scales d and offsets mn of its low
// (.x: slots 0-15) and high (.y: slots 16-31) halves (value of a code c: d*c + mn for Q4_0
// (c = nibble, mn = -8d) / Q4_1 / Q4_K (mn = -dmin*min) / Q5_K, Q5_1, Q5_0 (c = 5 bits; Q5_0:
// mn = -16d) / Q6_K (c = 6 bits, mn = -32d), d*c for Q8_0 / I8, d*NF4[c], d*e4m3(c)); for the
// 5- and 6-bit formats also the offset of their high-bit bytes and (Q5_K, Q6_K) their shift.
void unit_info(uint row, uint u, out uint qoff, out vec2 d, out vec2 mn, out uint hoff, out uint hsh) {
    mn = vec2(0.0);
    hoff = 0u;
    hsh = 0u;
#if defined(KQUANT)
    uint b = u / 8u, j = u % 8u;
    uint off = (row * (pc.k / 256u) + b) * BLOCK_BYTES;
#if defined(W_Q4_K) || defined(W_Q5_K)
    float dd = unpackHalf2x16(w_rd16(off)).x, dm = unpackHalf2x16(w_rd16(off + 2u)).x;
    float s0, m0, s1, m1;
    q4k_scale_min(off + 4u, 2u * (j / 2u), s0, m0);
    q4k_scale_min(off + 4u, 2u * (j / 2u) + 1u, s1, m1);
    d = dd * vec2(s0, s1);
    mn = -dm * vec2(m0, m1);
#if defined(W_Q5_K)
    qoff = off + 48u + 16u * j;
    hoff = off + 16u + 16u * (j % 2u);
    hsh = 2u * (j / 2u);
#else
    qoff = off + 16u + 16u * j;
#endif
#else
    float dd = unpackHalf2x16(w_rd16(off + 208u)).x;
    uint c = j / 4u, h = j % 4u;
    int slo = bitfieldExtract(int(w_rd8(off + 192u + 8u * c + h)), 0, 8);
    int shi = bitfieldExtract(int(w_rd8(off + 196u + 8u * c + h)), 0, 8);
    d = dd * vec2(float(slo), float(shi));
    mn = -32.0 * d;
    qoff = off + 16u * j;
    hoff = off + 128u + 32u * c + 16u * (h % 2u);
    hsh = 2u * (h / 2u);
#endif
#elif defined(ROWSCALE)
    uint off = row * (pc.k + 16u);
    qoff = off + 16u + 32u * u;
    d = vec2(uintBitsToFloat(w32[off >> 2]));
#else
    const uint upb = G / 32u;  // units per block
    uint b = u / upb, j = u % upb;
    uint off = (row * (pc.k / G) + b) * BLOCK_BYTES;
    d = vec2(unpackHalf2x16(w_rd16(off)).x);
#if defined(W_Q4_0)
    mn = -8.0 * d;
#elif defined(W_Q4_1)
    mn = vec2(unpackHalf2x16(w_rd16(off + 2u)).x);
#elif defined(W_Q5_0)
    mn = -16.0 * d;
    hoff = off + 2u;
#elif defined(W_Q5_1)
    mn = vec2(unpackHalf2x16(w_rd16(off + 2u)).x);
    hoff = off + 4u;
#endif
    qoff = off + HDR + 4u * UW * j;
#endif
}

// Row elements of slots 0 and 16 of unit u.
void unit_elems(uint u, out uint xa, out uint xb) {
#if defined(W_Q4_K) || defined(W_Q5_K)
    uint b = u / 8u, j = u % 8u;
    xa = 256u * b + 64u * (j / 2u) + 16u * (j % 2u);
    xb = xa + 32u;
#elif defined(W_Q6_K)
    uint b = u / 8u, j = u % 8u;
    xa = 256u * b + 128u * (j / 4u) + 16u * (j % 4u);
    xb = xa + 64u;
#elif defined(NIBBLES)
    uint b = u / (G / 32u), j = u % (G / 32u);
    xa = b * G + 16u * j;
    xb = xa + G / 2u;
#else
    xa = 32u * u;
    xb = xa + 16u;
#endif
}

// E4M3FN (bias 7; e = 0: subnormal m * 2^-9); 0x7f/0xff (NaN) never written by the quantizer.
float e4m3(uint v) {
    uint e = (v >> 3) & 15u, mt = v & 7u;
    float a = e == 0u ? float(mt) * (1.0 / 512.0) : uintBitsToFloat(((e + 120u) << 23) | (mt << 20));
    return (v & 0x80u) != 0u ? -a : a;
}

#ifdef NIBBLES
// One word of nibble bytes: low nibbles (4 elements at the unit's lo half) and high nibbles;
// for Q6_K hw is the matching word of qh bytes shifted right by the unit's hsh (bits 0-1 of
// each byte: the low nibbles' upper bits, bits 4-5: the high nibbles').
void dec_word(uint wd, uint hw, vec2 d, vec2 mn, out vec4 lo, out vec4 hi) {
    uvec4 b = (uvec4(wd) >> uvec4(0u, 8u, 16u, 24u)) & 0xffu;
    uvec4 l = b & 15u, h = b >> 4;
#if defined(HIBITS)
    uvec4 q = (uvec4(hw) >> uvec4(0u, 8u, 16u, 24u)) & 0xffu;
    l |= (q & 3u) << 4;
    h |= ((q >> 4) & 3u) << 4;
#endif
#ifdef W_NF4
    lo = d.x * vec4(nf4_lut[l.x], nf4_lut[l.y], nf4_lut[l.z], nf4_lut[l.w]);
    hi = d.y * vec4(nf4_lut[h.x], nf4_lut[h.y], nf4_lut[h.z], nf4_lut[h.w]);
#else
    lo = fma(vec4(d.x), vec4(l), vec4(mn.x));
    hi = fma(vec4(d.y), vec4(h), vec4(mn.y));
#endif
}
#else
// One word of code bytes: 4 consecutive elements.
vec4 dec_word(uint wd, float d) {
#if defined(W_FP8)
    return d * vec4(e4m3(wd & 0xffu), e4m3((wd >> 8) & 0xffu), e4m3((wd >> 16) & 0xffu), e4m3(wd >> 24));
#else
    ivec4 v = ivec4(uvec4(wd) << uvec4(24u, 16u, 8u, 0u)) >> 24;
    return d * vec4(v);
#endif
}
#endif

// The hw argument of dec_word() from a word of hi-bit bytes and the unit's hsh: Q6_K's 2-bit
// pairs shifted down; Q5_K's bits hsh (low nibbles) and hsh + 1 (high) moved to bits 0 and 4.
uint hi_word(uint w, uint hsh) {
#if defined(W_Q5_K)
    return ((w >> hsh) & 0x01010101u) | (((w >> (hsh + 1u)) & 0x01010101u) << 4);
#else
    return w >> hsh;
#endif
}

#ifdef Q5_BITS
// Q5_0's / Q5_1's 32 qh bits at hoff as the hw word of dec_word() for qs word i: byte e gets the 5th
// bit of element 4i + e in bit 0 and that of element 16 + 4i + e in bit 4.
uint q5_hw(uint hoff, uint i) {
    uint qh = w_rd16(hoff) | (w_rd16(hoff + 2u) << 16), hw = 0u;
    for (uint e = 0u; e < 4u; e++)
        hw |= (((qh >> (4u * i + e)) & 1u) | (((qh >> (16u + 4u * i + e)) & 1u) << 4)) << (8u * e);
    return hw;
}
#endif

// The 32 weights of unit u of row `row` by slot: wv[i] holds slots 4i..4i+3.
void load_unit(uint row, uint u, out vec4 wv[8]) {
    uint qoff, hoff, hsh, q[8], qh[8];
    vec2 d, mn;
    unit_info(row, u, qoff, d, mn, hoff, hsh);
    w_words(qoff, UW, q);
#if defined(W_Q6_K) || defined(W_Q5_K)
    w_words(hoff, 4u, qh);
#elif defined(Q5_BITS)
    for (uint i = 0u; i < 4u; i++)
        qh[i] = q5_hw(hoff, i);
#else
    for (uint i = 0u; i < 4u; i++)
        qh[i] = 0u;
#endif
#ifdef NIBBLES
    for (uint i = 0u; i < 4u; i++)
        dec_word(q[i], hi_word(qh[i], hsh), d, mn, wv[i], wv[i + 4u]);
#else
    for (uint i = 0u; i < 8u; i++)
        wv[i] = dec_word(q[i], d.x);
#endif
}

// Quarter qr (0..3) of unit u: 8 weights, v[i] at slot quarter_slot(qr, i).
uint quarter_slot(uint qr, uint i) {
#ifdef NIBBLES
    return i < 4u ? 4u * qr + i : 12u + 4u * qr + i;
#else
    return 8u * qr + i;
#endif
}

void load_quarter(uint row, uint u, uint qr, out float v[8]) {
    uint qoff, hoff, hsh, q[8], qh[8];
    vec2 d, mn;
    unit_info(row, u, qoff, d, mn, hoff, hsh);
#ifdef NIBBLES
    w_words(qoff + 4u * qr, 1u, q);
#if defined(W_Q6_K) || defined(W_Q5_K)
    w_words(hoff + 4u * qr, 1u, qh);
#elif defined(Q5_BITS)
    qh[0] = q5_hw(hoff, qr);
#else
    qh[0] = 0u;
#endif
    vec4 lo, hi;
    dec_word(q[0], hi_word(qh[0], hsh), d, mn, lo, hi);
    v[0] = lo.x; v[1] = lo.y; v[2] = lo.z; v[3] = lo.w;
    v[4] = hi.x; v[5] = hi.y; v[6] = hi.z; v[7] = hi.w;
#else
#ifdef ROWSCALE
    q[0] = w32[(qoff >> 2) + 2u * qr];
    q[1] = w32[(qoff >> 2) + 2u * qr + 1u];
#else
    w_words(qoff + 8u * qr, 2u, q);
#endif
    vec4 a = dec_word(q[0], d.x), b = dec_word(q[1], d.x);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
#endif
}

// ---- activations: fp32 or (X_F16) fp16, read as 16-byte vectors; binding XB ----
#ifdef XB
#if defined(X_F16)
layout(std430, binding = XB) readonly buffer X4 { uvec4 x4[]; };
#else
layout(std430, binding = XB) readonly buffer X4 { vec4 x4[]; };
#endif

// Elements e0 .. e0+7 of activation column c (e0 % 8 == 0; k % 32 == 0, so always in the row).
void load_x8(uint c, uint e0, out vec4 a, out vec4 b) {
    uint base = c * pc.k + e0;
#if defined(X_F16)
    uvec4 h = x4[base / 8u];
    a = vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
    b = vec4(unpackHalf2x16(h.z), unpackHalf2x16(h.w));
#else
    a = x4[base / 4u];
    b = x4[base / 4u + 1u];
#endif
}
#endif // XB
