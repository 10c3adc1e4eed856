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


class _VaeCore(Component):
    """A VAE submodule (``core``: ``encoder`` or ``decoder``) as the engine, one tensor in, one
    out; diffusers' own code around it stays eager."""

    core: str
    model_class = "diffusers.AutoencoderKLHunyuanVideo"
    default_dtype = "float16"
    bucket_dims = ("latent_height", "latent_width")
    #: The real class with narrow channels: four levels (3 downsamplings), one layer each.
    tiny_config = {"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1,
                   "norm_num_groups": 4}

    def export_module(self, model):
        import torch

        class Core(torch.nn.Module):
            def __init__(self, module):
                super().__init__()
                self.module = module

            def forward(self, x):
                return (self.module(x),)

        return Core(getattr(model, self.core))

    def reference(self, model, inputs, index=0):
        (x,) = inputs
        return (getattr(model, self.core)(x),)


@register
class VaeEncode(_VaeCore):
    name = "vae_encode"
    core = "encoder"
    description = ("HunyuanVideo VAE encoder, one frame: pixels (1, 3, 1, H, W) -> "
                   "(1, 32, 1, H/8, W/8), before quant_conv")
    default_dims = {"latent_height": _BUCKET_RANGE, "latent_width": DimRange(52, 88, 120)}
    output_names = ("encoded",)

    def input_specs(self, config):
        return [InputSpec("pixels", (1, config.in_channels, 1, ("latent_height", 8),
                                     ("latent_width", 8)))]


    def make_inputs(self, config, sizes, dtype, device, generator):
        shape = (1, config.in_channels, 1, 8 * sizes["latent_height"], 8 * sizes["latent_width"])
        # An image scaled to [-1, 1], as FramePack's resize_and_center_crop then / 127.5 - 1.
        return (random_floats(shape, dtype, generator, device, scale=0.5).clamp(-1, 1),)


@register
class VaeDecode(_VaeCore):
    """``vae.decoder`` on one window of diffusers' framewise decoding: latents (1, 16, T, h, w)
    -> frames (1, 3, 4T - 3, 8h, 8w), after ``post_quant_conv`` (eager). The windows are 5, 4
    and 3 latent frames and a 1-frame tail window (10 and 19 latent frames), which is another
    graph (the causal upsampler skips time for one frame). T over 3..5 exports with T dynamic
    and matches eager, but AOTInductor (torch 2.13, CPU) fails to lower it (a ValueRangeError in
    the causal padding's convolution); a static T with the height and width dynamic builds, so
    a profile gives each T an entry of its own (docs/vae.md)."""

    name = "vae_decode"
    core = "decoder"
    description = ("HunyuanVideo VAE decoder, one framewise window: latents (1, 16, T, h, w) -> "
                   "frames (1, 3, 4T-3, 8h, 8w), after post_quant_conv")
    #: One window length per engine (T dynamic does not lower in AOTInductor): 5 by default.
    default_dims = {"latent_frames": DimRange(5, 5, 5), "latent_height": _BUCKET_RANGE,
                    "latent_width": DimRange(52, 88, 120)}
    output_names = ("frames",)

    def input_specs(self, config):
        return [InputSpec("latents", (1, config.latent_channels, "latent_frames", "latent_height",
                                      "latent_width"))]


    def make_inputs(self, config, sizes, dtype, device, generator):
        shape = (1, config.latent_channels, sizes["latent_frames"], sizes["latent_height"],
                 sizes["latent_width"])
        return (random_floats(shape, dtype, generator, device),)
