#!/usr/bin/env bash
# The bundled model's variants of docs/QUALITY.md, quantized on the CPU cores and evaluated on the
# GPU with eval-gguf.py (test and val, with the paired standard error of ΔPPL): the bundled half
# of quant-study.sh without the training.
#
# Usage: tools/train/eval-bundled.sh DATA QUANTIZE OUT.jsonl
set -u
D=$(cd "$1" && pwd) Q=$(realpath "$2") OUTF=$3
here=$(cd "$(dirname "$0")" && pwd)
M=$PWD/models/quantd-kjv.gguf
W=$(mktemp -d)
awk 'NR%40==0' "$D/train.txt" | head -c 60000 >"$W/calib.txt"
C=(--calib "$W/calib.txt" --samples 64 --ctx 256 --threads 2)
v() { local n=$1; shift; "$Q" "$M" "$W/$n.gguf" "$@" >"$W/$n.log" 2>&1 || tail -n 3 "$W/$n.log"; }
v q8_0 --type q8_0 & v q4_0 --type q4_0 & v q4_0-clip --type q4_0 --method rtn-clip &
v q4_1 --type q4_1 & v q4_1-clip --type q4_1 --method rtn-clip & v q4_k_m --type q4_k_m &
v q4_0-gptq --type q4_0 --method gptq "${C[@]}" & v q4_0-gptq-d01 --type q4_0 --method gptq "${C[@]}" --damp 0.1 &
v q4_1-gptq --type q4_1 --method gptq "${C[@]}" & v q4_0-awq --type q4_0 --method awq "${C[@]}" &
wait
for s in test val; do
        python3 "$here/eval-gguf.py" --ref "$M" --text "$D/$s.txt" --tokenizer "$D/tokenizer.model" \
                "$W"/q8_0.gguf "$W"/q4_k_m.gguf "$W"/q4_0.gguf "$W"/q4_0-clip.gguf "$W"/q4_0-gptq.gguf \
                "$W"/q4_0-gptq-d01.gguf "$W"/q4_0-awq.gguf "$W"/q4_1.gguf "$W"/q4_1-clip.gguf "$W"/q4_1-gptq.gguf
done >"$OUTF"
