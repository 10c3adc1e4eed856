"""AOTInductor: ``torch._inductor.aoti_compile_and_package`` into a ``.pt2`` package.

Runs on CPU (a C++ compiler is needed) and on CUDA. The package holds the compiled kernels and
the weights, and loads in a fresh process with ``aoti_load_package``; it is tied to the torch
version and the device it was built for, which the cache key records.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from framepack_trt.backends.base import Backend, BuildReport, BuildRequest, BuildSettings


@dataclass(frozen=True)
class AotiSettings(BuildSettings):
    """AOTInductor build settings.

    max_autotune: benchmark kernel variants while compiling (slower build, maybe faster engine).
    compile_threads: parallel C++/Triton compile jobs (None: inductor's default).
    """

    max_autotune: bool = False
    compile_threads: int | None = None

    ENGINE_FIELDS = frozenset({"max_autotune"})


class AotiBackend(Backend):
    name = "aoti"
    file_suffix = ".pt2"
    settings_class = AotiSettings

    def version(self) -> str:
        return "torch-" + metadata.version("torch")

    def unavailable_reason(self, device: str) -> str | None:
        if device == "cpu":
            if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++", "cl")):
                return "AOTInductor on CPU needs a C++ compiler (g++ or clang++) on PATH"
            return None
        import torch

        if not torch.cuda.is_available():
            return f"AOTInductor on cuda needs a CUDA build of torch and a GPU (torch {torch.__version__})"
        return None

    def build(self, request: BuildRequest, out_path: Path) -> BuildReport:
        import torch

        settings: AotiSettings = request.settings  # type: ignore[assignment]
        configs: dict = {"max_autotune": settings.max_autotune}
        if settings.compile_threads is not None:
            configs["compile_threads"] = settings.compile_threads
        torch._inductor.aoti_compile_and_package(
            request.exported, package_path=str(out_path), inductor_configs=configs
        )
        return BuildReport(details={"inductor_configs": configs})

    def load(self, path: Path, device: str):
        import torch

        runner = torch._inductor.aoti_load_package(str(path))

        def engine(*inputs):
            with torch.inference_mode():
                out = runner(*inputs)
            return tuple(out) if isinstance(out, (list, tuple)) else (out,)

        return engine
