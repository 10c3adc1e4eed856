"""The tiny transformer through TensorRT (fp16), in memory: rel L2 against diffusers at latent
62x98 (not a bucket shape) and at every 640 bucket, to see whether a build is right across its
range. With `build` it compiles; `load` runs the same check on /tmp/o.trt.pt2 if saved there.

    python scripts/trt_shape_probe.py build
"""
import sys, time, subprocess
from pathlib import Path
import torch
from framepack_trt.components.base import get_component, Tolerance
from framepack_trt.sources import construct
from framepack_trt.compare import compare
from framepack_trt.shapes import DimRange

comp = get_component("transformer"); dtype = torch.float16
torch.manual_seed(0)
model = construct(comp.load_model_class(), comp.tiny_config).to(dtype).eval().cuda()
dims = {"batch": DimRange(1, 1, 1), "latent_frames": DimRange(9, 9, 9), "latent_height": DimRange(52, 68, 120),
        "latent_width": DimRange(52, 88, 120), "text_len": DimRange(1, 64, 256)}
from framepack_trt.shapes import FRAMEPACK_640_BUCKETS
SEQ = [(62, 98, 64)] + [(h // 8, w // 8, 77 + 11 * i) for i, (h, w) in enumerate(FRAMEPACK_640_BUCKETS)] + [(62, 98, 64)]

def run(tag, module):
    gen = torch.Generator().manual_seed(5)
    for h, w, txt in SEQ:
        sizes = {"batch": 1, "latent_frames": 9, "latent_height": h, "latent_width": w, "text_len": txt}
        raw = comp.make_inputs(model.config, sizes, dtype, "cuda", gen)
        with torch.inference_mode():
            want = comp.reference(model, raw)[0]
            got = module(*comp.prepare(raw, dtype, "cuda"))[0]
        c = compare("s", got, want, Tolerance(rel_l2=1e-2, cosine=0.999))
        print(f"{tag} h={h} w={w} text={txt} rel_l2={c.rel_l2:.2e} cos={c.cosine:.6f}", flush=True)

if sys.argv[1] == "build":
    from framepack_trt.export import export_component
    from framepack_trt.backends import get_backend, BuildRequest
    ex = export_component(comp, model, dims, dtype, "cuda")
    backend = get_backend("tensorrt")
    req = BuildRequest(ex.program, comp.input_specs(model.config), {**dims, **comp.derived_dims(dims)}, "float16", "cuda",
                       backend.settings({}), Path("/tmp/st"))
    req.state_dir.mkdir(exist_ok=True)
    module, rep = backend.compile(req)
    run("inmem", module)
else:
    import torch_tensorrt
    m = torch_tensorrt.load("/tmp/o.trt.pt2").module()
    run("loaded", m)
