"""Compile a profile's first component with its TensorRT settings (e.g. attention left to
PyTorch with torch_executed_ops), time the in-memory module against eager at the opt sizes in
the same run, then try to save it as the build would. For variants the build cannot save.

    python scripts/trt_partial_probe.py PROFILE SCRATCH_DIR     # needs CUDA and torch_tensorrt
"""

import sys
import time
from pathlib import Path

import torch

from framepack_trt.backends import BuildRequest, get_backend
from framepack_trt.bench import _time
from framepack_trt.compare import compare
from framepack_trt.components.base import get_component
from framepack_trt.export import export_component, torch_dtype
from framepack_trt.memory import PeakMemory
from framepack_trt.profile import load_profile
from framepack_trt.shapes import sizes_at
from framepack_trt.sources import load_model


def main(profile: str, scratch: Path) -> None:
    scratch.mkdir(parents=True, exist_ok=True)
    spec = load_profile(profile).components[0]
    comp, dtype = get_component(spec.component), torch_dtype(spec.dtype)
    backend = get_backend("tensorrt")
    with PeakMemory(cuda=True) as memory:
        model = load_model(comp, spec.source, dtype, "cuda", scratch / "weights")
        exported = export_component(comp, model, spec.dims, dtype, "cuda")
        start = time.time()
        request = BuildRequest(exported.program, comp.input_specs(model.config),
                               {**spec.dims, **comp.derived_dims(spec.dims)}, spec.dtype, "cuda",
                               backend.settings(spec.build), scratch / "state")
        request.state_dir.mkdir(exist_ok=True)
        module, report = backend.compile(request)
    print(f"compile {time.time() - start:.1f} s; {report.details}; {report.notes}")
    print(memory.peaks().describe(), flush=True)

    inputs = comp.make_inputs(model.config, sizes_at(spec.dims, "opt"), dtype, "cuda",
                              torch.Generator().manual_seed(0))

    def eager(*xs):
        with torch.inference_mode():
            return comp.reference(model, xs)

    def compiled(*xs):
        with torch.inference_mode():
            return module(*comp.prepare(xs, dtype, "cuda"))

    eager_ms, module_ms = _time(eager, inputs, 3, 10, True), _time(compiled, inputs, 3, 10, True)
    check = compare("sample", compiled(*inputs)[0], eager(*inputs)[0], spec.tolerance)
    print(f"eager {eager_ms:.3f} ms, module {module_ms:.3f} ms, eager/module "
          f"{eager_ms / module_ms:.3f}x, rel L2 {check.rel_l2:.3e}, cosine {check.cosine:.6f}")
    out = scratch / "probe.trt.pt2"
    try:
        backend.save(module, request, out, report)
        print(f"saved: {out.stat().st_size} bytes {report.notes[-1:]}")
    except Exception as exc:
        print(f"save failed: {type(exc).__name__}: {str(exc)[:1500]}")
    finally:
        out.unlink(missing_ok=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
