#!/bin/sh
# The service benchmark (docs/PERFORMANCE.md, "Service"): a private dbus-daemon, the real quantd
# on it and on a Unix socket, the bundled model and a random Llama-3-8B-shaped Q4_0 file written
# here; quantd-bench-service streams from 1, 4 and 16 concurrent clients over D-Bus and over the
# socket. Results: one JSON line per run on stdout and in $OUT/bench.jsonl (or the work dir).
#   tests/service/bench-service.sh BINDIR     (BINDIR: quantd, quantctl, quantd-bench-service,
#                                              quantd-bench-model-file)
# Knobs: LAYERS (32; 0 skips the 8B model), KJV_TOKENS (400), BIG_TOKENS (256), CLIENTS ("1 4 16"),
# CPU_ONLY (no), REPEAT (1).
set -u
BIN=$(cd "$1" && pwd)
W=$(mktemp -d /tmp/qd-bench.XXXXXX)
RES=${OUT:-$W}
LAYERS=${LAYERS:-32}
KJV_TOKENS=${KJV_TOKENS:-400}
BIG_TOKENS=${BIG_TOKENS:-256}
CLIENTS=${CLIENTS:-1 4 16}
REPEAT=${REPEAT:-1}

cat >"$W/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$W/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF
BUS_PID=$(dbus-daemon --config-file="$W/bus.conf" --fork --print-pid) || exit 1
export DBUS_SESSION_BUS_ADDRESS="unix:path=$W/bus" XDG_RUNTIME_DIR="$W"
mkdir -p "$W/models"
cp models/quantd-kjv.gguf "$W/models/kjv.gguf"
if [ "$LAYERS" -gt 0 ]; then
        t0=$(date +%s.%N)
        "$BIN/quantd-bench-model-file" "$W/models/big.gguf" "$LAYERS" || exit 1
        echo "wrote the ${LAYERS}-layer Q4_0 model ($(du -m "$W/models/big.gguf" | cut -f1) MiB) in $(awk "BEGIN { print $(date +%s.%N) - $t0 }") s"
fi
cat >"$W/quantd.conf" <<CONF
[daemon]
idle_timeout = 0
cpu_only = ${CPU_ONLY:-no}
[limits]
max_batch = 16
queue_length = 128
max_new_tokens = 4096
max_prompt_tokens = 4096
[policy]
enabled = no
CONF
"$BIN/quantd" --user --config "$W/quantd.conf" --model-dir "$W/models" --socket "$W/quantd.sock" \
        --log-level info >"$RES/quantd.log" 2>&1 &
QD=$!
Q="$BIN/quantctl --socket $W/quantd.sock"
for i in $(seq 100); do [ -S "$W/quantd.sock" ] && break; sleep 0.1; done
$Q load "$W/models/kjv.gguf" --name kjv --precision fp16 || exit 1
if [ "$LAYERS" -gt 0 ]; then
        t0=$(date +%s.%N)
        $Q load "$W/models/big.gguf" --name big --precision int4 || exit 1
        echo "loaded the 8B-shaped model in $(awk "BEGIN { print $(date +%s.%N) - $t0 }") s"
fi
$Q status

bench() {       # MODEL TOKENS PROMPT
        "$BIN/quantd-bench-service" --prompt "$3" "$1" 1 16 >/dev/null      # warm-up
        "$BIN/quantd-bench-service" --socket "$W/quantd.sock" --prompt "$3" "$1" 1 16 >/dev/null
        for r in $(seq "$REPEAT"); do
                for c in $CLIENTS; do
                        for t in dbus socket; do
                                if [ $t = socket ]; then how="--socket $W/quantd.sock"; else how=""; fi
                                line=$("$BIN/quantd-bench-service" --json --pid $QD $how --prompt "$3" "$1" "$c" "$2")
                                echo "{\"model\": \"$1\", \"tokens_asked\": $2, ${line#\{}" | tee -a "$RES/bench.jsonl"
                        done
                done
        done
}
bench kjv "$KJV_TOKENS" "In the beginning God created the heaven and the earth."
[ "$LAYERS" -gt 0 ] && bench big "$BIG_TOKENS" "Once upon a time"
kill -TERM $QD
wait $QD
echo "quantd exited with $?"
kill "$BUS_PID"
