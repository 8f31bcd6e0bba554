#!/usr/bin/python3
# Independent numpy (float32) forward pass of a llama GGUF, written the way ggml computes it
# (ggml dims order, RoPE mode 0 on adjacent pairs, GQA head h -> kv head h / (n_head/n_kv)),
# to check an exported file against train.py's PyTorch tokens with no PyTorch involved.
#
# Usage: tools/train/ref-forward.py MODEL.gguf REPORT.json
#   REPORT.json is train.py's report; its greedy samples (temperature 0) are regenerated and
#   compared token by token, and the first step's top-5 logits are printed beside PyTorch's.

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_writer as gw  # noqa: E402


def load(path):
        _, meta, tensors = gw.read_gguf(path)
        W = {t["name"]: gw.tensor_array(path, t).astype(np.float32) for t in tensors}
        hp = {k.split(".", 1)[1]: v[1] for k, v in meta.items() if k.startswith("llama.")}
        return hp, W


def rmsnorm(x, w, eps):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, base):
        # x: [T, H, D]; ggml_rope mode 0: pairs (2i, 2i+1), theta = pos * base^(-2i/D)
        T, H, D = x.shape
        i = np.arange(D // 2, dtype=np.float64)
        ang = np.arange(T, dtype=np.float64)[:, None] * base ** (-2.0 * i / D)[None, :]
        c, s = np.cos(ang)[:, None, :].astype(np.float32), np.sin(ang)[:, None, :].astype(np.float32)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out


def forward(hp, W, ids):
        dim, L = hp["embedding_length"], hp["block_count"]
        nh, nkv = hp["attention.head_count"], hp["attention.head_count_kv"]
        eps, base = hp["attention.layer_norm_rms_epsilon"], hp["rope.freq_base"]
        hd = dim // nh
        T = len(ids)
        x = W["token_embd.weight"][ids]                      # [T, dim]
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
        for l in range(L):
                p = "blk.%d." % l
                h = rmsnorm(x, W[p + "attn_norm.weight"], eps)
                q = rope((h @ W[p + "attn_q.weight"].T).reshape(T, nh, hd), base)
                k = rope((h @ W[p + "attn_k.weight"].T).reshape(T, nkv, hd), base)
                v = (h @ W[p + "attn_v.weight"].T).reshape(T, nkv, hd)
                o = np.empty((T, nh, hd), dtype=np.float32)
                for hh in range(nh):
                        kv = hh // (nh // nkv)
                        s = q[:, hh] @ k[:, kv].T / np.sqrt(hd) + mask
                        s = np.exp(s - s.max(-1, keepdims=True))
                        o[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, kv]
                x = x + o.reshape(T, dim) @ W[p + "attn_output.weight"].T
                h = rmsnorm(x, W[p + "ffn_norm.weight"], eps)
                g = h @ W[p + "ffn_gate.weight"].T
                f = (g / (1 + np.exp(-g))) * (h @ W[p + "ffn_up.weight"].T)
                x = x + f @ W[p + "ffn_down.weight"].T
        x = rmsnorm(x, W["output_norm.weight"], eps)
        out = W.get("output.weight", W["token_embd.weight"])
        return x[-1] @ out.T


def main():
        hp, W = load(sys.argv[1])
        report = json.load(open(sys.argv[2]))
        bad = 0
        for s in report["samples"]:
                if s["temperature"] != 0:
                        continue
                ids = list(s["prompt_ids"])
                got = []
                for step in range(len(s["ids"])):
                        logits = forward(hp, W, ids)
                        if step == 0:
                                top = np.argsort(-logits)[:5]
                                print("%r first step top5 numpy  %s" % (s["prompt"], [
                                        [int(i), round(float(logits[i]), 4)] for i in top]))
                                print("%r first step top5 torch  %s" % (s["prompt"], [
                                        [i, round(v, 4)] for i, v in s["first_top5"]]))
                        nxt = int(np.argmax(logits))
                        got.append(nxt)
                        ids.append(nxt)
                same = sum(1 for a, b in zip(got, s["ids"]) if a == b)
                first_diff = next((i for i, (a, b) in enumerate(zip(got, s["ids"])) if a != b), None)
                print("%r: %d/%d greedy tokens identical%s" % (
                        s["prompt"], same, len(got),
                        "" if first_diff is None else ", first difference at %d" % first_diff))
                bad += first_diff is not None
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
        main()
