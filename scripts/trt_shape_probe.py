"""Is one TensorRT build of the transformer right across its range? The tiny config (fp16) is
compiled once, in memory, then compared with the diffusers module at latent 62x98 (not a bucket
shape; 3 of 5 builds were wrong there, docs/benchmarks.md) and at every 640 bucket.

    python scripts/trt_shape_probe.py        # needs CUDA and torch_tensorrt
"""

from pathlib import Path

import torch

from framepack_trt.backends import BuildRequest, get_backend
from framepack_trt.compare import compare
from framepack_trt.components.base import Tolerance, get_component
from framepack_trt.export import export_component
from framepack_trt.shapes import FRAMEPACK_640_BUCKETS, DimRange
from framepack_trt.sources import construct

DTYPE = torch.float16
DIMS = {"batch": DimRange(1, 1, 1), "latent_frames": DimRange(9, 9, 9),
        "latent_height": DimRange(52, 68, 120), "latent_width": DimRange(52, 88, 120),
        "text_len": DimRange(1, 64, 256)}
SHAPES = ([(62, 98, 64)] + [(h // 8, w // 8, 77 + 11 * i) for i, (h, w) in enumerate(FRAMEPACK_640_BUCKETS)]
          + [(62, 98, 64)])


def main() -> None:
    comp = get_component("transformer")
    torch.manual_seed(0)
    model = construct(comp.load_model_class(), comp.tiny_config).to(DTYPE).eval().cuda()
    exported = export_component(comp, model, DIMS, DTYPE, "cuda")
    backend = get_backend("tensorrt")
    request = BuildRequest(exported.program, comp.input_specs(model.config),
                           {**DIMS, **comp.derived_dims(DIMS)}, "float16", "cuda",
                           backend.settings({}), Path("/tmp/trt-shape-probe"))
    request.state_dir.mkdir(exist_ok=True)
    module, _ = backend.compile(request)
    gen = torch.Generator().manual_seed(5)
    for height, width, text in SHAPES:
        sizes = {"batch": 1, "latent_frames": 9, "latent_height": height, "latent_width": width,
                 "text_len": text}
        raw = comp.make_inputs(model.config, sizes, DTYPE, "cuda", gen)
        with torch.inference_mode():
            want = comp.reference(model, raw)[0]
            got = module(*comp.prepare(raw, DTYPE, "cuda"))[0]
        c = compare("sample", got, want, Tolerance(rel_l2=1e-2, cosine=0.999))
        print(f"latent {height}x{width} text {text}: rel_l2 {c.rel_l2:.2e} cosine {c.cosine:.6f}",
              flush=True)


if __name__ == "__main__":
    main()
