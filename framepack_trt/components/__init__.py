"""Component adapters, one file each; importing this package registers them all."""

from framepack_trt.components import (  # noqa: F401
    clip_text,
    llama_text,
    siglip_image,
    transformer,
    transformer_blocks,
    transformer_fp8,
    vae,
)
from framepack_trt.components.base import (  # noqa: F401
    Component,
    InputSpec,
    Tolerance,
    get_component,
    register,
    registry,
)
