"""FramePack's VAE decode and encode through the ``vae_decode`` and ``vae_encode`` engines
against the eager diffusers VAE, called as FramePack calls it (``vae.decode(latents).sample``,
``vae.encode(image)``, fp16), in one process: for each bucket (and section length),
high-VRAM mode (whole frames) and low-VRAM mode (``enable_tiling``), eager and engines timed
alternately, the output's rel L2 against eager, the peak memory of each (torch's allocator,
allocated and reserved, and the device's used memory sampled by a thread, which also sees what
a TensorRT engine allocates outside torch), the device memory the loaded engines hold (their
weights, unless they run on the VAE's own: ``share_weights``), and which engine served how
many calls.

    framepack-trt build -p realwidth-vae [--backend tensorrt] --cache-dir C
    python scripts/bench/vae_bench.py -p realwidth-vae --cache-dir C [--calls decode,encode]
                                [--modes whole,tiled] [--buckets 544x704,416x960]
                                [--markdown F] [--json F]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import threading
import time

import torch

from framepack_trt.bench import profile_model
from framepack_trt.device import current_device, describe
from framepack_trt.export import torch_dtype
from framepack_trt.framepack import use_engines

BUCKETS = ((544, 704), (416, 960))
SECTIONS = (9, 18)  # FramePack's first section and the ones after


def device_used() -> int:
    """The device's used memory in bytes (cudaMemGetInfo)."""
    free, total = torch.cuda.mem_get_info()
    return total - free


class DevicePeak:
    """The device's used memory (cudaMemGetInfo), sampled every millisecond meanwhile; its
    peak above the value at the start."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        torch.cuda.synchronize()
        self.base = device_used()
        self.peak = self.base
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, device_used())
            time.sleep(0.001)

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, device_used())


def used_gib() -> float:
    """The device's used memory, torch's cache emptied first."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return device_used() / 2**30


def measure(fn, z, iters: int) -> dict:
    """One call for the peaks (after emptying torch's cache), then ``iters`` timed calls."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base, base_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    with DevicePeak() as dev:
        out = fn(z)
    torch_peak = torch.cuda.max_memory_allocated() - base
    reserved_peak = torch.cuda.max_memory_reserved() - base_reserved
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(z)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"out": out, "ms": 1000 * sorted(times)[len(times) // 2],
            "torch_peak_gib": torch_peak / 2**30, "reserved_peak_gib": reserved_peak / 2**30,
            "device_peak_gib": (dev.peak - dev.base) / 2**30}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--profile", default="realwidth-vae")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--modes", default="whole,tiled",
                    help="comma-separated: whole (high-VRAM mode), tiled (low-VRAM mode)")
    ap.add_argument("--calls", default="decode,encode",
                    help="comma-separated: decode (sections of 9 and 18 latent frames), encode "
                         "(one frame; needs vae_encode engines in the cache)")
    ap.add_argument("--buckets", default=",".join(f"{h}x{w}" for h, w in BUCKETS),
                    help="comma-separated HEIGHTxWIDTH of the frames (default: %(default)s)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark on, for eager and engines alike")
    args = ap.parse_args(argv)
    try:
        buckets = [tuple(int(v) for v in b.lower().split("x")) for b in args.buckets.split(",")]
        if any(len(b) != 2 or b[0] % 16 or b[1] % 16 for b in buckets):
            raise ValueError
    except ValueError:
        ap.error(f"--buckets {args.buckets!r}: expected HEIGHTxWIDTH[,...], each a multiple "
                 "of 16 (FramePack's buckets, e.g. 544x704,416x960)")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    spec, cache, vae = profile_model(args.profile, "vae_decode", args.cache_dir)
    dtype, device = torch_dtype(spec.dtype), spec.device
    backends = sorted({e.backend for e in cache.entries().values()
                       if e.component in ("vae_decode", "vae_encode")})

    def decode(z):
        with torch.inference_mode():
            return vae.decode(z).sample

    def encode(x):  # the posterior's parameters: FramePack samples it, which is not compared
        with torch.inference_mode():
            return vae.encode(x).latent_dist.parameters

    def inputs(call, height, width, frames):
        g = torch.Generator(device).manual_seed(frames)
        if call == "encode":  # the start image at its bucket, in [-1, 1]
            return (torch.rand(1, 3, 1, height, width, generator=g, device=device,
                               dtype=dtype) * 2 - 1)
        # FramePack decodes latents / scaling_factor: about 2 in scale.
        return torch.randn(1, 16, frames, height // 8, width // 8, generator=g, device=device,
                           dtype=dtype) / vae.config.scaling_factor

    rows = []
    modes, calls = args.modes.split(","), args.calls.split(",")
    for tiled in [t for t, name in ((False, "whole"), (True, "tiled")) if name in modes]:
        if tiled:
            vae.enable_tiling()  # FramePack's low-VRAM mode: diffusers' default tiles
        for call in calls:
            fn, component = (encode, "vae_encode") if call == "encode" else (decode, "vae_decode")
            for height, width in buckets:
                for frames in ((1,) if call == "encode" else SECTIONS):
                    where = {"call": call, "mode": "tiled" if tiled else "whole",
                             "bucket": f"{height}x{width}", "frames": frames}
                    x = inputs(call, height, width, frames)
                    eager = measure(fn, x, 1)  # warm-up
                    eager = measure(fn, x, args.iters)
                    before = used_gib()
                    engines = use_engines(cache.root, strict=True, vae=vae)
                    try:
                        measure(fn, x, 1)  # loads the engines
                        resident = used_gib() - before  # what the loaded engines hold
                        served = measure(fn, x, args.iters)
                        counts = engines.counts()[component]
                        by_engine = engines.served()[component]
                    except Exception as e:  # e.g. a window no engine covers: the row says so
                        print(json.dumps({**where, "error": str(e)[:300]}), flush=True)
                        continue
                    finally:
                        engines.restore()
                    ref = eager["out"].float()
                    rel = float((served["out"].float() - ref).norm() / ref.norm())
                    row = {**where, "eager_ms": eager["ms"], "engine_ms": served["ms"],
                           "speedup": eager["ms"] / served["ms"], "rel_l2": rel,
                           "eager_torch_peak_gib": eager["torch_peak_gib"],
                           "engine_torch_peak_gib": served["torch_peak_gib"],
                           "eager_reserved_peak_gib": eager["reserved_peak_gib"],
                           "engine_reserved_peak_gib": served["reserved_peak_gib"],
                           "eager_device_peak_gib": eager["device_peak_gib"],
                           "engine_device_peak_gib": served["device_peak_gib"],
                           "engine_calls": counts["engine"], "eager_calls": counts["eager"],
                           "engines_resident_gib": resident, "served_by": by_engine}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    del eager, served, ref
    dev = describe(current_device(device))
    date = datetime.date.today().isoformat()
    lines = [f"VAE decode and encode, {', '.join(backends)} engines against eager diffusers, "
             f"{spec.dtype}, {dev}, {date} (scripts/bench/vae_bench.py, median of {args.iters}, "
             f"cudnn.benchmark {args.cudnn_benchmark}; peak: above the start, "
             "torch allocated / torch reserved / device used)", "",
             "| call | mode | bucket | latent frames | eager ms | engine ms | speed-up | rel L2 | "
             "peak GiB eager | peak GiB engine | engines resident GiB | engines (calls) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['call']} | {r['mode']} | {r['bucket']} | {r['frames']} | {r['eager_ms']:.0f} | "
                     f"{r['engine_ms']:.0f} | {r['speedup']:.2f}x | {r['rel_l2']:.1e} | "
                     + " | ".join(" / ".join(f"{r[f'{who}_{kind}_peak_gib']:.2f}"
                                             for kind in ("torch", "reserved", "device"))
                                  for who in ("eager", "engine"))
                     + f" | {r['engines_resident_gib']:.2f} | "
                     + ", ".join(f"{n} ({c})" for n, c in sorted(r["served_by"].items()))
                     + " |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "date": date, "backends": backends, "rows": rows}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
