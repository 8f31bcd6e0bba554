#!/usr/bin/env bash
# Trains three regularisation settings of the bundled model at once on one GPU and keeps the one
# with the lowest validation loss (test perplexity is reported, never used to choose).
#
# Usage: tools/train/sweep.sh DATA OUTDIR SECONDS [SEED]
#   DATA: what tools/train/make-corpus.py wrote; OUTDIR gets quantd-kjv.gguf.part-aa/-ab (the
#   chosen model cut under 16 MiB a piece; `cat` them together), every run's .json report and one
#   log with all runs' output.
set -euo pipefail
data=$1 out=$2 secs=$3 seed=${4:-1}
here=$(dirname "$0")

model=()  # train.py's defaults: the bundled model's shape
configs=(
  "a --dropout 0.1 --max-epochs 15"
  "b --dropout 0.2 --max-epochs 30"
  "c --dropout 0.3 --max-epochs 60"
)
. "$here/sweep-runs.sh"
split -b 15000000 "$best.gguf" "$out/quantd-kjv.gguf.part-"
sha256sum "$best.gguf" | tee -a "$out/train.log"
