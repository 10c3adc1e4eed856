"""SigLIP image encoder (``lllyasviel/flux_redux_bfl`` ``image_encoder``):
pixel_values -> last_hidden_state."""

from __future__ import annotations

from framepack_trt.components.base import Component, InputSpec, random_floats, register
from framepack_trt.components.calls import one_tensor
from framepack_trt.shapes import DimRange


@register
class SiglipImage(Component):
    name = "siglip_image"
    description = ("SigLIP image encoder: pixel_values (batch, 3, 384, 384) -> "
                   "last_hidden_state (batch, 729, 1152)")
    model_class = "transformers.SiglipVisionModel"
    framepack_module = "image_encoder"
    default_dtype = "float16"
    default_dims = {"batch": DimRange(1, 1, 1)}
    output_names = ("last_hidden_state",)
    tiny_config = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "num_channels": 3,
    }

    def input_specs(self, config):
        size = config.image_size
        return [InputSpec("pixel_values", ("batch", config.num_channels, size, size))]

    def export_module(self, model):
        import torch

        class LastHidden(torch.nn.Module):
            def __init__(self, encoder):
                super().__init__()
                self.encoder = encoder

            def forward(self, pixel_values):
                return (self.encoder(pixel_values=pixel_values).last_hidden_state,)

        return LastHidden(model)

    def reference(self, model, inputs, index=0):
        (pixel_values,) = inputs
        return (model(pixel_values=pixel_values).last_hidden_state,)

    def make_inputs(self, config, sizes, dtype, device, generator):
        size = config.image_size
        # Normalised pixels, as the SigLIP processor produces them: about [-1, 1].
        pixels = random_floats((sizes["batch"], config.num_channels, size, size), dtype,
                               generator, device, scale=0.5).clamp(-1, 1)
        return (pixels,)

    def parse_call(self, model, args, kwargs):
        return one_tensor("pixel_values", args, kwargs)

    def wrap_output(self, model, outputs, kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(last_hidden_state=outputs[0])
