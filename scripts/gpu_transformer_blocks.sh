#!/usr/bin/env bash
# The real-width transformer as block engines on a GPU: build realwidth-blocks with AOTInductor
# and with TensorRT (two caches, at once, one set of random weights), then time each against
# eager on a quiet GPU (scripts/transformer_blocks_bench.py).
#   bash scripts/gpu_transformer_blocks.sh [LOG_DIR]     (writes LOG_DIR/done when finished)
set -u
LOG=${1:-gpu-logs}
mkdir -p "$LOG" /tmp/blk-aoti /tmp/blk-trt
FP="python3 -m framepack_trt"
[ -e /tmp/blk-trt/weights ] || ln -s /tmp/blk-aoti/weights /tmp/blk-trt/weights
python3 -c "
from framepack_trt.profile import load_profile
from framepack_trt.components.base import get_component
from framepack_trt.sources import materialize_random
from pathlib import Path
s = load_profile('realwidth-blocks').components[0]
print(materialize_random(s.source, get_component(s.component), Path('/tmp/blk-aoti/weights')))
" >"$LOG/weights.log" 2>&1
start=$(date +%s)
$FP build -p realwidth-blocks --cache-dir /tmp/blk-aoti --json >"$LOG/build-aoti.json" 2>"$LOG/build-aoti.log" &
$FP build -p realwidth-blocks --backend tensorrt --cache-dir /tmp/blk-trt --json >"$LOG/build-trt.json" 2>"$LOG/build-trt.log" &
wait
echo "builds: $(( $(date +%s) - start )) s" >"$LOG/times.txt"
for b in aoti trt; do
  python3 scripts/transformer_blocks_bench.py -p realwidth-blocks --cache-dir /tmp/blk-$b \
      --markdown "$LOG/bench-$b.md" >"$LOG/bench-$b.log" 2>&1
  $FP list --cache-dir /tmp/blk-$b --json >"$LOG/list-$b.json" 2>/dev/null
done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$LOG/card.txt"
touch "$LOG/done"
