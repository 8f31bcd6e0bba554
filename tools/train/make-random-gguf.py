#!/usr/bin/python3
# Writes a llama GGUF of a given shape filled with random F16 weights (N(0, 0.02), norms 1), no
# tokenizer: input for timing quantd-quantize on a model of real size (docs/QUALITY.md, 1B
# benchmark). Default shape: TinyLlama-1.1B (2048 wide, 22 layers, 32 query / 4 KV heads, SwiGLU
# 5632, vocab 32000, untied output): 1,100,048,384 parameters, 2.2 GB.
#
# Usage: make-random-gguf.py OUT.gguf [--dim 2048 --layers 22 --heads 32 --kv-heads 4 --ffn 5632
#                                      --vocab 32000 --seed 1]

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_writer as gw  # noqa: E402


def main():
        ap = argparse.ArgumentParser()
        ap.add_argument("out")
        ap.add_argument("--dim", type=int, default=2048)
        ap.add_argument("--layers", type=int, default=22)
        ap.add_argument("--heads", type=int, default=32)
        ap.add_argument("--kv-heads", type=int, default=4)
        ap.add_argument("--ffn", type=int, default=5632)
        ap.add_argument("--vocab", type=int, default=32000)
        ap.add_argument("--seed", type=int, default=1)
        a = ap.parse_args()
        rng = np.random.default_rng(a.seed)
        hd = a.dim // a.heads
        w = gw.GGUFWriter(a.out)
        U32, F32, STR = gw.UINT32, gw.FLOAT32, gw.STRING
        w.add("general.architecture", "llama", STR)
        w.add("general.name", "random-%dx%d" % (a.layers, a.dim), STR)
        w.add("general.file_type", 1, U32)
        w.add("general.alignment", gw.ALIGNMENT, U32)
        for k, v in (("vocab_size", a.vocab), ("context_length", 2048), ("embedding_length", a.dim),
                     ("block_count", a.layers), ("feed_forward_length", a.ffn), ("rope.dimension_count", hd),
                     ("attention.head_count", a.heads), ("attention.head_count_kv", a.kv_heads)):
                w.add("llama." + k, v, U32)
        w.add("llama.attention.layer_norm_rms_epsilon", 1e-5, F32)
        w.add("llama.rope.freq_base", 10000.0, F32)
        n = 0

        def mat(name, rows, cols):
                nonlocal n
                x = rng.standard_normal((rows, cols), dtype=np.float32)
                x *= 0.02
                w.add_tensor(name, x.astype(np.float16))
                n += rows * cols

        def norm(name):
                nonlocal n
                w.add_tensor(name, np.ones(a.dim, np.float32))
                n += a.dim

        mat("token_embd.weight", a.vocab, a.dim)
        for i in range(a.layers):
                p = "blk.%d." % i
                norm(p + "attn_norm.weight")
                mat(p + "attn_q.weight", a.dim, a.dim)
                mat(p + "attn_k.weight", a.kv_heads * hd, a.dim)
                mat(p + "attn_v.weight", a.kv_heads * hd, a.dim)
                mat(p + "attn_output.weight", a.dim, a.dim)
                norm(p + "ffn_norm.weight")
                mat(p + "ffn_gate.weight", a.ffn, a.dim)
                mat(p + "ffn_up.weight", a.ffn, a.dim)
                mat(p + "ffn_down.weight", a.dim, a.ffn)
        norm("output_norm.weight")
        mat("output.weight", a.vocab, a.dim)
        w.write()
        print("%s: %d parameters, %d bytes" % (a.out, n, os.path.getsize(a.out)))


if __name__ == "__main__":
        main()
