# ruff: noqa: E501, B007  (FramePack's code, kept verbatim)
"""FramePack's own code that the tests hold the engines to, copied verbatim from
lllyasviel/FramePack (Apache-2.0): ``diffusers_helper/models/hunyuan_video_packed.py``
(``initialize_teacache`` and the TeaCache part of ``HunyuanVideoTransformer3DModelPacked.forward``);
and ``DynamicSwapInstaller``, its low-VRAM weight streaming, from ``diffusers_helper/memory.py``
of this repository's copy of FramePack (tests/framepack_upstream).

FramePack's model class is not a package anyone can install; diffusers'
``HunyuanVideoFramepackTransformer3DModel`` has the same modules and weights but no TeaCache.
``framepack_forward`` is FramePack's forward around diffusers' modules: the input side (patch and
history embedders, RoPE, time/text/image embeddings) as diffusers computes it
(``framepack_trt.transformer.pieces.run_input``, equal to diffusers' forward to 1e-6 in
tests/components), then FramePack's block stack with TeaCache verbatim, on diffusers' blocks,
then the output side.
"""

from __future__ import annotations

import numpy as np

from framepack_trt.transformer.export import prepare_call
from framepack_trt.transformer.pieces import run_input, run_output, unpatchify


def initialize_teacache(self, enable_teacache=True, num_steps=25, rel_l1_thresh=0.15):
    self.enable_teacache = enable_teacache
    self.cnt = 0
    self.num_steps = num_steps
    self.rel_l1_thresh = rel_l1_thresh  # 0.1 for 1.6x speedup, 0.15 for 2.1x speedup
    self.accumulated_rel_l1_distance = 0
    self.previous_modulated_input = None
    self.previous_residual = None
    self.teacache_rescale_func = np.poly1d([7.33226126e+02, -4.01131952e+02, 6.75869174e+01, -3.14987800e+00, 9.61237896e-02])


def framepack_forward(self, stack_runs: list, **call):
    """FramePack's forward (TeaCache on or off) on diffusers' model ``self``; appends to
    ``stack_runs`` whether the block stack ran."""
    prepared = prepare_call(call, self.dtype, None)
    hidden_states, encoder_hidden_states, temb, cos, sin = run_input(self, *prepared)
    rope_freqs = (cos, sin)
    attention_mask = None

    # -- verbatim from FramePack (gradient_checkpointing_method(block, ...) is block(...)) -----
    if self.enable_teacache:
        modulated_inp = self.transformer_blocks[0].norm1(hidden_states, emb=temb)[0]

        if self.cnt == 0 or self.cnt == self.num_steps-1:
            should_calc = True
            self.accumulated_rel_l1_distance = 0
        else:
            curr_rel_l1 = ((modulated_inp - self.previous_modulated_input).abs().mean() / self.previous_modulated_input.abs().mean()).cpu().item()
            self.accumulated_rel_l1_distance += self.teacache_rescale_func(curr_rel_l1)
            should_calc = self.accumulated_rel_l1_distance >= self.rel_l1_thresh

            if should_calc:
                self.accumulated_rel_l1_distance = 0

        self.previous_modulated_input = modulated_inp
        self.cnt += 1

        if self.cnt == self.num_steps:
            self.cnt = 0

        if not should_calc:
            hidden_states = hidden_states + self.previous_residual
        else:
            ori_hidden_states = hidden_states.clone()

            for block_id, block in enumerate(self.transformer_blocks):
                hidden_states, encoder_hidden_states = block(
                    hidden_states,
                    encoder_hidden_states,
                    temb,
                    attention_mask,
                    rope_freqs
                )

            for block_id, block in enumerate(self.single_transformer_blocks):
                hidden_states, encoder_hidden_states = block(
                    hidden_states,
                    encoder_hidden_states,
                    temb,
                    attention_mask,
                    rope_freqs
                )

            self.previous_residual = hidden_states - ori_hidden_states
    # -- end of FramePack's code ----------------------------------------------------------------
        stack_runs.append(should_calc)
    else:
        for block in self.transformer_blocks:
            hidden_states, encoder_hidden_states = block(hidden_states, encoder_hidden_states,
                                                         temb, attention_mask, rope_freqs)
        for block in self.single_transformer_blocks:
            hidden_states, encoder_hidden_states = block(hidden_states, encoder_hidden_states,
                                                         temb, attention_mask, rope_freqs)
        stack_runs.append(True)

    frames, height, width = prepared[0].shape[2:]
    p = self.config.patch_size
    (projected,) = run_output(self, hidden_states[:, :frames * (height // p) * (width // p)], temb)
    sample = unpatchify(projected, self.config, frames, height // p, width // p)
    return (sample,) if call.get("return_dict") is False else sample


def __getattr__(name: str):
    """``DynamicSwapInstaller``: FramePack's own, from this repository's copy of FramePack
    (tests/framepack_upstream), imported when first asked for (``import_framepack``: its
    ``memory.py`` asks CUDA for a device at import)."""
    if name != "DynamicSwapInstaller":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from framepack_trt.framepack_worker import VENDORED, import_framepack

    import_framepack(VENDORED)
    from diffusers_helper.memory import DynamicSwapInstaller

    return DynamicSwapInstaller
