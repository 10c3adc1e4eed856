#!/usr/bin/env bash
# The real-width transformer on a GPU with TensorRT: build, verify at min/opt/max/random, bench.
#   bash scripts/gpu_transformer.sh [LOG_DIR] [PROFILE]
# Logs (build, verify, list --json, bench markdown) go to LOG_DIR (default ./gpu-logs).
# BUILD overrides the command that runs `build` (e.g. a wrapper that dumps the networks).
set -u
LOG=${1:-gpu-logs}
PROFILE=${2:-realwidth}
CACHE=${CACHE:-/tmp/fp-trt-transformer}
mkdir -p "$LOG"
FP="python -m framepack_trt.cli"
${BUILD:-$FP} build -p "$PROFILE" -c transformer --backend tensorrt --cache-dir "$CACHE" \
    >"$LOG/build.log" 2>&1
echo "build rc=$?"
$FP verify --full --seed 0 --cache-dir "$CACHE" -c transformer >"$LOG/verify.log" 2>&1
echo "verify rc=$?"
$FP list --json --cache-dir "$CACHE" >"$LOG/list.json" 2>"$LOG/list.err"
$FP bench --cache-dir "$CACHE" -c transformer --iters 10 --markdown "$LOG/bench.md" >"$LOG/bench.log" 2>&1
echo "bench rc=$?"
tail -n 25 "$LOG/build.log"; tail -n 15 "$LOG/verify.log"; cat "$LOG/bench.md" 2>/dev/null
