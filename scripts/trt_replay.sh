#!/usr/bin/env bash
# Build the tiny fp16 transformer with TensorRT (tolerance loose enough to keep a wrong engine),
# then replay verify --full at seeds 0 and 1 case by case (scripts/trt_verify_replay.py) and run
# two failing cases first in fresh processes.
#   bash scripts/trt_replay.sh LOG_DIR
set -u
LOG=${1:-gpu-logs}
mkdir -p "$LOG"
CACHE=/tmp/trt-replay
python3 -m framepack_trt.cli build -p scripts/trt_probe.yaml --cache-dir "$CACHE" >"$LOG/build.log" 2>&1
echo "build rc=$?"
for seed in 0 1; do
  python3 scripts/trt_verify_replay.py "$CACHE" $seed "$LOG/in" 2>&1 | grep -v "TRT-LLM\|modelopt"
done
for c in "0 bucket 416x960" "0 bucket 640x608" "1 opt"; do
  set -- $c
  python3 scripts/trt_verify_replay.py "$CACHE" $1 "$LOG/in" --isolated "${*:2}" 2>&1 | grep -v "TRT-LLM\|modelopt" | tail -2
done
grep -rn "specializ" "$(python3 -c 'import torch_tensorrt, os; print(os.path.dirname(torch_tensorrt.__file__))')" --include=*.py | head -20
