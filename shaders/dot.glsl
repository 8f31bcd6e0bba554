// Packed 4 x int8 signed dot product (OpSDot, SPV_KHR_integer_dot_product) through
// GL_EXT_spirv_intrinsics, since Debian's glslang 12 lacks GL_EXT_integer_dot_product.
// Capabilities DotProduct (6019) and DotProductInput4x8BitPacked (6018); the last operand 0
// is PackedVectorFormat4x8Bit. The device must enable shaderIntegerDotProduct.
#extension GL_EXT_spirv_intrinsics : require
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4450)
int sdot4x8(uint x, uint y, spirv_literal int fmt);

// Quantized activations (quantize_act.comp), for B = n * k/32 blocks (block index c*k/32 + b):
// first B x 32 bytes, the 32 int8 values of each block packed 4 per word (two uvec4), then
// B x 8 bytes, the block's scale and the sum of its 32 int8 values (as float).
