#!/usr/bin/env bash
# A FramePack video on a GPU, as a user makes one (issue: faster from the first section): run
# the parts in order on one warm machine, each within one device call (under 10 minutes).
#   build  the VAE's high-VRAM engines at 544x704 (realwidth-vae-video.yaml, --jobs 2), then two
#          copies of that cache (hard links; the manifest is replaced, never written in place):
#          one gets the bf16 block engines (realwidth-blocks.yaml), the other the fp8 ones
#          (realwidth-blocks-fp8.yaml: fp8 blocks are served first where both are), the two
#          builds side by side with --jobs 4 each (the bf16 build alone on the machine, the
#          issue's "under 3 minutes", was measured on 2026-12-07: 113 s)
#   rest   what a build cut short by its time left undone (the blocks wait for the whole VAE)
#   high   framepack-trt bench --framepack: demo_gradio.py's worker, 4 sections at 544x704,
#          25 steps, TeaCache, the transformer grown to 20 + 40 blocks: eager, bf16 engines,
#          fp8 engines, each in a fresh process (high-VRAM mode; the transformer and the VAE
#          on engines)
#   low    the same under --vram-budget 24 (FramePack's low-VRAM mode, as on a 24 GB card;
#          the transformer on engines: the VAE's low-VRAM tiles have none in these caches)
#   first  scripts/bench/first_call.py on the bf16 cache (load and first calls; inductor's CPU probe
#          must not run)
#   bash scripts/gpu/framepack_video.sh PART [LOG_DIR] [OUT_DIR]
# FramePack's own environment (its diffusers and transformers pins: scripts/gpu/framepack_wheels.sh
# makes the wheels to carry) is what its users run; build and bench in the same one (an engine
# built under other library versions is stale: docs/framepack-versions.md).
set -u
PART=$1
LOG=${2:-/tmp/gpu-framepack-video}
OUTDIR=${3:-$LOG}
mkdir -p "$LOG" "$OUTDIR"
FP=${FRAMEPACK_TRT:-"python3 -m framepack_trt"}  # FRAMEPACK_TRT: another command (a dry run)
BF16=$LOG/cache-bf16
FP8=$LOG/cache-fp8
export PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUTDIR/gpu.txt"
summarise_build() {
  python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
for r in d['results']:
    print(r['name'], r['outcome'], {k: round(v, 1) for k, v in r['seconds'].items()},
          (r.get('error') or '')[:300])" "$1"
}
timed_build() {  # NAME PROFILE CACHE JOBS [TIME_LIMIT_S]: a build cut short resumes next time
  local s rc; s=$(date +%s)
  timeout "${5:-3600}" $FP build -p "$2" --cache-dir "$3" -j "$4" --json >"$LOG/build-$1.json" \
    2>"$LOG/build-$1.err"
  rc=$?
  echo "build $1 ($2, -j $4): rc $rc in $(( $(date +%s) - s )) s" | tee -a "$OUTDIR/build.txt"
  summarise_build "$LOG/build-$1.json" | tee -a "$OUTDIR/build.txt"
  tail -3 "$LOG/build-$1.err"
  return $rc
}
side_by_side() {  # the bf16 and the fp8 block engines, each into its copy of the VAE's cache
  local left=$1 bf16 fp8
  for c in "$BF16" "$FP8"; do [ -d "$c" ] || cp -al "$VAE" "$c"; done
  timed_build bf16 realwidth-blocks "$BF16" 4 "$left" & bf16=$!
  timed_build fp8 realwidth-blocks-fp8 "$FP8" 4 "$left"; fp8=$?
  wait $bf16; bf16=$?
  [ $bf16 = 0 ] && [ $fp8 = 0 ]
}
VAE=$LOG/cache-vae
case $PART in
  build|rest)  # within one device call (600 s): the VAE's engines into a cache of their own,
          # then two copies of it (hard links), the bf16 and the fp8 block engines built side by
          # side; `rest` (a build is resumable: what is cached is skipped in seconds) finishes
          # what a build cut short by its time left, the blocks only after the VAE is whole
    timed_build "vae-$PART" profiles/realwidth-vae-video.yaml "$VAE" 2 $(( 560 - SECONDS - 200 )) &&
      side_by_side $(( 560 - SECONDS ))
    ;;
  first)
    python3 scripts/bench/first_call.py --cache-dir "$BF16" 2>&1 | tee "$OUTDIR/first-call-bf16.txt"
    ;;
  high|low)
    extra=""
    [ "$PART" = low ] && extra="--vram-budget 24 --modules transformer"
    $FP bench --framepack --cache-dir "$BF16" --with-cache "$FP8" --depth 20 40 $extra \
      --markdown "$OUTDIR/sections-$PART.md" --json >"$OUTDIR/sections-$PART.json" \
      2>"$OUTDIR/sections-$PART.err"
    echo "bench $PART: rc $?"
    tail -5 "$OUTDIR/sections-$PART.err"
    cat "$OUTDIR/sections-$PART.md"
    ;;
  *) echo "unknown part $PART (build, rest, first, high, low)"; exit 2 ;;
esac
