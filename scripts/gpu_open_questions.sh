#!/usr/bin/env bash
# The GPU runs that answer the open questions of the VAE and fp8 work, in one go (start it with
# setsid in the background, poll LOG/done; LOG/summary.txt is rewritten after every step, so
# that a run cut short still says what it found):
#   vae     decode end to end with every engine of profiles/realwidth-vae.yaml (all on the
#           VAE's own weights): static windows at 544x704 and 416x960 in high-VRAM mode, and
#           static tiles at both in low-VRAM mode (1.88x-1.94x, measured 2026-11-30), next
#           to the ranged nd-tiled engines (scripts/gpu_vae.sh aoti, 6
#           builds at a time: each whole-latent window verifies with about 20 GiB of eager
#           activations; ENTRIES="name ..." in the environment builds only those,
#           VAE_BENCH_ARGS="--modes tiled --buckets 416x960" measures only that; open: the
#           ranged tile engine with only the 32x32 static tiles, which every 640 bucket's
#           interior tiles share: ENTRIES="vae_decode_tiles vae_tile_32x32_latent_frames3
#           vae_tile_32x32_latent_frames5" VAE_BENCH_ARGS="--modes tiled")
#   shared  profiles/realwidth-vae-shared.yaml's decoder engines (measured 2026-11-30)
#   fp8     the real-width fp8 block engines against eager bf16, 30 timed calls
#           (profiles/realwidth-blocks-fp8.yaml, scripts/transformer_blocks_bench.py
#           --profile-calls 5: GPU busy time against wall time, the kernels by kind; with the
#           modulation weights in int8: 1.49x, 2026-11-30)
#   fp8nd   the same engines built with inductor's n-dimensional tiling
#           (scripts/inductor_config_build.py), timed the same way
#   fp8tune the same engines built with inductor's pointwise autotuning and coordinate descent
#           (profiles/realwidth-blocks-fp8-tuned.yaml, build: {tune_pointwise: true}), timed
#           the same way (1.52x-1.54x against 1.49x-1.52x untuned, 2026-11-30)
#   deep    the fp8 engines (and the fp8tune ones, with that part) over FramePack's whole depth,
#           the model grown to 20 + 40 blocks (transformer_blocks_bench.py --depth 20 40; with
#           part fp8): the 2 + 4 blocks' fixed costs (input, output, launch) weigh 60/6 less;
#           with part lowvram, that one runs at this depth too (fp8 1.49x, tuned 1.51x;
#           low-VRAM: fp8 2.38x, bf16 engines 1.16x, 2026-11-30)
#   fp8cfg  one real-width fp8 block of each kind compiled with a few inductor options
#           (scripts/fp8_block_profile.py, one process each): can the Triton kernels around the
#           fp8 GEMMs (norms, RoPE, the activations' quantization: 1.5-1.7 ms of a block's 11)
#           be made faster? (coordinate descent tuning alone: no, 2026-11-30)
#   lowvram FramePack's low-VRAM mode (DynamicSwapInstaller, two thirds of the blocks resident
#           as on a 24 GB card) with the bf16 and the fp8 block engines against eager
#           (scripts/lowvram_bench.py; builds profiles/realwidth-blocks.yaml too; docs/fp8.md,
#           "On a 24 GB card"): with every fp8 copy streamed at every call, fp8 1.33x and bf16
#           engines 1.12x (2026-11-30); since the copies follow the blocks and take the GPU
#           memory their bf16 weights leave (fp8.place_low_vram), at 20 + 40 blocks: 2.38x
#           (2.54x once the swaps kept their host tensors); open: why the first call of the
#           first engines in a process takes 40-48 s there (its log: a cProfile of it)
#   firstcall  (with fp8) where the first use of the fp8 block engines goes, in a fresh process
#           (scripts/first_call.py: inductor's CPU probe, each engine's load and first three
#           calls): the first transformer call in low-VRAM mode took 40-48 s (2026-11-30)
#   fp8tests  pytest tests/gpu/test_fp8_cuda.py: the tiny fp8 block engines on CUDA, through
#           FramePack's loop, offload_bf16 (the bf16 weights to the CPU and back, memory) and
#           low-VRAM mode's placement of the fp8 copies (needs pytest; during the builds;
#           5 passed 2026-11-30)
#   trtops  TensorRT with one suspect op at a time kept in PyTorch (scripts/trt_vae_ops.py):
#           which op makes the decoder miss eager by 0.0215? (needs torch_tensorrt; answered
#           2026-11-30: the convolutions)
#   statichw  why the decoder with height and width static and T over 3..5 does not export on
#           CUDA (the guards on latent_frames, from TORCH_LOGS=+dynamic; answered 2026-11-30)
# Builds run at once (CPU-bound compiles); measurements one after another on a quiet GPU.
#   bash scripts/gpu_open_questions.sh [LOG_DIR] [PARTS]
#   (PARTS: "fp8 fp8tests vae" by default; also "lowvram", "deep" and "firstcall" (with fp8),
#   "fp8tune", "fp8cfg", "shared", "fp8nd", "trtops", "statichw")
set -u
LOG=${1:-/tmp/gpu-open-questions}
PARTS=${2:-"fp8 fp8tests vae"}
rm -rf "$LOG"; mkdir -p "$LOG"  # a reused folder's old build results would be retried
FP="python3 -m framepack_trt"
has() { [[ " $PARTS " == *" $1 "* ]]; }
has_trt=$(python3 -c "import torch_tensorrt" 2>/dev/null && echo yes || echo no)
start=$(date +%s)
stamp() { echo "$1: $(( $(date +%s) - start )) s" >>"$LOG/times.txt"; }

summary() {
  {
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    cat "$LOG/times.txt" 2>/dev/null
    for f in "$LOG"/vae/build-*.json "$LOG"/build-vae-shared.json "$LOG"/build-fp8*.json \
        "$LOG"/build-bf16.json; do
      [ -f "$f" ] && echo "-- $(basename "$f")" && python3 -c "import json; [print(r['name'], r['outcome'], r['seconds'],
        (r.get('error') or '')[:300]) for r in json.load(open('$f'))['results']]"
    done
    [ -f "$LOG/vae/bench-aoti.md" ] && cat "$LOG/vae/bench-aoti.md"
    [ -f "$LOG/vae/bench-aoti.log" ] && [ ! -f "$LOG/vae/bench-aoti.md" ] && grep '^{' "$LOG/vae/bench-aoti.log"
    for f in "$LOG"/bench-vae-shared.md "$LOG"/bench-fp8*.md; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
    [ -f "$LOG/fp8-quantize-time.log" ] && grep -E "quantize|FramePack|blocks" "$LOG/fp8-quantize-time.log"
    [ -f "$LOG/fp8-tests.log" ] && grep -E "passed|failed|offload_bf16:|rel L2|Error" "$LOG/fp8-tests.log" | tail -15
    [ -f "$LOG/vae-mask.log" ] && tail -6 "$LOG/vae-mask.log"
    [ -f "$LOG/fp8cfg.txt" ] && cat "$LOG/fp8cfg.txt"
    [ -f "$LOG/first-call.log" ] && tail -22 "$LOG/first-call.log"
    [ -f "$LOG/lowvram.log" ] && grep -E "use_engines [0-9]" "$LOG/lowvram.log"
    [ -f "$LOG/lowvram.md" ] && cat "$LOG/lowvram.md"
    [ -f "$LOG/trt-ops.log" ] && grep '^{' "$LOG/trt-ops.log"
    [ -f "$LOG/statichw.txt" ] && head -20 "$LOG/statichw.txt"
  } >"$LOG/summary.txt" 2>&1
}

# -- builds, all at once --------------------------------------------------------------------
if has vae; then
  NO_RETRY=1 BUILD_ONLY=1 JOBS=6 bash scripts/gpu_vae.sh "$LOG/vae" aoti >"$LOG/vae-build.out" 2>&1 &
fi
if has shared; then
  $FP build -p realwidth-vae-shared --cache-dir /tmp/vae-shared --json \
      >"$LOG/build-vae-shared.json" 2>"$LOG/build-vae-shared.log" &
fi
build_fp8() {  # fp8, fp8nd or fp8tune ($1), log files build-fp8[-nd|-tune]$2.json and .log
  local out="$LOG/build-${1/fp8nd/fp8-nd}$2"
  out=${out/fp8tune/fp8-tune}
  if [ $1 = fp8 ]; then
    $FP build -p realwidth-blocks-fp8 --cache-dir /tmp/blk-fp8 --json >"$out.json" 2>"$out.log"
  elif [ $1 = fp8tune ]; then
    $FP build -p realwidth-blocks-fp8-tuned --cache-dir /tmp/blk-fp8-tune --json >"$out.json" \
        2>"$out.log"
  else
    python3 scripts/inductor_config_build.py triton.prefer_nd_tiling=true triton.max_tiles=3 \
        -- build -p realwidth-blocks-fp8 --cache-dir /tmp/blk-fp8-nd --json >"$out.json" 2>"$out.log"
  fi
}
if has fp8 || has fp8nd || has fp8tune; then
  mkdir -p /tmp/blk-fp8 /tmp/blk-fp8-nd /tmp/blk-fp8-tune
  python3 scripts/random_weights.py realwidth-blocks-fp8 /tmp/blk-fp8/weights >"$LOG/fp8-weights.log" 2>&1
  for d in /tmp/blk-fp8-nd /tmp/blk-fp8-tune; do
    [ -e $d/weights ] || ln -s /tmp/blk-fp8/weights $d/weights
  done
  for c in fp8 fp8nd fp8tune; do has $c && build_fp8 $c "" & done
fi
if has lowvram; then  # the bf16 block engines, on the same random weights
  mkdir -p /tmp/blk-bf16
  [ -e /tmp/blk-bf16/weights ] || ln -s /tmp/blk-fp8/weights /tmp/blk-bf16/weights
  $FP build -p realwidth-blocks --cache-dir /tmp/blk-bf16 --json >"$LOG/build-bf16.json" \
      2>"$LOG/build-bf16.log" &
fi
if has fp8tests; then  # tiny engines: alongside the builds (its memory check is per process)
  (python3 -m pytest -q -p no:cacheprovider tests/gpu/test_fp8_cuda.py -s >"$LOG/fp8-tests.log" 2>&1
   stamp fp8tests) &
fi
if has statichw; then  # export only: a second, on the CPU side of the machine
  TORCH_LOGS="+dynamic" timeout 300 $FP build -p realwidth-vae-static -c vae_decode_static_hw \
      --cache-dir /tmp/statichw >"$LOG/statichw.log" 2>&1
  grep -iE "violat|guard|specializ|suggest" "$LOG/statichw.log" | grep -v "statically known" \
      | head -60 | cut -c1-400 >"$LOG/statichw.txt"
  stamp statichw
fi
wait
# builds check on the GPU next to each other: one that ran out of memory, again alone
if has vae; then
  RETRY_ONLY=1 BUILD_ONLY=1 bash scripts/gpu_vae.sh "$LOG/vae" aoti >>"$LOG/vae-build.out" 2>&1
fi
for c in fp8 fp8nd fp8tune; do
  has $c || continue
  f="$LOG/build-${c/fp8nd/fp8-nd}.json"
  f=${f/fp8tune/fp8-tune}
  grep -q '"outcome": "failed"' "$f" 2>/dev/null && grep -qi "out of memory" "$f" || continue
  build_fp8 $c .retry
done
stamp builds
summary

# -- measurements, one at a time --------------------------------------------------------------
if has vae; then
  python3 scripts/vae_bench.py -p realwidth-vae --cache-dir /tmp/vae-aoti --iters 3 --calls decode \
      ${VAE_BENCH_ARGS:-} \
      --markdown "$LOG/vae/bench-aoti.md" --json "$LOG/vae/bench-aoti.json" \
      >"$LOG/vae/bench-aoti.log" 2>&1
  stamp vae-bench
  python3 scripts/vae_mask_memory.py --device cuda >"$LOG/vae-mask.log" 2>&1  # the mask alone
  summary
fi
if has shared; then
  python3 scripts/vae_bench.py -p realwidth-vae-shared --cache-dir /tmp/vae-shared --iters 3 \
      --calls decode --markdown "$LOG/bench-vae-shared.md" >"$LOG/bench-vae-shared.log" 2>&1
  stamp shared-bench
  summary
fi
if has firstcall && has fp8; then
  python3 scripts/first_call.py --cache-dir /tmp/blk-fp8 >"$LOG/first-call.log" 2>&1
  stamp firstcall
  summary
fi
for c in fp8 fp8nd fp8tune; do
  has $c || continue
  dir=/tmp/blk-fp8; profile=realwidth-blocks-fp8
  [ $c = fp8nd ] && dir=/tmp/blk-fp8-nd
  [ $c = fp8tune ] && dir=/tmp/blk-fp8-tune && profile=realwidth-blocks-fp8-tuned
  python3 scripts/transformer_blocks_bench.py -p $profile --cache-dir $dir \
      --iters 30 --profile-calls 5 --markdown "$LOG/bench-$c.md" >"$LOG/bench-$c.log" 2>&1
  stamp "$c-bench"
  summary
done
if has deep; then  # the same engines over FramePack's whole depth: 20 + 40 blocks
  for c in fp8 fp8tune; do
    has $c || continue
    dir=/tmp/blk-fp8; profile=realwidth-blocks-fp8
    [ $c = fp8tune ] && dir=/tmp/blk-fp8-tune && profile=realwidth-blocks-fp8-tuned
    python3 scripts/transformer_blocks_bench.py -p $profile --cache-dir $dir --depth 20 40 \
        --iters 10 --markdown "$LOG/bench-$c-deep.md" >"$LOG/bench-$c-deep.log" 2>&1
    stamp "$c-deep"
    summary
  done
fi
if has fp8; then  # how long the runtime takes to make the quantized copies on the GPU
  python3 scripts/fp8_sizes.py --time --device cuda \
      >"$LOG/fp8-quantize-time.log" 2>&1
  stamp fp8-quantize-time
  summary
fi
if has lowvram; then
  python3 scripts/lowvram_bench.py --cache-dir /tmp/blk-fp8 --bf16-cache-dir /tmp/blk-bf16 \
      $(has deep && echo --depth 20 40) --markdown "$LOG/lowvram.md" >"$LOG/lowvram.log" 2>&1
  stamp lowvram
  summary
fi
if has fp8cfg; then
  for opts in "" "triton.multi_kernel=1" "max_autotune_pointwise=true coordinate_descent_tuning=true" \
      "triton.cooperative_reductions=true" "--reciprocal"; do
    tag=$(echo "${opts:-default}" | tr ' =.' '_-_')
    python3 scripts/fp8_block_profile.py --no-bf16 \
        $(for o in $opts; do [[ $o == --* ]] && echo $o || echo --inductor $o; done) \
        --json "$LOG/fp8cfg-$tag.json" >"$LOG/fp8cfg-$tag.log" 2>&1
    { echo "== fp8cfg ${opts:-default}"; tail -4 "$LOG/fp8cfg-$tag.log"; } >>"$LOG/fp8cfg.txt"
  done
  stamp fp8cfg
  summary
fi
if has trtops && [ "$has_trt" = yes ]; then
  python3 scripts/trt_vae_ops.py --json "$LOG/trt-ops.json" >"$LOG/trt-ops.log" 2>&1
  stamp trtops
  summary
fi
summary
touch "$LOG/done"
