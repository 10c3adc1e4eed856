"""FramePack's transformer forward over the piece engines (``pieces``): the input engine, then
the block loop in Python (each block's engine call takes that block's own weights, read from
the model FramePack holds, wherever it keeps them), then the output engine; with FramePack's
TeaCache, exactly as FramePack's ``HunyuanVideoTransformer3DModelPacked.forward`` decides and
reuses (lllyasviel/FramePack ``diffusers_helper/models/hunyuan_video_packed.py``).

``runtime.transformer_swap`` runs it in place of the transformer's forward, with the engines
it picked from the cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from framepack_trt.transformer.pieces import RUNS, piece_module, unpatchify

#: What ``teacache_step`` reads of the first dual-stream block, eagerly: its modulation
#: linear stays on the GPU under ``offload_bf16``.
TEACACHE_READS = ("norm1.linear",)


def teacache_step(model, tokens, temb) -> bool:
    """FramePack's TeaCache decision for this call (its state lives on the model, as FramePack's
    ``initialize_teacache`` set it): True when the block stack must run. Verbatim logic of
    FramePack's forward, on the same modulated input (block 0's ``norm1``)."""
    modulated_inp = model.transformer_blocks[0].norm1(tokens, emb=temb)[0]
    if model.cnt == 0 or model.cnt == model.num_steps - 1:
        should_calc = True
        model.accumulated_rel_l1_distance = 0
    else:
        prev = model.previous_modulated_input
        curr_rel_l1 = ((modulated_inp - prev).abs().mean() / prev.abs().mean()).cpu().item()
        model.accumulated_rel_l1_distance += model.teacache_rescale_func(curr_rel_l1)
        should_calc = model.accumulated_rel_l1_distance >= model.rel_l1_thresh
        if should_calc:
            model.accumulated_rel_l1_distance = 0
    model.previous_modulated_input = modulated_inp
    model.cnt += 1
    if model.cnt == model.num_steps:
        model.cnt = 0
    return should_calc


def run_pieces(model, engines: Mapping[str, Any], components: Mapping[str, Any], prepared,
               dtype, counters=None, names: Mapping[str, list[str]] | None = None):
    """The transformer's output for prepared inputs (``export.prepare_call``),
    through the piece engines, with TeaCache when the model has it on. A piece whose engine is
    None runs eagerly (``backend: auto`` found no engine faster than eager for it)."""
    device = prepared[0].device

    def call(piece, index, *acts):
        if engines[piece] is None:
            return RUNS[piece](piece_module(model, piece, index), *acts)
        weights = components[piece].weights(model, index, dtype, device,
                                            (names or {}).get(piece))
        return engines[piece](*acts, *weights)

    frames, height, width = prepared[0].shape[2:]
    p = model.config.patch_size
    rows, cols = height // p, width // p
    tokens, context, temb, cos, sin = call("input", 0, *prepared)
    run_blocks = True
    if getattr(model, "enable_teacache", False):
        run_blocks = teacache_step(model, tokens, temb)
    if run_blocks:
        before = tokens.clone() if getattr(model, "enable_teacache", False) else None
        for i in range(model.config.num_layers):
            tokens, context = call("dual_block", i, tokens, context, temb, cos, sin)
        for i in range(model.config.num_single_layers):
            tokens, context = call("single_block", i, tokens, context, temb, cos, sin)
        if before is not None:
            model.previous_residual = tokens - before
    else:
        tokens = tokens + model.previous_residual
    if counters is not None:
        counters["block_stack" if run_blocks else "teacache_skip"] += 1
    latent = tokens[:, :(frames // model.config.patch_size_t) * rows * cols]
    (projected,) = call("output", 0, latent, temb)
    return unpatchify(projected, model.config, frames, rows, cols)
