#!/usr/bin/env bash
# Trains the 50M-parameter model for the quantization study (docs/MODEL.md, "quantd-kjv-50m"):
# three regularisation settings at once on one GPU, keeps the lowest validation loss (test
# perplexity is reported, never used to choose). Same corpus and tokenizer as the bundled model.
#
# Usage: tools/train/sweep-50m.sh DATA OUTDIR SECONDS [SEED]
#   OUTDIR gets quantd-kjv-50m.gguf (the chosen run, F16, ~101 MB), chosen.json, every run's
#   .json report and train.log with all runs' output.
set -euo pipefail
data=$1 out=$2 secs=$3 seed=${4:-1}
here=$(dirname "$0")
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4

# 768 wide (every row a whole number of 256-element K-quant super-blocks), 7 layers, 12 query /
# 4 KV heads of 64, SwiGLU 2048: 50,343,168 parameters.
model=(--dim 768 --layers 7 --heads 12 --kv-heads 4 --ffn 2048 --lr 6e-4 --name quantd-kjv-50m)
configs=(
  "a --dropout 0.2 --max-epochs 8"
  "b --dropout 0.3 --max-epochs 14"
  "c --dropout 0.4 --max-epochs 24"
)
pids=()
for cfg in "${configs[@]}"; do
  read -r -a argv <<<"$cfg"
  name=${argv[0]}
  python3 "$here/train.py" --data "$data" --out "$work/$name.gguf" --seconds "$secs" \
    --seed "$seed" "${model[@]}" "${argv[@]:1}" >"$work/$name.log" 2>&1 &
  pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
for cfg in "${configs[@]}"; do
  name=${cfg%% *}
  echo "===== run $name: ${model[*]} $cfg" >>"$out/train.log"
  cat "$work/$name.log" >>"$out/train.log"
  cp "$work/$name.json" "$out/run-$name.json" 2>/dev/null || true
done
[ "$fail" = 0 ] || { tail -n 30 "$work"/*.log; exit 1; }

best=$(python3 - "$work" <<'PY'
import json, sys, glob
runs = []
for p in sorted(glob.glob(sys.argv[1] + "/*.json")):
        r = json.load(open(p))
        m = r["f16_fp32"]
        runs.append((m["val_loss"], p[:-5]))
        print("%s: val loss %.4f, val ppl %.3f, test ppl %.3f (llama.cpp protocol), "
              "epochs %.1f, best step %d of %d, %d tokens/s" % (p, m["val_loss"], m["val_ppl_llamacpp"][0],
              m["test_ppl_llamacpp"][0], r["epochs"], r["best_step"], r["steps"], r["tokens_per_s"]),
              file=sys.stderr)
print(min(runs)[1])
PY
)
echo "chosen: $best" | tee -a "$out/train.log"
cp "$best.json" "$out/chosen.json"
cp "$best.gguf" "$out/quantd-kjv-50m.gguf"
sha256sum "$out/quantd-kjv-50m.gguf" | tee -a "$out/train.log"
