"""Which op makes TensorRT's VAE decoder miss eager (rel L2 0.0215 at every size, docs/vae.md)?
The real-width decoder (random weights, fp16) is exported once for one window length with the
height and width over low-VRAM mode's tile range (4..32), as profiles/realwidth-vae-tensorrt.yaml
builds it (with every size static, torch_tensorrt 2.11 failed to convert the graph:
"add_cast(): incompatible function arguments", 2026-11-30), then
compiled once with everything converted and once per suspect op kept in PyTorch
(``torch_executed_ops``); each is compared with the eager decoder on the same input. The op
whose exclusion brings the error to AOTInductor's 3e-3 is the culprit. Each row also gives
its error against the decoder run in float32, next to eager fp16's own, and its time per call
against eager's (median of ``--iters``). Variants ``conv_fp32`` and ``conv_fp32_no_tf32``
convert everything but compute each convolution in float32 (its input and weight cast up in
the exported graph, the output cast back; the second also with TensorRT's TF32 off), to see
whether the convolutions' fp16 arithmetic is the cause and what float32 costs.

    python scripts/bench/trt_vae_ops.py [--frames 3] [--size 32] [--only none,conv_fp32] [--json F]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import time
import traceback
import types
from pathlib import Path

import torch

from framepack_trt import timing
from framepack_trt.backends import BuildRequest, get_backend
from framepack_trt.compare import compare
from framepack_trt.components.base import Tolerance, get_component
from framepack_trt.export import export_component
from framepack_trt.shapes import DimRange
from framepack_trt.sources import construct

REAL_CONFIG = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
               "norm_num_groups": 32}
SUSPECTS = {
    "none": (),
    "convolution": ("aten.convolution",),
    "group_norm": ("aten.native_group_norm",),
    "upsample": ("aten.upsample_nearest3d", "aten.upsample_nearest2d"),
    "pad": ("aten.replication_pad3d", "aten.pad"),
    "attention": ("aten._scaled_dot_product_efficient_attention",
                  "aten._scaled_dot_product_flash_attention", "aten.scaled_dot_product_attention"),
    "silu": ("aten.silu",),
}
FP32_CONV = ("conv_fp32", "conv_fp32_no_tf32")  # everything converted, convolutions in float32


def conv_in_fp32(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose Conv2d/Conv3d compute in float32 and return its dtype."""
    model = copy.deepcopy(model)

    def forward(self, x):
        y = self._conv_forward(x.float(), self.weight.float(),
                               None if self.bias is None else self.bias.float())
        return y.to(x.dtype)

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            m.forward = types.MethodType(forward, m)
    return model


def median_ms(fn, x, iters: int) -> float:
    with torch.inference_mode():
        return timing.median_ms(fn, x, 1, iters, cuda=True)


def rel(got, want) -> float:
    got, want = got.double(), want.double()
    return float((got - want).norm() / want.norm())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--size", type=int, default=32,
                    help="latent height and width of the input (4..32)")
    ap.add_argument("--only", default=None, help="comma-separated suspects (default: all)")
    ap.add_argument("--iters", type=int, default=10, help="timed calls per variant")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    comp = get_component("vae_decode")
    torch.manual_seed(0)
    model = construct(comp.load_model_class(), REAL_CONFIG).to(torch.float16).eval().cuda()
    dims = {"latent_frames": DimRange(args.frames, args.frames, args.frames),
            "latent_height": DimRange(4, args.size, 32), "latent_width": DimRange(4, args.size, 32)}
    exported = export_component(comp, model, dims, torch.float16, "cuda")
    gen = torch.Generator().manual_seed(1)
    sizes = {"latent_frames": args.frames, "latent_height": args.size, "latent_width": args.size}
    raw = comp.make_inputs(model.config, sizes, torch.float16, "cuda", gen)
    with torch.inference_mode():
        want = comp.reference(model, raw)[0]
        # The same decoder in float32: is TensorRT less accurate than eager fp16, or only
        # differently rounded? (`tolerance: {reference: fp32}` judges an engine that way.)
        exact = comp.reference(copy.deepcopy(model).float(), [t.float() for t in raw])[0]
    eager_vs_fp32 = rel(want, exact)
    prepared = comp.prepare(raw, torch.float16, "cuda")
    eager_ms = median_ms(lambda *a: comp.reference(model, list(a)), raw, args.iters)
    print(json.dumps({"eager_fp16_vs_fp32_rel_l2": eager_vs_fp32, "eager_ms": eager_ms}),
          flush=True)
    fp32_conv_program = None
    import torch_tensorrt

    plain_compile = torch_tensorrt.dynamo.compile
    backend = get_backend("tensorrt")
    state = Path("/tmp/trt-vae-ops")
    state.mkdir(exist_ok=True)
    rows = []
    names = args.only.split(",") if args.only else list(SUSPECTS) + list(FP32_CONV)
    for name in names:
        ops = tuple(op for op in SUSPECTS.get(name, ())
                    if getattr(torch.ops.aten, op.split(".")[1], None) is not None)
        t0 = time.perf_counter()
        program = exported.program
        torch_tensorrt.dynamo.compile = plain_compile
        try:
            if name in FP32_CONV:
                if fp32_conv_program is None:
                    fp32_conv_program = export_component(comp, conv_in_fp32(model), dims,
                                                         torch.float16, "cuda").program
                program = fp32_conv_program
            if name == "conv_fp32_no_tf32":
                @functools.wraps(plain_compile)  # the backend reads its signature
                def no_tf32(*a, **k):
                    return plain_compile(*a, **k, disable_tf32=True)

                torch_tensorrt.dynamo.compile = no_tf32
            request = BuildRequest(program, comp.input_specs(model.config), dims,
                                   "float16", "cuda", backend.settings({"torch_executed_ops": ops}),
                                   state)
            module, _ = backend.compile(request)
            with torch.inference_mode():
                got = module(*prepared)[0]
            c = compare("frames", got, want, Tolerance(rel_l2=1e-2, cosine=0.999))
            seconds = round(time.perf_counter() - t0, 1)
            ms = median_ms(module, prepared, args.iters)
            row = {"kept_in_torch": name, "rel_l2": c.rel_l2, "max_abs": c.max_abs,
                   "rel_l2_vs_fp32": rel(got, exact), "eager_vs_fp32": eager_vs_fp32,
                   "ms": ms, "eager_ms": eager_ms, "speedup": eager_ms / ms,
                   "seconds": seconds}
            del module
        except Exception as e:  # a variant that does not build says why, the others go on
            traceback.print_exc()
            row = {"kept_in_torch": name, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        finally:
            torch_tensorrt.dynamo.compile = plain_compile
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
