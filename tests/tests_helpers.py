"""Helpers shared by tests (not fixtures)."""

from __future__ import annotations

import torch

from framepack_trt.cache import Entry
from framepack_trt.cache.entry import EngineInput, FileRecord

#: diffusers' argument names -> FramePack's.
TO_FRAMEPACK = {"image_embeds": "image_embeddings", "indices_latents": "latent_indices",
                "latents_clean": "clean_latents", "indices_latents_clean": "clean_latent_indices",
                "latents_history_2x": "clean_latents_2x",
                "indices_latents_history_2x": "clean_latent_2x_indices",
                "latents_history_4x": "clean_latents_4x",
                "indices_latents_history_4x": "clean_latent_4x_indices"}


def framepack_random_weights(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn (none left at zero or one, as some initialisers leave them):
    linear and convolution weights of unit output variance, norm scales about 1, biases about 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim > 1:
                p.copy_(noise * (p[0].numel() ** -0.5))
            else:
                p.copy_(noise * 0.1 + (1.0 if name.endswith("weight") else 0.0))
    return model


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 error of ``a`` against ``b`` (in float64)."""
    return float((a.double() - b.double()).norm() / b.double().norm())


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


def framepack_loop(transformer, f1: bool, framepack_names: bool, sections: int = 3,
                   steps: int = 2, h: int = 52, w: int = 52, seed: int = 0,
                   teacache_thresh: float | None = None, device: str = "cpu"):
    """The section loop of FramePack's demo_gradio.py (inverted anti-drifting: latent
    paddings 2, 1, 0) or demo_gradio_f1.py (F1: the newest history last), with FramePack's
    argument names, (1, n) int64 indices, a bool mask over 512 text slots, fp32 history latents
    (passed as they are for clean latents), the model's dtype for the rest (timestep and
    guidance included, as FramePack's ``fm_wrapper`` casts them) and a plain Euler sampler in
    place of k-diffusion's UniPC: what matters here is that every transformer call is made the
    way FramePack makes it. diffusers' model takes diffusers'
    names (and 1-D indices): ``framepack_names=False`` renames the same tensors for it.
    ``teacache_thresh``: TeaCache on, set up before each section as demo_gradio.py does
    (``initialize_teacache(enable_teacache=True, num_steps=steps)``, with this threshold).
    ``device``: where the sampler works (latents, embeddings, mask); FramePack keeps its history
    latents and index tensors on the CPU and hands them over from there."""
    to_diffusers = {v: k for k, v in TO_FRAMEPACK.items()}

    def call(**kw):
        if not framepack_names:  # diffusers' pipeline has everything on its device
            kw = {to_diffusers.get(k, k): (v[0] if k.endswith("indices") else v)
                  for k, v in kw.items()}
            kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        return transformer(**kw)
    g = torch.Generator().manual_seed(seed)
    cfg, window = transformer.config, 9
    dtype = transformer.dtype
    # FramePack's dtypes: the model's for latents, timestep, guidance and embeddings; the clean
    # latents as its fp32 history holds them (its model casts them; diffusers' model does not,
    # so they are cast for it).
    history_dtype = torch.float32 if framepack_names else dtype
    text = torch.zeros(1, 512, cfg.text_embed_dim)
    text[:, :77] = torch.randn(1, 77, cfg.text_embed_dim, generator=g)
    mask = torch.zeros(1, 512, dtype=torch.bool)
    mask[:, :77] = True
    pooled = torch.randn(1, cfg.pooled_projection_dim, generator=g)
    image = torch.randn(1, 729, cfg.image_proj_dim, generator=g)
    start = torch.randn(1, 16, 1, h, w, generator=g)
    history = torch.zeros(1, 16, 1 + 2 + 16, h, w)
    if f1:
        history = torch.cat([history, start], dim=2)
    paddings = [1] * (sections - 1) + [0] if f1 else list(reversed(range(sections)))
    for padding in paddings:
        if f1:
            indices = torch.arange(0, 1 + 16 + 2 + 1 + window).unsqueeze(0)
            pre, c4i, c2i, c1i, latent_i = indices.split([1, 16, 2, 1, window], dim=1)
            c4, c2, c1 = history[:, :, -(16 + 2 + 1):].split([16, 2, 1], dim=2)
        else:
            indices = torch.arange(0, 1 + padding * window + window + 1 + 2 + 16).unsqueeze(0)
            pre, _, latent_i, c1i, c2i, c4i = indices.split(
                [1, padding * window, window, 1, 2, 16], dim=1)
            c1, c2, c4 = history[:, :, :1 + 2 + 16].split([1, 2, 16], dim=2)
        clean = torch.cat([start, c1], dim=2)
        if teacache_thresh is not None:
            from framepack_reference import initialize_teacache

            initialize_teacache(transformer, enable_teacache=True, num_steps=steps,
                                rel_l1_thresh=teacache_thresh)
        x = torch.randn(1, 16, window, h, w, generator=g).to(device)
        for i in range(steps):
            sigma, nxt = 1.0 - i / steps, 1.0 - (i + 1) / steps
            v = call(hidden_states=x.to(dtype),
                     timestep=torch.tensor([sigma * 1000.0]).to(device, dtype),
                     encoder_hidden_states=text.to(device, dtype),
                     encoder_attention_mask=mask.to(device),
                     pooled_projections=pooled.to(device, dtype),
                     guidance=torch.tensor([10.0 * 1000.0]).to(device, dtype),
                     latent_indices=latent_i, clean_latents=clean.to(history_dtype),
                     clean_latent_indices=torch.cat([pre, c1i], dim=1),
                     clean_latents_2x=c2.to(history_dtype), clean_latent_2x_indices=c2i,
                     clean_latents_4x=c4.to(history_dtype), clean_latent_4x_indices=c4i,
                     image_embeddings=image.to(device, dtype), attention_kwargs={},
                     return_dict=False)[0]
            x = x + (nxt - sigma) * v.float()
        x = x.cpu()
        if f1:
            history = torch.cat([history, x], dim=2)
        else:
            if padding == 0:
                x = torch.cat([start, x], dim=2)
            history = torch.cat([x, history], dim=2)
    return history


def made_entry(name: str, component: str, inputs: dict[str, list] | None = None,
               dims: dict | None = None, dtype: str = "float16", device: str = "cpu") -> Entry:
    """A manifest entry as the engine selection reads it, with no files (nothing loads it):
    its inputs' shapes by name, its dims' ranges, dtype and device."""
    nothing = FileRecord("engines/none", "", 0, 0)
    return Entry(name * 8, name, component, {"component": component, "dims": dims or {},
                                             "dtype": dtype, "device": {"type": device}},
                 nothing, nothing,
                 inputs=tuple(EngineInput(n, tuple(s), "model") for n, s in (inputs or {}).items()))
