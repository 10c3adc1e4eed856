"""Why can a TensorRT transformer engine pass its build-time check and fail `verify` later?

Loads the transformer engine of a cache and, at several latent sizes, runs it on inputs that
differ only in what the check draws at random: the index layout (FramePack's inverted order or
vanilla / F1), the index offset, the random values, and whether the same input is run again.
Prints one row per run (rel L2 against the diffusers module in the engine's dtype, and that
module's own rel L2 against fp32) and writes them as JSON.

    python scripts/trt_transformer_probe.py CACHE_DIR OUT.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import torch

from framepack_trt.backends import get_backend
from framepack_trt.cache import Cache
from framepack_trt.components.base import get_component
from framepack_trt.components.transformer import RAW_INPUTS
from framepack_trt.engine_status import entry_status
from framepack_trt.export import torch_dtype
from framepack_trt.shapes import dims_from_dict
from framepack_trt.sources import Source, load_model

# (latent height, width, text length): the sizes verify --full drew when the engine failed
# (62x98), the profile's min, opt and max, and two 640 buckets.
SIZES = [(62, 98, 64), (52, 52, 1), (68, 88, 64), (120, 120, 256), (80, 76, 100), (56, 84, 50)]
LAYOUTS = [("inverted", 0), ("inverted", 30), ("vanilla", 0), ("vanilla", 30)]
INDEX_POSITIONS = {k: RAW_INPUTS.index(f"indices_latents{s}") for k, s in
                   (("latent", ""), ("clean", "_clean"), ("2x", "_history_2x"), ("4x", "_history_4x"))}


def with_layout(inputs: tuple, layout: str, offset: int, frames: int) -> tuple:
    idx = torch.arange(offset, offset + 1 + 16 + 2 + 1 + frames)
    if layout == "vanilla":
        start, c4, c2, c1, latent = idx.split([1, 16, 2, 1, frames])
    else:
        start, latent, c1, c2, c4 = idx.split([1, frames, 1, 2, 16])
    out = list(inputs)
    dev = inputs[0].device
    for name, value in (("latent", latent), ("clean", torch.cat([start, c1])), ("2x", c2),
                        ("4x", c4)):
        out[INDEX_POSITIONS[name]] = value.to(dev)
    return tuple(out)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float().to(a.device)
    return float((a - b).norm() / b.norm())


@dataclass
class Loaded:
    """A cache's transformer engine, and the diffusers model it was built from, in the
    engine's dtype and in float32."""
    component: Any
    engine: Any
    model: Any
    truth: Any
    dtype: torch.dtype
    device: str
    dims: Any
    buckets: list


def load_transformer(cache_dir: str) -> Loaded:
    cache = Cache(cache_dir)
    (entry,) = [e for e in cache.entries().values()
                if e["component"] == "transformer" and entry_status(cache, e).state == "ok"]
    fields = entry["key_fields"]
    device, dtype = fields["device"]["type"], torch_dtype(fields["dtype"])
    component = get_component("transformer")
    engine = get_backend(fields["backend"]).load(cache.root / entry["engine"]["file"], device)
    source = Source.from_dict(entry["source"])
    return Loaded(component, engine,
                  load_model(component, source, dtype, device, cache.weights_dir),
                  load_model(component, source, torch.float32, device, cache.weights_dir),
                  dtype, device, dims_from_dict(fields["dims"]),
                  [tuple(b) for b in entry.get("buckets") or ()])


def references(t: Loaded, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The diffusers model's output in the engine's dtype, and in float32."""
    with torch.inference_mode():
        (eager,) = t.component.reference(t.model, inputs)
        (exact,) = t.component.reference(t.truth, [
            x.float() if x.is_floating_point() else x for x in inputs])
    return eager, exact


def main(cache_dir: str, out_path: str) -> None:
    t = load_transformer(cache_dir)
    component, engine, model = t.component, t.engine, t.model
    dtype, device, frames = t.dtype, t.device, t.dims["latent_frames"].opt
    rows = []
    print(f"{'size':>14} {'layout':>9} {'off':>3} {'seed':>4} {'run':>3} {'engine':>9} {'eager':>9}")
    for h, w, text in SIZES:
        for seed in (0, 1):
            gen = torch.Generator().manual_seed(seed)
            sizes = {"latent_frames": frames, "latent_height": h, "latent_width": w,
                     "text_len": text}
            base = component.make_inputs(model.config, sizes, dtype, device, gen)
            for layout, offset in LAYOUTS:
                inputs = with_layout(base, layout, offset, frames)
                expected, exact = references(t, inputs)
                for run in range(3):
                    (out,) = engine(*component.prepare(inputs, dtype, device))
                    row = {"h": h, "w": w, "text": text, "layout": layout, "offset": offset,
                           "seed": seed, "run": run, "engine_vs_eager": rel_l2(out, expected),
                           "engine_vs_fp32": rel_l2(out, exact),
                           "eager_vs_fp32": rel_l2(expected, exact)}
                    rows.append(row)
                    print(f"{h:>4}x{w:<4} t{text:<4} {layout:>9} {offset:>3} {seed:>4} {run:>3} "
                          f"{row['engine_vs_eager']:9.2e} {row['eager_vs_fp32']:9.2e}", flush=True)
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
