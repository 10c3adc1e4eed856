"""The bytes of the weights a profile's fp8 block engines take (``quantize: fp8``: fp8 linears
with their scales, int8 modulation linears with theirs, every other parameter in bf16) against
the same blocks in bf16, from the tensors themselves: the model loaded on the CPU (its random
weights written to DIR first), each block quantized as the runtime does. No engine is built or
run, so this runs without a GPU; scripts/bench/transformer_blocks_bench.py prints the same sum on one.

    python scripts/bench/fp8_sizes.py [-p realwidth-blocks-fp8] [--weights DIR] [--time [--device cuda]]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from framepack_trt.components.base import get_component
from framepack_trt.profile import load_profile
from framepack_trt.sources import load_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--profile", default="realwidth-blocks-fp8")
    ap.add_argument("--weights", default=None, help="folder for the random weights "
                    "(default: a temporary one)")
    ap.add_argument("--time", action="store_true",
                    help="also time making one block's quantized copy (on --device)")
    ap.add_argument("--device", default="cpu",
                    help="where --time quantizes: cpu (FramePack's low-VRAM mode) or cuda "
                         "(high-VRAM mode: the blocks live on the GPU)")
    args = ap.parse_args(argv)
    if args.time and args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA device here")
    specs = [s for s in load_profile(args.profile).components if s.component.endswith("_fp8")]
    if not specs:
        raise SystemExit(f"{args.profile}: no fp8 block engines (quantize: fp8) in the profile")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.weights or tmp)
        model = load_model(get_component(specs[0].component), specs[0].source, torch.bfloat16,
                           "cpu", root)
        rows, total = [], {"fp8": 0, "bf16": 0}
        for spec in specs:
            fp8_comp = get_component(spec.component)
            bf16_comp = get_component(spec.component.removesuffix("_fp8"))
            for kind, comp in (("fp8", fp8_comp), ("bf16", bf16_comp)):
                by_dtype: dict[str, int] = {}
                for i in range(comp.pieces(model.config)):
                    for t in comp.weights(model, i, torch.bfloat16, "cpu"):
                        key = str(t.dtype).removeprefix("torch.")
                        by_dtype[key] = by_dtype.get(key, 0) + t.nbytes
                total[kind] += sum(by_dtype.values())
                rows.append((spec.component if kind == "fp8" else bf16_comp.name, by_dtype))
    print(f"weights the block engines take, {args.profile}, torch {torch.__version__}")
    for name, by_dtype in rows:
        parts = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sorted(by_dtype.items()))
        print(f"  {name}: {sum(by_dtype.values()) / 2**20:.1f} MiB ({parts})")
    print(f"fp8 blocks {total['fp8'] / 2**20:.1f} MiB against bf16 {total['bf16'] / 2**20:.1f} "
          f"MiB: {100 * total['fp8'] / total['bf16']:.1f} %")
    if args.time:
        # How long making one block's quantized copy takes here (FramePack's low-VRAM mode
        # makes them on the CPU, at each block's first call): median of 3 per kind.
        import statistics
        import time

        from framepack_trt.transformer.fp8 import quantize_block
        from framepack_trt.transformer.pieces import piece_module

        cuda = args.device.startswith("cuda")
        where = (torch.cuda.get_device_name(args.device) if cuda
                 else f"the CPU ({torch.get_num_threads()} threads)")
        per = {}
        for piece in ("dual_block", "single_block"):
            block = piece_module(model, piece, 0).to(args.device)
            quantize_block(block)  # warm-up (CUDA: kernels loaded)
            times = []
            for _ in range(3):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                quantize_block(block)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            block.to("cpu")
            per[piece] = statistics.median(times)
            print(f"quantize one {piece} on {where}: {per[piece]:.3f} s")
        print(f"FramePack's 20 dual + 40 single blocks: about "
              f"{20 * per['dual_block'] + 40 * per['single_block']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
