"""Probe: which AOTInductor-on-CUDA variants crash (run each in its own process).

    python scripts/aoti_cuda_probe.py            # runs every case in a subprocess
    python scripts/aoti_cuda_probe.py CASE       # one case in this process
"""

import faulthandler
import os
import subprocess
import sys
import tempfile

faulthandler.enable()
CASES = ["clip-fp16-static", "clip-fp16-dyn", "clip-fp32-dyn", "siglip-fp16-dyn",
         "clip-fp16-dyn-fresh", "clip-fp16-dyn-noinf"]


def run(case: str) -> None:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, SiglipVisionConfig, SiglipVisionModel

    dtype = torch.float32 if "fp32" in case else torch.float16
    torch.manual_seed(0)
    if case.startswith("clip"):
        m = CLIPTextModel(CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2,
                                         max_position_embeddings=77, projection_dim=32,
                                         bos_token_id=0, pad_token_id=1, eos_token_id=2))
        x = torch.randint(1, 999, (2, 77), device="cuda")

        class W(torch.nn.Module):
            def __init__(s, m):
                super().__init__()
                s.m = m

            def forward(s, ids):
                return (s.m(input_ids=ids).pooler_output,)
    else:
        m = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64,
                                                 num_hidden_layers=2, num_attention_heads=2,
                                                 image_size=32, patch_size=8))
        x = torch.randn(2, 3, 32, 32, device="cuda", dtype=dtype)

        class W(torch.nn.Module):
            def __init__(s, m):
                super().__init__()
                s.m = m

            def forward(s, px):
                return (s.m(pixel_values=px).last_hidden_state,)
    w = W(m.to("cuda", dtype).eval())
    dyn = None if "static" in case else ({0: torch.export.Dim("batch", min=1, max=2)},)
    ep = torch.export.export(w, (x,), dynamic_shapes=dyn, strict=False)
    path = os.path.join(tempfile.mkdtemp(), "m.pt2")
    torch._inductor.aoti_compile_and_package(ep, package_path=path)
    print(case, "compiled", flush=True)
    if "fresh" in case:
        code = (f"import torch, faulthandler; faulthandler.enable(); "
                f"r = torch._inductor.aoti_load_package({path!r}); "
                f"x = torch.randint(1, 999, (2, 77), device='cuda'); "
                f"print('fresh out', r(x)[0].shape, flush=True)")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        print("fresh rc", p.returncode, p.stdout[-300:], p.stderr[-1500:], flush=True)
        return
    r = torch._inductor.aoti_load_package(path)
    print(case, "loaded", flush=True)
    if "noinf" in case:
        out = r(x)
    else:
        with torch.inference_mode():
            out = r(x)
    torch.cuda.synchronize()
    ref = w(x)[0]
    print(case, "ran", (out[0].float() - ref.float()).abs().max().item(), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run(sys.argv[1])
    else:
        for c in CASES:
            p = subprocess.run([sys.executable, __file__, c], capture_output=True, text=True)
            tail = (p.stdout + p.stderr).strip().splitlines()
            print(f"== {c}: rc={p.returncode}")
            print("\n".join(tail[-25:]))
