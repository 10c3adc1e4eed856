"""The FramePack transformer through its piece engines (``engines: blocks``) against the eager
diffusers model, one forward call as FramePack makes it, at the 416x960, 544x704 and 640x608
buckets (text at the profile's opt length), timed alternately in one process.

    framepack-trt build -p realwidth-blocks --cache-dir C
    python scripts/transformer_blocks_bench.py -p realwidth-blocks --cache-dir C [--markdown F]
"""

from __future__ import annotations

import argparse
import datetime
import sys

import torch

from framepack_trt.bench import _time_pair, profile_model
from framepack_trt.components.base import get_component
from framepack_trt.components.transformer import RAW_INPUTS, TIMING_BUCKETS
from framepack_trt.device import current_device, describe
from framepack_trt.export import torch_dtype
from framepack_trt.framepack import use_engines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--profile", default="realwidth-blocks")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)
    spec, cache, model = profile_model(args.profile, "transformer_input", args.cache_dir)
    dtype, device = torch_dtype(spec.dtype), spec.device
    piece = get_component("transformer_input")
    engines = use_engines(cache.root, strict=True, transformer=model)
    swap = engines.swaps["transformer"]
    backends = sorted({e["key_fields"]["backend"] for es in swap.pieces.values() for e in es})
    rows = []
    for height, width in TIMING_BUCKETS:
        sizes = {n: r.opt for n, r in spec.dims.items()}
        sizes.update(latent_height=height // 8, latent_width=width // 8)
        raw = piece.make_inputs(model.config, sizes, dtype, device,
                                torch.Generator().manual_seed(0))
        call = dict(zip(RAW_INPUTS, raw, strict=True))

        def eager(**kw):
            with torch.inference_mode():
                return swap.eager_forward(**kw, return_dict=False)[0]

        def pieces(**kw):
            with torch.inference_mode():
                return model(**kw, return_dict=False)[0]

        want, got = eager(**call), pieces(**call)
        err = float((got.float() - want.float()).norm() / want.float().norm())
        eager_ms, engine_ms = _time_pair(lambda *_, c=call: eager(**c), lambda *_, c=call: pieces(**c), (),
                                         args.warmup, args.iters, device == "cuda")
        rows.append((f"{height}x{width}", eager_ms, engine_ms, eager_ms / engine_ms, err))
    card = describe(current_device(device))
    head = (f"transformer as block engines ({', '.join(backends)}, {spec.dtype}, "
            f"text {sizes['text_len']}), {card}, torch {torch.__version__}, "
            f"{datetime.date.today()}")
    lines = [head, "", "| bucket | eager ms | block engines ms | eager/engines | rel L2 |",
             "|---|---|---|---|---|"]
    lines += [f"| {b} | {e:.2f} | {g:.2f} | {s:.2f}x | {r:.1e} |" for b, e, g, s, r in rows]
    print("\n".join(lines))
    print(engines.report(), file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
