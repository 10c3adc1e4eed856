#!/usr/bin/env bash
# The real-width VAE decoder on a GPU: build with AOTInductor (profiles/realwidth-vae.yaml)
# and, where torch_tensorrt is installed, with TensorRT (profiles/realwidth-vae-tensorrt.yaml,
# one engine per window length), two caches, one set of random weights, every engine in a
# build process of its own, JOBS at a time; then time each against eager (scripts/vae_bench.py).
#   bash scripts/gpu_vae.sh [LOG_DIR] [BACKENDS]   (BACKENDS: "aoti tensorrt" by default)
#   ENTRIES="name ..." builds only those entries (of either profile); ITERS: timed calls;
#   BENCH_ARGS: more vae_bench.py options (--cudnn-benchmark); BUILD_ONLY=1: stop after the builds;
#   JOBS: build processes at once (8 by default: each verifies on the GPU, the whole-latent
#   windows with about 20 GiB of eager activations).
set -u
LOG=${1:-gpu-logs}
BACKENDS=${2:-"aoti tensorrt"}
mkdir -p "$LOG"
FP="python3 -m framepack_trt"
python3 -c "import torch_tensorrt" 2>/dev/null || BACKENDS=${BACKENDS//tensorrt/}
profile_of() { [ "$1" = aoti ] && echo realwidth-vae || echo realwidth-vae-$1; }
python3 scripts/random_weights.py realwidth-vae /tmp/vae-weights >"$LOG/weights.log" 2>&1
start=$(date +%s)
for b in $BACKENDS; do
  p=$(profile_of $b)
  mkdir -p /tmp/vae-$b && { [ -e /tmp/vae-$b/weights ] || ln -s /tmp/vae-weights /tmp/vae-$b/weights; }
  names=$(python3 -c "from framepack_trt.profile import load_profile
print(' '.join(c.name for c in load_profile('$p').components))")
  for e in $names; do
    [ -n "${ENTRIES:-}" ] && [[ " $ENTRIES " != *" $e "* ]] && continue
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-8}" ]; do wait -n; done
    $FP build -p $p -c $e --backend $b --cache-dir /tmp/vae-$b --json \
        >"$LOG/build-$b-$e.json" 2>"$LOG/build-$b-$e.log" &
  done
done
wait
# A build whose check ran out of GPU memory next to the others is tried again, alone
for b in $BACKENDS; do
  p=$(profile_of $b)
  for f in "$LOG"/build-$b-*.json; do
    grep -q '"outcome": "failed"' "$f" 2>/dev/null && grep -q "out of device memory" "$f" || continue
    e=$(basename "$f" .json); e=${e#build-$b-}
    $FP build -p $p -c $e --backend $b --cache-dir /tmp/vae-$b --json \
        >"$LOG/build-$b-$e.retry.json" 2>"$LOG/build-$b-$e.retry.log"
  done
done
echo "builds: $(( $(date +%s) - start )) s" >"$LOG/times.txt"
[ -n "${BUILD_ONLY:-}" ] && { touch "$LOG/built"; exit 0; }
for b in $BACKENDS; do
  python3 scripts/vae_bench.py -p $(profile_of $b) --cache-dir /tmp/vae-$b --iters ${ITERS:-3} ${BENCH_ARGS:-} \
      --markdown "$LOG/bench-$b.md" --json "$LOG/bench-$b.json" >"$LOG/bench-$b.log" 2>&1
  $FP list --cache-dir /tmp/vae-$b --json >"$LOG/list-$b.json" 2>/dev/null
done
echo "all: $(( $(date +%s) - start )) s" >>"$LOG/times.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$LOG/card.txt"
touch "$LOG/done"
