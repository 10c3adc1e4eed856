"""Where the eager HunyuanVideo VAE decoder spends its time on a GPU: one framewise window
(1, 16, T, h, w) through ``vae.decoder`` in fp16, timed as diffusers runs it, with
``torch.backends.cudnn.benchmark`` on, and in channels-last-3d memory format (weights and
input), then a torch.profiler table of the default run's CUDA kernels grouped by kind; and the
same through the cache's ``vae_decode`` engines where it has some.

    python scripts/bench/vae_profile.py -p realwidth-vae [--frames 5] [--height 68] [--width 88]
"""

from __future__ import annotations

import argparse
import collections
import json
import re

import torch

from framepack_trt.bench import profile_model
from framepack_trt.timing import median_ms

#: Kernel name patterns -> kind, first match wins.
KINDS = (
    ("inductor reduction", r"^triton_(red|per)_"),  # inductor's fused kernels, named after
    ("inductor pointwise", r"^triton_poi_"),        # every op fused in (often "convolution")
    ("layout", r"nchwToNhwc|nhwcToNchw|transpose|permute"),
    ("conv", r"conv|implicit_gemm|xmma|cudnn|sm90_|sm80_|cutlass|gemm"),
    ("pad", r"pad|replication|reflection"),
    ("norm", r"norm|moments|welford|reduce"),
    ("attention", r"fmha|flash|attention|softmax"),
    ("upsample", r"upsample|interpolate|nearest"),
    ("elementwise", r"elementwise|vectorized|unrolled|silu|mul|add"),
    ("copy", r"copy|cat|memcpy|fill"),
)


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, pattern in KINDS:
        if re.search(pattern, low, re.IGNORECASE):
            return kind
    return "other"


def timed(fn, x, iters: int) -> float:
    """Median ms of ``iters`` calls of ``fn(x)`` on CUDA, after a warm-up."""
    return median_ms(fn, (x,), 1, iters, cuda=True)


def kernel_table(run, x) -> dict:
    """One profiled call of ``run(x)``: CUDA time by kernel kind and the top kernels, in ms."""
    from torch.profiler import ProfilerActivity, profile

    run(x)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run(x)
        torch.cuda.synchronize()
    kinds: dict[str, float] = collections.defaultdict(float)
    kernels: dict[str, float] = collections.defaultdict(float)
    for event in prof.key_averages():
        cuda_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if cuda_us and event.device_type.name == "CUDA":
            kinds[kind_of(event.key)] += cuda_us
            kernels[event.key] += cuda_us
    return {"kernel_ms": round(sum(kinds.values()) / 1000, 2),
            "kinds_ms": {k: round(v / 1000, 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top_kernels_ms": {k[:120]: round(v / 1000, 2)
                               for k, v in sorted(kernels.items(), key=lambda kv: -kv[1])[:15]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--profile", default="realwidth-vae")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--height", type=int, default=68)
    ap.add_argument("--width", type=int, default=88)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    spec, cache, vae = profile_model(args.profile, "vae_decode", args.cache_dir)
    decoder = vae.decoder
    g = torch.Generator(spec.device).manual_seed(0)
    x = torch.randn(1, 16, args.frames, args.height, args.width, generator=g, device=spec.device,
                    dtype=next(decoder.parameters()).dtype)

    def run(z):
        with torch.inference_mode():
            return decoder(z)

    result = {"shape": list(x.shape)}
    result["default_ms"] = timed(run, x, args.iters)
    torch.backends.cudnn.benchmark = True
    result["cudnn_benchmark_ms"] = timed(run, x, args.iters)
    decoder.to(memory_format=torch.channels_last_3d)
    result["channels_last_benchmark_ms"] = timed(run, x.to(memory_format=torch.channels_last_3d),
                                                 args.iters)
    decoder.to(memory_format=torch.contiguous_format)
    torch.backends.cudnn.benchmark = False

    result["eager"] = kernel_table(run, x)
    if any(e.component == "vae_decode" for e in cache.entries().values()):
        from framepack_trt.framepack import use_engines

        engines = use_engines(cache.root, strict=True, vae=vae)
        try:
            result["engine_ms"] = timed(run, x, args.iters)
            result["engine"] = kernel_table(run, x)
        finally:
            engines.restore()
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
