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

# 768 wide (every row a whole number of 256-element K-quant super-blocks), 7 layers, 12 query /
# 4 KV heads of 64, SwiGLU 2048: 50,343,168 parameters.
model=(--dim 768 --layers 7 --heads 12 --kv-heads 4 --ffn 2048 --lr 6e-4 --name quantd-kjv-50m)
configs=(
  "a --dropout 0.2 --max-epochs 8"
  "b --dropout 0.3 --max-epochs 14"
  "c --dropout 0.4 --max-epochs 24"
)
. "$here/sweep-runs.sh"
cp "$best.gguf" "$out/quantd-kjv-50m.gguf"
sha256sum "$out/quantd-kjv-50m.gguf" | tee -a "$out/train.log"
