"""Compile a profile's first component with its TensorRT settings (e.g. attention left to PyTorch
with torch_executed_ops), time the in-memory module against eager at the opt sizes in the same
run, then try to save it as the build would. For variants the build cannot save.

    python scripts/trt_partial_probe.py PROFILE SCRATCH_DIR
"""
import sys, time, statistics, json, traceback
from pathlib import Path
import torch
from framepack_trt.profile import load_profile
from framepack_trt.components.base import get_component
from framepack_trt.sources import load_model
from framepack_trt.export import export_component, torch_dtype
from framepack_trt.backends import get_backend, BuildRequest
from framepack_trt.bench import _time
from framepack_trt.compare import compare
from framepack_trt.components.base import Tolerance
from framepack_trt.shapes import sizes_at
from framepack_trt.memory import PeakMemory

prof = load_profile(sys.argv[1]); out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
spec = prof.components[0]
comp = get_component(spec.component); dtype = torch_dtype(spec.dtype)
backend = get_backend("tensorrt")
t0 = time.time()
with PeakMemory(True) as mem:
    model = load_model(comp, spec.source, dtype, "cuda", Path("/tmp/diagw"))
    ex = export_component(comp, model, spec.dims, dtype, "cuda")
    t1 = time.time()
    dims = {**spec.dims, **comp.derived_dims(spec.dims)}
    req = BuildRequest(ex.program, comp.input_specs(model.config), dims, spec.dtype, "cuda",
                       backend.settings(spec.build), Path("/tmp/diagstate"))
    req.state_dir.mkdir(exist_ok=True)
    module, report = backend.compile(req)
t2 = time.time()
print("compile s", round(t2 - t1, 1), "notes", report.notes, "details", report.details, flush=True)
print(mem.peaks().describe(), flush=True)
sizes = sizes_at(spec.dims, "opt")
inputs = comp.make_inputs(model.config, sizes, dtype, "cuda", torch.Generator().manual_seed(0))
def eager(*xs):
    with torch.inference_mode():
        return comp.reference(model, xs)
def eng(*xs):
    with torch.inference_mode():
        return module(*comp.prepare(xs, dtype, "cuda"))
e = _time(eager, inputs, 3, 10, True); g = _time(eng, inputs, 3, 10, True)
c = compare("sample", eng(*inputs)[0], eager(*inputs)[0], Tolerance(**spec.tolerance.to_dict()))
print(f"RESULT eager_ms={e:.3f} engine_ms={g:.3f} ratio={e/g:.3f} rel_l2={c.rel_l2:.3e} cos={c.cosine:.6f}", flush=True)
try:
    ts = time.time()
    backend.save(module, req, out / "partial.trt.pt2", report)
    print("saved", (out / "partial.trt.pt2").stat().st_size, "bytes in", round(time.time() - ts, 1), "s", report.notes[-1:], flush=True)
except Exception as exc:
    print("SAVE FAILED", type(exc).__name__, str(exc)[:1500], flush=True)
(out / "partial.trt.pt2").unlink(missing_ok=True)
