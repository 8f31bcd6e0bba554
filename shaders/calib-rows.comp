#version 450
// Calibration (models/llama-vulkan-capture.c): keeps every stride-th token's row of X (n × cols
// f32) for AWQ. Token t of this submission is token base + pos0 + t of the calibration stream
// (base: the window's first, pos0: the submission's first position); it goes to row
// (base + pos0 + t) / stride of R while that is below max_rows.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer R { float r[]; };
layout(std430, binding = 2) readonly buffer B { uint base; };
layout(std430, binding = 3) readonly buffer Q { uint pos0; };
layout(push_constant) uniform P { uint cols, stride, max_rows; } p;
void main() {
    uint t = gl_WorkGroupID.y, c = gl_GlobalInvocationID.x, gi = base + pos0 + t;
    if (c >= p.cols || gi % p.stride != 0u || gi / p.stride >= p.max_rows)
        return;
    r[(gi / p.stride) * p.cols + c] = x[t * p.cols + c];
}
