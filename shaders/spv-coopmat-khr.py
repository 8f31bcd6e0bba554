#!/usr/bin/env python3
# Rewrites a SPIR-V module that glslang compiled with GL_NV_cooperative_matrix into one that uses
# SPV_KHR_cooperative_matrix: Debian 12's glslang 12 has no GL_KHR_cooperative_matrix, and its
# GL_EXT_spirv_intrinsics cannot spell the KHR matrix type (a type parameter such as `float`
# parses as a constructor call). The KHR form is what workgroup-scope matrices
# (VK_NV_cooperative_matrix2) need; the shader declares them as fcoopmatNV<.., gl_ScopeWorkgroup,
# R, C>, which glslang accepts. Each NV matrix type gets the KHR "use" (A, B or accumulator) from
# the multiply-adds and conversions that take it; a type used two ways is an error.
# Usage: spv-coopmat-khr.py IN.spv OUT.spv
import struct
import sys

OP_EXTENSION, OP_CAPABILITY, OP_TYPE_INT = 10, 17, 21
OP_CONSTANT_TRUE, OP_CONSTANT_FALSE, OP_CONSTANT = 41, 42, 43
OP_FUNCTION, OP_FCONVERT = 54, 115
NV_TYPE, NV_LOAD, NV_STORE, NV_MULADD, NV_LENGTH = 5358, 5359, 5360, 5361, 5362
KHR_TYPE, KHR_LOAD, KHR_STORE, KHR_MULADD = 4456, 4457, 4458, 4459
CAP_NV, CAP_KHR = 5357, 6022
USE_A, USE_B, USE_ACC = 0, 1, 2


def fail(msg):
    sys.exit(f'spv-coopmat-khr: {msg}')


def string_words(s):
    b = s.encode() + b'\0'
    b += b'\0' * (-len(b) % 4)
    return list(struct.unpack(f'<{len(b) // 4}I', b))


def main():
    if len(sys.argv) != 3:
        fail('usage: spv-coopmat-khr.py IN.spv OUT.spv')
    data = open(sys.argv[1], 'rb').read()
    if len(data) % 4 or len(data) < 20:
        fail('not a SPIR-V module')
    words = list(struct.unpack(f'<{len(data) // 4}I', data))
    if words[0] != 0x07230203:
        fail('not a little-endian SPIR-V module')
    header, insts, pos = words[:5], [], 5
    while pos < len(words):
        n = words[pos] >> 16
        if n == 0 or pos + n > len(words):
            fail(f'bad instruction at word {pos}')
        insts.append(words[pos:pos + n])
        pos += n

    types, nv_types, bools, value_type = set(), {}, {}, {}
    uint_id = None
    in_functions = False
    for w in insts:
        op = w[0] & 0xffff
        if op == OP_FUNCTION:
            in_functions = True
        if not in_functions:
            if 19 <= op <= 39 or op == NV_TYPE:  # OpType*: result id in word 1
                types.add(w[1])
            if op == OP_TYPE_INT and w[2] == 32 and w[3] == 0:
                uint_id = w[1]
            if op == NV_TYPE:
                nv_types[w[1]] = w
            if op in (OP_CONSTANT_TRUE, OP_CONSTANT_FALSE):
                bools[w[2]] = op == OP_CONSTANT_TRUE
        elif len(w) >= 3 and w[1] in types:  # result type, result id
            value_type[w[2]] = w[1]
        if op == NV_LENGTH:
            fail('OpCooperativeMatrixLengthNV is not converted')
    if not nv_types:
        fail('no NV cooperative matrix type in the module')
    if uint_id is None:
        fail('no 32-bit unsigned integer type in the module')

    use = {}

    def set_use(t, u):
        if t not in nv_types:
            fail(f'%{t} is not an NV cooperative matrix type')
        if use.setdefault(t, u) != u:
            fail(f'matrix type %{t} used both as {use[t]} and {u}')

    for w in insts:
        if w[0] & 0xffff == NV_MULADD:
            set_use(value_type[w[3]], USE_A)
            set_use(value_type[w[4]], USE_B)
            set_use(value_type[w[5]], USE_ACC)
            set_use(w[1], USE_ACC)
    changed = True
    while changed:  # conversions keep the use of the matrix they convert
        changed = False
        for w in insts:
            if w[0] & 0xffff == OP_FCONVERT and w[1] in nv_types:
                a, b = w[1], value_type.get(w[3])
                if b in nv_types and (a in use) != (b in use):
                    set_use(b if a in use else a, use.get(a, use.get(b)))
                    changed = True
    for t in nv_types:
        if t not in use:
            fail(f'no use found for matrix type %{t}')

    bound = header[3]
    const = {}  # value -> id of an OpConstant %uint value

    def uint_const(v):
        nonlocal bound
        if v not in const:
            const[v] = bound
            bound += 1
        return const[v]

    def layout(w, at):
        if w[at] not in bools:
            fail('column-major operand is not a constant boolean')
        return uint_const(1 if bools[w[at]] else 0)

    out, consts_at = [], None
    for w in insts:
        op = w[0] & 0xffff
        if op == OP_CAPABILITY and w[1] == CAP_NV:
            w = [w[0], CAP_KHR]
        elif op == OP_EXTENSION and w[1:] == string_words('SPV_NV_cooperative_matrix'):
            s = string_words('SPV_KHR_cooperative_matrix')
            w = [(len(s) + 1) << 16 | OP_EXTENSION] + s
        elif op == NV_TYPE:
            if consts_at is None:
                consts_at = len(out)
            w = [7 << 16 | KHR_TYPE] + w[1:6] + [uint_const(use[w[1]])]
        elif op == NV_LOAD:  # rtype, id, pointer, stride, column-major, [memory access]
            w = [0, w[1], w[2], w[3], layout(w, 5), w[4]] + w[6:]
            w[0] = len(w) << 16 | KHR_LOAD
        elif op == NV_STORE:  # pointer, object, stride, column-major, [memory access]
            w = [0, w[1], w[2], layout(w, 4), w[3]] + w[5:]
            w[0] = len(w) << 16 | KHR_STORE
        elif op == NV_MULADD:
            w = [6 << 16 | KHR_MULADD] + w[1:]
        out.append(w)
    # The constants go before the first matrix type (the uint type is declared before it: the
    # NV type's scope, rows and columns are uint constants).
    out[consts_at:consts_at] = [[4 << 16 | OP_CONSTANT, uint_id, i, v] for v, i in sorted(const.items())]
    header[3] = bound
    for w in out:  # every rewritten instruction's word count matches its length
        if w[0] >> 16 != len(w):
            fail(f'internal error: opcode {w[0] & 0xffff} has {len(w)} words, says {w[0] >> 16}')
    flat = header + [x for w in out for x in w]
    open(sys.argv[2], 'wb').write(struct.pack(f'<{len(flat)}I', *flat))


main()
