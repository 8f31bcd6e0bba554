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
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4

configs=(
  "a --dropout 0.1 --max-epochs 15"
  "b --dropout 0.2 --max-epochs 30"
  "c --dropout 0.3 --max-epochs 60"
)
pids=()
for cfg in "${configs[@]}"; do
  read -r -a argv <<<"$cfg"
  name=${argv[0]}
  python3 "$here/train.py" --data "$data" --out "$work/$name.gguf" --seconds "$secs" \
    --seed "$seed" "${argv[@]:1}" >"$work/$name.log" 2>&1 &
  pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
for cfg in "${configs[@]}"; do
  name=${cfg%% *}
  echo "===== run $name: $cfg" >>"$out/train.log"
  cat "$work/$name.log" >>"$out/train.log"
  cp "$work/$name.json" "$out/run-$name.json" 2>/dev/null || true
done
[ "$fail" = 0 ] || { tail -n 30 "$work"/*.log; exit 1; }

best=$(python3 - "$work" <<'EOF'
import json, sys, glob
runs = []
for p in sorted(glob.glob(sys.argv[1] + "/*.json")):
        r = json.load(open(p))
        m = r["f16_fp32"]
        runs.append((m["val_loss"], p[:-5]))
        print("%s: val loss %.4f, val ppl %.3f, test ppl %.3f (llama.cpp protocol), "
              "epochs %.1f, best step %d of %d" % (p, m["val_loss"], m["val_ppl_llamacpp"][0],
              m["test_ppl_llamacpp"][0], r["epochs"], r["best_step"], r["steps"]),
              file=sys.stderr)
print(min(runs)[1])
EOF
)
echo "chosen: $best" | tee -a "$out/train.log"
cp "$best.json" "$out/chosen.json"
split -b 15000000 "$best.gguf" "$out/quantd-kjv.gguf.part-"
sha256sum "$best.gguf" | tee -a "$out/train.log"
