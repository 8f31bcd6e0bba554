# A small GGUF v3 writer and reader (no dependency on the `gguf` package; numpy for tensors).
#
# Writer: GGUFWriter(path).add(key, value, type) ... .add_tensor(name, ndarray) ... .write()
#   Tensor arrays are given in torch/numpy order (row-major, last axis contiguous); the GGUF dims
#   are written in ggml order, i.e. reversed (ne[0] = the contiguous axis), so a torch Linear
#   weight [out, in] is stored as ne = [in, out]. float32 arrays are stored as F32, float16 as F16.
# Reader: read_gguf(path) -> (version, metadata dict key -> (type, value), tensors list of dicts
#   name, type, dims (ggml order), offset (absolute), nbytes), with every extent checked.

import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32

# metadata value types
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = \
        range(13)
_SCALAR = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
           FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}

# ggml tensor types used here
GGML_F32, GGML_F16 = 0, 1
_GGML_SIZE = {GGML_F32: 4, GGML_F16: 2}
# Block types the reader accepts (ggml type: elements per block, bytes per block); eval-gguf.py
# dequantizes them.
GGML_BLOCKS = {2: (32, 18), 3: (32, 20), 6: (32, 22), 8: (32, 34), 12: (256, 144), 14: (256, 210)}


def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b


def _value(vtype, value):
        if vtype == STRING:
                return _str(value)
        if vtype == ARRAY:
                etype, items = value
                out = [struct.pack("<IQ", etype, len(items))]
                if etype == STRING:
                        out.extend(_str(s) for s in items)
                else:
                        out.append(np.asarray(items, dtype=np.dtype(_SCALAR[etype])).tobytes())
                return b"".join(out)
        return struct.pack(_SCALAR[vtype], value)


class GGUFWriter:
        def __init__(self, path):
                self.path = path
                self.kv = []
                self.tensors = []

        def add(self, key, value, vtype):
                """vtype: one of the type constants; for ARRAY, value = (elem_type, items)."""
                assert all(k != key for k, _, _ in self.kv), key
                self.kv.append((key, vtype, value))

        def add_tensor(self, name, array):
                a = np.ascontiguousarray(array)
                if a.dtype == np.float32:
                        t = GGML_F32
                elif a.dtype == np.float16:
                        t = GGML_F16
                else:
                        raise ValueError("unsupported dtype %s for %s" % (a.dtype, name))
                self.tensors.append((name, t, list(reversed(a.shape)), a.tobytes()))

        def write(self):
                head = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self.tensors),
                                                len(self.kv))]
                for key, vtype, value in self.kv:
                        head.append(_str(key) + struct.pack("<I", vtype) + _value(vtype, value))
                offset = 0
                for name, t, dims, data in self.tensors:
                        head.append(_str(name) + struct.pack("<I", len(dims)) +
                                    struct.pack("<%dQ" % len(dims), *dims) +
                                    struct.pack("<IQ", t, offset))
                        offset += len(data)
                        offset += -offset % ALIGNMENT
                head = b"".join(head)
                with open(self.path, "wb") as f:
                        f.write(head)
                        f.write(b"\0" * (-len(head) % ALIGNMENT))
                        for _, _, _, data in self.tensors:
                                f.write(data)
                                f.write(b"\0" * (-len(data) % ALIGNMENT))


class _Cursor:
        def __init__(self, buf):
                self.buf = buf
                self.pos = 0

        def take(self, n):
                if n < 0 or self.pos + n > len(self.buf):
                        raise ValueError("truncated at %d (+%d of %d)" % (self.pos, n, len(self.buf)))
                b = self.buf[self.pos:self.pos + n]
                self.pos += n
                return b

        def unpack(self, fmt):
                return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

        def string(self):
                return self.take(self.unpack("<Q")).decode("utf-8")

        def value(self, vtype):
                if vtype == STRING:
                        return self.string()
                if vtype == ARRAY:
                        etype, n = self.unpack("<I"), self.unpack("<Q")
                        if etype == STRING:
                                return (etype, [self.string() for _ in range(n)])
                        if etype not in _SCALAR:
                                raise ValueError("bad array type %d" % etype)
                        dt = np.dtype(_SCALAR[etype])
                        return (etype, np.frombuffer(self.take(n * dt.itemsize), dtype=dt))
                if vtype not in _SCALAR:
                        raise ValueError("bad value type %d" % vtype)
                return self.unpack(_SCALAR[vtype])


def read_gguf(path):
        buf = open(path, "rb").read()
        c = _Cursor(buf)
        if c.take(4) != GGUF_MAGIC:
                raise ValueError("not a GGUF file")
        version = c.unpack("<I")
        n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
        meta = {}
        for _ in range(n_kv):
                key = c.string()
                vtype = c.unpack("<I")
                meta[key] = (vtype, c.value(vtype))
        align = meta.get("general.alignment", (UINT32, ALIGNMENT))[1]
        infos = []
        for _ in range(n_tensors):
                name = c.string()
                nd = c.unpack("<I")
                dims = [c.unpack("<Q") for _ in range(nd)]
                t, off = c.unpack("<I"), c.unpack("<Q")
                infos.append((name, t, dims, off))
        data_start = c.pos + (-c.pos % align)
        tensors = []
        for name, t, dims, off in infos:
                if t not in _GGML_SIZE and t not in GGML_BLOCKS:
                        raise ValueError("%s: unsupported tensor type %d" % (name, t))
                n = 1
                for d in dims:
                        n *= d
                if t in GGML_BLOCKS:
                        nbytes = n // GGML_BLOCKS[t][0] * GGML_BLOCKS[t][1]
                else:
                        nbytes = n * _GGML_SIZE[t]
                start = data_start + off
                if off % align or start + nbytes > len(buf):
                        raise ValueError("%s: bad extent" % name)
                tensors.append({"name": name, "type": t, "dims": dims, "offset": start,
                                "nbytes": nbytes})
        return version, meta, tensors


def tensor_array(path, info):
        """The tensor's data as a numpy array in torch order (dims reversed)."""
        dt = np.float32 if info["type"] == GGML_F32 else np.float16
        a = np.fromfile(path, dtype=dt, count=info["nbytes"] // np.dtype(dt).itemsize,
                        offset=info["offset"])
        return a.reshape(list(reversed(info["dims"])))
