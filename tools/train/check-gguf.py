#!/usr/bin/python3
# Checks a GGUF written by train.py: header, metadata, tensor names/shapes/types, and that a
# llama.cpp-style SentencePiece tokenizer built from the GGUF's own vocabulary encodes text to
# the same ids as the SentencePiece model it came from, and decodes them back to the text.
#
# Usage: tools/train/check-gguf.py MODEL.gguf [TOKENIZER.model [TEXT_FILE]]
#   (tokenizer and text default to .carry/train/tokenizer.model and .carry/train/val.txt)

import heapq
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_writer as gw  # noqa: E402


def spm_encode(text, tokens, scores, types):
        """llama.cpp's llm_tokenizer_spm: space prefix, '▁' for ' ', greedy bigram merges by
        highest score (ties: leftmost), unknown symbols fall back to <0xXX> byte tokens."""
        if not text:   # llama.cpp makes no fragment of empty text: no tokens, no space prefix
                return []
        vocab = {t: i for i, t in enumerate(tokens)}
        text = (" " + text).replace(" ", "\u2581")
        sym = list(text)   # one symbol per code point
        prev = list(range(-1, len(sym) - 1))
        nxt = list(range(1, len(sym) + 1))
        nxt[-1] = -1
        alive = [True] * len(sym)
        heap = []

        def add(left):
                if left < 0:
                        return
                right = nxt[left]
                if right < 0:
                        return
                s = sym[left] + sym[right]
                i = vocab.get(s)
                if i is None or types[i] != 1:
                        return
                heapq.heappush(heap, (-scores[i], left, s))

        for i in range(len(sym) - 1):
                add(i)
        while heap:
                _, left, s = heapq.heappop(heap)
                right = nxt[left]
                if not alive[left] or right < 0 or sym[left] + sym[right] != s:
                        continue
                sym[left] = s
                alive[right] = False
                nxt[left] = nxt[right]
                if nxt[right] >= 0:
                        prev[nxt[right]] = left
                add(prev[left])
                add(left)
        ids = []
        i = 0
        while i >= 0 and i < len(sym):
                t = vocab.get(sym[i])
                if t is not None:
                        ids.append(t)
                else:
                        for b in sym[i].encode("utf-8"):
                                ids.append(vocab["<0x%02X>" % b])
                i = nxt[i]
        return ids


def spm_decode(ids, tokens, types):
        out = bytearray()
        for i in ids:
                if types[i] == 6:
                        out.append(int(tokens[i][3:5], 16))
                elif types[i] == 1:
                        out += tokens[i].replace("\u2581", " ").encode("utf-8")
        s = out.decode("utf-8")
        return s[1:] if s.startswith(" ") else s


def main():
        path = sys.argv[1]
        here = os.path.dirname(os.path.abspath(__file__))
        tok_model = sys.argv[2] if len(sys.argv) > 2 else \
                os.path.join(here, "../../.carry/train/tokenizer.model")
        text_file = sys.argv[3] if len(sys.argv) > 3 else \
                os.path.join(here, "../../.carry/train/val.txt")
        version, meta, tensors = gw.read_gguf(path)
        assert version == 3, version
        g = lambda k: meta[k][1]
        assert g("general.architecture") == "llama"
        assert g("general.file_type") == 1
        dim, L = g("llama.embedding_length"), g("llama.block_count")
        ffn, nh = g("llama.feed_forward_length"), g("llama.attention.head_count")
        nkv = g("llama.attention.head_count_kv")
        hd = dim // nh
        assert g("llama.rope.dimension_count") == hd
        tokens = g("tokenizer.ggml.tokens")[1]
        scores = list(g("tokenizer.ggml.scores")[1])
        types = list(g("tokenizer.ggml.token_type")[1])
        V = len(tokens)
        assert len(scores) == V and len(types) == V
        assert tokens[0] == "<unk>" and tokens[1] == "<s>" and tokens[2] == "</s>"
        assert (types[0], types[1], types[2]) == (2, 3, 3)
        assert g("tokenizer.ggml.bos_token_id") == 1 and g("tokenizer.ggml.eos_token_id") == 2
        assert g("tokenizer.ggml.add_bos_token") is True
        assert g("tokenizer.ggml.add_eos_token") is False
        assert sum(1 for t in types if t == 6) == 256

        expect = {"token_embd.weight": ([dim, V], 1), "output_norm.weight": ([dim], 0),
                  "output.weight": ([dim, V], 1)}
        for i in range(L):
                p = "blk.%d." % i
                expect.update({p + "attn_norm.weight": ([dim], 0),
                               p + "attn_q.weight": ([dim, nh * hd], 1),
                               p + "attn_k.weight": ([dim, nkv * hd], 1),
                               p + "attn_v.weight": ([dim, nkv * hd], 1),
                               p + "attn_output.weight": ([nh * hd, dim], 1),
                               p + "ffn_norm.weight": ([dim], 0),
                               p + "ffn_gate.weight": ([dim, ffn], 1),
                               p + "ffn_up.weight": ([dim, ffn], 1),
                               p + "ffn_down.weight": ([ffn, dim], 1)})
        names = [t["name"] for t in tensors]
        assert sorted(names) == sorted(expect), set(names) ^ set(expect)
        n_params = 0
        for t in tensors:
                dims, typ = expect[t["name"]]
                assert t["dims"] == dims and t["type"] == typ, (t, dims, typ)
                a = gw.tensor_array(path, t)
                assert np.isfinite(a.astype(np.float32)).all(), t["name"]
                n_params += a.size
        size = os.path.getsize(path)
        print("%s: GGUF v%d, %d metadata keys, %d tensors, %d parameters, %d bytes" %
              (path, version, len(meta), len(tensors), n_params, size))
        print("  dim %d layers %d heads %d kv_heads %d ffn %d vocab %d ctx %d eps %g base %g" %
              (dim, L, nh, nkv, ffn, V, g("llama.context_length"),
               g("llama.attention.layer_norm_rms_epsilon"), g("llama.rope.freq_base")))

        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=tok_model)
        assert [sp.id_to_piece(i) for i in range(V)] == tokens
        sentence = "In the beginning God created the heaven and the earth.\n" \
                   "And Zzyzx paid 1234 shekels; caf\u00e9 \u2014 \u65e5\u672c!"
        ids = spm_encode(sentence, tokens, scores, types)
        assert ids == sp.encode(sentence), (ids, sp.encode(sentence))
        assert spm_decode(ids, tokens, types) == sentence
        print("  sentence round trip ok: %d tokens: %s" % (len(ids), ids))
        n = same = 0
        for line in open(text_file).read().split("\n"):
                a, b = spm_encode(line, tokens, scores, types), sp.encode(line)
                n += 1
                same += a == b
                assert spm_decode(a, tokens, types) == line
        print("  %s: %d/%d lines encode identically to sentencepiece" % (text_file, same, n))
        assert same == n
        whole = open(text_file).read()
        a = spm_encode(whole, tokens, scores, types)
        assert a == sp.encode(whole) and spm_decode(a, tokens, types) == whole
        print("  the whole file (%d tokens) encodes identically and round-trips" % len(a))
        print("OK")


if __name__ == "__main__":
        main()
