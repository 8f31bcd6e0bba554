# Sourced by sweep.sh and sweep-50m.sh, which set data, out, secs, seed, here, model (train.py's
# model arguments, may be empty) and configs ("NAME ARGS..." per run). Trains the runs at once on
# the one GPU, appends their output to $out/train.log, copies each report to $out/run-NAME.json
# and sets best to the run with the lowest validation loss (its path without .gguf); test
# perplexity is reported, never used to choose.
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
work=$(mktemp -d)

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
  echo "===== run $name: ${model[*]:+${model[*]} }$cfg" >>"$out/train.log"
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
