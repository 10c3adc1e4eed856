#!/usr/bin/env bash
# The real-width transformer as block engines on a GPU: build realwidth-blocks with AOTInductor
# (aoti), with TensorRT (trt) and realwidth-blocks-fp8 with AOTInductor (fp8: fp8 block
# engines), one cache each, at once, one set of random weights; then time each against eager
# on a quiet GPU (scripts/bench/transformer_blocks_bench.py).
#   bash scripts/gpu/transformer_blocks.sh [LOG_DIR] [VARIANTS]   (default "aoti trt fp8";
#   writes LOG_DIR/done when finished)
set -u
LOG=${1:-gpu-logs}
VARIANTS=${2:-"aoti trt fp8"}
mkdir -p "$LOG" /tmp/blk-weights
FP="python3 -m framepack_trt"
python3 -c "import torch_tensorrt" 2>/dev/null || VARIANTS=${VARIANTS//trt/}
python3 scripts/gpu/random_weights.py realwidth-blocks /tmp/blk-weights >"$LOG/weights.log" 2>&1
profile_of() { [ "$1" = fp8 ] && echo realwidth-blocks-fp8 || echo realwidth-blocks; }
backend_of() { [ "$1" = trt ] && echo tensorrt || echo aoti; }
start=$(date +%s)
for v in $VARIANTS; do
  mkdir -p /tmp/blk-$v && { [ -e /tmp/blk-$v/weights ] || ln -s /tmp/blk-weights /tmp/blk-$v/weights; }
  $FP build -p $(profile_of $v) --backend $(backend_of $v) --cache-dir /tmp/blk-$v --json \
      >"$LOG/build-$v.json" 2>"$LOG/build-$v.log" &
done
wait
echo "builds: $(( $(date +%s) - start )) s" >"$LOG/times.txt"
for v in $VARIANTS; do
  python3 scripts/bench/transformer_blocks_bench.py -p $(profile_of $v) --cache-dir /tmp/blk-$v \
      --markdown "$LOG/bench-$v.md" >"$LOG/bench-$v.log" 2>&1
  $FP list --cache-dir /tmp/blk-$v --json >"$LOG/list-$v.json" 2>/dev/null
done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$LOG/card.txt"
touch "$LOG/done"
