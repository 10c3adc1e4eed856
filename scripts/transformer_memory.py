"""Sizes that decide where the full FramePack transformer can be built: parameter count of the
real configuration (built on the meta device, no memory used), weight bytes per dtype, and the
token count and one activation's size at every 640 bucket.

    python scripts/transformer_memory.py
"""

import torch
from diffusers import HunyuanVideoFramepackTransformer3DModel

from framepack_trt.shapes import FRAMEPACK_640_BUCKETS

REAL = dict(has_image_proj=True, image_proj_dim=1152, has_clean_x_embedder=True)  # defaults: 24x128, 20+40

with torch.device("meta"):
    model = HunyuanVideoFramepackTransformer3DModel(**REAL)
params = sum(p.numel() for p in model.parameters())
blocks = sum(p.numel() for b in model.transformer_blocks for p in b.parameters())
single = sum(p.numel() for b in model.single_transformer_blocks for p in b.parameters())
print(f"parameters: {params / 1e9:.2f} B (dual-stream blocks {blocks / 1e9:.2f} B, "
      f"single-stream {single / 1e9:.2f} B, rest {(params - blocks - single) / 1e9:.2f} B)")
for name, size in (("bf16", 2), ("fp8", 1), ("fp32", 4)):
    print(f"weights in {name}: {params * size / 2**30:.1f} GiB")
print(f"one dual block: {blocks / 20 * 2 / 2**30:.2f} GiB bf16; one single block: "
      f"{single / 40 * 2 / 2**30:.2f} GiB bf16")
inner = 24 * 128
print("bucket (px) | tokens (latent+clean+2x+4x | +729 image +256 text) | one bf16 activation MiB")
for h, w in FRAMEPACK_640_BUCKETS[:7]:
    lh, lw = h // 8, w // 8
    main = 9 * (lh // 2) * (lw // 2)
    clean = 2 * (lh // 2) * (lw // 2)
    h2 = 1 * -(-lh // 4) * -(-lw // 4)
    h4 = 4 * -(-lh // 8) * -(-lw // 8)
    image_tokens = main + clean + h2 + h4
    total = image_tokens + 729 + 256
    print(f"{h}x{w} | {main}+{clean}+{h2}+{h4} = {image_tokens} | {total} | "
          f"{total * inner * 2 / 2**20:.0f}")
