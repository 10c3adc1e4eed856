"""CLIP text encoder (HunyuanVideo ``text_encoder_2``): input_ids -> pooler_output."""

from __future__ import annotations

from framepack_trt.components.base import Component, InputSpec, random_ids, register
from framepack_trt.components.calls import one_tensor
from framepack_trt.shapes import DimRange


@register
class ClipText(Component):
    name = "clip_text"
    description = "CLIP text encoder: input_ids (batch, 77) -> pooler_output (batch, 768)"
    model_class = "transformers.CLIPTextModel"
    framepack_module = "text_encoder_2"
    default_dtype = "float16"
    default_dims = {"batch": DimRange(1, 1, 1), "text_len": DimRange(77, 77, 77)}
    dim_limits = {"text_len": (1, 77)}
    output_names = ("pooler_output",)
    tiny_config = {
        "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 77, "projection_dim": 32,
        "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2,
    }

    def input_specs(self, config):
        return [InputSpec("input_ids", ("batch", "text_len"), "int64")]

    def check_dims(self, config, dims):
        limit = config.max_position_embeddings
        if dims["text_len"].max > limit:
            return [f"dims.text_len.max: {dims['text_len'].max} exceeds the model's "
                    f"max_position_embeddings ({limit})"]
        return []

    def export_module(self, model):
        import torch

        class PooledText(torch.nn.Module):
            def __init__(self, encoder):
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids):
                return (self.encoder(input_ids=input_ids).pooler_output,)

        return PooledText(model)

    def reference(self, model, inputs, index=0):
        (input_ids,) = inputs
        return (model(input_ids=input_ids).pooler_output,)

    def make_inputs(self, config, sizes, dtype, device, generator):
        import torch

        batch, length = sizes["batch"], sizes["text_len"]
        # Ordinary tokens, then the end-of-text token (the largest id, as in CLIP's vocabulary)
        # at a random position: the pooled output is read there.
        ids = random_ids((batch, length), 1, config.vocab_size - 1, generator, "cpu")
        eos = torch.randint(0, length, (batch,), generator=generator)
        ids[torch.arange(batch), eos] = config.vocab_size - 1
        return (ids.to(device),)

    def parse_call(self, model, args, kwargs):
        return one_tensor("input_ids", args, kwargs)

    def wrap_output(self, model, outputs, kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(pooler_output=outputs[0])
