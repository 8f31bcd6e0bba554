#!/usr/bin/env python3
# Evaluates GGUF models against a reference with the protocol of `quantd-quantize --eval`
# (docs/QUALITY.md), in PyTorch on a GPU: perplexity as llama.cpp's `perplexity` (text tokenized
# whole with BOS first, non-overlapping windows of --ctx tokens, first token of each replaced by
# BOS, only the second half scored), KL(P_ref || P_model) mean / p99 (nearest rank) / max, top-1
# agreement, the paired standard error of ΔPPL (from the per-token NLL differences), bits per
# weight over the 2-D weights except token_embd.weight, and the mean SQNR of
# the quantized block matrices against the reference's weights. The weights are dequantized in
# numpy exactly as models/ggml-types.c does (Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K) and the forward
# runs in float32 with TF32 off, so the numbers equal the C evaluation's to float rounding
# (checked on the bundled model, docs/QUALITY.md). The C tool is single-threaded on the CPU;
# this is for the 50M model, where it would take minutes per variant.
#
# Usage: eval-gguf.py --ref REF.gguf --text FILE --tokenizer tokenizer.model [--ctx 512]
#                     [--chunks N] [--device cuda] MODEL.gguf...
# Prints one JSON object per model (the reference's own line first).

import argparse
import json
import math
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_writer as gw  # noqa: E402
from train import Config, Llama  # noqa: E402


def f16(b):
        return b.view(np.float16).astype(np.float32)


def dequant(raw, t, n):
        """raw: uint8 bytes of n elements of ggml type t -> float32[n]."""
        if t == 0:
                return raw.view(np.float32).copy()
        if t == 1:
                return f16(raw)
        bs, nb = gw.GGML_BLOCKS[t]
        b = raw.reshape(-1, nb)
        if t == 8:   # Q8_0
                d = f16(b[:, 0:2].copy())
                return (b[:, 2:].view(np.int8).astype(np.float32) * d).reshape(-1)
        if t in (2, 3):   # Q4_0, Q4_1
                d = f16(b[:, 0:2].copy())
                qs = b[:, 4:] if t == 3 else b[:, 2:]
                q = np.concatenate([qs & 15, qs >> 4], axis=1).astype(np.float32)
                if t == 2:
                        return ((q - 8) * d).reshape(-1)
                m = f16(b[:, 2:4].copy())
                return (q * d + m).reshape(-1)
        if t == 6:   # Q5_0
                d = f16(b[:, 0:2].copy())
                qh = b[:, 2:6].copy().view(np.uint32)
                qs = b[:, 6:]
                j = np.arange(16, dtype=np.uint32)
                h0 = ((qh >> j) & 1).astype(np.uint8) << 4
                h1 = ((qh >> (j + 16)) & 1).astype(np.uint8) << 4
                q = np.concatenate([(qs & 15) | h0, (qs >> 4) | h1], axis=1).astype(np.float32)
                return ((q - 16) * d).reshape(-1)
        if t == 12:   # Q4_K
                d = f16(b[:, 0:2].copy())
                dmin = f16(b[:, 2:4].copy())
                s = b[:, 4:16].astype(np.uint8)
                sc = np.empty((len(b), 8), np.float32)
                mn = np.empty((len(b), 8), np.float32)
                for j in range(8):
                        if j < 4:
                                sc[:, j] = s[:, j] & 63
                                mn[:, j] = s[:, j + 4] & 63
                        else:
                                sc[:, j] = (s[:, j + 4] & 15) | ((s[:, j - 4] >> 6) << 4)
                                mn[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
                qs = b[:, 16:]
                out = np.empty((len(b), 256), np.float32)
                for j in range(4):
                        q = qs[:, 32 * j:32 * j + 32]
                        d1, m1 = d * sc[:, 2 * j:2 * j + 1], dmin * mn[:, 2 * j:2 * j + 1]
                        d2, m2 = d * sc[:, 2 * j + 1:2 * j + 2], dmin * mn[:, 2 * j + 1:2 * j + 2]
                        out[:, 64 * j:64 * j + 32] = d1 * (q & 15).astype(np.float32) - m1
                        out[:, 64 * j + 32:64 * j + 64] = d2 * (q >> 4).astype(np.float32) - m2
                return out.reshape(-1)
        if t == 14:   # Q6_K
                ql, qh = b[:, 0:128], b[:, 128:192]
                sc = b[:, 192:208].copy().view(np.int8).astype(np.float32)
                d = f16(b[:, 208:210].copy())
                out = np.empty((len(b), 256), np.float32)
                for h in range(2):
                        L, H, S = ql[:, 64 * h:64 * h + 64], qh[:, 32 * h:32 * h + 32], sc[:, 8 * h:8 * h + 8]
                        for half in range(2):   # l in 0..15 uses scale is = 0, 16..31 is = 1
                                sl = slice(16 * half, 16 * half + 16)
                                a, c, hh = L[:, sl], L[:, 32 + 16 * half:48 + 16 * half], H[:, sl]
                                q = [((a & 15) | ((hh & 3) << 4)), ((c & 15) | (((hh >> 2) & 3) << 4)),
                                     ((a >> 4) | (((hh >> 4) & 3) << 4)), ((c >> 4) | (((hh >> 6) & 3) << 4))]
                                for k in range(4):
                                        dk = d * S[:, half + 2 * k:half + 2 * k + 1]
                                        base = 128 * h + 32 * k + 16 * half
                                        out[:, base:base + 16] = dk * (q[k].astype(np.float32) - 32)
                return out.reshape(-1)
        raise ValueError("type %d" % t)


def load(path, device):
        _, meta, tensors = gw.read_gguf(path)
        raw = np.fromfile(path, dtype=np.uint8)
        W, info = {}, {}
        for t in tensors:
                n = 1
                for dd in t["dims"]:
                        n *= dd
                a = dequant(raw[t["offset"]:t["offset"] + t["nbytes"]], t["type"], n)
                W[t["name"]] = a.reshape(list(reversed(t["dims"])))
                info[t["name"]] = t
        hp = {k.split(".", 1)[1]: v[1] for k, v in meta.items() if k.startswith("llama.")}
        a = types.SimpleNamespace(dim=hp["embedding_length"], layers=hp["block_count"],
                                  heads=hp["attention.head_count"], kv_heads=hp["attention.head_count_kv"],
                                  ffn=hp["feed_forward_length"], ctx=hp["context_length"], dropout=0.0)
        c = Config(a, hp["vocab_size"])
        c.eps = hp.get("attention.layer_norm_rms_epsilon", 1e-5)
        c.rope_base = hp.get("rope.freq_base", 10000.0)
        model = Llama(c)
        sd = {"tok.weight": W["token_embd.weight"], "norm.weight": W["output_norm.weight"],
              "out.weight": W["output.weight"]}
        names = {"attn_norm": "attn_norm", "attn_q": "wq", "attn_k": "wk", "attn_v": "wv", "attn_output": "wo",
                 "ffn_norm": "ffn_norm", "ffn_gate": "w_gate", "ffn_up": "w_up", "ffn_down": "w_down"}
        for i in range(c.layers):
                for g, p in names.items():
                        sd["blocks.%d.%s.weight" % (i, p)] = W["blk.%d.%s.weight" % (i, g)]
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
        model.to(device).eval()
        qb = qe = 0
        for name, t in info.items():
                if len(t["dims"]) == 2 and name != "token_embd.weight":
                        qe += t["dims"][0] * t["dims"][1]
                        qb += t["nbytes"]
        return model, W, info, {"file_bytes": os.path.getsize(path), "bits_per_weight": 8.0 * qb / qe}


@torch.no_grad()
def window_logprobs(model, ids, ctx, bos, k, device):
        chunk = list(ids[k * ctx:(k + 1) * ctx])
        chunk[0] = bos
        t = torch.tensor([chunk], device=device)
        lp = F.log_softmax(model(t)[0, ctx // 2:ctx - 1].double(), dim=-1)
        return lp, t[0, ctx // 2 + 1:ctx]


def ppl_stats(nll):
        nll = np.asarray(nll, np.float64)
        mean = nll.mean()
        var = (nll * nll).mean() - mean * mean
        ppl = math.exp(mean)
        return ppl, ppl * math.sqrt(max(var, 0.0) / (len(nll) - 1)), mean


def main():
        ap = argparse.ArgumentParser()
        ap.add_argument("--ref", required=True)
        ap.add_argument("--text", required=True)
        ap.add_argument("--tokenizer", required=True)
        ap.add_argument("--ctx", type=int, default=512)
        ap.add_argument("--chunks", type=int, default=0)
        ap.add_argument("--device", default="cuda")
        ap.add_argument("models", nargs="*")
        a = ap.parse_args()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=a.tokenizer)
        bos = sp.bos_id()
        ids = [bos] + sp.encode(open(a.text).read())
        n_win = len(ids) // a.ctx
        if a.chunks:
                n_win = min(n_win, a.chunks)

        ref, RW, rinfo, rsize = load(a.ref, a.device)
        ref_lp, tgts, ref_nll = [], [], []
        for k in range(n_win):
                lp, tgt = window_logprobs(ref, ids, a.ctx, bos, k, a.device)
                ref_lp.append(lp)
                tgts.append(tgt)
                ref_nll.append(-lp.gather(1, tgt[:, None])[:, 0])
        ref_nll = torch.cat(ref_nll).cpu().numpy()
        rppl, rerr, _ = ppl_stats(ref_nll)
        del ref
        print(json.dumps({"model": a.ref, "text": a.text, "windows": n_win, "scored": len(ref_nll), "ppl": rppl,
                          "ppl_err": rerr, **rsize}), flush=True)
        for path in a.models:
                model, W, info, size = load(path, a.device)
                nll, kl, top = [], [], []
                for k in range(n_win):
                        lp, tgt = window_logprobs(model, ids, a.ctx, bos, k, a.device)
                        nll.append(-lp.gather(1, tgt[:, None])[:, 0])
                        r = ref_lp[k]
                        kl.append((r.exp() * (r - lp)).sum(-1))
                        top.append((r.argmax(-1) == lp.argmax(-1)).double())
                nll = torch.cat(nll).cpu().numpy()
                # Paired: the per-token NLL difference to the reference, so that the noise of
                # ΔPPL is judged on the same tokens (ΔPPL% ≈ 100·(exp(mean d) − 1) ± 100·se).
                d = nll - ref_nll
                d_se = float(d.std(ddof=1) / math.sqrt(len(d)))
                kl = np.sort(torch.cat(kl).cpu().numpy())
                top = torch.cat(top).cpu().numpy()
                ppl, err, _ = ppl_stats(nll)
                sq = []
                for name, t in info.items():
                        if len(t["dims"]) == 2 and t["type"] not in (0, 1) and name.startswith("blk."):
                                x, y = RW[name].astype(np.float64), W[name].astype(np.float64)
                                sq.append(10 * math.log10((x * x).sum() / max(((x - y) ** 2).sum(), 1e-300)))
                types_ = {}
                for name, t in info.items():
                        if len(t["dims"]) == 2:
                                tn = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 8: "q8_0", 12: "q4_K",
                                      14: "q6_K"}[t["type"]]
                                types_[tn] = types_.get(tn, 0) + 1
                rank = max(int(math.ceil(0.99 * len(kl))), 1) - 1
                print(json.dumps({"model": path, "text": a.text, "windows": n_win, "scored": len(nll), "ppl": ppl,
                                  "ppl_err": err, "ref_ppl": rppl, "delta_ppl_percent": 100 * (ppl / rppl - 1),
                                  "delta_ppl_se_percent": 100 * math.exp(float(d.mean())) * d_se,
                                  "kl_mean": float(kl.mean()), "kl_p99": float(kl[rank]), "kl_max": float(kl[-1]),
                                  "top1": float(top.mean()), "mean_sqnr_blk_db": float(np.mean(sq)) if sq else None,
                                  "types": types_, **size}), flush=True)
                del model


if __name__ == "__main__":
        main()
