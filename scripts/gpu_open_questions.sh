#!/usr/bin/env bash
# The GPU runs that answer the open questions of the VAE and fp8 work, in one go (start it with
# setsid in the background, poll LOG/done; writes LOG/summary.txt last):
#   1. VAE: static-size AOTInductor decoder windows (profiles/realwidth-vae-static.yaml: all
#      sizes static; height and width static), profiled against eager (scripts/vae_profile.py): are the dynamic engine's slow fused
#      kernels its dynamic sizes? (docs/vae.md, "Where the decoder's time goes")
#   1b. VAE: the dynamic-size engine (realwidth-vae's vae_decode_whole) built with inductor's
#      n-dimensional tiling (scripts/inductor_config_build.py triton.prefer_nd_tiling=true
#      triton.max_tiles=3: indices from program ids, fewer divisions), profiled the same way
#   2. VAE: TensorRT with one suspect op at a time kept in PyTorch (scripts/trt_vae_ops.py):
#      which op makes it miss eager by 0.0215? (needs torch_tensorrt; skipped without)
#   3. fp8: the real-width block engines with fp8 linears (profiles/realwidth-blocks-fp8.yaml)
#      against eager bf16 (scripts/transformer_blocks_bench.py; for the bf16 block engines in
#      the same conditions: scripts/gpu_transformer_blocks.sh LOG aoti), the quality probe on the GPU
#      (scripts/fp8_quality.py) and the fp8 GPU tests (tests/gpu/test_fp8_cuda.py); with
#      torch_tensorrt, whether TensorRT builds the fp8 blocks too (and their timing).
# Builds run at once (CPU-bound compiles); measurements one after another on a quiet GPU.
#   bash scripts/gpu_open_questions.sh [LOG_DIR] [PARTS]   (PARTS: "static tiling trtops fp8")
set -u
LOG=${1:-/tmp/gpu-open-questions}
PARTS=${2:-"static tiling trtops fp8"}
mkdir -p "$LOG"
FP="python3 -m framepack_trt"
has_trt=$(python3 -c "import torch_tensorrt" 2>/dev/null && echo yes || echo no)
start=$(date +%s)
stamp() { echo "$1: $(( $(date +%s) - start )) s" >>"$LOG/times.txt"; }
if [[ " $PARTS " == *" static "* ]]; then
  for e in vae_decode_static vae_decode_static_hw; do
    $FP build -p realwidth-vae-static -c $e --cache-dir /tmp/$e --json \
        >"$LOG/build-$e.json" 2>"$LOG/build-$e.log" &
  done
fi
if [[ " $PARTS " == *" tiling "* ]]; then
  python3 scripts/inductor_config_build.py triton.prefer_nd_tiling=true triton.max_tiles=3 -- \
      build -p realwidth-vae -c vae_decode_whole --cache-dir /tmp/vae_decode_nd --json \
      >"$LOG/build-vae_decode_nd.json" 2>"$LOG/build-vae_decode_nd.log" &
fi
if [[ " $PARTS " == *" fp8 "* ]]; then
  mkdir -p /tmp/blk-fp8
  python3 scripts/random_weights.py realwidth-blocks-fp8 /tmp/blk-fp8/weights >"$LOG/fp8-weights.log" 2>&1
  $FP build -p realwidth-blocks-fp8 --cache-dir /tmp/blk-fp8 --json >"$LOG/build-fp8.json" \
      2>"$LOG/build-fp8.log" &
  python3 -m pytest -q -m gpu tests/gpu/test_fp8_cuda.py -s >"$LOG/test-fp8.log" 2>&1 &
  if [ $has_trt = yes ]; then  # can TensorRT-RTX build the fp8 blocks on this card?
    mkdir -p /tmp/blk-fp8-trt && { [ -e /tmp/blk-fp8-trt/weights ] || ln -s /tmp/blk-fp8/weights /tmp/blk-fp8-trt/weights; }
    $FP build -p realwidth-blocks-fp8 --backend tensorrt --cache-dir /tmp/blk-fp8-trt --json \
        >"$LOG/build-fp8-trt.json" 2>"$LOG/build-fp8-trt.log" &
  fi
fi
if [[ " $PARTS " == *" trtops "* && $has_trt == yes ]]; then
  python3 scripts/trt_vae_ops.py --json "$LOG/trt-ops.json" >"$LOG/trt-ops.log" 2>&1
  stamp trtops
fi
wait
stamp builds
if [[ " $PARTS " == *" static "* ]]; then
  for e in vae_decode_static vae_decode_static_hw; do
    python3 scripts/vae_profile.py -p realwidth-vae-static --cache-dir /tmp/$e \
        --json "$LOG/profile-$e.json" >"$LOG/profile-$e.log" 2>&1
  done
fi
if [[ " $PARTS " == *" tiling "* ]]; then
  python3 scripts/vae_profile.py -p realwidth-vae --cache-dir /tmp/vae_decode_nd \
      --json "$LOG/profile-vae_decode_nd.json" >"$LOG/profile-vae_decode_nd.log" 2>&1
fi
stamp vae-profiles
if [[ " $PARTS " == *" fp8 "* ]]; then
  python3 scripts/transformer_blocks_bench.py -p realwidth-blocks-fp8 --cache-dir /tmp/blk-fp8 \
      --markdown "$LOG/bench-fp8.md" >"$LOG/bench-fp8.log" 2>&1
  $FP list --cache-dir /tmp/blk-fp8 --json >"$LOG/list-fp8.json" 2>/dev/null
  if [ -f "$LOG/build-fp8-trt.json" ]; then
    python3 scripts/transformer_blocks_bench.py -p realwidth-blocks-fp8 --cache-dir /tmp/blk-fp8-trt \
        --markdown "$LOG/bench-fp8-trt.md" >"$LOG/bench-fp8-trt.log" 2>&1
  fi
  stamp fp8-bench
  python3 scripts/fp8_quality.py --device cuda --tokens 4096 --text 256 \
      --markdown "$LOG/fp8-quality.md" >"$LOG/fp8-quality.log" 2>&1
  stamp fp8-quality
fi
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  cat "$LOG/times.txt"
  for f in "$LOG"/build-vae_decode_*.json "$LOG"/build-fp8*.json; do
    [ -f "$f" ] && python3 -c "import json,sys; [print(r['name'], r['outcome'], r['seconds'],
      (r.get('error') or '')[:300]) for r in json.load(open('$f'))['results']]"
  done
  for f in "$LOG"/profile-vae_decode_*.json; do
    [ -f "$f" ] && python3 -c "import json; d=json.load(open('$f'));
print('$f', 'eager', round(d['default_ms']), 'ms, engine', round(d.get('engine_ms', 0)), 'ms');
print('engine kinds', d.get('engine', {}).get('kinds_ms'))"
  done
  [ -f "$LOG/trt-ops.log" ] && grep '^{' "$LOG/trt-ops.log"
  for f in "$LOG"/bench-fp8*.md; do [ -f "$f" ] && cat "$f"; done
  [ -f "$LOG/fp8-quality.md" ] && tail -9 "$LOG/fp8-quality.md"
  tail -3 "$LOG/test-fp8.log" 2>/dev/null
} >"$LOG/summary.txt" 2>&1
touch "$LOG/done"
