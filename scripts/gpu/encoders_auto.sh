#!/usr/bin/env bash
# Real-width encoders and transformer on a GPU, in two phases (one device call each: a call may
# last 10 minutes). Logs go to LOG_DIR; the cache is CACHE (default /tmp/rw).
#   bash scripts/gpu/encoders_auto.sh build LOG_DIR   # every candidate, builds in parallel
#   bash scripts/gpu/encoders_auto.sh time LOG_DIR    # on a quiet GPU: auto's timing, verify, bench
# `build` builds the same engines `--backend auto` would (same keys), SigLIP and LLaMA with both
# backends and the transformer with AOTInductor; `time` then runs the profile's auto build,
# which finds the candidates cached and only times them, `verify --full` and `bench`.
set -u
PHASE=$1
LOG=${2:-gpu-logs}
CACHE=${CACHE:-/tmp/rw}
LIMIT=${LIMIT:-540}
mkdir -p "$LOG"
FP="timeout $LIMIT python3 -m framepack_trt.cli"
if [ "$PHASE" = build ]; then
  for b in aoti tensorrt; do
    ( for c in siglip_image llama_text; do
        $FP build -p realwidth -c $c --backend $b --cache-dir "$CACHE" >"$LOG/build-$c-$b.log" 2>&1
        echo "build $c $b rc=$?"
      done ) &
  done
  ( $FP build -p realwidth -c transformer --backend aoti --cache-dir "$CACHE" \
      >"$LOG/build-transformer-aoti.log" 2>&1; echo "build transformer aoti rc=$?" ) &
  wait
else
  $FP build -p realwidth -c siglip_image -c llama_text --cache-dir "$CACHE" >"$LOG/auto.log" 2>&1
  echo "auto rc=$?"
  $FP verify --full --seed 0 --cache-dir "$CACHE" --json >"$LOG/verify.json" 2>"$LOG/verify.err"
  echo "verify rc=$?"
  $FP bench --cache-dir "$CACHE" --iters 20 --markdown "$LOG/bench.md" >"$LOG/bench.log" 2>&1
  echo "bench rc=$?"
  $FP list --cache-dir "$CACHE" --json >"$LOG/list.json" 2>&1
  tail -n 30 "$LOG/auto.log"; cat "$LOG/bench.md"
fi
