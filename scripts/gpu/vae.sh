#!/usr/bin/env bash
# The real-width VAE decoder on a GPU: build with AOTInductor (profiles/realwidth-vae.yaml)
# and, where torch_tensorrt is installed, with TensorRT (profiles/realwidth-vae-tensorrt.yaml,
# one engine per window length), two caches, one set of random weights, every engine in a
# build process of its own, JOBS at a time; then time each against eager (scripts/bench/vae_bench.py).
#   bash scripts/gpu/vae.sh [LOG_DIR] [BACKENDS]   (BACKENDS: "aoti tensorrt" by default)
#   ENTRIES="name ..." builds only those entries (of either profile); ITERS: timed calls;
#   NO_RETRY=1 / RETRY_ONLY=1: skip, or only do, the second try of builds that ran out of memory;
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
[ -n "${RETRY_ONLY:-}" ] || python3 scripts/gpu/random_weights.py realwidth-vae /tmp/vae-weights >"$LOG/weights.log" 2>&1
start=$(date +%s)
entries() {  # the profile's entries for backend $1, those in ENTRIES if it is set
  python3 -c "from framepack_trt.profile import load_profile
print(' '.join(c.name for c in load_profile('$(profile_of $1)').components))" | tr ' ' '\n' |
    while read -r e; do [ -z "${ENTRIES:-}" ] || [[ " $ENTRIES " == *" $e "* ]] && echo "$e"; done
}
build() {  # backend $1, entry $2, log files build-$1-$2$3.json and .log
  $FP build -p $(profile_of $1) -c $2 --backend $1 --cache-dir /tmp/vae-$1 --json \
      >"$LOG/build-$1-$2$3.json" 2>"$LOG/build-$1-$2$3.log"
}
if [ -z "${RETRY_ONLY:-}" ]; then
  for b in $BACKENDS; do
    mkdir -p /tmp/vae-$b && { [ -e /tmp/vae-$b/weights ] || ln -s /tmp/vae-weights /tmp/vae-$b/weights; }
    for e in $(entries $b); do
      while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-8}" ]; do wait -n; done
      build $b $e "" &
    done
  done
  wait
fi
# A build that ran out of GPU memory beside the others (in its check or while compiling) is
# tried again, alone (NO_RETRY=1: not now; RETRY_ONLY=1: only that, after other GPU work)
if [ -z "${NO_RETRY:-}" ]; then
  for b in $BACKENDS; do
    for e in $(entries $b); do
      f="$LOG/build-$b-$e.json"
      grep -q '"outcome": "failed"' "$f" 2>/dev/null && grep -qi "out of memory" "$f" || continue
      build $b $e .retry
    done
  done
fi
echo "builds${RETRY_ONLY:+ (retries)}: $(( $(date +%s) - start )) s" >>"$LOG/times.txt"
[ -n "${BUILD_ONLY:-}" ] && { touch "$LOG/built"; exit 0; }
for b in $BACKENDS; do
  python3 scripts/bench/vae_bench.py -p $(profile_of $b) --cache-dir /tmp/vae-$b --iters ${ITERS:-3} ${BENCH_ARGS:-} \
      --markdown "$LOG/bench-$b.md" --json "$LOG/bench-$b.json" >"$LOG/bench-$b.log" 2>&1
  $FP list --cache-dir /tmp/vae-$b --json >"$LOG/list-$b.json" 2>/dev/null
done
echo "all: $(( $(date +%s) - start )) s" >>"$LOG/times.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$LOG/card.txt"
touch "$LOG/done"
