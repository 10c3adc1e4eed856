"""HunyuanVideo's VAE (``AutoencoderKLHunyuanVideo``), the cores that FramePack's encode and
decode run through (docs/vae.md).

``vae_encode``: ``vae.encoder`` on one frame (FramePack encodes its start image once per
video): pixels (1, 3, 1, H, W) in [-1, 1] -> (1, 32, 1, H/8, W/8). What diffusers does around it
stays eager and unchanged: ``quant_conv`` (a 1x1 convolution) and the posterior (FramePack
samples it), the scaling factor, and the spatial tiling of low-VRAM mode, which calls the
encoder once per tile.

``vae_decode``: ``vae.decoder`` on one window of framewise decoding (see ``VaeDecode``), its
middle block's causal attention mask built by ``frame_causal_mask`` instead of diffusers'
``prepare_causal_attention_mask`` (the same values, without its N x N intermediates).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from framepack_trt.components.base import Component, InputSpec, random_floats, register
from framepack_trt.components.calls import one_tensor
from framepack_trt.shapes import DimRange

#: 640 px buckets, in latent units (8 pixels): every one of FramePack's 14 is inside.
_BUCKET_RANGE = DimRange(52, 68, 120)


def frame_causal_mask(num_frames, height_width, dtype, device, batch_size=None):
    """The additive mask of the decoder's middle-block attention: token i (of frame f_i) sees
    token j where f_j <= f_i (0), and not otherwise (-inf), over N = num_frames x height_width
    tokens. The same values as diffusers' ``prepare_causal_attention_mask``, which builds two
    N x N int32 frame-id grids (``meshgrid``), an N x N comparison and an N x N float32 mask
    before the N x N mask in ``dtype``: here one comparison of the frame ids as a column and a
    row, broadcast, writes the mask in ``dtype`` directly (in an engine, one fused kernel from
    the token index)."""
    import torch

    frame = torch.arange(num_frames, device=device).repeat_interleave(height_width)
    seen = frame[None, :] <= frame[:, None]
    zero = torch.zeros((), dtype=dtype, device=device)
    mask = torch.where(seen, zero, torch.full((), float("-inf"), dtype=dtype, device=device))
    return mask if batch_size is None else mask.unsqueeze(0).expand(batch_size, -1, -1)


def tile_sizes(length: int, tile: int, stride: int) -> list[int]:
    """The sizes along one side of the tiles diffusers' ``tiled_decode`` (and
    ``tiled_encode``, in pixels) cuts a latent of ``length`` into: a tile starts every
    ``stride`` and is ``tile`` long, or what is left at the edge."""
    return sorted({min(tile, length - start) for start in range(0, length, stride)}, reverse=True)


def tile_shapes(height: int, width: int, tile: int = 32, stride: int = 24) -> list[tuple[int, int]]:
    """The (height, width) of every distinct tile of a latent in low-VRAM mode; the latent
    itself when neither side is over ``tile`` (diffusers then does not tile)."""
    if height <= tile and width <= tile:
        return [(height, width)]
    return [(h, w) for h in tile_sizes(height, tile, stride) for w in tile_sizes(width, tile, stride)]


@contextmanager
def frame_causal_masks() -> Iterator[None]:
    """diffusers' HunyuanVideo VAE builds its causal masks with ``frame_causal_mask``
    meanwhile (the module global its middle block calls)."""
    from diffusers.models.autoencoders import autoencoder_kl_hunyuan_video as hv

    original = hv.prepare_causal_attention_mask
    hv.prepare_causal_attention_mask = frame_causal_mask
    try:
        yield
    finally:
        hv.prepare_causal_attention_mask = original


class _VaeCore(Component):
    """A VAE submodule (``core``: ``encoder`` or ``decoder``) as the engine, one tensor in, one
    out; diffusers' own code around it stays eager. Inside FramePack the engine replaces the
    submodule's ``forward`` (``framepack_part``): diffusers' ``encode`` and ``decode`` around
    it (their framewise windows, spatial tiles and blending, ``quant_conv``, the posterior) run
    as they are and call it once per window or tile; one that no engine covers runs eager."""

    core: str
    model_class = "diffusers.AutoencoderKLHunyuanVideo"
    framepack_module = "vae"
    default_dtype = "float16"
    bucket_dims = ("latent_height", "latent_width")
    #: Low-VRAM mode's spatial tiles in latent units (diffusers' defaults: 256 pixels at stride
    #: 192), for ``static: tiles``.
    tile_latents = (32, 24)
    #: Encoder and decoder are one model: a random source writes one folder for both.
    weights_folder = "vae"
    #: The real class with narrow channels: four levels (3 downsamplings), one layer each.
    tiny_config = {"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1,
                   "norm_num_groups": 4}

    @classmethod
    def tiles(cls, height, width):
        return tile_shapes(height, width, *cls.tile_latents)

    def export_module(self, model):
        import torch

        class Core(torch.nn.Module):
            def __init__(self, module):
                super().__init__()
                self.module = module

            def forward(self, x):
                with frame_causal_masks():  # the decoder's; the encoder's middle block too
                    return (self.module(x),)

        return Core(getattr(model, self.core))

    def reference(self, model, inputs, index=0):
        (x,) = inputs
        return (getattr(model, self.core)(x),)

    def parse_call(self, model, args, kwargs):
        return one_tensor("hidden_states", args, kwargs)

    def wrap_output(self, model, outputs, kwargs):
        return outputs[0]


@register
class VaeEncode(_VaeCore):
    name = "vae_encode"
    core = framepack_part = "encoder"
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
    and 3 latent frames, and a 1-frame tail window (10 and 19 latent frames) that is another
    graph (the causal upsampler skips time for one frame, and export cannot take T = 1 into a
    range). So the decoder is two engines: T over 3..5 (the default) and T = 1, a profile
    entry each (docs/vae.md). AOTInductor lowers the T-dynamic graph with
    ``backends.aoti.stride_check_fix``."""

    name = "vae_decode"
    core = framepack_part = "decoder"
    description = ("HunyuanVideo VAE decoder, one framewise window: latents (1, 16, T, h, w) -> "
                   "frames (1, 3, 4T-3, 8h, 8w), after post_quant_conv")
    #: Framewise decoding's windows of 3 to 5 latent frames; the tail window of 1 is an entry
    #: of its own (latent_frames: 1).
    default_dims = {"latent_frames": DimRange(3, 5, 5), "latent_height": _BUCKET_RANGE,
                    "latent_width": DimRange(52, 88, 120)}
    output_names = ("frames",)

    def input_specs(self, config):
        return [InputSpec("latents", (1, config.latent_channels, "latent_frames", "latent_height",
                                      "latent_width"))]

    def make_inputs(self, config, sizes, dtype, device, generator):
        shape = (1, config.latent_channels, sizes["latent_frames"], sizes["latent_height"],
                 sizes["latent_width"])
        return (random_floats(shape, dtype, generator, device),)
