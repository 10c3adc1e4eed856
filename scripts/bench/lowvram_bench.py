"""FramePack's low-VRAM mode with the transformer's block engines, on a big card standing in for a
small one: the model on the CPU with FramePack's ``DynamicSwapInstaller`` (every read of a
weight not on the GPU copies it there), and before each section the first modules moved to the
GPU in FramePack's order (``move_model_to_device_with_memory_preservation``: each module that
has a ``weight``, until memory runs short) up to a byte budget for the blocks instead of the
card's free memory (``--resident``: the share of the blocks' bf16 bytes that fit; on a 24 GB
card, about two thirds of FramePack's 23.2 GiB of blocks), and moved off after it, as FramePack
does before decoding. One transformer call as FramePack makes it (544x704, text 160), eager
against the bf16 block engines and the fp8 ones: each section's first call (where the fp8
copies are made and placed; the first also loads the engines) and the median of the rest, the
time the GPU spent copying from the host (torch.profiler's Memcpy HtoD) in one call, the rel
L2 against eager, how many fp8 block copies were made over the sections, and the bytes of
the blocks on the GPU at the end of a section (their parameters, and their buffers: the fp8
copies FramePack moved there with their linears, or that ``fp8_placement.place_low_vram``
placed). Also: how much of each first call placing the fp8 copies took, FramePack's own moves of each section
(to the GPU before it, off after it), and in the log, the time ``use_engines`` took and a
cProfile of the first call of each run (where it goes).

    framepack-trt build -p realwidth-blocks-fp8 --cache-dir F; ... -p realwidth-blocks --cache-dir B
    python scripts/bench/lowvram_bench.py --cache-dir F --bf16-cache-dir B [--resident 0.67]
                                    [--depth 20 40]

``--depth DUAL SINGLE``: the model grown to FramePack's depth (``framepack_bench.grow``:
copies of its own blocks; the block engines serve any depth of their architecture), so that the
share of the model FramePack moves, and what streams, is that of the whole transformer.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

from framepack_trt.bench import profile_model
from framepack_trt.components.base import get_component
from framepack_trt.components.transformer import RAW_INPUTS
from framepack_trt.device import current_device, describe
from framepack_trt.export import torch_dtype
from framepack_trt.framepack import use_engines
from framepack_trt.timing import call_ms
from framepack_trt.transformer import fp8_placement

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from framepack_reference import DynamicSwapInstaller  # noqa: E402  (FramePack's own, tests/framepack_upstream)

from framepack_trt.framepack_bench import grow  # noqa: E402


def block_bytes(model) -> int:
    return sum(p.nbytes for b in (*model.transformer_blocks, *model.single_transformer_blocks)
               for p in b.parameters())


def move_prefix(model, device, budget: int) -> int:
    """FramePack's rule, a byte budget for its free-memory test: modules that have a weight,
    in order, to ``device`` until ``budget`` bytes have moved (parameters and buffers: the fp8
    copies a linear holds in low-VRAM mode move with it and take memory too). Returns the
    bytes moved."""
    moved = 0
    for m in model.modules():
        if moved >= budget:
            break
        if "weight" in m._parameters:
            m.to(device)
            moved += sum(t.nbytes for t in (*m.parameters(recurse=False),
                                            *m.buffers(recurse=False)))
    return moved


def gpu_block_bytes(model) -> tuple[int, int]:
    """Bytes of the blocks' parameters and of their buffers (the fp8 copies) on a GPU."""
    blocks = (*model.transformer_blocks, *model.single_transformer_blocks)
    return (sum(p.nbytes for b in blocks for p in b.parameters() if p.is_cuda),
            sum(t.nbytes for b in blocks for t in b.buffers() if t.is_cuda))


def host_copy_ms(fn, device) -> float:
    """GPU time spent in host-to-device copies during one call of ``fn``."""
    if torch.device(device).type != "cuda":
        return float("nan")
    from torch.autograd import DeviceType

    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(e.time_range.elapsed_us() for e in prof.events()
               if e.device_type == DeviceType.CUDA and "HtoD" in e.name) / 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--profile", default="realwidth-blocks-fp8")
    ap.add_argument("--cache-dir", default=None, help="the fp8 block engines' cache")
    ap.add_argument("--bf16-cache-dir", default=None, help="the bf16 block engines' cache")
    ap.add_argument("--resident", type=float, default=0.67,
                    help="share of the blocks' bf16 bytes that fit on the GPU (default: 0.67)")
    ap.add_argument("--sections", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5, help="timed calls per section after the first")
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--depth", type=int, nargs=2, default=None, metavar=("DUAL", "SINGLE"),
                    help="grow the model to this many blocks of each kind: FramePack's is 20 40")
    args = ap.parse_args(argv)
    if args.depth and min(args.depth) < 1:
        ap.error(f"--depth {args.depth[0]} {args.depth[1]}: at least one block of each kind")
    if not 0 <= args.resident <= 1:
        ap.error(f"--resident {args.resident}: a share, 0..1")
    spec, cache, model = profile_model(args.profile, "transformer_input", args.cache_dir)
    dtype, device = torch_dtype(spec.dtype), spec.device
    model.to("cpu")  # FramePack's low-VRAM mode loads the transformer on the CPU
    if device == "cuda":
        torch.cuda.empty_cache()
    built = {"num_layers": model.config.num_layers,
             "num_single_layers": model.config.num_single_layers}
    if args.depth:
        grow(model, *args.depth)
        model.register_to_config(**built)  # as the engines were built: use_engines checks it
    sizes = {n: r.opt for n, r in spec.dims.items()}
    sizes.update(latent_height=544 // 8, latent_width=704 // 8)
    raw = get_component("transformer_input").make_inputs(model.config, sizes, dtype, device,
                                                        torch.Generator().manual_seed(0))
    call = dict(zip(RAW_INPUTS, raw, strict=True))
    DynamicSwapInstaller.install_model(model, device=device)
    cuda = device == "cuda"
    budget = int(args.resident * block_bytes(model))

    def forward():
        with torch.inference_mode():
            return model(**call, return_dict=False)[0]

    made = []  # the fp8 copies made (fp8_placement.quantized_block: one when a block's weights change)
    plain_quantize = fp8_placement.quantize_block
    fp8_placement.quantize_block = lambda block: made.append(1) or plain_quantize(block)
    placing = []  # ms in each fp8_placement.place_low_vram call (TransformerSwap's, before the engines)
    plain_place = fp8_placement.place_low_vram

    def timed(fn) -> float:
        """``timing.call_ms``, from a quiet GPU."""
        if cuda:
            torch.cuda.synchronize()
        return call_ms(fn, (), cuda)

    def timed_place(*a, **k):
        out = []
        placing.append(timed(lambda: out.append(plain_place(*a, **k))))
        return out[0]

    fp8_placement.place_low_vram = timed_place

    variants = [("eager bf16", None)]
    if args.bf16_cache_dir:
        variants.append(("bf16 block engines", args.bf16_cache_dir))
    variants.append(("fp8 block engines", cache.root))
    rows, want = [], None
    for name, where in variants:
        loaded = time.perf_counter()
        engines = use_engines(where, strict=True, transformer=model) if where else None
        print(f"{name}: use_engines {(time.perf_counter() - loaded) * 1e3:.0f} ms", flush=True)
        if args.depth:  # the loop runs every block
            model.register_to_config(num_layers=args.depth[0], num_single_layers=args.depth[1])
        made.clear()
        try:
            firsts, rest, copies, held, places, moves = [], [], [], None, [], []
            for _ in range(args.sections):
                moved = timed(lambda: move_prefix(model, device, budget))  # the section starts
                outs = []  # the section's first output, compared with eager's
                placing.clear()
                profiler = cProfile.Profile() if not firsts else None  # where the first goes
                if profiler:
                    profiler.enable()
                firsts.append(call_ms(lambda o: o.append(forward()), (outs,), cuda))
                if profiler:
                    profiler.disable()
                    print(f"{name}: the first call, by cumulative time", flush=True)
                    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
                places.append(sum(placing))
                rest += [call_ms(forward, (), cuda) for _ in range(args.iters)]
                copies.append(host_copy_ms(forward, device))
                held = gpu_block_bytes(model)  # after the section's calls
                moved += timed(lambda: model.to("cpu"))  # FramePack moves it off to decode
                moves.append(moved)
                if device == "cuda":
                    torch.cuda.empty_cache()
            out = outs[0]
            if want is None:
                want = out.float()
            rel = float((out.float() - want).norm() / want.norm())
            rows.append((name, firsts, places, statistics.median(rest),
                         statistics.median(copies), rel, len(made), held, moves))
            print(rows[-1], flush=True)
        finally:
            if engines is not None:
                engines.restore()
            if args.depth:
                model.register_to_config(**built)
    card = describe(current_device(device))
    depth = (f"grown to {args.depth[0]} + {args.depth[1]} blocks" if args.depth else
             f"{built['num_layers']} + {built['num_single_layers']} blocks")
    lines = [f"FramePack low-VRAM mode, {args.profile} ({spec.dtype}, {depth}), 544x704, text "
             f"{sizes['text_len']}, blocks resident up to {args.resident:.0%} of their bf16 bytes "
             f"({budget / 2**30:.2f} of {block_bytes(model) / 2**30:.2f} GiB), {card}, torch "
             f"{torch.__version__}, {datetime.date.today()} (scripts/bench/lowvram_bench.py; "
             f"{args.sections} sections, median of the first calls and of {args.iters} more "
             "per section)", "",
             "| run | first call of each section ms (the first loads the engines) | of it, "
             "placing the fp8 copies ms | later calls ms | eager/run (later) | host-to-device "
             "copies ms per call | rel L2 | fp8 copies made | blocks on the GPU after a section: "
             "parameters / buffers GiB | FramePack's moves of each section (on + off) ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    eager_ms = rows[0][3]

    def each(xs):
        return " / ".join(f"{x:.1f}" for x in xs)

    lines += [f"| {n} | {each(f)} | {each(p)} | {r:.1f} | {eager_ms / r:.2f}x | "
              f"{c:.1f} | {e:.1e} | {k} | {h[0] / 2**30:.2f} / {h[1] / 2**30:.2f} | {each(m)} |"
              for n, f, p, r, c, e, k, h, m in rows]
    print("\n".join(lines))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
