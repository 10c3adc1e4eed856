"""FramePack's command line: the flags of the FramePack fork that added TensorRT, and the
``use_engines`` call they make (``engines_from_args``).
"""

from __future__ import annotations

import os
from pathlib import Path

from framepack_trt.errors import UsageError
from framepack_trt.runtime.engines import Engines, check_modules, use_engines

#: The flags of the FramePack fork that added TensorRT (github WifiLast/framepack_test): the
#: argparse attribute, the flag, the environment variable that sets its default there, the
#: modules it turns on, and its help.
FLAGS = {
    "enable_tensorrt": (
        "--enable-tensorrt", "FRAMEPACK_ENABLE_TENSORRT", ("image_encoder", "vae"),
        "Use engines: the SigLIP image encoder and the VAE's encoder and decoder, and what the "
        "flags below add."),
    "tensorrt_transformer": (
        "--tensorrt-transformer", "FRAMEPACK_TRT_TRANSFORMER", ("transformer",),
        "Also the transformer (needs --enable-tensorrt). Block engines (engines: blocks) keep "
        "TeaCache and low-VRAM mode; a whole-model engine runs only with TeaCache off."),
    "tensorrt_text_encoders": (
        "--tensorrt-text-encoders", "FRAMEPACK_TRT_TEXT_ENCODERS", ("text_encoder", "text_encoder_2"),
        "Also the LLaMA and CLIP text encoders (needs --enable-tensorrt)."),
}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def add_arguments(parser) -> None:
    """Add FramePack's TensorRT flags to its ``argparse`` parser (``demo_gradio.py``)::

        parser = argparse.ArgumentParser()
        ...
        add_arguments(parser)
        args = parser.parse_args()
        ...                                   # FramePack loads its models
        engines = engines_from_args(args, transformer=transformer, text_encoder=text_encoder,
                                    text_encoder_2=text_encoder_2, image_encoder=image_encoder,
                                    vae=vae)
    """
    group = parser.add_argument_group(
        "framepack-trt engines",
        "Run engines built ahead of time with `framepack-trt build` (modules without an engine "
        "of their checkpoint stay PyTorch, with one warning).")
    for flag, env, _, text in FLAGS.values():
        group.add_argument(flag, action="store_true", default=_env_flag(env),
                           help=f"{text} Default: ${env}=1.")
    group.add_argument("--tensorrt-cache-dir", default=None, metavar="DIR",
                       help="The engine cache (default: $FRAMEPACK_TENSORRT_CACHE_DIR, else "
                            "Cache/tensorrt_engines in the current folder).")
    group.add_argument("--tensorrt-strict", action="store_true",
                       help="Fail instead of running PyTorch where no engine covers a call "
                            "(for tests and CI).")
    group.add_argument("--tensorrt-offload-bf16", action="store_true",
                       default=_env_flag("FRAMEPACK_TRT_OFFLOAD_BF16"),
                       help="Where fp8 block engines serve the transformer on the GPU, move "
                            "the bf16 weights they replace to the CPU (back for a PyTorch "
                            "call). Default: $FRAMEPACK_TRT_OFFLOAD_BF16=1.")


def engines_from_args(args, *, framepack_dir: str | Path | None = None,
                      **models) -> Engines | None:
    """``use_engines`` for the modules the flags of ``add_arguments`` turn on; None when
    ``--enable-tensorrt`` is off. A module flag without ``--enable-tensorrt`` is a UsageError
    (as in the fork, the module flags need it)."""
    check_modules("engines_from_args", models)
    if args.tensorrt_offload_bf16 and not (args.enable_tensorrt and args.tensorrt_transformer):
        raise UsageError("--tensorrt-offload-bf16 (or FRAMEPACK_TRT_OFFLOAD_BF16=1) needs "
                         "--enable-tensorrt and --tensorrt-transformer: it moves the weights "
                         "that the transformer's fp8 block engines replace")
    if not args.enable_tensorrt:
        orphan = [FLAGS[a][0] for a in ("tensorrt_transformer", "tensorrt_text_encoders")
                  if getattr(args, a)]
        if orphan:
            raise UsageError(f"{' and '.join(orphan)} need --enable-tensorrt (or "
                             "FRAMEPACK_ENABLE_TENSORRT=1)")
        return None
    wanted = [m for attr, (_, _, mods, _) in FLAGS.items() if getattr(args, attr) for m in mods]
    return use_engines(args.tensorrt_cache_dir, strict=args.tensorrt_strict,
                       framepack_dir=framepack_dir, offload_bf16=args.tensorrt_offload_bf16,
                       **{m: models[m] for m in wanted if models.get(m) is not None})
