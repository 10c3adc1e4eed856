"""The memory the VAE decoder's middle-block causal mask takes to build, at FramePack's largest
call (5 latent frames of a 416x960 latent: 31,200 tokens), each way in a process of its own:
diffusers' ``prepare_causal_attention_mask`` (int32 frame-id grids, an N x N comparison, an
N x N float32 mask, then the mask in fp16), this project's ``frame_causal_mask`` run eagerly
(the comparison, then the mask in fp16), and the same compiled by inductor as in an
AOTInductor engine (one fused kernel from the token index). Peak above the start of the call:
the process's resident memory on the CPU, torch's allocator on CUDA. The masks are compared.

    python scripts/vae_mask_memory.py [--frames 5] [--height-width 6240] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

VARIANTS = ("diffusers", "frame_causal_mask", "frame_causal_mask compiled")


def measure(variant: str, frames: int, hw: int, device: str) -> dict:
    """One variant in this process: the peak above the start of the call, and a checksum."""
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_hunyuan_video import (
        prepare_causal_attention_mask,
    )

    from framepack_trt.components.vae import frame_causal_mask
    from framepack_trt.memory import _rss_bytes

    fn = {"diffusers": prepare_causal_attention_mask,
          "frame_causal_mask": frame_causal_mask,
          "frame_causal_mask compiled": torch.compile(frame_causal_mask, dynamic=True)}[variant]
    with torch.no_grad():
        fn(2, 6, torch.float16, device)  # warm-up: imports, and the compile at a small size
        fn(3, 7, torch.float16, device)
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
        else:
            start, peak_before = _rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mask = fn(frames, hw, torch.float16, device)
        if cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - start
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start
            if peak_before * 1024 > start + peak:  # an earlier peak hides this call's
                peak = float("nan")
        blocked = int((mask == float("-inf")).sum())
    return {"variant": variant, "peak_gib": peak / 2**30, "mask_gib": mask.nbytes / 2**30,
            "blocked": blocked, "shape": list(mask.shape)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=5, help="latent frames of the window")
    ap.add_argument("--height-width", type=int, default=52 * 120,
                    help="latent height x width (default: 416x960's 52 x 120)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process's variant
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.frames, args.height_width, args.device)))
        return 0
    rows = []
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--one", variant, "--frames",
                              str(args.frames), "--height-width", str(args.height_width),
                              "--device", args.device], capture_output=True, text=True)
        if out.returncode:
            rows.append({"variant": variant, "error": out.stderr.strip().splitlines()[-1]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    n = args.frames * args.height_width
    same = len({r.get("blocked") for r in rows}) == 1
    print(f"\ncausal mask of {n} tokens ({args.frames} frames x {args.height_width}), fp16, "
          f"{args.device}; peak above the start of the call "
          f"({'torch allocator' if args.device.startswith('cuda') else 'resident memory'}); "
          f"the masks {'agree' if same else 'DIFFER'} ({rows[0].get('blocked')} entries -inf)")
    print("| way | peak GiB | the mask itself GiB |\n|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | " + (f"{r['peak_gib']:.2f} | {r['mask_gib']:.2f} |"
                                        if "peak_gib" in r else f"failed: {r['error'][:80]} | |"))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
