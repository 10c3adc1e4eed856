"""The FramePack transformer through its piece engines (``engines: blocks``) against the eager
diffusers model, one forward call as FramePack makes it, at the 416x960, 544x704 and 640x608
buckets (text at the profile's opt length), timed alternately in one process; on CUDA also each
call's peak memory above its start (torch's allocator) and, last, the memory the engines and
their weights hold (fp8 blocks: the quantized copies), and the engines' size on disk.

    framepack-trt build -p realwidth-blocks --cache-dir C
    python scripts/bench/transformer_blocks_bench.py -p realwidth-blocks --cache-dir C [--markdown F]
                                               [--profile-calls N]

``--depth DUAL SINGLE``: the model grown to that many blocks of each kind once the engines are
attached (FramePack's transformer: 20 40), each new block a copy of one the profile built the
engines for: the block engines take every block's weights as inputs, so one set of them
serves a model of any depth of the architecture, and a real-width profile of 2 + 4 blocks
then times the whole model without building or storing 24 GiB of random weights. (A profile
of 20 + 40 blocks would build the same four engines under another cache key.)

``--profile-calls N`` (CUDA): then N more calls of each at 544x704 under torch.profiler: the
wall time per call against the time the GPU is busy (the rest is launch and Python overhead
between kernels), the kernels per call, and their time by kind (attention, fp8 and bf16
GEMMs, Triton's fused kernels, PyTorch's own).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import sys
import time

import torch

from framepack_trt.bench import profile_model
from framepack_trt.components.base import get_component
from framepack_trt.components.transformer import RAW_INPUTS, TIMING_BUCKETS
from framepack_trt.device import current_device, describe
from framepack_trt.export import torch_dtype
from framepack_trt.framepack import use_engines
from framepack_trt.framepack_bench import grow
from framepack_trt.runtime.transformer_swap import fp8_first
from framepack_trt.timing import paired_median_ms


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--profile", default="realwidth-blocks")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--profile-calls", type=int, default=0, metavar="N",
                    help="N more calls of eager and of the engines at 544x704 under "
                         "torch.profiler (CUDA): GPU busy time against wall time, kernels by kind")
    ap.add_argument("--depth", type=int, nargs=2, default=None, metavar=("DUAL", "SINGLE"),
                    help="grow the model to DUAL dual-stream and SINGLE single-stream blocks "
                         "(copies of its own) after the engines attach: FramePack's is 20 40")
    args = ap.parse_args(argv)
    if args.depth and min(args.depth) < 1:
        ap.error(f"--depth {args.depth[0]} {args.depth[1]}: at least one block of each kind")
    spec, cache, model = profile_model(args.profile, "transformer_input", args.cache_dir)
    dtype, device = torch_dtype(spec.dtype), spec.device
    piece = get_component("transformer_input")
    engines = use_engines(cache.root, strict=True, transformer=model)
    if "transformer" not in engines.swaps:
        sys.exit(f"no transformer block engines in {cache.root}: build -p {args.profile} first "
                 "(`framepack-trt list` shows what is there)")
    swap = engines.swaps["transformer"]
    if args.depth:
        grow(model, *args.depth)
    # The entry each piece prefers: fp8 block engines first, as the transformer's swap ranks them.
    used = [min(es, key=fp8_first(piece)) for piece, es in swap.pieces.items() if es]
    backends = sorted({e.backend for e in used})
    cuda = device == "cuda"
    held = torch.cuda.memory_allocated() if cuda else 0

    def peak_gib(fn, kw):
        if not cuda:
            return float("nan")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(**kw)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**30
    def block_weights_gib(entries):
        """The weights the block engines of ``entries`` take, all blocks (bf16 blocks when
        ``entries`` has none)."""
        total = 0
        for name in ("transformer_dual_block", "transformer_single_block"):
            name = next((e.component for e in entries if e.component.startswith(name)), name)
            comp = get_component(name)
            total += sum(t.nbytes for i in range(comp.pieces(model.config))
                         for t in comp.weights(model, i, dtype, device))
        return total / 2**30

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
        eager_ms, engine_ms = paired_median_ms(lambda *_, c=call: eager(**c),
                                               lambda *_, c=call: pieces(**c), (),
                                               args.warmup, args.iters, cuda)
        rows.append((f"{height}x{width}", eager_ms, engine_ms, eager_ms / engine_ms, err,
                     peak_gib(eager, call), peak_gib(pieces, call)))
    card = describe(current_device(device))
    components = ", ".join(sorted(e.component for e in used))
    depth = f"{model.config.num_layers} + {model.config.num_single_layers} blocks" + (
        " (grown by --depth)" if args.depth else "")
    head = (f"transformer as block engines ({', '.join(backends)}, {spec.dtype}: {components}; "
            f"{depth}; text {sizes['text_len']}), {card}, torch {torch.__version__}, "
            f"{datetime.date.today()}")
    lines = [head, "", "| bucket | eager ms | block engines ms | eager/engines | rel L2 | "
             "peak GiB eager | peak GiB engines |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {b} | {e:.2f} | {g:.2f} | {s:.2f}x | {r:.1e} | {pe:.2f} | {pg:.2f} |"
              for b, e, g, s, r, pe, pg in rows]
    lines += ["", f"block weights handed to the engines: {block_weights_gib(used) * 1024:.1f} MiB (the "
              f"same blocks in {spec.dtype}: {block_weights_gib([]) * 1024:.1f} MiB)"]
    lines += [f"engines on disk: {sum(e.engine.size for e in used) / 2**20:.1f} MiB; "
              f"held by the engines and their weights (fp8: the quantized blocks) after the "
              f"calls: {(torch.cuda.memory_allocated() - held) / 2**30 if cuda else 0:.2f} GiB"]
    print("\n".join(lines), flush=True)
    write(lines, args.markdown)  # what is measured so far, whatever the profile below does
    if args.profile_calls and cuda:
        try:
            more = profile_phase(args, model, piece, sizes, dtype, device, eager, pieces,
                                 swap, used)
        except Exception as exc:  # the table above stays written
            more = ["", f"the profile phase failed: {type(exc).__name__}: {exc}"[:400]]
        print("\n".join(more), flush=True)
        write(lines + more, args.markdown)
    print(engines.report(), file=sys.stderr)
    return 0


def write(lines, markdown) -> None:
    if markdown:
        with open(markdown, "w") as fh:
            fh.write("\n".join(lines) + "\n")


def profile_phase(args, model, piece, sizes, dtype, device, eager, pieces, swap, used) -> list:
    """``--profile-calls``: at 544x704, the profiler's view of eager and engines, then each
    part's GPU time between CUDA events."""
    lines = []
    sizes = {**sizes, "latent_height": 544 // 8, "latent_width": 704 // 8}
    raw = piece.make_inputs(model.config, sizes, dtype, device,
                            torch.Generator().manual_seed(0))
    call = dict(zip(RAW_INPUTS, raw, strict=True))
    lines += ["", f"544x704 under torch.profiler, {args.profile_calls} calls each: per call, "
              "wall ms (with the profiler's own cost), GPU busy ms, kernels, and ms by kind",
              "", "| run | wall ms | GPU busy ms | idle ms | kernels | by kind (ms) |",
              "|---|---|---|---|---|---|"]
    for who, fn in (("eager", eager), ("engines", pieces)):
        p = gpu_profile(lambda c=call, f=fn: f(**c), args.profile_calls)
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in p["by_kind"].items())
        lines.append(f"| {who} | {p['wall_ms']:.2f} | {p['busy_ms']:.2f} | "
                     f"{p['wall_ms'] - p['busy_ms']:.2f} | {p['kernels']:.0f} | {kinds} |")
    lines += ["", "GPU ms per call between CUDA events around each part (no profiler; the "
              "rest: the model's own code between them)", ""]
    for who, parts in (("eager", eager_parts(model, eager, call, args.profile_calls)),
                       ("engines", engine_parts(swap, used, pieces, call,
                                                args.profile_calls))):
        lines.append(f"- {who}: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    return lines


class PartTimer:
    """GPU time of named parts of a call, between CUDA events recorded around each."""

    def __init__(self):
        self.spans, self.open = [], []  # open: the spans started and not stopped (nested)

    def start(self, name):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.spans.append([name, event, None])
        self.open.append(self.spans[-1])

    def stop(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.open.pop()[2] = event

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            self.start(name)
            out = fn(*args, **kwargs)
            self.stop()
            return out
        return timed

    def per_call(self, calls: int, total) -> dict:
        torch.cuda.synchronize()
        ms = collections.Counter()
        for name, begin, end in self.spans:
            ms[name] += begin.elapsed_time(end) / calls
        parts = sum(v for k, v in ms.items() if k != total)
        return {**{k: v for k, v in ms.items() if k != total}, "rest": ms[total] - parts,
                "total": ms[total]}


def timed_calls(timer: PartTimer, fn, call, calls: int) -> None:
    for _ in range(calls):
        timer.start("call")
        fn(**call)
        timer.stop()


def eager_parts(model, eager, call, calls: int) -> dict:
    """The eager model's blocks (forward hooks) and the rest of its forward, GPU ms per call."""
    timer = PartTimer()
    eager(**call)
    hooks = []
    for kind, blocks in (("dual blocks", model.transformer_blocks),
                         ("single blocks", model.single_transformer_blocks)):
        for block in blocks:
            hooks.append(block.register_forward_pre_hook(lambda *_, k=kind: timer.start(k)))
            hooks.append(block.register_forward_hook(lambda *_: timer.stop()))
    try:
        timed_calls(timer, eager, call, calls)
    finally:
        for h in hooks:
            h.remove()
    return timer.per_call(calls, "call")


def engine_parts(swap, used, pieces, call, calls: int) -> dict:
    """Each piece engine's calls and the rest of the forward (the runtime's own code between
    them), GPU ms per call."""
    timer = PartTimer()
    pieces(**call)  # every engine loaded
    kept = dict(swap._engines)
    names = {e.key: e.component.removeprefix("transformer_") for e in used}
    try:
        for key, engine in kept.items():
            swap._engines[key] = timer.wrap(names.get(key, key), engine)
        timed_calls(timer, pieces, call, calls)
    finally:
        swap._engines.update(kept)
    return timer.per_call(calls, "call")


def gpu_profile(fn, calls: int) -> dict:
    """``calls`` calls of ``fn`` under torch.profiler: per call, the wall ms, the ms in which at
    least one kernel ran (the union of the kernels' intervals), the kernels, ms by kind."""
    from fp8_block_profile import kind_of  # this folder's
    from torch.autograd import DeviceType

    fn()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1e3 / calls
    spans = [(e.time_range.start, e.time_range.end, e.name) for e in prof.events()
             if e.device_type == DeviceType.CUDA and e.time_range.end > e.time_range.start]
    by_kind = collections.Counter()
    for start, stop, name in spans:
        by_kind[kind_of(name)] += (stop - start) / 1e3 / calls
    return {"wall_ms": wall, "busy_ms": busy_time(spans) / 1e3 / calls,
            "kernels": len(spans) / calls, "by_kind": dict(by_kind.most_common())}


def busy_time(spans) -> float:
    """The time covered by at least one of the (start, end, ...) spans (kernels may overlap on
    several streams): the length of their union."""
    busy, end = 0.0, float("-inf")
    for start, stop, *_ in sorted(spans):
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return busy


if __name__ == "__main__":
    raise SystemExit(main())
