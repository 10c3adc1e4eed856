#!/usr/bin/env bash
# A FramePack video on a GPU, as a user makes one (issue: faster from the first section): run
# the parts in order on one warm machine, each within one device call (under 10 minutes).
#   build  the real-width block engines, bf16 (profiles/realwidth-blocks.yaml) and fp8
#          (realwidth-blocks-fp8.yaml), one build after the other, each alone on the machine
#          (their time is the "under 3 minutes"), then scripts/first_call.py on the bf16
#          ones (load and first calls; inductor's CPU probe must not run)
#   high   framepack-trt bench --framepack: demo_gradio.py's worker, 4 sections at 544x704,
#          25 steps, TeaCache, the transformer grown to 20 + 40 blocks: eager, bf16 engines,
#          fp8 engines, each in a fresh process (high-VRAM mode)
#   low    the same under --vram-budget 24 (FramePack's low-VRAM mode, as on a 24 GB card)
#   bash scripts/gpu_framepack_video.sh PART [LOG_DIR] [OUT_DIR]
set -u
PART=$1
LOG=${2:-/tmp/gpu-framepack-video}
OUTDIR=${3:-$LOG}
mkdir -p "$LOG" "$OUTDIR"
FP="python3 -m framepack_trt"
BF16=$LOG/cache-bf16
FP8=$LOG/cache-fp8
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUTDIR/gpu.txt"
summarise_build() {
  python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
for r in d['results']:
    print(r['name'], r['outcome'], {k: round(v, 1) for k, v in r['seconds'].items()},
          (r.get('error') or '')[:300])" "$1"
}
case $PART in
  build)
    for p in bf16 fp8; do
      cache=$BF16; profile=realwidth-blocks
      [ $p = fp8 ] && cache=$FP8 && profile=realwidth-blocks-fp8
      s=$(date +%s)
      $FP build -p $profile --cache-dir "$cache" --json >"$LOG/build-$p.json" 2>"$LOG/build-$p.err"
      echo "build $p: rc $? in $(( $(date +%s) - s )) s" | tee -a "$OUTDIR/build.txt"
      summarise_build "$LOG/build-$p.json" | tee -a "$OUTDIR/build.txt"
      tail -3 "$LOG/build-$p.err"
    done
    python3 scripts/first_call.py --cache-dir "$BF16" 2>&1 | tee "$OUTDIR/first-call-bf16.txt"
    ;;
  high|low)
    extra=""
    [ "$PART" = low ] && extra="--vram-budget 24"
    $FP bench --framepack --cache-dir "$BF16" --with-cache "$FP8" --depth 20 40 $extra \
      --markdown "$OUTDIR/sections-$PART.md" --json >"$OUTDIR/sections-$PART.json" \
      2>"$OUTDIR/sections-$PART.err"
    echo "bench $PART: rc $?"
    tail -5 "$OUTDIR/sections-$PART.err"
    cat "$OUTDIR/sections-$PART.md"
    ;;
  *) echo "unknown part $PART (build, high, low)"; exit 2 ;;
esac
