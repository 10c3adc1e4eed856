"""FramePack's transformer class, on every diffusers this project supports.

diffusers has ``HunyuanVideoFramepackTransformer3DModel`` from 0.34 on; FramePack pins
diffusers 0.33.1 and ships its own class (``diffusers_helper.models.hunyuan_video_packed.
HunyuanVideoTransformer3DModelPacked``), whose modules and parameter names are the same but
whose call conventions (RoPE as one tensor, the condition embedding's argument order, a patch
embedder without ``forward``) are not the ones this project's export code is written against.

``transformer_class()`` is the class the ``transformer`` components load: diffusers' own where
it has one, else ``HunyuanVideoFramepackTransformer3DModel`` below: the same model, written
with diffusers 0.33.1's HunyuanVideo building blocks (which FramePack's class and diffusers'
later one both come from), loading the same ``config.json`` and weights
(``lllyasviel/FramePackI2V_HY``). It follows diffusers 0.34+'s
``transformer_hunyuan_video_framepack.py`` (Apache-2.0, the Framepack, Hunyuan and HuggingFace
teams) line by line, except the condition embedding, which adds the timestep, guidance and text
embeddings in FramePack's order (diffusers 0.33.1's ``HunyuanVideoConditionEmbedding`` adds
them in another order, a rounding difference only). ``tests/test_framepack_transformer.py``
proves its forward equal to FramePack's own (and to diffusers', where installed) on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormContinuous
from diffusers.models.transformers.transformer_hunyuan_video import (
    HunyuanVideoConditionEmbedding,
    HunyuanVideoPatchEmbed,
    HunyuanVideoSingleTransformerBlock,
    HunyuanVideoTokenRefiner,
    HunyuanVideoTransformerBlock,
)

#: Where each class this module can give comes from (``transformer_source()``).
DIFFUSERS = "diffusers"
BACKPORT = "framepack_trt"


def diffusers_class() -> type | None:
    """diffusers' own ``HunyuanVideoFramepackTransformer3DModel`` (0.34+), or None."""
    try:
        from diffusers import HunyuanVideoFramepackTransformer3DModel as cls
    except (ImportError, AttributeError):
        return None
    return cls


def transformer_class() -> type:
    """The class the transformer components load and export: diffusers' where it exists,
    else this module's (same modules, parameter names and forward)."""
    return diffusers_class() or HunyuanVideoFramepackTransformer3DModel


def transformer_source() -> str:
    """``diffusers`` or ``framepack_trt``: which ``transformer_class()`` is."""
    return DIFFUSERS if diffusers_class() is not None else BACKPORT


def is_export_layout(model: Any) -> bool:
    """Whether ``model`` has the diffusers-style call conventions this project's export code
    runs (diffusers' class or this module's), unlike FramePack's own class."""
    classes = tuple(c for c in (diffusers_class(), HunyuanVideoFramepackTransformer3DModel) if c)
    return isinstance(model, classes)


def pad_for_3d_conv(x: torch.Tensor, kernel_size: tuple[int, int, int]) -> torch.Tensor:
    """Replicate-pad (T, H, W) to multiples of ``kernel_size``, as FramePack and diffusers do."""
    if isinstance(x, (tuple, list)):
        return tuple(pad_for_3d_conv(i, kernel_size) for i in x)
    _, _, t, h, w = x.shape
    pt, ph, pw = kernel_size
    pad_t = (pt - (t % pt)) % pt
    pad_h = (ph - (h % ph)) % ph
    pad_w = (pw - (w % pw)) % pw
    return F.pad(x, (0, pad_w, 0, pad_h, 0, pad_t), mode="replicate")


def center_down_sample_3d(x, kernel_size):
    if isinstance(x, (tuple, list)):
        return tuple(center_down_sample_3d(i, kernel_size) for i in x)
    return F.avg_pool3d(x, kernel_size, stride=kernel_size)


class FramepackConditionEmbedding(HunyuanVideoConditionEmbedding):
    """diffusers' condition embedding, summed as FramePack's
    ``CombinedTimestepGuidanceTextProjEmbeddings`` sums it: (timestep + guidance) + text."""

    def forward(self, timestep, pooled_projection, guidance=None):
        timesteps_proj = self.time_proj(timestep)
        timesteps_emb = self.timestep_embedder(timesteps_proj.to(dtype=pooled_projection.dtype))
        pooled_projections = self.text_embedder(pooled_projection)
        token_replace_emb = None
        if self.guidance_embedder is not None:
            guidance_proj = self.time_proj(guidance)
            guidance_emb = self.guidance_embedder(guidance_proj.to(dtype=pooled_projection.dtype))
            conditioning = timesteps_emb + guidance_emb + pooled_projections
        else:
            conditioning = timesteps_emb + pooled_projections
        return conditioning, token_replace_emb


class HunyuanVideoFramepackRotaryPosEmbed(nn.Module):
    def __init__(self, patch_size: int, patch_size_t: int, rope_dim: list[int],
                 theta: float = 256.0) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.patch_size_t = patch_size_t
        self.rope_dim = rope_dim
        self.theta = theta

    def forward(self, frame_indices: torch.Tensor, height: int, width: int, device):
        height = height // self.patch_size
        width = width // self.patch_size
        grid = torch.meshgrid(
            frame_indices.to(device=device, dtype=torch.float32),
            torch.arange(0, height, device=device, dtype=torch.float32),
            torch.arange(0, width, device=device, dtype=torch.float32),
            indexing="ij",
        )
        grid = torch.stack(grid, dim=0)
        freqs = [get_1d_rotary_pos_embed(self.rope_dim[i], grid[i].reshape(-1), self.theta,
                                         use_real=True) for i in range(3)]
        return torch.cat([f[0] for f in freqs], dim=1), torch.cat([f[1] for f in freqs], dim=1)


class FramepackClipVisionProjection(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.Linear(in_channels, out_channels * 3)
        self.down = nn.Linear(out_channels * 3, out_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.up(hidden_states)))


class HunyuanVideoHistoryPatchEmbed(nn.Module):
    def __init__(self, in_channels: int, inner_dim: int):
        super().__init__()
        self.proj = nn.Conv3d(in_channels, inner_dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.proj_2x = nn.Conv3d(in_channels, inner_dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.proj_4x = nn.Conv3d(in_channels, inner_dim, kernel_size=(4, 8, 8), stride=(4, 8, 8))

    def forward(self, latents_clean=None, latents_clean_2x=None, latents_clean_4x=None):
        if latents_clean is not None:
            latents_clean = self.proj(latents_clean).flatten(2).transpose(1, 2)
        if latents_clean_2x is not None:
            latents_clean_2x = self.proj_2x(pad_for_3d_conv(latents_clean_2x, (2, 4, 4)))
            latents_clean_2x = latents_clean_2x.flatten(2).transpose(1, 2)
        if latents_clean_4x is not None:
            latents_clean_4x = self.proj_4x(pad_for_3d_conv(latents_clean_4x, (4, 8, 8)))
            latents_clean_4x = latents_clean_4x.flatten(2).transpose(1, 2)
        return latents_clean, latents_clean_2x, latents_clean_4x


class HunyuanVideoFramepackTransformer3DModel(ModelMixin, ConfigMixin):
    """FramePack's packed HunyuanVideo transformer (see the module docstring)."""

    _supports_gradient_checkpointing = False
    _no_split_modules = ["HunyuanVideoTransformerBlock", "HunyuanVideoSingleTransformerBlock",
                         "HunyuanVideoHistoryPatchEmbed", "HunyuanVideoTokenRefiner"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 16,
        out_channels: int = 16,
        num_attention_heads: int = 24,
        attention_head_dim: int = 128,
        num_layers: int = 20,
        num_single_layers: int = 40,
        num_refiner_layers: int = 2,
        mlp_ratio: float = 4.0,
        patch_size: int = 2,
        patch_size_t: int = 1,
        qk_norm: str = "rms_norm",
        guidance_embeds: bool = True,
        text_embed_dim: int = 4096,
        pooled_projection_dim: int = 768,
        rope_theta: float = 256.0,
        rope_axes_dim: tuple[int, ...] = (16, 56, 56),
        image_condition_type: str | None = None,
        has_image_proj: int = False,
        image_proj_dim: int = 1152,
        has_clean_x_embedder: int = False,
    ) -> None:
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        out_channels = out_channels or in_channels
        self.x_embedder = HunyuanVideoPatchEmbed((patch_size_t, patch_size, patch_size),
                                                 in_channels, inner_dim)
        self.clean_x_embedder = None
        if has_clean_x_embedder:
            self.clean_x_embedder = HunyuanVideoHistoryPatchEmbed(in_channels, inner_dim)
        self.context_embedder = HunyuanVideoTokenRefiner(
            text_embed_dim, num_attention_heads, attention_head_dim, num_layers=num_refiner_layers)
        self.image_projection = (FramepackClipVisionProjection(image_proj_dim, inner_dim)
                                 if has_image_proj else None)
        self.time_text_embed = FramepackConditionEmbedding(
            inner_dim, pooled_projection_dim, guidance_embeds, image_condition_type)
        self.rope = HunyuanVideoFramepackRotaryPosEmbed(patch_size, patch_size_t, rope_axes_dim,
                                                        rope_theta)
        self.transformer_blocks = nn.ModuleList([
            HunyuanVideoTransformerBlock(num_attention_heads, attention_head_dim,
                                         mlp_ratio=mlp_ratio, qk_norm=qk_norm)
            for _ in range(num_layers)])
        self.single_transformer_blocks = nn.ModuleList([
            HunyuanVideoSingleTransformerBlock(num_attention_heads, attention_head_dim,
                                               mlp_ratio=mlp_ratio, qk_norm=qk_norm)
            for _ in range(num_single_layers)])
        self.norm_out = AdaLayerNormContinuous(inner_dim, inner_dim, elementwise_affine=False,
                                               eps=1e-6)
        self.proj_out = nn.Linear(inner_dim, patch_size_t * patch_size * patch_size * out_channels)
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        pooled_projections: torch.Tensor,
        image_embeds: torch.Tensor,
        indices_latents: torch.Tensor,
        guidance: torch.Tensor | None = None,
        latents_clean: torch.Tensor | None = None,
        indices_latents_clean: torch.Tensor | None = None,
        latents_history_2x: torch.Tensor | None = None,
        indices_latents_history_2x: torch.Tensor | None = None,
        latents_history_4x: torch.Tensor | None = None,
        indices_latents_history_4x: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ):
        batch_size, _, num_frames, height, width = hidden_states.shape
        p, p_t = self.config.patch_size, self.config.patch_size_t
        post_patch_num_frames = num_frames // p_t
        post_patch_height = height // p
        post_patch_width = width // p
        original_context_length = post_patch_num_frames * post_patch_height * post_patch_width

        if indices_latents is None:
            indices_latents = torch.arange(0, num_frames).unsqueeze(0).expand(batch_size, -1)

        hidden_states = self.x_embedder(hidden_states)
        device = hidden_states.device
        image_rotary_emb = self.rope(frame_indices=indices_latents, height=height, width=width,
                                     device=device)
        latents_clean, latents_history_2x, latents_history_4x = self.clean_x_embedder(
            latents_clean, latents_history_2x, latents_history_4x)
        rope_clean = rope_2x = rope_4x = None
        if latents_clean is not None and indices_latents_clean is not None:
            rope_clean = self.rope(frame_indices=indices_latents_clean, height=height,
                                   width=width, device=device)
        if latents_history_2x is not None and indices_latents_history_2x is not None:
            rope_2x = self.rope(frame_indices=indices_latents_history_2x, height=height,
                                width=width, device=device)
        if latents_history_4x is not None and indices_latents_history_4x is not None:
            rope_4x = self.rope(frame_indices=indices_latents_history_4x, height=height,
                                width=width, device=device)
        hidden_states, image_rotary_emb = self._pack_history_states(
            hidden_states, latents_clean, latents_history_2x, latents_history_4x,
            image_rotary_emb, rope_clean, rope_2x, rope_4x, post_patch_height, post_patch_width)

        temb, _ = self.time_text_embed(timestep, pooled_projections, guidance)
        encoder_hidden_states = self.context_embedder(encoder_hidden_states, timestep,
                                                      encoder_attention_mask)
        encoder_hidden_states_image = self.image_projection(image_embeds)
        attention_mask_image = encoder_attention_mask.new_ones(
            (batch_size, encoder_hidden_states_image.shape[1]))
        # must cat before (not after) encoder_hidden_states, due to attn masking
        encoder_hidden_states = torch.cat([encoder_hidden_states_image, encoder_hidden_states],
                                          dim=1)
        encoder_attention_mask = torch.cat([attention_mask_image, encoder_attention_mask], dim=1)

        latent_sequence_length = hidden_states.shape[1]
        condition_sequence_length = encoder_hidden_states.shape[1]
        sequence_length = latent_sequence_length + condition_sequence_length
        attention_mask = torch.zeros(batch_size, sequence_length, device=device, dtype=torch.bool)
        effective_condition_sequence_length = encoder_attention_mask.sum(dim=1, dtype=torch.int)
        effective_sequence_length = latent_sequence_length + effective_condition_sequence_length
        if batch_size == 1:
            encoder_hidden_states = encoder_hidden_states[:, :effective_condition_sequence_length[0]]
            attention_mask = None
        else:
            for i in range(batch_size):
                attention_mask[i, :effective_sequence_length[i]] = True
            attention_mask = attention_mask.unsqueeze(1).unsqueeze(1)

        for block in self.transformer_blocks:
            hidden_states, encoder_hidden_states = block(
                hidden_states, encoder_hidden_states, temb, attention_mask, image_rotary_emb)
        for block in self.single_transformer_blocks:
            hidden_states, encoder_hidden_states = block(
                hidden_states, encoder_hidden_states, temb, attention_mask, image_rotary_emb)

        hidden_states = hidden_states[:, -original_context_length:]
        hidden_states = self.norm_out(hidden_states, temb)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_size, post_patch_num_frames, post_patch_height,
                                              post_patch_width, -1, p_t, p, p)
        hidden_states = hidden_states.permute(0, 4, 1, 5, 2, 6, 3, 7)
        hidden_states = hidden_states.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (hidden_states,)
        return Transformer2DModelOutput(sample=hidden_states)

    def _pack_history_states(self, hidden_states, latents_clean, latents_history_2x,
                             latents_history_4x, image_rotary_emb, rope_clean, rope_2x, rope_4x,
                             height, width):
        emb = list(image_rotary_emb)
        if latents_clean is not None and rope_clean is not None:
            hidden_states = torch.cat([latents_clean, hidden_states], dim=1)
            emb = [torch.cat([rope_clean[i], emb[i]], dim=0) for i in range(2)]
        if latents_history_2x is not None and rope_2x is not None:
            hidden_states = torch.cat([latents_history_2x, hidden_states], dim=1)
            rope_2x = self._pad_rotary_emb(rope_2x, height, width, (2, 2, 2))
            emb = [torch.cat([rope_2x[i], emb[i]], dim=0) for i in range(2)]
        if latents_history_4x is not None and rope_4x is not None:
            hidden_states = torch.cat([latents_history_4x, hidden_states], dim=1)
            rope_4x = self._pad_rotary_emb(rope_4x, height, width, (4, 4, 4))
            emb = [torch.cat([rope_4x[i], emb[i]], dim=0) for i in range(2)]
        return hidden_states, tuple(emb)

    def _pad_rotary_emb(self, image_rotary_emb, height, width, kernel_size):
        out = []
        for freqs in image_rotary_emb:  # [T * H * W, D / 2]
            freqs = freqs.unsqueeze(0).permute(0, 2, 1).unflatten(2, (-1, height, width))
            freqs = center_down_sample_3d(pad_for_3d_conv(freqs, kernel_size), kernel_size)
            out.append(freqs.flatten(2).permute(0, 2, 1).squeeze(0))
        return tuple(out)
