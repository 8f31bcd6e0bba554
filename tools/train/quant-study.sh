#!/usr/bin/env bash
# The quantization study of docs/QUALITY.md in one GPU-machine call: trains the 50M model
# (sweep-50m.sh) while the bundled model's variants are quantized on the spare CPU cores, then
# quantizes the 50M model's variants on the CPU cores and evaluates every variant of both models on
# the GPU (eval-gguf.py: the protocol of `quantd-quantize --eval`) on the test and val splits.
#
# Usage: tools/train/quant-study.sh DATA OUT QUANTIZE SECONDS
#   DATA: make-corpus.py's folder; OUT: gets results.txt (every log line and JSON result as it
#   comes) and the 50M GGUF cut into quantd-kjv-50m.gguf.part-?? (16 MB pieces, `cat` them);
#   QUANTIZE: a quantd-quantize binary; SECONDS: training time per run.
set -u
D=$(cd "$1" && pwd) OUT=$2 Q=$(realpath "$3") SECS=$4
here=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d)
R=$OUT/results.txt
M0=models/quantd-kjv.gguf
M=$W/quantd-kjv-50m.gguf
mkdir -p "$W/kjv" "$W/m50"
say() { echo "[$(date +%T)] $*" | tee -a "$R"; }
secs() { awk "BEGIN { printf \"%.1f\", $2 - $1 }"; }

# One variant: quantize SRC into DIR/NAME.gguf with the rest of the arguments, log time and bpw.
variant() {
        local src=$1 dir=$2 name=$3 t0 t1 rc
        shift 3
        t0=$(date +%s.%N)
        nice -n 5 "$Q" "$src" "$dir/$name.gguf" "$@" >"$dir/$name.log" 2>&1
        rc=$?
        t1=$(date +%s.%N)
        say "quantized $(basename "$dir")/$name rc=$rc in $(secs "$t0" "$t1") s: $* | $(grep 'bits per weight' "$dir/$name.log" | sed 's/^\[[^]]*\] //')"
        [ $rc = 0 ] || tail -n 5 "$dir/$name.log" | tee -a "$R"
}
evaluate() {   # REF DIR SPLIT MODELS...
        local ref=$1 dir=$2 split=$3
        shift 3
        say "eval $(basename "$dir") $split: $*"
        (cd "$dir" && python3 "$here/eval-gguf.py" --ref "$ref" --text "$D/$split.txt" \
                --tokenizer "$D/tokenizer.model" "$@") >>"$R" 2>"$W/eval-$(basename "$dir")-$split.err" ||
                tail -n 5 "$W/eval-$(basename "$dir")-$split.err" | tee -a "$R"
}

say "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader); $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
awk 'NR%40==0' "$D/train.txt" | head -c 60000 >"$W/calib-spread.txt"
awk 'NR%20==0' "$D/train.txt" | head -c 120000 >"$W/calib-spread2.txt"
sha256sum "$D"/train.bin "$D"/val.bin "$D"/test.bin "$D"/tokenizer.model "$W"/calib-spread*.txt | tee -a "$R"

bash "$here/sweep-50m.sh" "$D" "$W/m50" "$SECS" 1 >"$W/sweep.out" 2>&1 &
train=$!

# The bundled model's variants on the spare cores (calibration: spread over the training text).
C1=(--calib "$W/calib-spread.txt" --samples 64 --ctx 256 --threads 2)
(
        variant $M0 "$W/kjv" q8_0 --type q8_0
        variant $M0 "$W/kjv" q4_0 --type q4_0
        variant $M0 "$W/kjv" q4_0-clip --type q4_0 --method rtn-clip
        variant $M0 "$W/kjv" q4_1 --type q4_1
        variant $M0 "$W/kjv" q4_1-clip --type q4_1 --method rtn-clip
        variant $M0 "$W/kjv" q4_k_m --type q4_k_m
        variant $M0 "$W/kjv" q4_k --type q4_k
        variant $M0 "$W/kjv" q6_k --type q6_k
) &
bk=($!)
variant $M0 "$W/kjv" q4_0-gptq --type q4_0 --method gptq "${C1[@]}" &
bk+=($!)
variant $M0 "$W/kjv" q4_0-gptq-d01 --type q4_0 --method gptq "${C1[@]}" --damp 0.1 &
bk+=($!)
variant $M0 "$W/kjv" q4_0-gptq-mm --type q4_0 --method gptq "${C1[@]}" --gptq-minmax &
bk+=($!)
variant $M0 "$W/kjv" q4_0-gptq-noact --type q4_0 --method gptq "${C1[@]}" --no-act-order &
bk+=($!)
variant $M0 "$W/kjv" q4_0-gptq-2x --type q4_0 --method gptq --calib "$W/calib-spread2.txt" --samples 128 --ctx 256 --threads 2 &
bk+=($!)
variant $M0 "$W/kjv" q4_1-gptq --type q4_1 --method gptq "${C1[@]}" &
bk+=($!)
variant $M0 "$W/kjv" q4_0-awq --type q4_0 --method awq "${C1[@]}" &
bk+=($!)

wait $train
say "training: rc=$?"
grep -E '^(params|trained|chosen|[0-9a-f]{64})|val loss' "$W/m50/train.log" "$W/sweep.out" | tee -a "$R"
if [ -f "$M" ] || cp "$W/m50/quantd-kjv-50m.gguf" "$M"; then
        split -b 16000000 "$M" "$OUT/quantd-kjv-50m.gguf.part-"
        say "50M model: $(stat -c %s "$M") bytes, $(sha256sum "$M" | cut -c1-64)"
        python3 -c "import json,sys; r=json.load(open(sys.argv[1])); r.pop('curve',None); r.pop('samples',None); print(json.dumps(r))" "$W/m50/chosen.json" >>"$R"
fi

C2=(--calib "$W/calib-spread.txt" --samples 64 --ctx 256 --threads 4)
(
        variant "$M" "$W/m50" q8_0 --type q8_0 --threads 2
        variant "$M" "$W/m50" q4_0 --type q4_0 --threads 2
        variant "$M" "$W/m50" q4_k_m --type q4_k_m --threads 2
        variant "$M" "$W/m50" q4_0-clip --type q4_0 --method rtn-clip --threads 2
        variant "$M" "$W/m50" q4_1 --type q4_1 --threads 2
        variant "$M" "$W/m50" q4_1-clip --type q4_1 --method rtn-clip --threads 2
        evaluate "$M" "$W/m50" test q8_0.gguf q4_0.gguf q4_k_m.gguf q4_0-clip.gguf q4_1.gguf q4_1-clip.gguf
        evaluate "$M" "$W/m50" val q8_0.gguf q4_0.gguf q4_k_m.gguf q4_0-clip.gguf q4_1.gguf q4_1-clip.gguf
) &
rtn=$!
variant "$M" "$W/m50" q4_0-gptq --type q4_0 --method gptq "${C2[@]}" &
g1=$!
variant "$M" "$W/m50" q4_0-gptq-d01 --type q4_0 --method gptq "${C2[@]}" --damp 0.1 &
g2=$!
variant "$M" "$W/m50" q4_1-gptq --type q4_1 --method gptq "${C2[@]}" &
g3=$!
variant "$M" "$W/m50" q4_0-awq --type q4_0 --method awq --calib "$W/calib-spread.txt" --samples 16 --ctx 256 --threads 4 &
g4=$!

# The bundled model's variants on the GPU while the 50M ones are quantized.
wait "${bk[@]}"
K=(q8_0 q4_0 q4_0-clip q4_1 q4_1-clip q4_k_m q4_k q6_k q4_0-gptq q4_0-gptq-d01 q4_0-gptq-mm q4_0-gptq-noact q4_0-gptq-2x q4_1-gptq q4_0-awq)
evaluate "$PWD/$M0" "$W/kjv" test "${K[@]/%/.gguf}"
evaluate "$PWD/$M0" "$W/kjv" val "${K[@]/%/.gguf}"

wait $rtn $g1 $g2 $g3 $g4
G=(q4_0-gptq.gguf q4_0-gptq-d01.gguf q4_1-gptq.gguf q4_0-awq.gguf)
evaluate "$M" "$W/m50" test "${G[@]}"
evaluate "$M" "$W/m50" val "${G[@]}"
say "done"
