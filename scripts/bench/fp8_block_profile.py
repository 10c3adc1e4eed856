"""Where a real-width fp8 block's time goes on a GPU: one dual-stream and one single-stream
FramePack block (diffusers' classes, 3072 wide, random weights, bf16), eager, compiled in bf16
and compiled with their linears in fp8 as the block engines have them (``fp8.quantize_block``),
timed at one bucket's token count; then the compiled fp8 block under torch.profiler, its CUDA
time by kind of kernel (attention, fp8 matmul, bf16 matmul, Triton's fused elementwise and
reduction kernels, among them the activations' quantization).

    python scripts/bench/fp8_block_profile.py [--bucket 544x704] [--text 160] [--iters 20]  # CUDA
                                        [--inductor NAME=VALUE ...]  # inductor config options
                                        [--no-bf16]  # only eager bf16 and compiled fp8
                                        [--reciprocal]  # activations times 448 / amax
"""

from __future__ import annotations

import argparse
import ast
import collections
import datetime
import functools
import json

import torch
from fp8_quality import HEADS, WIDTH, blocks  # this folder's: the real-width blocks
from torch.autograd import DeviceType

from framepack_trt.device import current_device, describe
from framepack_trt.timing import median_ms
from framepack_trt.transformer import fp8
from framepack_trt.transformer.fp8 import quantize_block
from framepack_trt.transformer.pieces import run_block
from framepack_trt.transformer.tokens import image_tokens

# Kernel names: Triton's carry the ops they fuse (the activations' quantization mentions
# _scaled_mm, whose input it makes), so they are told apart first; cuBLASLt's nvjet kernels
# say their input types ("qq": two fp8 operands).
KINDS = (("triton (fused elementwise and reductions, the quantization among them)", ("triton_",)),
         ("attention", ("attention", "flash", "fmha", "sdpa")),
         ("fp8 matmul", ("_qq", "f8", "e4m3")),
         ("bf16 matmul", ("gemm", "nvjet", "cutlass", "xmma")))


def quantize_rows_reciprocal(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fp8.quantize_rows`` with a multiplication by the scale's reciprocal per element."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=fp8.AMAX_EPS)
    q = (x.float() * (fp8.E4M3_MAX / amax)).clamp(-fp8.E4M3_MAX, fp8.E4M3_MAX)
    return q.to(torch.float8_e4m3fn), amax / fp8.E4M3_MAX


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    for kind, marks in KINDS:
        if any(m in name for m in marks):
            return kind
    return "other (PyTorch's own elementwise and norm kernels, copies)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bucket", default="544x704", help="HEIGHTxWIDTH of the frames")
    ap.add_argument("--text", type=int, default=160)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--inductor", action="append", default=[], metavar="NAME=VALUE",
                    help="an inductor config option for the compiled variants (repeatable)")
    ap.add_argument("--reciprocal", action="store_true",
                    help="quantize activations multiplying by 448 / amax instead of dividing "
                         "by amax / 448 (an experiment: is the division what costs?)")
    ap.add_argument("--no-bf16", action="store_true",
                    help="skip the compiled bf16 variant (eager bf16 stays: the reference)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        ap.error("needs a CUDA device")
    import torch._inductor.config as inductor_config

    options = dict(inductor_option(o) for o in args.inductor)
    if args.reciprocal:
        fp8.quantize_rows = quantize_rows_reciprocal
    with inductor_config.patch(options):
        return profile(args, options)


def inductor_option(item: str) -> tuple[str, object]:
    """``NAME=VALUE`` -> (name, value): the value as a Python literal (true, false and none
    in any case accepted), else the string itself."""
    name, _, raw = item.partition("=")
    if not name or not raw:
        raise SystemExit(f"--inductor {item!r} is not NAME=VALUE")
    raw = {"true": "True", "false": "False", "none": "None"}.get(raw.lower(), raw)
    try:
        return name, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return name, raw


def profile(args, options) -> int:
    height, width = (int(v) for v in args.bucket.split("x"))
    n = image_tokens(9, height // 8, width // 8)
    g = torch.Generator("cuda").manual_seed(0)
    angles = torch.rand(n, WIDTH // HEADS // 2, generator=g, device="cuda")
    angles = angles.repeat_interleave(2, 1) * 6.28
    acts = (torch.randn(1, n, WIDTH, generator=g, device="cuda", dtype=torch.bfloat16),
            torch.randn(1, args.text, WIDTH, generator=g, device="cuda", dtype=torch.bfloat16),
            torch.randn(1, WIDTH, generator=g, device="cuda", dtype=torch.bfloat16),
            angles.cos(), angles.sin())
    report = {"device": describe(current_device("cuda")), "torch": torch.__version__,
              "date": datetime.date.today().isoformat(), "bucket": args.bucket,
              "image_tokens": n, "text": args.text, "inductor": options,
              "reciprocal": args.reciprocal, "blocks": {}}
    torch.manual_seed(0)
    for kind, block in blocks("cuda").items():
        q = quantize_block(block)
        variants = {"eager bf16": functools.partial(run_block, block, *acts),
                    "compiled bf16": functools.partial(torch.compile(run_block), block, *acts),
                    "compiled fp8": functools.partial(torch.compile(run_block), q, *acts)}
        if args.no_bf16:
            del variants["compiled bf16"]
        row = {}
        with torch.inference_mode():
            want = run_block(block, *acts)[0].float()
            for name, fn in variants.items():
                got = fn()[0].float()  # compiles
                fn()
                row[name] = {"ms": median_ms(fn, (), 1, args.iters, cuda=True),
                             "rel_l2": float((got - want).norm() / want.norm())}
            fn = variants["compiled fp8"]
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    fn()
                torch.cuda.synchronize()
        by_kind, kernels = collections.Counter(), collections.Counter()
        for e in prof.key_averages():  # the kernels themselves, not the ops that launch them
            if e.device_type != DeviceType.CUDA:
                continue
            t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
            if t and e.key:
                by_kind[kind_of(e.key)] += t / 5 / 1e3
                kernels[e.key[:90]] += t / 5 / 1e3
        row["fp8 profile ms per call"] = {k: round(v, 2) for k, v in by_kind.most_common()}
        row["fp8 top kernels ms per call"] = {k: round(v, 2) for k, v in kernels.most_common(12)}
        report["blocks"][kind] = row
        print(json.dumps({kind: row}, indent=1), flush=True)
        del q, block, variants
        torch.cuda.empty_cache()
    print(f"{report['device']}, torch {report['torch']}, {report['date']}, {args.bucket} "
          f"({n} image + {args.text} text tokens), median of {args.iters}, inductor {options}"
          + (", activations quantized with the reciprocal" if args.reciprocal else ""))
    print("| block | eager bf16 ms | compiled bf16 ms | compiled fp8 ms | fp8 rel L2 | "
          "fp8 profile: ms per call by kind |")
    print("|---|---|---|---|---|---|")
    for kind, row in report["blocks"].items():
        prof = ", ".join(f"{k} {v}" for k, v in row["fp8 profile ms per call"].items())
        bf16 = row.get("compiled bf16", {"ms": float("nan")})
        print(f"| {kind} | {row['eager bf16']['ms']:.2f} | {bf16['ms']:.2f} | "
              f"{row['compiled fp8']['ms']:.2f} | {row['compiled fp8']['rel_l2']:.1e} | {prof} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
