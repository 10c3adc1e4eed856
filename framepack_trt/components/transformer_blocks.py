"""The FramePack transformer in four pieces whose engines take the weights as inputs
(``framepack_trt.transformer.pieces``): ``transformer_input``, ``transformer_dual_block``,
``transformer_single_block``, ``transformer_output``.

A profile asks for them with ``engines: blocks`` on its transformer entry (or lists them
itself). They take the transformer's dims (latent frames, height and width, text length) and
derive their own: the image-token count of a call (latents, then the clean, 2x and 4x history
tokens) and the context length (729 image tokens plus the text). Their cache key holds the
architecture's config, not the weights: one set of engines serves every checkpoint of it.
"""

from __future__ import annotations

import math
from typing import ClassVar

from framepack_trt.components.base import InputSpec, random_floats, register
from framepack_trt.components.transformer import RAW_INPUTS, Transformer
from framepack_trt.shapes import DimRange
from framepack_trt.transformer.names import COMPONENTS
from framepack_trt.transformer.tokens import IMAGE_TOKENS, image_tokens


class TransformerPiece(Transformer):
    """What the four pieces share with the whole-model transformer: its dims, buckets, checks
    and tiny config. ``piece`` names the piece in ``transformer.pieces``."""

    piece: ClassVar[str]
    framepack_module = None  # the transformer's module runs them (``runtime.transformer_swap``)
    weights_as_inputs = True
    weights_folder = "transformer"
    #: Two blocks of each kind, so that one block engine serving several blocks is exercised.
    tiny_config = {**Transformer.tiny_config, "num_layers": 2, "num_single_layers": 2}
    code_modules = (*Transformer.code_modules, "framepack_trt.transformer.pieces",
                    "framepack_trt.components.transformer_blocks")

    def weight_specs(self, model):
        from framepack_trt.transformer.pieces import piece_module, read_weights, weight_names

        names = weight_names(model, self.piece)
        tensors = read_weights(piece_module(model, self.piece), names)
        return [InputSpec(f"weight.{n}", tuple(t.shape), str(t.dtype).removeprefix("torch."))
                for n, t in zip(names, tensors, strict=True)]

    def pieces(self, config) -> int:
        from framepack_trt.transformer.pieces import piece_count

        return piece_count(config, self.piece)

    def weights(self, model, index, dtype, device, names=None):
        """The weights of module ``index``, read by name: ``names`` (the engine's own, as built;
        so a model class that registers its parameters in another order, such as FramePack's
        own, still hands each over to its input) or the model's parameter order."""
        import torch

        from framepack_trt.transformer.pieces import piece_module, read_weights, weight_names

        module = piece_module(model, self.piece, index)
        tensors = read_weights(module, names if names is not None else
                               weight_names(model, self.piece))
        # The block's own dtype (FramePack casts proj_out to float32 for its fp32 output; the
        # engine upcasts it itself, and bf16 values survive the round trip exactly).
        return tuple(t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype,
                          non_blocking=True) if isinstance(t, torch.Tensor) else t for t in tensors)

    def export_module(self, model):
        from framepack_trt.transformer.pieces import export_module

        return export_module(model, self.piece)

    def _width(self, config) -> tuple[int, int]:
        return config.num_attention_heads * config.attention_head_dim, config.attention_head_dim


@register
class TransformerInput(TransformerPiece):
    piece = "input"
    name = COMPONENTS[piece]
    description = ("FramePack transformer, input side (embedders, RoPE), weights as inputs -> "
                   "image tokens, context, temb, RoPE cos/sin")
    output_names = ("tokens", "context", "temb", "rope_cos", "rope_sin")

    def reference(self, model, inputs, index=0):
        from framepack_trt.transformer.export import prepare_call
        from framepack_trt.transformer.pieces import run_input

        call = prepare_call(dict(zip(RAW_INPUTS, inputs, strict=True)), model.dtype, None)
        return run_input(model, *call)


class _ActivationPiece(TransformerPiece):
    """A piece after the input side: it takes activations as they are (no FramePack call to
    prepare, no user-facing sizes), named by its input specs."""

    def raw_input_names(self, config):
        return [s.name for s in self.input_specs(config)]

    def prepare(self, inputs, dtype, device):
        return tuple(inputs)

    def prepare_kwargs(self, kwargs, names, dtype, device):
        return super(Transformer, self).prepare_kwargs(kwargs, names, dtype, device)

    def user_sizes(self, sizes):
        return {}


class _Block(_ActivationPiece):
    output_names = ("tokens", "context")

    def derived_dims(self, dims):
        """image_tokens over the latent range (monotone in height and width, so every bucket
        between min and max is inside); context_len = 729 image tokens + the text."""
        frames, h, w, text = (dims[n] for n in ("latent_frames", "latent_height", "latent_width",
                                                "text_len"))
        return {"image_tokens": DimRange(*(image_tokens(f, a, b) for f, a, b in
                                           ((frames.min, h.min, w.min), (frames.opt, h.opt, w.opt),
                                            (frames.max, h.max, w.max)))),
                "context_len": DimRange(IMAGE_TOKENS + text.min, IMAGE_TOKENS + text.opt,
                                        IMAGE_TOKENS + text.max)}

    def input_specs(self, config):
        width, head = self._width(config)
        return [InputSpec("tokens", (1, "image_tokens", width)),
                InputSpec("context", (1, "context_len", width)),
                InputSpec("temb", (1, width)),
                InputSpec("rope_cos", ("image_tokens", head), "float32"),
                InputSpec("rope_sin", ("image_tokens", head), "float32")]

    def make_inputs(self, config, sizes, dtype, device, generator):
        import torch

        width, head = self._width(config)
        n = image_tokens(sizes["latent_frames"], sizes["latent_height"], sizes["latent_width"])
        angles = torch.rand(n, head // 2, generator=generator) * 2 * math.pi
        angles = angles.repeat_interleave(2, dim=1)
        return (random_floats((1, n, width), dtype, generator, device),
                random_floats((1, IMAGE_TOKENS + sizes["text_len"], width), dtype, generator,
                              device),
                random_floats((1, width), dtype, generator, device),
                angles.cos().to(device), angles.sin().to(device))

    def reference(self, model, inputs, index=0):
        from framepack_trt.transformer.pieces import piece_module, run_block

        return run_block(piece_module(model, self.piece, index), *inputs)


@register
class TransformerDualBlock(_Block):
    piece = "dual_block"
    name = COMPONENTS[piece]
    description = ("FramePack transformer, one dual-stream block (serves every one), weights as "
                   "inputs: tokens, context -> tokens, context")


@register
class TransformerSingleBlock(_Block):
    piece = "single_block"
    name = COMPONENTS[piece]
    description = ("FramePack transformer, one single-stream block (serves every one), weights "
                   "as inputs: tokens, context -> tokens, context")


@register
class TransformerOutput(_ActivationPiece):
    piece = "output"
    name = COMPONENTS[piece]
    description = ("FramePack transformer, output side (norm, fp32 projection), weights as "
                   "inputs: latent tokens -> projected patches, fp32")
    output_names = ("projected",)

    def derived_dims(self, dims):
        frames, h, w = (dims[n] for n in ("latent_frames", "latent_height", "latent_width"))
        return {"latent_tokens": DimRange(frames.min * (h.min // 2) * (w.min // 2),
                                          frames.opt * (h.opt // 2) * (w.opt // 2),
                                          frames.max * (h.max // 2) * (w.max // 2))}

    def input_specs(self, config):
        width, _ = self._width(config)
        return [InputSpec("tokens", (1, "latent_tokens", width)), InputSpec("temb", (1, width))]

    def make_inputs(self, config, sizes, dtype, device, generator):
        width, _ = self._width(config)
        n = sizes["latent_frames"] * (sizes["latent_height"] // 2) * (sizes["latent_width"] // 2)
        return (random_floats((1, n, width), dtype, generator, device),
                random_floats((1, width), dtype, generator, device))

    def reference(self, model, inputs, index=0):
        from framepack_trt.transformer.pieces import run_output

        return run_output(model, *inputs)
