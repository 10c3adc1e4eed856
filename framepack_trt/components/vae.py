"""HunyuanVideo's VAE (``AutoencoderKLHunyuanVideo``), the cores that FramePack's encode and
decode run through (docs/vae.md).

``vae_encode``: ``vae.encoder`` on one frame (FramePack encodes its start image once per
video): pixels (1, 3, 1, H, W) in [-1, 1] -> (1, 32, 1, H/8, W/8). What diffusers does around it
stays eager and unchanged: ``quant_conv`` (a 1x1 convolution) and the posterior (FramePack
samples it), the scaling factor, and the spatial tiling of low-VRAM mode, which calls the
encoder once per tile.
"""

from __future__ import annotations

from framepack_trt.components.base import Component, InputSpec, random_floats, register
from framepack_trt.shapes import DimRange

#: 640 px buckets, in latent units (8 pixels): every one of FramePack's 14 is inside.
_BUCKET_RANGE = DimRange(52, 68, 120)


@register
class VaeEncode(Component):
    name = "vae_encode"
    description = ("HunyuanVideo VAE encoder, one frame: pixels (1, 3, 1, H, W) -> "
                   "(1, 32, 1, H/8, W/8), before quant_conv")
    model_class = "diffusers.AutoencoderKLHunyuanVideo"
    default_dtype = "float16"
    default_dims = {"latent_height": _BUCKET_RANGE, "latent_width": DimRange(52, 88, 120)}
    bucket_dims = ("latent_height", "latent_width")
    output_names = ("encoded",)
    #: The real class with narrow channels: four levels (3 downsamplings), one layer each.
    tiny_config = {"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1,
                   "norm_num_groups": 4}

    def input_specs(self, config):
        return [InputSpec("pixels", (1, config.in_channels, 1, ("latent_height", 8),
                                     ("latent_width", 8)))]

    def export_module(self, model):
        import torch

        class Encoder(torch.nn.Module):
            def __init__(self, vae):
                super().__init__()
                self.encoder = vae.encoder

            def forward(self, pixels):
                return (self.encoder(pixels),)

        return Encoder(model)

    def reference(self, model, inputs, index=0):
        (pixels,) = inputs
        return (model.encoder(pixels),)

    def make_inputs(self, config, sizes, dtype, device, generator):
        shape = (1, config.in_channels, 1, 8 * sizes["latent_height"], 8 * sizes["latent_width"])
        # An image scaled to [-1, 1], as FramePack's resize_and_center_crop then / 127.5 - 1.
        return (random_floats(shape, dtype, generator, device, scale=0.5).clamp(-1, 1),)
