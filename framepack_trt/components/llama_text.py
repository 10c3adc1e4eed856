"""LLaMA text encoder (HunyuanVideo ``text_encoder``): the hidden state FramePack reads.

FramePack calls the model with ``output_hidden_states=True`` and keeps ``hidden_states[-3]``,
the output of layer N-2. The engine runs only those first N-2 layers (the last two and the
final norm are never read), over the model's own parameters.
"""

from __future__ import annotations

import copy

from framepack_trt.components.base import Component, InputSpec, random_ids, register
from framepack_trt.components.calls import by_name, not_taken
from framepack_trt.shapes import DimRange

#: FramePack reads hidden_states[-3].
HIDDEN_STATE_INDEX = -3


class HiddenStates(tuple):
    """``hidden_states`` of a LLaMA call served by the engine: only the entry FramePack reads
    (``[-3]``) exists; any other index says so instead of returning something wrong."""

    def __new__(cls, count: int, index: int, tensor):
        self = super().__new__(cls, [None] * count)
        self._index, self._tensor = index % count, tensor
        return self

    def __getitem__(self, i):
        if isinstance(i, int) and i % len(self) == self._index:
            return self._tensor
        raise LookupError(f"the engine computes hidden_states[{self._index - len(self)}] only; "
                          f"index {i} needs the eager model (Engines.restore)")


@register
class LlamaText(Component):
    name = "llama_text"
    description = ("LLaMA text encoder: input_ids, attention_mask (batch, text_len) -> "
                   "hidden_states[-3] (batch, text_len, 4096)")
    model_class = "transformers.LlamaModel"
    framepack_module = "text_encoder"
    default_dtype = "float16"
    default_dims = {"batch": DimRange(1, 1, 1), "text_len": DimRange(1, 351, 351)}
    output_names = ("hidden_states",)
    tiny_config = {
        "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
    }

    def input_specs(self, config):
        return [InputSpec("input_ids", ("batch", "text_len"), "int64"),
                InputSpec("attention_mask", ("batch", "text_len"), "int64")]

    def check_dims(self, config, dims):
        problems = []
        if config.num_hidden_layers < 2:
            problems.append(f"source: the model has {config.num_hidden_layers} layers; "
                            "hidden_states[-3] needs at least 2")
        if dims["text_len"].max > config.max_position_embeddings:
            problems.append(f"dims.text_len.max: {dims['text_len'].max} exceeds the model's "
                            f"max_position_embeddings ({config.max_position_embeddings})")
        return problems

    def export_module(self, model):
        import torch

        keep = model.config.num_hidden_layers + 1 + HIDDEN_STATE_INDEX  # = N - 2
        # A shallow copy that shares every parameter with ``model`` but holds only the layers
        # whose output FramePack reads, and no final norm.
        truncated = copy.copy(model)
        truncated._modules = dict(model._modules)
        truncated._modules["layers"] = torch.nn.ModuleList(list(model.layers)[:keep])
        truncated._modules["norm"] = torch.nn.Identity()

        class HiddenState(torch.nn.Module):
            def __init__(self, encoder):
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids, attention_mask):
                # The causal + key-padding mask, built here as an additive 4D mask (which the
                # model uses as given) instead of by transformers' mask helpers, whose
                # shortcuts make shape guards that torch.export cannot prove for every length
                # (seen with torch 2.11 + transformers 5.17 on CUDA).
                dtype = self.encoder.embed_tokens.weight.dtype
                positions = torch.arange(input_ids.shape[1], device=input_ids.device)
                causal = positions[None, :] <= positions[:, None]
                keep = causal[None, None] & attention_mask[:, None, None, :].bool()
                mask = torch.zeros(keep.shape, dtype=dtype, device=input_ids.device)
                mask = mask.masked_fill(~keep, torch.finfo(dtype).min)
                out = self.encoder(input_ids=input_ids, attention_mask=mask, use_cache=False)
                return (out.last_hidden_state,)

        return HiddenState(truncated)

    def reference(self, model, inputs, index=0):
        input_ids, attention_mask = inputs
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    output_hidden_states=True, use_cache=False)
        return (out.hidden_states[HIDDEN_STATE_INDEX],)

    def make_inputs(self, config, sizes, dtype, device, generator):
        import torch

        batch, length = sizes["batch"], sizes["text_len"]
        ids = random_ids((batch, length), 1, config.vocab_size, generator, "cpu")
        # Right padding as the tokenizer makes it: each row keeps a random number of tokens.
        kept = torch.randint(1, length + 1, (batch,), generator=generator)
        mask = (torch.arange(length)[None, :] < kept[:, None]).to(torch.int64)
        return (ids.to(device), mask.to(device))

    def parse_call(self, model, args, kwargs):
        call = by_name(args, kwargs, ["input_ids", "attention_mask"])
        why = not_taken(call, {"input_ids", "attention_mask", "output_hidden_states",
                               "return_dict", "use_cache"})
        if why:
            return None, why
        if not call.get("output_hidden_states"):
            return None, "the call does not ask for hidden_states (the engine computes only [-3])"
        if call.get("return_dict") is False:
            return None, "return_dict=False"
        ids, mask = call.get("input_ids"), call.get("attention_mask")
        if ids is None or mask is None:
            return None, "the engine needs input_ids and attention_mask"
        return (ids, mask.to(ids.dtype)), ""

    def wrap_output(self, model, outputs, kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPast

        (hidden,) = outputs
        count = model.config.num_hidden_layers + 1
        return BaseModelOutputWithPast(hidden_states=HiddenStates(count, HIDDEN_STATE_INDEX,
                                                                  hidden))
