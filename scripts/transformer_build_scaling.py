"""How building the transformer engine with TensorRT scales with its size (for the full model's
needs, docs/transformer.md): a real-width random-weight model with N_DUAL + N_SINGLE blocks,
exported with the realwidth profile's dims, compiled (offload_module_to_cpu = OFFLOAD) and saved.
Prints parameters, compile time, engine size and peak host / GPU memory.

    python scripts/transformer_build_scaling.py N_DUAL N_SINGLE OFFLOAD(0|1)
"""
import sys, time
from pathlib import Path
import torch
from framepack_trt.profile import load_profile
from framepack_trt.components.base import get_component
from framepack_trt.sources import construct
from framepack_trt.export import export_component, torch_dtype
from framepack_trt.backends import get_backend, BuildRequest
from framepack_trt.memory import PeakMemory

n_dual, n_single, offload = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
prof = load_profile("realwidth")
spec = [c for c in prof.components if c.component == "transformer"][0]
comp = get_component("transformer"); dtype = torch.bfloat16
cfg = {**spec.source.to_dict()["random"]["config"], "num_layers": n_dual, "num_single_layers": n_single}
torch.manual_seed(0)
t0 = time.time()
with PeakMemory(True) as whole:
    model = construct(comp.load_model_class(), cfg).to(dtype).eval().cuda()
    params = sum(p.numel() for p in model.parameters())
    ex = export_component(comp, model, spec.dims, dtype, "cuda")
    t1 = time.time()
    backend = get_backend("tensorrt")
    dims = {**spec.dims, **comp.derived_dims(spec.dims)}
    req = BuildRequest(ex.program, comp.input_specs(model.config), dims, "bfloat16", "cuda",
                       backend.settings({"offload_module_to_cpu": offload}), Path("/tmp/scalestate"))
    req.state_dir.mkdir(exist_ok=True)
    with PeakMemory(True) as comp_mem:
        module, report = backend.compile(req)
    t2 = time.time()
    out = Path("/tmp/scale.trt.pt2")
    backend.save(module, req, out, report)
    size = out.stat().st_size; out.unlink()
w, c = whole.peaks(), comp_mem.peaks()
print(f"SCALE dual={n_dual} single={n_single} offload={offload} params={params/1e9:.3f}B "
      f"weights_gib={params*2/2**30:.2f} compile_s={t2-t1:.1f} total_s={time.time()-t0:.1f} "
      f"engine_gb={size/1e9:.2f} whole_host_gib={w.host_gib} whole_gpu_used_gib={w.gpu_used_gib} "
      f"compile_gpu_used_gib={c.gpu_used_gib} compile_torch_gib={c.gpu_torch_gib}", flush=True)
