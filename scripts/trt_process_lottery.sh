#!/usr/bin/env bash
# Is a wrong TensorRT-RTX transformer engine wrong in every process? Build the tiny fp16 engine
# once (loose tolerance, so it is kept), then replay the same verify cases (seed 0) in N fresh
# processes one after another on an otherwise idle GPU and count the processes in which some
# case is wrong (rel L2 against fp32 over 1e-2).
#   bash scripts/trt_process_lottery.sh LOG_DIR [N]
set -u
LOG=${1:-gpu-logs}; N=${2:-8}
mkdir -p "$LOG"
CACHE=/tmp/trt-lottery
start=$(date +%s)
python3 -m framepack_trt.cli build -p scripts/trt_probe.yaml --cache-dir "$CACHE" >"$LOG/build.log" 2>&1
echo "build rc=$? $(( $(date +%s) - start ))s"
for i in $(seq 1 "$N"); do
  python3 scripts/trt_verify_replay.py "$CACHE" 0 "$LOG/in-$i" >"$LOG/replay-$i.log" 2>&1
  python3 - "$LOG/in-$i/replay-0.json" "$i" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
bad = [r["case"] for r in rows if r["engine_vs_fp32"] > 1e-2]
print(f"process {sys.argv[2]}: {len(bad)} of {len(rows)} cases wrong", bad[:4])
PY
  rm -rf "$LOG/in-$i"/*.pt
done
