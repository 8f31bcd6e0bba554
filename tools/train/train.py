#!/usr/bin/env python3
# Trains quantd's bundled Llama-architecture model on the KJV corpus and writes it as F16 GGUF.
#
# Usage (on the GPU machine):
#   python3 tools/train/train.py --data .carry/train --out model.gguf --seconds 300 --seed 1
#
# --data holds what tools/train/make-corpus.py wrote (train/val/test .bin and .txt,
# tokenizer.model). Training stops at --seconds of wall time or --max-epochs, whichever comes
# first; the learning rate follows warmup + cosine over that progress. The validation loss is
# measured every --eval-every seconds and the weights with the best one are kept (early
# stopping); those are rounded to F16, evaluated again in float32 (test perplexity, samples) and
# exported, so every number printed at the end is the shipped file's.
#
# RoPE is llama.cpp's "normal" mode for arch llama: adjacent pairs (x[2i], x[2i+1]) rotate by
# pos * base^(-2i/head_dim). The GGUF therefore needs no Q/K permutation (llama.cpp's HF
# converter permutes only because HF rotates halves).

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_writer as gw  # noqa: E402


class Config:
        def __init__(self, a, vocab):
                self.vocab = vocab
                self.dim = a.dim
                self.layers = a.layers
                self.heads = a.heads
                self.kv_heads = a.kv_heads
                self.ffn = a.ffn
                self.ctx = a.ctx
                self.eps = 1e-5
                self.rope_base = 10000.0
                self.dropout = a.dropout
                self.head_dim = a.dim // a.heads


class RMSNorm(nn.Module):
        def __init__(self, dim, eps):
                super().__init__()
                self.eps = eps
                self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
                xf = x.float()
                xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
                return (xf * self.weight.float()).type_as(x)


def rope_tables(c, device):
        i = torch.arange(0, c.head_dim // 2, device=device, dtype=torch.float64)
        inv = c.rope_base ** (-2.0 * i / c.head_dim)
        pos = torch.arange(c.ctx, device=device, dtype=torch.float64)
        ang = torch.outer(pos, inv)
        return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x, cos, sin):
        # x: (B, T, H, D); rotate adjacent pairs, as ggml_rope mode 0 (LLAMA_ROPE_TYPE_NORM)
        B, T, H, D = x.shape
        xp = x.float().view(B, T, H, D // 2, 2)
        x0, x1 = xp[..., 0], xp[..., 1]
        c = cos[:T].view(1, T, 1, D // 2)
        s = sin[:T].view(1, T, 1, D // 2)
        out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
        return out.view(B, T, H, D).type_as(x)


class Block(nn.Module):
        def __init__(self, c):
                super().__init__()
                self.c = c
                self.attn_norm = RMSNorm(c.dim, c.eps)
                self.wq = nn.Linear(c.dim, c.heads * c.head_dim, bias=False)
                self.wk = nn.Linear(c.dim, c.kv_heads * c.head_dim, bias=False)
                self.wv = nn.Linear(c.dim, c.kv_heads * c.head_dim, bias=False)
                self.wo = nn.Linear(c.heads * c.head_dim, c.dim, bias=False)
                self.ffn_norm = RMSNorm(c.dim, c.eps)
                self.w_gate = nn.Linear(c.dim, c.ffn, bias=False)
                self.w_up = nn.Linear(c.dim, c.ffn, bias=False)
                self.w_down = nn.Linear(c.ffn, c.dim, bias=False)

        def forward(self, x, cos, sin):
                c = self.c
                B, T, _ = x.shape
                h = self.attn_norm(x)
                q = self.wq(h).view(B, T, c.heads, c.head_dim)
                k = self.wk(h).view(B, T, c.kv_heads, c.head_dim)
                v = self.wv(h).view(B, T, c.kv_heads, c.head_dim)
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
                q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
                rep = c.heads // c.kv_heads
                if rep > 1:   # query head h uses kv head h // rep, as llama.cpp does
                        k = k.repeat_interleave(rep, dim=1)
                        v = v.repeat_interleave(rep, dim=1)
                p = c.dropout if self.training else 0.0
                if hasattr(F, "scaled_dot_product_attention"):
                        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
                else:   # torch < 2.0 (Debian 12's python3-torch, for a CPU smoke test)
                        att = (q @ k.transpose(-2, -1)) / math.sqrt(c.head_dim)
                        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
                        att = att.masked_fill(~mask, float("-inf")).float().softmax(-1)
                        a = F.dropout(att, p, self.training).type_as(v) @ v
                a = a.transpose(1, 2).reshape(B, T, c.heads * c.head_dim)
                x = x + F.dropout(self.wo(a), p, self.training)
                h = self.ffn_norm(x)
                f = self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))
                return x + F.dropout(f, p, self.training)


class Llama(nn.Module):
        def __init__(self, c):
                super().__init__()
                self.c = c
                self.tok = nn.Embedding(c.vocab, c.dim)
                self.blocks = nn.ModuleList([Block(c) for _ in range(c.layers)])
                self.norm = RMSNorm(c.dim, c.eps)
                self.out = nn.Linear(c.dim, c.vocab, bias=False)
                cos, sin = rope_tables(c, "cpu")
                self.register_buffer("cos", cos, persistent=False)
                self.register_buffer("sin", sin, persistent=False)
                for n, p in self.named_parameters():
                        if p.dim() == 2:
                                std = 0.02
                                if n.endswith("wo.weight") or n.endswith("w_down.weight"):
                                        std = 0.02 / math.sqrt(2 * c.layers)
                                nn.init.normal_(p, 0.0, std)

        def forward(self, idx):
                x = F.dropout(self.tok(idx), self.c.dropout, self.training)
                for b in self.blocks:
                        x = b(x, self.cos, self.sin)
                return self.out(self.norm(x))


def batches_eval(stream, ctx, bos):
        """Non-overlapping windows of ctx+1 tokens over a stream (last partial window dropped)."""
        n = (len(stream) - 1) // ctx
        return [stream[i * ctx:i * ctx + ctx + 1] for i in range(n)]


@torch.no_grad()
def eval_loss(model, stream, ctx, dev, bos, autocast):
        model.eval()
        wins = torch.tensor(np.stack(batches_eval(stream, ctx, bos)).astype(np.int64), device=dev)
        tot, cnt = 0.0, 0
        for i in range(0, len(wins), 32):
                w = wins[i:i + 32]
                with torch.autocast(dev, torch.bfloat16, enabled=autocast):
                        logits = model(w[:, :-1])
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                       w[:, 1:].reshape(-1), reduction="sum")
                tot += loss.item()
                cnt += w[:, 1:].numel()
        model.train()
        return tot / cnt


@torch.no_grad()
def perplexity_llamacpp(model, ids, ctx, dev, bos):
        """llama.cpp `perplexity` protocol: the text tokenized whole (BOS first), cut into
        non-overlapping chunks of ctx tokens, the first token of each chunk replaced by BOS, and
        only the predictions for the second half of each chunk scored (tokens ctx/2+1 .. ctx-1
        predicted from everything before them in the chunk). Returns (ppl, scored tokens)."""
        model.eval()
        n_chunk = len(ids) // ctx
        tot, cnt = 0.0, 0
        first = ctx // 2
        for k in range(n_chunk):
                chunk = list(ids[k * ctx:(k + 1) * ctx])
                chunk[0] = bos
                t = torch.tensor([chunk], device=dev)
                logits = model(t)[0].float()
                lp = F.log_softmax(logits[first:ctx - 1], dim=-1)
                tgt = t[0, first + 1:ctx]
                tot += -lp.gather(1, tgt[:, None]).sum().item()
                cnt += tgt.numel()
        model.train()
        return math.exp(tot / cnt), cnt


@torch.no_grad()
def perplexity_all(model, ids, ctx, dev, bos):
        """Every token scored: the text tokenized whole with BOS, windows of ctx tokens that each
        start with BOS followed by the next ctx-1 text tokens; every text token is predicted once."""
        model.eval()
        body = list(ids[1:])
        tot, cnt = 0.0, 0
        for s in range(0, len(body), ctx - 1):
                piece = body[s:s + ctx - 1]
                t = torch.tensor([[bos] + piece], device=dev)
                logits = model(t)[0, :-1].float()
                tot += F.cross_entropy(logits, t[0, 1:], reduction="sum").item()
                cnt += len(piece)
        model.train()
        return math.exp(tot / cnt), cnt


@torch.no_grad()
def generate(model, prompt_ids, n, dev, temperature=0.0, seed=0):
        model.eval()
        g = torch.Generator(device=dev)
        g.manual_seed(seed)
        ids = list(prompt_ids)
        out = []
        first_top = None
        for _ in range(n):
                t = torch.tensor([ids[-model.c.ctx:]], device=dev)
                logits = model(t)[0, -1].float()
                if first_top is None:
                        v, i = torch.topk(logits, 5)
                        first_top = [[int(a), float(b)] for a, b in zip(i.tolist(), v.tolist())]
                if temperature <= 0:
                        nxt = int(torch.argmax(logits))
                else:
                        p = torch.softmax(logits / temperature, dim=-1)
                        nxt = int(torch.multinomial(p, 1, generator=g))
                ids.append(nxt)
                out.append(nxt)
        model.train()
        return out, first_top


def export_gguf(model, sp, path, name):
        c = model.c
        w = gw.GGUFWriter(path)
        U32, F32, STR, BOOL, ARR = gw.UINT32, gw.FLOAT32, gw.STRING, gw.BOOL, gw.ARRAY
        w.add("general.architecture", "llama", STR)
        w.add("general.name", name, STR)
        w.add("general.file_type", 1, U32)
        w.add("general.alignment", gw.ALIGNMENT, U32)
        w.add("general.license", "GPL-2.0-or-later (training code); corpus public domain", STR)
        w.add("llama.vocab_size", c.vocab, U32)
        w.add("llama.context_length", c.ctx, U32)
        w.add("llama.embedding_length", c.dim, U32)
        w.add("llama.block_count", c.layers, U32)
        w.add("llama.feed_forward_length", c.ffn, U32)
        w.add("llama.rope.dimension_count", c.head_dim, U32)
        w.add("llama.attention.head_count", c.heads, U32)
        w.add("llama.attention.head_count_kv", c.kv_heads, U32)
        w.add("llama.attention.layer_norm_rms_epsilon", c.eps, F32)
        w.add("llama.rope.freq_base", c.rope_base, F32)
        tokens, scores, types = [], [], []
        for i in range(sp.get_piece_size()):
                tokens.append(sp.id_to_piece(i))
                scores.append(sp.get_score(i))
                if sp.is_unknown(i):
                        types.append(2)
                elif sp.is_control(i):
                        types.append(3)
                elif sp.is_byte(i):
                        types.append(6)
                elif sp.is_unused(i):
                        types.append(5)
                else:
                        types.append(1)
        w.add("tokenizer.ggml.model", "llama", STR)
        w.add("tokenizer.ggml.tokens", (STR, tokens), ARR)
        w.add("tokenizer.ggml.scores", (F32, scores), ARR)
        w.add("tokenizer.ggml.token_type", (gw.INT32, types), ARR)
        w.add("tokenizer.ggml.bos_token_id", sp.bos_id(), U32)
        w.add("tokenizer.ggml.eos_token_id", sp.eos_id(), U32)
        w.add("tokenizer.ggml.unknown_token_id", sp.unk_id(), U32)
        w.add("tokenizer.ggml.add_bos_token", True, BOOL)
        w.add("tokenizer.ggml.add_eos_token", False, BOOL)
        w.add("tokenizer.ggml.add_space_prefix", True, BOOL)

        def f16(t):
                return t.detach().float().cpu().numpy().astype(np.float16)

        def f32(t):
                return t.detach().float().cpu().numpy().astype(np.float32)

        w.add_tensor("token_embd.weight", f16(model.tok.weight))
        for i, b in enumerate(model.blocks):
                p = "blk.%d." % i
                w.add_tensor(p + "attn_norm.weight", f32(b.attn_norm.weight))
                w.add_tensor(p + "attn_q.weight", f16(b.wq.weight))
                w.add_tensor(p + "attn_k.weight", f16(b.wk.weight))
                w.add_tensor(p + "attn_v.weight", f16(b.wv.weight))
                w.add_tensor(p + "attn_output.weight", f16(b.wo.weight))
                w.add_tensor(p + "ffn_norm.weight", f32(b.ffn_norm.weight))
                w.add_tensor(p + "ffn_gate.weight", f16(b.w_gate.weight))
                w.add_tensor(p + "ffn_up.weight", f16(b.w_up.weight))
                w.add_tensor(p + "ffn_down.weight", f16(b.w_down.weight))
        w.add_tensor("output_norm.weight", f32(model.norm.weight))
        w.add_tensor("output.weight", f16(model.out.weight))
        w.write()


def main():
        ap = argparse.ArgumentParser()
        ap.add_argument("--data", required=True)
        ap.add_argument("--out", required=True, help="GGUF path; a .json report is written beside")
        ap.add_argument("--seconds", type=float, default=300)
        ap.add_argument("--seed", type=int, default=1)
        ap.add_argument("--max-epochs", type=float, default=40)
        ap.add_argument("--dim", type=int, default=384)
        ap.add_argument("--layers", type=int, default=6)
        ap.add_argument("--heads", type=int, default=6)
        ap.add_argument("--kv-heads", type=int, default=2)
        ap.add_argument("--ffn", type=int, default=1024)
        ap.add_argument("--ctx", type=int, default=512)
        ap.add_argument("--batch", type=int, default=32)
        ap.add_argument("--lr", type=float, default=1e-3)
        ap.add_argument("--min-lr-frac", type=float, default=0.1)
        ap.add_argument("--warmup", type=float, default=0.03, help="fraction of progress")
        ap.add_argument("--wd", type=float, default=0.1)
        ap.add_argument("--dropout", type=float, default=0.1)
        ap.add_argument("--eval-every", type=float, default=5.0, help="seconds")
        ap.add_argument("--name", default="quantd-kjv-12m")
        ap.add_argument("--compile", action="store_true")
        ap.add_argument("--device", default="cuda")
        a = ap.parse_args()

        t_start = time.time()
        torch.manual_seed(a.seed)
        np.random.seed(a.seed)
        dev = a.device
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

        sp = spm.SentencePieceProcessor(model_file=os.path.join(a.data, "tokenizer.model"))
        load = lambda s: np.fromfile(os.path.join(a.data, s + ".bin"), dtype=np.uint16)
        train, val, test = load("train"), load("val"), load("test")
        bos = sp.bos_id()
        c = Config(a, sp.get_piece_size())
        model = Llama(c).to(dev)
        n_params = sum(p.numel() for p in model.parameters())
        print("params %d (%.2fM), train %d tokens, val %d, test %d" %
              (n_params, n_params / 1e6, len(train), len(val), len(test)), flush=True)

        decay = [p for p in model.parameters() if p.dim() == 2]
        nodecay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                                 {"params": nodecay, "weight_decay": 0.0}],
                                lr=a.lr, betas=(0.9, 0.95), eps=1e-8,
                                **({"fused": True} if dev == "cuda" else {}))
        fwd = torch.compile(model) if a.compile else model

        train_t = torch.from_numpy(train.astype(np.int64)).to(dev)
        gen = torch.Generator(device=dev)
        gen.manual_seed(a.seed)
        offs = torch.arange(c.ctx + 1, device=dev)
        tokens_per_step = a.batch * c.ctx
        total_tokens = a.max_epochs * len(train)

        best = (float("inf"), None, 0)
        curve = []
        step, seen = 0, 0
        t0 = time.time()
        next_eval = 0.0
        last_loss = float("nan")
        while True:
                el = time.time() - t0
                prog = max(el / a.seconds, seen / total_tokens)
                if el >= next_eval or prog >= 1.0:
                        vl = eval_loss(model, val, c.ctx, dev, bos, True)
                        curve.append([round(el, 1), step, round(seen / len(train), 2),
                                      round(last_loss, 4), round(vl, 4)])
                        print("t %6.1fs step %6d epoch %6.2f lr %.2e train %.4f val %.4f%s" %
                              (el, step, seen / len(train), opt.param_groups[0]["lr"],
                               last_loss, vl, " *" if vl < best[0] else ""), flush=True)
                        if vl < best[0]:
                                best = (vl, {k: v.detach().clone()
                                             for k, v in model.state_dict().items()}, step)
                        next_eval = el + a.eval_every
                if prog >= 1.0:
                        break
                if prog < a.warmup:
                        lr = a.lr * prog / a.warmup
                else:
                        q = (prog - a.warmup) / (1 - a.warmup)
                        lr = a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) *
                                     0.5 * (1 + math.cos(math.pi * q)))
                for g in opt.param_groups:
                        g["lr"] = lr
                starts = torch.randint(0, len(train) - c.ctx - 1, (a.batch,), device=dev,
                                       generator=gen)
                w = train_t[starts[:, None] + offs]
                with torch.autocast(dev, torch.bfloat16):
                        logits = fwd(w[:, :-1])
                        loss = F.cross_entropy(logits.float().reshape(-1, c.vocab),
                                               w[:, 1:].reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                step += 1
                seen += tokens_per_step
                if step % 50 == 0:
                        last_loss = loss.item()
        train_secs = time.time() - t0
        print("trained %.1f s, %d steps, %.1f epochs, %.0f tokens/s; best val %.4f at step %d" %
              (train_secs, step, seen / len(train), seen / train_secs, best[0], best[2]),
              flush=True)

        # The shipped model: best weights rounded to F16, evaluated in float32.
        model.load_state_dict(best[1])
        with torch.no_grad():
                for p in model.parameters():
                        if p.dim() == 2:
                                p.copy_(p.half().float())
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        model.eval()
        rng = np.random.default_rng(a.seed)
        sub = np.concatenate([train[s:s + 40 * (c.ctx + 1)]
                              for s in rng.integers(0, len(train) - 41 * (c.ctx + 1), 8)])
        res = {"name": a.name, "params": n_params, "args": vars(a),
               "train_seconds": round(train_secs, 1), "steps": step,
               "epochs": round(seen / len(train), 2), "best_step": best[2],
               "tokens_per_s": round(seen / train_secs),
               "curve": curve,
               "f16_fp32": {"train_loss_sample": eval_loss(model, sub, c.ctx, dev, bos, False),
                            "val_loss": eval_loss(model, val, c.ctx, dev, bos, False),
                            "test_loss": eval_loss(model, test, c.ctx, dev, bos, False)}}
        for split in ("val", "test"):
                text = open(os.path.join(a.data, split + ".txt")).read()
                ids = [bos] + sp.encode(text)
                p1, n1 = perplexity_llamacpp(model, ids, c.ctx, dev, bos)
                p2, n2 = perplexity_all(model, ids, c.ctx, dev, bos)
                res["f16_fp32"][split + "_ppl_llamacpp"] = [p1, n1]
                res["f16_fp32"][split + "_ppl_all"] = [p2, n2]
                res["f16_fp32"][split + "_text_tokens"] = len(ids)
        samples = []
        for prompt, temp, seed in (("In the beginning", 0.0, 0),
                                   ("And Jesus said unto them", 0.0, 0),
                                   ("The LORD is my shepherd", 0.8, 42),
                                   ("And it came to pass", 0.8, 7)):
                pids = [bos] + sp.encode(prompt)
                out, top = generate(model, pids, 64, dev, temp, seed)
                samples.append({"prompt": prompt, "temperature": temp, "seed": seed,
                                "prompt_ids": pids, "ids": out, "first_top5": top,
                                "text": sp.decode(out)})
        res["samples"] = samples
        export_gguf(model, sp, a.out, a.name)
        res["gguf_bytes"] = os.path.getsize(a.out)
        res["total_seconds"] = round(time.time() - t_start, 1)
        with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
                json.dump(res, f, indent=1)
        print(json.dumps(res["f16_fp32"]), flush=True)
        for s in samples:
                print("--- %r T=%.1f: %r" % (s["prompt"], s["temperature"], s["text"]))
        print("wrote %s (%d bytes)" % (a.out, res["gguf_bytes"]), flush=True)


if __name__ == "__main__":
        main()
