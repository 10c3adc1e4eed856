"""How building the transformer engine with TensorRT scales with its size (for the full model's
needs, docs/transformer.md): a real-width random-weight model with N_DUAL + N_SINGLE blocks,
exported with the realwidth profile's dims, compiled (offload_module_to_cpu = OFFLOAD) and saved.
Prints parameters, compile time, engine size and peak host / GPU memory.

    python scripts/transformer_build_scaling.py N_DUAL N_SINGLE OFFLOAD(0|1)
"""

import sys
import time
from pathlib import Path

import torch

from framepack_trt.backends import BuildRequest, get_backend
from framepack_trt.components.base import get_component
from framepack_trt.export import export_component
from framepack_trt.memory import PeakMemory
from framepack_trt.profile import load_profile
from framepack_trt.sources import construct


def main(n_dual: int, n_single: int, offload: bool) -> None:
    spec = next(c for c in load_profile("realwidth").components if c.component == "transformer")
    comp = get_component("transformer")
    config = {**spec.source.to_dict()["random"]["config"], "num_layers": n_dual,
              "num_single_layers": n_single}
    torch.manual_seed(0)
    start = time.time()
    with PeakMemory(cuda=True) as whole:
        model = construct(comp.load_model_class(), config).to(torch.bfloat16).eval().cuda()
        params = sum(p.numel() for p in model.parameters())
        exported = export_component(comp, model, spec.dims, torch.bfloat16, "cuda")
        backend = get_backend("tensorrt")
        request = BuildRequest(exported.program, comp.input_specs(model.config),
                               {**spec.dims, **comp.derived_dims(spec.dims)}, "bfloat16", "cuda",
                               backend.settings({"offload_module_to_cpu": offload}),
                               Path("/tmp/transformer-build-scaling"))
        request.state_dir.mkdir(exist_ok=True)
        compile_start = time.time()
        with PeakMemory(cuda=True) as compiling:
            module, report = backend.compile(request)
        compile_s = time.time() - compile_start
        out = Path("/tmp/transformer-build-scaling.trt.pt2")
        backend.save(module, request, out, report)
        size = out.stat().st_size
        out.unlink()
    w, c = whole.peaks(), compiling.peaks()
    print(f"blocks {n_dual}+{n_single} offload={offload}: {params / 1e9:.3f} B parameters, "
          f"{params * 2 / 2**30:.2f} GiB bf16; compile {compile_s:.1f} s (all {time.time() - start:.1f} s); "
          f"engine {size / 1e9:.2f} GB; GPU peak during compile {c.gpu_used_gib} GiB (torch "
          f"{c.gpu_torch_gib}), whole build {w.gpu_used_gib} GiB; host RSS peak {w.host_gib} GiB")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1")
