#!/usr/bin/env bash
# The tiny FramePack transformer through TensorRT in fp16, built with a tolerance loose enough
# that a wrong engine is kept, then checked by `verify --full` at several seeds and probed by
# scripts/trt_transformer_probe.py (index layout, offset, values, repeated runs).
#   bash scripts/trt_transformer_probe.sh LOG_DIR [BUILDS]
set -u
LOG=${1:-gpu-logs}
BUILDS=${2:-2}
mkdir -p "$LOG"
FP="python -m framepack_trt.cli"
for b in $(seq 1 "$BUILDS"); do
  CACHE=/tmp/trt-probe-$b
  start=$(date +%s)
  $FP build -p scripts/trt_probe.yaml --cache-dir "$CACHE" >"$LOG/build-$b.log" 2>&1
  echo "build $b rc=$? $(( $(date +%s) - start ))s"
  for seed in 0 1 2; do
    $FP verify --full --seed $seed --cache-dir "$CACHE" --json >"$LOG/verify-$b-$seed.json" 2>"$LOG/verify-$b-$seed.err"
    python - "$LOG/verify-$b-$seed.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for e in d["engines"]:
    worst = [(c["case"], max((o["rel_l2"] if o["rel_l2"] is not None else 9.9) for o in c["outputs"])) for c in e["cases"] if c.get("outputs")]
    print(sys.argv[1].rsplit("/", 1)[-1], "cases", len(worst), "over 1e-2:",
          [(n, f"{r:.1e}") for n, r in worst if r > 1e-2])
PY
  done
  python scripts/trt_transformer_probe.py "$CACHE" "$LOG/probe-$b.json" >"$LOG/probe-$b.log" 2>&1
  echo "probe $b rc=$?"
done
