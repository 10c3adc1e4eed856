"""How many tokens the transformer's pieces see for a call: the image tokens of the blocks
(the latents, then the clean, 2x and 4x history), the context (the image encoder's tokens,
then the text) and the latent tokens of the output side. Plain arithmetic on sizes (no
torch): the components derive their dims from it, the runtime a call's sizes.
"""

from __future__ import annotations

#: The image tokens of FramePack's image encoder (SigLIP), before the text in the context.
IMAGE_TOKENS = 729


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def image_tokens(frames: int, height: int, width: int) -> int:
    """Tokens a call's blocks see at latent size (frames, height, width): the latents (2x2
    patches), 2 clean frames, the 2x history (one 4x4 patch per 2 frames) and the 4x history
    (16 frames, 8x8 patches, 4 frames each), padded as diffusers pads them."""
    rows, cols = height // 2, width // 2
    return ((frames + 2) * rows * cols + ceil_div(height, 4) * ceil_div(width, 4)
            + 4 * ceil_div(height, 8) * ceil_div(width, 8))


def piece_sizes(prepared, text_len: int) -> dict[str, dict[str, int]]:
    """The named sizes each piece's engine after the input side sees for a prepared call
    (``export.prepare_call``) whose text is ``text_len`` tokens."""
    frames, height, width = prepared[0].shape[2:]
    blocks = {"image_tokens": image_tokens(frames, height, width),
              "context_len": IMAGE_TOKENS + text_len}
    return {"dual_block": blocks, "single_block": dict(blocks),
            "output": {"latent_tokens": frames * (height // 2) * (width // 2)}}
