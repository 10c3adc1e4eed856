"""Helpers shared by tests (not fixtures)."""

from __future__ import annotations

import torch

#: diffusers' argument names -> FramePack's.
TO_FRAMEPACK = {"image_embeds": "image_embeddings", "indices_latents": "latent_indices",
                "latents_clean": "clean_latents", "indices_latents_clean": "clean_latent_indices",
                "latents_history_2x": "clean_latents_2x",
                "indices_latents_history_2x": "clean_latent_2x_indices",
                "latents_history_4x": "clean_latents_4x",
                "indices_latents_history_4x": "clean_latent_4x_indices"}


def framepack_call(config, h: int, w: int, length: int, frames: int = 9, seed: int = 0):
    """One transformer call with random values, in diffusers' convention and in FramePack's
    (fp32 clean latents, (1, n) int64 indices, bool mask over 512 slots)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    mask = torch.zeros(1, 512, dtype=torch.bool)
    mask[:, :length] = True
    idx = torch.arange(0, 1 + frames + 1 + 2 + 16)
    start, latent, post, c2, c4 = idx.split([1, frames, 1, 2, 16])
    c = config.in_channels
    d = dict(hidden_states=r(1, c, frames, h, w), timestep=torch.tensor([500.0]),
             guidance=torch.tensor([10000.0]), encoder_hidden_states=r(1, 512, config.text_embed_dim),
             encoder_attention_mask=mask, pooled_projections=r(1, config.pooled_projection_dim),
             image_embeds=r(1, 729, config.image_proj_dim), indices_latents=latent,
             latents_clean=r(1, c, 2, h, w), indices_latents_clean=torch.cat([start, post]),
             latents_history_2x=r(1, c, 2, h, w), indices_latents_history_2x=c2,
             latents_history_4x=r(1, c, 16, h, w), indices_latents_history_4x=c4)
    fp = {TO_FRAMEPACK.get(k, k): (v[None] if k.startswith("indices_") else v) for k, v in d.items()}
    return d, fp
