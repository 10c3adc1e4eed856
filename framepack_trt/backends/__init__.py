"""Backend registry. Backends import torch (and torch_tensorrt) lazily, inside their methods."""

from __future__ import annotations

from framepack_trt.backends.aoti import AotiBackend
from framepack_trt.backends.base import Backend, BuildReport, BuildRequest, BuildSettings
from framepack_trt.backends.tensorrt import TensorRTBackend
from framepack_trt.errors import UsageError

BACKENDS: dict[str, type[Backend]] = {cls.name: cls for cls in (AotiBackend, TensorRTBackend)}

__all__ = ["Backend", "BuildReport", "BuildRequest", "BuildSettings", "BACKENDS", "get_backend"]


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]()
