#!/usr/bin/env python3
# The llama.cpp compatibility tests (suite 'compat', docs/COMPAT.md): quantd against llama.cpp
# (tests/compat/llama-ref, the prebuilt libraries of tools/llama-cpp/fetch) on the bundled model
# and on quantized files that either quantizer made from it.
#
# Usage: compat.py TEST, TEST one of
#   tokenize        the same ids from quantd's tokenizer and llama_tokenize() for texts
#   greedy-f16      64 greedy tokens from each prompt: llama.cpp = quantd's CPU reference =
#                   quantd's Vulkan engine at fp16
#   llama-TYPE      llama.cpp's quantizer makes TYPE (q8_0, q4_0, q4_k_m, q5_k_m) from the F16 model:
#                   quantd-quantize makes the same bytes for every tensor both quantize; quantd
#                   loads the file and its greedy tokens are llama.cpp's on it
#   quantd-VARIANT  quantd-quantize makes VARIANT (q8_0, q4_0, q4_1, q4_k_m, q5_k_m, q4_0-gptq):
#                   llama.cpp loads it, generates the tokens quantd does, and its perplexity on
#                   held-out text is quantd's evaluator's within PPL_TOLERANCE
# Environment (set by tests/compat/meson.build): LLAMA_REF, QUANTD_REF, QUANTD_QUANTIZE,
# QUANTD_SOURCE_ROOT, and LLAMA_REF_MISSING (why llama-ref was not built: the test is skipped).
#
# Greedy tokens must be identical, except that quantized files may part where llama.cpp's own
# two best logits are within NEAR_TIE of each other (llama.cpp's CPU kernels quantize the
# activations to 8 bits for quantized weights, quantd's reference does not), and the logits before
# that step must agree (normalised MSE below NMSE_MAX).

import array
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

N_STEPS = 64
PROMPTS = [
    "In the beginning God created",
    "And the LORD spake unto Moses, saying,",
    "Once upon a time, in a quiet village by the sea,",
]
NEAR_TIE = 0.1        # logits (nats): a flip between two tokens this close is arithmetic noise
NMSE_MAX = 1e-3       # normalised MSE of the logits, on the steps before any divergence
PPL_TOLERANCE = 0.005  # relative: llama.cpp's perplexity vs quantd's evaluator, same file and text
PPL_WINDOWS = 2       # of 512 tokens: the whole held-out excerpt

SRC = os.environ.get("QUANTD_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(SRC, "models", "quantd-kjv.gguf")
HELDOUT = os.path.join(SRC, "tests", "compat", "kjv-test-2ch.txt")
T0 = time.monotonic()


def log(msg):
        print("[%5.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


class NoDevice(Exception):
        pass


def run(*args):
        p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
        if p.returncode == 77:
                raise NoDevice(p.stderr.strip())
        if p.returncode != 0:
                sys.stderr.write(p.stderr)
                raise SystemExit("%s exited with %d" % (" ".join(map(str, args[:3])), p.returncode))
        return p.stdout


def json_lines(out):
        return [json.loads(line) for line in out.splitlines() if line.strip()]


# ---- GGUF tensor table (enough to compare tensor bytes) ----------------------------------

GGML_BLOCK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22),
              7: (32, 24), 8: (32, 34), 10: (256, 84), 11: (256, 110), 12: (256, 144),
              13: (256, 176), 14: (256, 210)}
GGML_NAME = {0: "f32", 1: "f16", 30: "bf16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1",
             8: "q8_0", 10: "q2_k", 11: "q3_k", 12: "q4_k", 13: "q5_k", 14: "q6_k"}
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
           11: "<q", 12: "<d"}


def gguf_tensors(path):
        """name -> (type, data bytes) of every tensor of a GGUF file."""
        buf = open(path, "rb").read()
        pos = 0

        def take(fmt):
                nonlocal pos
                v = struct.unpack_from(fmt, buf, pos)
                pos += struct.calcsize(fmt)
                return v[0]

        def string():
                nonlocal pos
                n = take("<Q")
                pos += n
                return buf[pos - n:pos].decode()

        def skip(vtype):
                nonlocal pos
                if vtype == 8:
                        string()
                elif vtype == 9:
                        etype, n = take("<I"), take("<Q")
                        for _ in range(n):
                                skip(etype)
                else:
                        pos += struct.calcsize(_SCALAR[vtype])

        if buf[:4] != b"GGUF":
                raise SystemExit("%s: not a GGUF file" % path)
        pos = 8
        n_tensors, n_kv = take("<Q"), take("<Q")
        align = 32
        for _ in range(n_kv):
                key, vtype = string(), take("<I")
                if key == "general.alignment":
                        align = take("<I")
                else:
                        skip(vtype)
        infos = []
        for _ in range(n_tensors):
                name, nd = string(), take("<I")
                n = math.prod(take("<Q") for _ in range(nd))
                t, off = take("<I"), take("<Q")
                per, size = GGML_BLOCK[t]
                infos.append((name, t, off, n // per * size))
        start = pos + (-pos % align)
        return {name: (t, buf[start + off:start + off + nb]) for name, t, off, nb in infos}


# ---- greedy generation ------------------------------------------------------------------

def generate(tool, model, prompts, *opts):
        """Greedy tokens and the logits they came from: [(prompt ids, tokens, [logits per step])]."""
        with tempfile.NamedTemporaryFile(suffix=".f32") as f:
                out = json_lines(run(tool, "greedy", *opts, "--logits", f.name, model, N_STEPS, *prompts))
                raw = array.array("f")
                raw.frombytes(open(f.name, "rb").read())
        n_vocab = len(raw) // (len(prompts) * N_STEPS)
        res = []
        for i, o in enumerate(out):
                steps = [raw[(i * N_STEPS + k) * n_vocab:(i * N_STEPS + k + 1) * n_vocab] for k in range(N_STEPS)]
                res.append((o["prompt"], o["tokens"], steps))
        return res


def nmse(ref, x):
        num = sum((a - b) * (a - b) for a, b in zip(ref, x))
        den = sum(a * a for a in ref)
        return num / den if den > 0 else num


def top2_margin(logits):
        a, b = sorted(logits, reverse=True)[:2]
        return a - b


def compare(what, prompts, ref, got, exact):
        """Compares greedy runs (ref: llama.cpp's); prints one line per prompt, returns failures."""
        bad = 0
        for text, (rp, rt, rl), (gp, gt, gl) in zip(prompts, ref, got):
                what_p = "%s, %r" % (what, text[:16] + "…")
                if rp != gp:
                        log("%s: prompt tokens differ: %s vs %s" % (what_p, rp, gp))
                        bad += 1
                        continue
                div = next((k for k in range(N_STEPS) if rt[k] != gt[k]), None)
                upto = N_STEPS if div is None else div + 1
                err = max(nmse(rl[k], gl[k]) for k in range(upto))
                if div is None:
                        log("%s: %d of %d tokens identical; logits nmse max %.2e" % (what_p, N_STEPS, N_STEPS, err))
                        ok = err <= NMSE_MAX
                else:
                        margin = top2_margin(rl[div])
                        log("%s: first divergence at step %d (llama.cpp %d, quantd %d; llama.cpp's top-2 "
                            "margin there %.4f); logits nmse max %.2e up to it"
                            % (what_p, div, rt[div], gt[div], margin, err))
                        ok = not exact and margin <= NEAR_TIE and err <= NMSE_MAX
                if not ok:
                        log("  FAIL (%s)" % ("tokens must be identical" if exact else
                                             "divergence beyond a near-tie, or nmse above %g" % NMSE_MAX))
                        bad += 1
        return bad


def vulkan(fn):
        """fn's failures, or none when there is no Vulkan device (the CPU comparisons still count)."""
        try:
                return fn()
        except NoDevice as e:
                log("Vulkan engine: skipped (%s)" % e)
                return 0


# ---- the tests --------------------------------------------------------------------------

def test_tokenize(tools, tmp):
        texts = PROMPTS + [
                "In the beginning",
                "",
                " ",
                "  two  spaces\tand a tab\n\nand new lines\n",
                "caf\u00e9 na\u00efve \u4f60\u597d \U0001F642 \u00fc\u00df",
                "Numbers 34:12, 1611 and 2026.",
                "<s> </s> <unk> are text here",
                "   leading and trailing   ",
                open(HELDOUT, encoding="utf-8").read(),
        ]
        a = json_lines(run(tools["llama"], "tokenize", MODEL, *texts))
        b = json_lines(run(tools["quantd"], "tokenize", MODEL, *texts))
        bad = 0
        for t, x, y in zip(texts, a, b):
                if x != y:
                        bad += 1
                        log("differ for %r:\n  llama.cpp %s\n  quantd    %s" % (t[:60], x[:40], y[:40]))
        log("tokenization: %d of %d texts identical (%d tokens in all)"
            % (len(texts) - bad, len(texts), sum(map(len, a))))
        return bad


def test_greedy_f16(tools, tmp):
        ref = generate(tools["llama"], MODEL, PROMPTS)
        log("llama.cpp done")
        bad = compare("CPU reference", PROMPTS, ref, generate(tools["quantd"], MODEL, PROMPTS, "--cpu"), True)
        # lavapipe takes ~10 s of CPU per prompt: two prompts on the Vulkan engine.
        bad += vulkan(lambda: compare("Vulkan fp16", PROMPTS, ref[:2], generate(tools["quantd"], MODEL, PROMPTS[:2]), True))
        return bad


# The Vulkan variant that holds each of llama.cpp's files without changing a weight: Q8_0 and
# Q8_0 blocks are used as they are by the int8 variant; a Q4_0 file and a K-quant mix run as
# stored in the variant picked at load (int4: Q4_0, Q5_0, Q4_K and Q6_K blocks on their own
# kernels, the Q8_0 tensors their quantizer chose kept; Q5_K_M at int8: Q5_1, Q5_K, Q6_K, Q8_0).
LOSSLESS_PRECISION = {"q8_0": "int8", "q4_0": "file", "q4_k_m": "file", "q5_k_m": "file"}


def test_llama_quant(tools, tmp, qtype):
        llama_file, ours = os.path.join(tmp, "llama.gguf"), os.path.join(tmp, "quantd.gguf")
        run(tools["llama"], "quantize", MODEL, llama_file, qtype)
        run(tools["quantize"], MODEL, ours, "--type", qtype)
        a, b = gguf_tensors(llama_file), gguf_tensors(ours)
        same = [n for n in a if n in b and a[n] == b[n]]
        differ = [n for n in a if n in b and a[n][0] == b[n][0] and a[n][1] != b[n][1]]
        other = ["%s (%s vs %s)" % (n, GGML_NAME[a[n][0]], GGML_NAME[b[n][0]])
                 for n in a if n in b and a[n][0] != b[n][0]]
        types = sorted({GGML_NAME[t] for t, _ in a.values()})
        log("llama.cpp %s: %d tensors (%s); quantd-quantize's bytes identical for %d, different "
            "for %d, other type for %d: %s" % (qtype, len(a), ", ".join(types), len(same), len(differ),
                                                len(other), ", ".join(other) or "-"))
        bad = len(differ) + (len(a) != len(b))
        # token_embd.weight is the only tensor that quantd-quantize keeps at F16 on purpose.
        bad += sum(1 for o in other if not o.startswith("token_embd.weight "))

        ref = generate(tools["llama"], llama_file, PROMPTS)
        bad += compare("%s CPU reference" % qtype, PROMPTS, ref, generate(tools["quantd"], llama_file, PROMPTS, "--cpu"),
                       False)
        # One prompt on lavapipe (~10 s of CPU): the second, since the first meets a near-tie at
        # step 0 on Q4_0 and would compare one step only (likewise in test_quantd_quant).
        p = LOSSLESS_PRECISION[qtype]
        bad += vulkan(lambda: compare("%s Vulkan %s" % (qtype, p), PROMPTS[1:2], ref[1:2],
                                      generate(tools["quantd"], llama_file, PROMPTS[1:2], "--precision", p), False))
        return bad


QUANTD_VARIANTS = {
        "q8_0": ["--type", "q8_0"],
        "q4_0": ["--type", "q4_0"],
        "q4_1": ["--type", "q4_1"],
        "q4_k_m": ["--type", "q4_k_m"],
        "q5_k_m": ["--type", "q5_k_m"],
        # GPTQ on a short built-in calibration sample (quality is not the point here).
        "q4_0-gptq": ["--type", "q4_0", "--method", "gptq", "--samples", "2", "--ctx", "64", "--gptq-minmax"],
}


def test_quantd_quant(tools, tmp, variant):
        f = os.path.join(tmp, variant + ".gguf")
        run(tools["quantize"], MODEL, f, *QUANTD_VARIANTS[variant])
        log("quantd-quantize %s: %d bytes" % (variant, os.path.getsize(f)))
        ref = generate(tools["llama"], f, PROMPTS[1:2])
        bad = compare("%s CPU reference" % variant, PROMPTS[1:2], ref,
                      generate(tools["quantd"], f, PROMPTS[1:2], "--cpu"), False)

        lp = json.loads(run(tools["llama"], "ppl", f, HELDOUT, 512, PPL_WINDOWS))
        qp = json.loads(run(tools["quantize"], "--eval", f, "--text", HELDOUT, "--ctx", 512,
                            "--chunks", PPL_WINDOWS, "--json"))
        rel = lp["ppl"] / qp["ppl"] - 1
        log("%s perplexity (%d windows of 512, %d tokens scored): llama.cpp %.4f, quantd %.4f, "
            "difference %+.3f%% (tolerance %.1f%%)" % (variant, lp["windows"], lp["scored"], lp["ppl"],
                                                       qp["ppl"], 100 * rel, 100 * PPL_TOLERANCE))
        if lp["scored"] != qp["scored"] or abs(rel) > PPL_TOLERANCE:
                log("  FAIL")
                bad += 1
        return bad


def main():
        if len(sys.argv) != 2:
                raise SystemExit("usage: compat.py TEST")
        test = sys.argv[1]
        missing = os.environ.get("LLAMA_REF_MISSING", "")
        if missing or not os.environ.get("LLAMA_REF"):
                print("SKIP: %s" % (missing or "LLAMA_REF not set"))
                return 77
        if not os.path.exists(MODEL):
                print("SKIP: no bundled model at %s" % MODEL)
                return 77
        tools = {"llama": os.environ["LLAMA_REF"], "quantd": os.environ["QUANTD_REF"],
                 "quantize": os.environ["QUANTD_QUANTIZE"]}
        if test == "tokenize":
                fn = test_tokenize
        elif test == "greedy-f16":
                fn = test_greedy_f16
        elif test.startswith("llama-") and test[6:] in LOSSLESS_PRECISION:
                def fn(t, d):
                        return test_llama_quant(t, d, test[6:])
        elif test.startswith("quantd-") and test[7:] in QUANTD_VARIANTS:
                def fn(t, d):
                        return test_quantd_quant(t, d, test[7:])
        else:
                raise SystemExit("unknown test %s" % test)
        tmp = tempfile.mkdtemp(prefix="quantd-compat-")
        try:
                bad = fn(tools, tmp)
        finally:
                shutil.rmtree(tmp, ignore_errors=True)
        log("%s: %s" % (test, "FAILED (%d)" % bad if bad else "ok"))
        return 1 if bad else 0


if __name__ == "__main__":
        sys.exit(main())
