"""How far fp8 block linears (``framepack_trt.transformer.fp8``, docs/fp8.md) move a real-width FramePack
block from its bf16 output, on random weights and on weights and activations with the outliers
trained diffusion transformers have: one dual-stream and one single-stream block of the real
width (3072, 24 heads of 128; diffusers' classes), eager, bf16 against the quantized copy, on
the CPU or a GPU.

Regimes: ``random`` (diffusers' initialization, Gaussian tokens); ``outliers``: each linear's
input channels rescaled by a log-normal factor (sigma 0.5) with 1 % of them 20x larger, and
tokens with 1 % of their channels 30x larger (the massive activations of trained DiTs).

By default the blocks are quantized as the engines are: fp8 linears, and the adaptive norms'
modulation linears with int8 weights (one scale per 32 input channels, bf16 matmul).
``--modulation``: the modulation linears in fp8 too, activation and all (this measures why
not). ``--modulation-weight-only [--group G]
[--weight-format int8]``: instead, only their weights in fp8 or int8 (per row, or per group of
G input channels), dequantized to bf16 for a bf16 matmul: does finer scaling, int8's uniform
steps, or leaving the activation alone, save them?

    python scripts/bench/fp8_quality.py [--tokens 512] [--text 128] [--device cpu] [--modulation]
                                  [--modulation-weight-only [--group G] [--weight-format int8]]
                                  [--markdown F]
"""

from __future__ import annotations

import argparse
import datetime

import torch

from framepack_trt.transformer import fp8
from framepack_trt.transformer.fp8 import quantize_block, quantized_names
from framepack_trt.transformer.pieces import run_block

WIDTH, HEADS = 3072, 24


def blocks(device):
    from diffusers.models.transformers.transformer_hunyuan_video import (
        HunyuanVideoSingleTransformerBlock,
        HunyuanVideoTransformerBlock,
    )

    dual = HunyuanVideoTransformerBlock(HEADS, WIDTH // HEADS, mlp_ratio=4.0, qk_norm="rms_norm")
    single = HunyuanVideoSingleTransformerBlock(HEADS, WIDTH // HEADS, mlp_ratio=4.0,
                                                qk_norm="rms_norm")
    return {"dual": dual.to(device, torch.bfloat16).eval(),
            "single": single.to(device, torch.bfloat16).eval()}


class WeightOnlyFp8(torch.nn.Module):
    """A linear whose weight went through e4m3, or int8 with ``fmt="int8"`` (scales per row,
    or per ``group`` input channels) and back to its dtype: the rounding of the weight alone."""

    def __init__(self, linear, group=0, fmt="fp8"):
        super().__init__()
        w = linear.weight.detach()
        n, k = w.shape
        g = group or k
        if fmt == "bf16":  # the control: the weight as it is
            self.weight = w
        else:
            q, scale = fp8.quantize_weight(w, g, torch.float8_e4m3fn if fmt == "fp8"
                                           else torch.int8)
            self.weight = (q.float().reshape(n, k // g, g) * scale.unsqueeze(-1)
                           ).reshape(n, k).to(w.dtype)
        self.bias = linear.bias

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight, self.bias)


def with_weight_only_modulation(block, quantized, group, fmt="fp8"):
    """``quantized`` (a quantize_block copy) with the block's modulation linears replaced by
    WeightOnlyFp8 copies."""
    for name, module in block.named_modules():
        if isinstance(module, torch.nn.Linear) and fp8.is_modulation(name):
            parent, _, child = name.rpartition(".")
            setattr(quantized.get_submodule(parent), child, WeightOnlyFp8(module, group, fmt))
    return quantized


def add_outliers(block, gen, modulation=False):
    """Rescale each quantized linear's input channels (log-normal, 1 % of them 20x); with
    ``modulation``, the modulation linears' too."""
    names = (quantized_names(block) + [n for n, m in block.named_modules()
                                        if isinstance(m, torch.nn.Linear) and fp8.is_modulation(n)]
             if modulation else quantized_names(block))
    with torch.no_grad():
        for name in names:
            w = block.get_submodule(name).weight
            k = w.shape[1]
            scale = torch.exp(0.5 * torch.randn(k, generator=gen))
            scale[torch.randperm(k, generator=gen)[: max(1, k // 100)]] *= 20
            w.mul_(scale.to(w.device, w.dtype))


def tokens(n, outliers, gen, device):
    x = torch.randn(1, n, WIDTH, generator=gen)
    if outliers:
        x[..., torch.randperm(WIDTH, generator=gen)[: WIDTH // 100]] *= 30
    return x.to(device, torch.bfloat16)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--text", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--modulation", action="store_true",
                    help="quantize the modulation linears too (an experiment)")
    ap.add_argument("--modulation-weight-only", action="store_true",
                    help="only the modulation linears' weights through fp8 (an experiment)")
    ap.add_argument("--group", type=int, default=0,
                    help="with --modulation-weight-only: one scale per this many input "
                         "channels (0: per row)")
    ap.add_argument("--weight-format", choices=("fp8", "int8", "bf16"), default="fp8",
                    help="with --modulation-weight-only: e4m3 or int8 weights, or bf16 (the "
                         "control: only the other linears in fp8, the outliers the same)")
    ap.add_argument("--modulation-outliers", action=argparse.BooleanOptionalAction,
                    default=None, help="in the outlier regime, rescale the modulation linears' "
                    "input channels too (default: with --modulation-weight-only)")
    args = ap.parse_args(argv)
    if args.modulation_outliers is None:
        args.modulation_outliers = args.modulation_weight_only
    if args.modulation and args.modulation_weight_only:
        ap.error("--modulation and --modulation-weight-only are two experiments: pick one")
    if args.modulation:  # quantized_names (and so quantize_block) then takes every linear
        fp8.is_modulation = lambda name: False
    rows = []
    for regime in ("random", "outliers"):
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        made = blocks(args.device)
        for kind, block in made.items():
            if regime == "outliers":
                add_outliers(block, gen, args.modulation_outliers)
            q = quantize_block(block)
            if args.modulation_weight_only:
                q = with_weight_only_modulation(block, q, args.group, args.weight_format)
            n = args.tokens
            angles = torch.rand(n, WIDTH // HEADS // 2, generator=gen).repeat_interleave(2, 1) * 6.28
            acts = (tokens(n, regime == "outliers", gen, args.device),
                    tokens(args.text, regime == "outliers", gen, args.device),
                    torch.randn(1, WIDTH, generator=gen).to(args.device, torch.bfloat16),
                    angles.cos().to(args.device), angles.sin().to(args.device))
            with torch.inference_mode():
                want, got = run_block(block, *acts), run_block(q, *acts)
            for out, w, g in zip(("tokens", "context"), want, got, strict=True):
                w, g = w.double(), g.double()
                rel = float((g - w).norm() / w.norm())
                cos = float(torch.nn.functional.cosine_similarity(g.flatten(), w.flatten(), 0))
                # What the block adds to its input (the residual stream dominates the output).
                base = acts[0 if out == "tokens" else 1].double()
                rel_update = float((g - w).norm() / (w - base).norm())
                # The largest error in standard deviations of the bf16 output (max_abs_std).
                worst = float((g - w).abs().max() / w.std())
                rows.append((regime, kind, out, rel, cos, rel_update, worst))
                print(rows[-1], flush=True)
        del made
    device = (torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU")
    lines = [f"fp8 block linears against bf16, real width, eager, {device}, tokens {args.tokens}, "
             f"text {args.text}, torch {torch.__version__}, {datetime.date.today()}"
             + (", modulation linears in fp8 too" if args.modulation else "")
             + (f", modulation linears' weights through {args.weight_format} (scales per "
                f"{f'{args.group} input channels' if args.group else 'row'})"
                if args.modulation_weight_only else "")
             + (", outliers in the modulation linears' inputs too" if args.modulation_outliers
                else ""), "",
             "| weights and tokens | block | output | rel L2 | cosine | rel L2 of the block's update "
             "| max_abs_std |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r} | {k} | {o} | {e:.1e} | {c:.6f} | {u:.1e} | {m:.3f} |"
              for r, k, o, e, c, u, m in rows]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
