"""Engines inside FramePack: what FramePack's code calls (README, "In FramePack").

    from framepack_trt.framepack import use_engines
    engines = use_engines(cache_dir, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                          image_encoder=image_encoder, vae=vae)
    ...                      # FramePack runs as before
    print(engines.report())  # "llama_text: 12 engine, 0 eager calls; ..."
    engines.restore()        # every module's own forward back

or, from FramePack's command line, ``add_arguments(parser)`` and ``engines_from_args(args,
...)``. A call no engine covers runs the eager module, with one warning per reason (with
``strict=True`` it raises ``EngineFallback``). The machinery is ``framepack_trt.runtime``:
``engines`` (``use_engines``), ``swap`` and ``transformer_swap`` (the swapped forwards),
``selection`` and ``loading`` (which engine, and loading it), ``flags``.
"""

from __future__ import annotations

from framepack_trt.runtime.engines import Engines, use_engines
from framepack_trt.runtime.flags import add_arguments, engines_from_args
from framepack_trt.runtime.swap import EngineFallback

__all__ = ["EngineFallback", "Engines", "add_arguments", "engines_from_args", "use_engines"]
