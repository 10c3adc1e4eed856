"""FramePack's transformer (diffusers ``HunyuanVideoFramepackTransformer3DModel``) made
export-ready, over the diffusers module's own parameters.

The diffusers forward cannot be exported as it is (docs/transformer.md): with batch 1 it crops the
text by ``encoder_attention_mask.sum()`` (a data-dependent shape), and it pads the 2x/4x
history latents and their RoPE tables by ``(k - size % k) % k`` (a modular expression that
AOTInductor on CUDA fails on). Here the same function is split in two:

``prepare_call``  (eager, per call, cheap): accepts diffusers' or FramePack's argument names
    and dtypes, crops the text to its length (explicit dynamic text length: the mask must be a
    prefix of ones, as FramePack's is), pads the history latents and their frame indices to
    multiples of the history kernels exactly as diffusers does (replicate), and casts.
``FramepackTransformerForExport``  (the engine): only shape-static operations on its inputs,
    and the output projection in fp32, as FramePack runs it (fp32 output).
    The RoPE of a padded history block is computed at clamped grid positions, which equals
    diffusers' replicate padding of the table; no ``%`` on a dynamic size is left.

With the text cropped, the refiner and the blocks run without masks, as diffusers' own batch-1
path does after its crop.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_1d_rotary_pos_embed

from framepack_trt.errors import ShapeError, UsageError
from framepack_trt.transformer.model import pad_for_3d_conv

#: FramePack's argument names -> diffusers' argument names.
FRAMEPACK_NAMES = {
    "image_embeddings": "image_embeds",
    "latent_indices": "indices_latents",
    "clean_latents": "latents_clean",
    "clean_latent_indices": "indices_latents_clean",
    "clean_latents_2x": "latents_history_2x",
    "clean_latent_2x_indices": "indices_latents_history_2x",
    "clean_latents_4x": "latents_history_4x",
    "clean_latent_4x_indices": "indices_latents_history_4x",
}

#: The engine's inputs, in order.
ENGINE_INPUTS = (
    "hidden_states", "timestep", "guidance", "encoder_hidden_states", "pooled_projections",
    "image_embeds", "indices_latents", "latents_clean", "indices_latents_clean",
    "latents_history_2x", "indices_latents_history_2x", "latents_history_4x",
    "indices_latents_history_4x",
)

#: (time, height, width) kernels of the 2x and 4x history embedders, in latent units.
HISTORY_KERNELS = {"2x": (2, 4, 4), "4x": (4, 8, 8)}


def diffusers_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Both call conventions -> diffusers' names (unknown names are refused)."""
    out: dict[str, Any] = {}
    valid = set(ENGINE_INPUTS) | set(FRAMEPACK_NAMES) | {"encoder_attention_mask",
                                                         "attention_kwargs", "return_dict"}
    for name, value in kwargs.items():
        if name not in valid:
            raise UsageError(f"transformer: unknown argument {name!r}; valid: "
                             f"{', '.join(sorted(valid))}")
        out[FRAMEPACK_NAMES.get(name, name)] = value
    out.pop("attention_kwargs", None)
    out.pop("return_dict", None)
    return out


def text_length(mask: torch.Tensor) -> int:
    """The number of leading ones of a batch-1 text mask; refuses masks that are not a prefix."""
    flat = mask.reshape(mask.shape[0], -1).bool()
    if flat.shape[0] != 1:
        raise ShapeError("transformer: the text crop needs batch 1 (FramePack's batch)")
    length = int(flat.sum())
    if length < 1 or not bool(flat[0, :length].all()):
        raise ShapeError("transformer: encoder_attention_mask must be ones then zeros "
                         f"(got {length} ones, not all leading)")
    return length


def _pad_indices(indices: torch.Tensor, multiple: int) -> torch.Tensor:
    indices = indices.reshape(-1)
    pad = (-indices.shape[0]) % multiple
    return torch.cat([indices, indices[-1:].expand(pad)]) if pad else indices


def prepare_call(kwargs: Mapping[str, Any], dtype: torch.dtype,
                 device: str | torch.device | None):
    """The engine's inputs (in ENGINE_INPUTS order) for one transformer call (``device``
    None: where the latents are)."""
    call = diffusers_kwargs(kwargs)
    missing = [n for n in (*ENGINE_INPUTS, "encoder_attention_mask") if n not in call]
    if missing:
        raise ShapeError(f"transformer: the call lacks {', '.join(missing)}")
    if call["hidden_states"].shape[0] != 1:
        raise ShapeError(f"transformer: the engine takes batch 1 (FramePack's), the call has "
                         f"batch {call['hidden_states'].shape[0]}")
    device = device if device is not None else call["hidden_states"].device
    mask = call.pop("encoder_attention_mask")
    length = text_length(mask)
    call["encoder_hidden_states"] = call["encoder_hidden_states"][:, :length]
    batch = call["hidden_states"].shape[0]
    if call.get("guidance") is None:
        raise ShapeError("transformer: the engine needs guidance (FramePack passes 10000 by "
                         "default); a call without it runs eager")
    for key, kernel in HISTORY_KERNELS.items():
        name = f"latents_history_{key}"
        call[name] = pad_for_3d_conv(call[name], kernel)
        call[f"indices_{name}"] = _pad_indices(call[f"indices_{name}"], kernel[0])
    out = []
    for name in ENGINE_INPUTS:
        value = call[name]
        if name.startswith("indices_"):
            value = value.reshape(-1).to(device=device, dtype=torch.int64)
        elif name in ("timestep", "guidance"):
            value = value.reshape(batch).to(device=device, dtype=torch.float32)
        else:
            value = value.to(device=device, dtype=dtype)
        out.append(value)
    return tuple(out)


def _rope_at(rope, frame_indices, rows, cols):
    """diffusers' FramePack RoPE table at explicit (frame, row, column) grid positions."""
    grid = torch.meshgrid(frame_indices.to(torch.float32), rows.to(torch.float32),
                          cols.to(torch.float32), indexing="ij")
    freqs = [get_1d_rotary_pos_embed(rope.rope_dim[i], grid[i].reshape(-1), rope.theta,
                                     use_real=True) for i in range(3)]
    return torch.cat([f[0] for f in freqs], dim=1), torch.cat([f[1] for f in freqs], dim=1)


def _history_rope(rope, frame_indices, rows, cols, padded_rows, padded_cols, kernel):
    """RoPE of a padded history block: the table at replicate-padded (clamped) positions,
    averaged over the history kernel, as diffusers' ``_pad_rotary_emb`` computes it."""
    device = frame_indices.device
    r = torch.arange(padded_rows, device=device).clamp(max=rows - 1)
    c = torch.arange(padded_cols, device=device).clamp(max=cols - 1)
    cos, sin = _rope_at(rope, frame_indices, r, c)
    out = []
    for table in (cos, sin):
        t = table.reshape(frame_indices.shape[0], padded_rows, padded_cols, -1)
        t = t.permute(3, 0, 1, 2).unsqueeze(0)  # (1, D, T, H, W)
        t = F.avg_pool3d(t, kernel, stride=kernel)
        out.append(t.flatten(2).permute(0, 2, 1).squeeze(0))
    return out[0], out[1]


def fp32_projection(proj_out: torch.nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    """FramePack's ``high_quality_fp32_output_for_inference``: the output projection runs in
    fp32 (its weights upcast, exactly) on fp32 activations, and the output is fp32."""
    bias = proj_out.bias.float() if proj_out.bias is not None else None
    return F.linear(hidden.float(), proj_out.weight.float(), bias)


@contextmanager
def framepack_fp32_output(model: torch.nn.Module):
    """Within this block the diffusers module's own forward computes its output projection as
    FramePack does (``fp32_projection``), through a forward hook; nothing else changes."""
    handle = model.proj_out.register_forward_hook(
        lambda module, args, output: fp32_projection(module, args[0]))
    try:
        yield model
    finally:
        handle.remove()


def run_input(m, hidden_states, timestep, guidance, encoder_hidden_states, pooled_projections,
              image_embeds, indices_latents, latents_clean, indices_latents_clean,
              latents_history_2x, indices_latents_history_2x, latents_history_4x,
              indices_latents_history_4x):
    """The input side of the transformer on prepared inputs (``prepare_call``): image tokens,
    context (image projection, then text), temb, and the RoPE table (cos, sin).

    diffusers puts the history first (4x, 2x, clean, then the latents being denoised) and
    slices the last tokens off at the end. Attention over the image tokens has no mask and each
    token carries its own RoPE, so the order does not change the function; the latents go first
    here so that the final slice starts at 0 instead of at a dynamic offset. (The TensorRT
    failure once blamed on that slice came from diffusers' own x[:, :-text_len] splits; see
    graph_passes.)"""
    p = m.config.patch_size
    _, _, _, height, width = hidden_states.shape
    rows, cols = height // p, width // p
    device = hidden_states.device
    tokens = m.x_embedder(hidden_states)
    grid = (torch.arange(rows, device=device), torch.arange(cols, device=device))
    rope = _rope_at(m.rope, indices_latents, *grid)
    embed = m.clean_x_embedder
    clean = embed.proj(latents_clean).flatten(2).transpose(1, 2)
    rope_clean = _rope_at(m.rope, indices_latents_clean, *grid)
    hist2 = embed.proj_2x(latents_history_2x).flatten(2).transpose(1, 2)
    rope2 = _history_rope(m.rope, indices_latents_history_2x, rows, cols,
                          latents_history_2x.shape[-2] // p, latents_history_2x.shape[-1] // p,
                          (2, 2, 2))
    hist4 = embed.proj_4x(latents_history_4x).flatten(2).transpose(1, 2)
    rope4 = _history_rope(m.rope, indices_latents_history_4x, rows, cols,
                          latents_history_4x.shape[-2] // p, latents_history_4x.shape[-1] // p,
                          (4, 4, 4))
    tokens = torch.cat([tokens, hist4, hist2, clean], dim=1)
    cos = torch.cat([rope[0], rope4[0], rope2[0], rope_clean[0]], dim=0)
    sin = torch.cat([rope[1], rope4[1], rope2[1], rope_clean[1]], dim=0)
    temb, _ = m.time_text_embed(timestep, pooled_projections, guidance)
    text = m.context_embedder(encoder_hidden_states, timestep, None)
    context = torch.cat([m.image_projection(image_embeds), text], dim=1)
    return tokens, context, temb, cos, sin


def unpatchify(projected: torch.Tensor, config, frames: int, rows: int, cols: int) -> torch.Tensor:
    """(1, frames*rows*cols, C*pt*p*p) -> (1, C, frames*pt, rows*p, cols*p), as diffusers'."""
    p, p_t = config.patch_size, config.patch_size_t
    out = projected.reshape(projected.shape[0], frames // p_t, rows, cols, -1, p_t, p, p)
    out = out.permute(0, 4, 1, 5, 2, 6, 3, 7)
    return out.flatten(6, 7).flatten(4, 5).flatten(2, 3)


class FramepackTransformerForExport(torch.nn.Module):
    """The FramePack transformer's forward on prepared inputs (see ``prepare_call``), using the
    diffusers model's own submodules and parameters (shared, not copied)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, hidden_states, timestep, guidance, encoder_hidden_states, pooled_projections,
                image_embeds, indices_latents, latents_clean, indices_latents_clean,
                latents_history_2x, indices_latents_history_2x, latents_history_4x,
                indices_latents_history_4x):
        m = self.model
        p, p_t = m.config.patch_size, m.config.patch_size_t
        frames, height, width = hidden_states.shape[2:]
        rows, cols = height // p, width // p
        tokens, context, temb, cos, sin = run_input(
            m, hidden_states, timestep, guidance, encoder_hidden_states, pooled_projections,
            image_embeds, indices_latents, latents_clean, indices_latents_clean,
            latents_history_2x, indices_latents_history_2x, latents_history_4x,
            indices_latents_history_4x)
        for block in m.transformer_blocks:
            tokens, context = block(tokens, context, temb, None, (cos, sin))
        for block in m.single_transformer_blocks:
            tokens, context = block(tokens, context, temb, None, (cos, sin))
        out = tokens.narrow(1, 0, (frames // p_t) * rows * cols)
        out = fp32_projection(m.proj_out, m.norm_out(out, temb))
        return (unpatchify(out, m.config, frames, rows, cols),)
