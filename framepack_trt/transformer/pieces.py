"""FramePack's transformer as pieces whose engines take the weights as inputs.

The whole-model engine (``export.FramepackTransformerForExport``) holds its own copy
of the weights: gigabytes per checkpoint, no part in FramePack's low-VRAM block streaming, and
no TeaCache (it cannot skip the block stack). Here the same forward is cut in four pieces:

``input``         the prepared call (``export.prepare_call``) -> image tokens, context
                  (image projection then text), temb and the RoPE table (cos, sin);
``dual_block``    one dual-stream block (diffusers ``HunyuanVideoTransformerBlock``): tokens,
                  context -> tokens, context; used for every dual block;
``single_block``  one single-stream block, used for every single block;
``output``        the latent tokens -> FramePack's fp32 output projection (norm_out, then
                  proj_out in fp32); the unpatchify is a reshape, done by the caller.

Each piece's engine takes, after its activations, the parameters of the module it runs, in the
order ``weight_names`` gives, read with ``getattr`` from the model the caller has (so a module
whose weights FramePack's ``DynamicSwapInstaller`` streams in on attribute access hands them
over as it does to its own forward). One dual-block engine therefore serves every dual block,
and one set of four engines every checkpoint of the same architecture (FramePack I2V, F1, a
LoRA-merged model). The block loop stays in Python (``loop``); the pieces' names and
components are ``names``'.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from framepack_trt.transformer.export import (  # noqa: F401  (run_input, unpatchify: re-exported)
    fp32_projection,
    run_input,
    unpatchify,
)

#: Top-level modules of the model that the input piece runs (its weights are theirs).
INPUT_MODULES = ("x_embedder", "clean_x_embedder", "time_text_embed", "context_embedder",
                 "image_projection")
OUTPUT_MODULES = ("norm_out", "proj_out")


def piece_module(model: torch.nn.Module, piece: str, index: int = 0) -> torch.nn.Module:
    """The module whose parameters a piece's engine takes: a block, or the model itself for the
    input and output sides (whose weight names are then prefixed by their module)."""
    if piece == "dual_block":
        return model.transformer_blocks[index]
    if piece == "single_block":
        return model.single_transformer_blocks[index]
    return model


def piece_count(model_or_config, piece: str) -> int:
    """How many modules one engine of the piece serves (the number of blocks of its kind)."""
    config = getattr(model_or_config, "config", model_or_config)
    if piece == "dual_block":
        return config.num_layers
    if piece == "single_block":
        return config.num_single_layers
    return 1


def weight_names(model: torch.nn.Module, piece: str) -> list[str]:
    """Dotted parameter names of the piece's module, in the engine's input order."""
    names = [n for n, _ in piece_module(model, piece).named_parameters()]
    if piece == "input":
        return [n for n in names if n.split(".")[0] in INPUT_MODULES]
    if piece == "output":
        return [n for n in names if n.split(".")[0] in OUTPUT_MODULES]
    return names


def read_weights(module: torch.nn.Module, names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """The tensors behind ``names``, read attribute by attribute as the module's own forward
    reads them (a swap-on-access hook sees every read)."""
    return tuple(functools.reduce(getattr, name.split("."), module) for name in names)


class _Run(torch.nn.Module):
    def __init__(self, module: torch.nn.Module, run):
        super().__init__()
        self.module, self.run = module, run

    def forward(self, *acts):
        return self.run(self.module, *acts)


class WeightsAsInputs(torch.nn.Module):
    """``forward(*activations, *weights)``: ``run(module, *activations)`` with the module's
    parameters replaced by the weights given (``torch.func.functional_call``). The module is
    not a submodule of this one, so an exported graph holds none of its parameters."""

    def __init__(self, module: torch.nn.Module, names: Sequence[str], num_activations: int, run):
        super().__init__()
        self.__dict__["_run"] = _Run(module, run)  # not registered: its parameters are inputs
        self.names, self.num_activations = [f"module.{n}" for n in names], num_activations

    def forward(self, *args):
        acts, weights = args[:self.num_activations], args[self.num_activations:]
        params = dict(zip(self.names, weights, strict=True))
        return tuple(torch.func.functional_call(self._run, params, tuple(acts)))


def _with_arity(module: WeightsAsInputs, names: Sequence[str]) -> WeightsAsInputs:
    """Give ``module.forward`` one named parameter per input (``torch.export`` matches
    ``dynamic_shapes`` to the signature, one entry per input, as for every other component)."""
    import inspect

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    forward = module.forward

    def positional(*args):
        return forward(*args)

    positional.__signature__ = inspect.Signature(
        [inspect.Parameter(f"x{i}_{n.replace('.', '_')}"[:120], kind) for i, n in enumerate(names)])
    module.__dict__["forward"] = positional
    return module


# -- what each piece computes, on the diffusers model's own submodules --------------------------

def run_block(block, tokens, context, temb, cos, sin):
    """One diffusers block (dual or single stream) as the model's forward calls it with batch 1
    and the text cropped (no mask)."""
    tokens, context = block(tokens, context, temb, None, (cos, sin))
    return tokens, context


def run_output(m, tokens, temb):
    """norm_out, then FramePack's fp32 output projection, on the latent tokens."""
    return (fp32_projection(m.proj_out, m.norm_out(tokens, temb)),)


RUNS = {"input": run_input, "dual_block": run_block, "single_block": run_block,
        "output": run_output}
NUM_ACTIVATIONS = {"input": 13, "dual_block": 5, "single_block": 5, "output": 2}


def weights_as_inputs(module: torch.nn.Module, names: Sequence[str], piece: str) -> WeightsAsInputs:
    """``module`` running ``piece``, as a module that takes the piece's activations, then the
    tensors ``names`` of ``module`` (its weights)."""
    wrapped = WeightsAsInputs(module, names, NUM_ACTIVATIONS[piece], RUNS[piece])
    return _with_arity(wrapped, [f"a{i}" for i in range(NUM_ACTIVATIONS[piece])] + list(names))


def export_module(model: torch.nn.Module, piece: str) -> WeightsAsInputs:
    """The piece as a module that takes its activations, then its weights (``weight_names``)."""
    return weights_as_inputs(piece_module(model, piece), weight_names(model, piece), piece)
