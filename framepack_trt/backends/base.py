"""The backend interface: build an engine file from an exported program, load it, say its
version. Importing this module does not import torch."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from framepack_trt.components.base import InputSpec
    from framepack_trt.shapes import Dims


@dataclass(frozen=True)
class BuildSettings:
    """Base of each backend's build settings: one dataclass, defaults in one place.

    ``ENGINE_FIELDS`` names the fields that change the engine; only they enter the cache key.
    """

    ENGINE_FIELDS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return {f.name: f.type for f in dataclasses.fields(cls)}

    def engine_fields(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k in self.ENGINE_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BuildRequest:
    """Everything a backend needs to compile one engine."""

    exported: torch.export.ExportedProgram
    inputs: Sequence[InputSpec]
    dims: Dims
    dtype: str
    device: str
    settings: BuildSettings
    #: Folder for files a backend keeps between builds (e.g. TensorRT timing caches).
    state_dir: Path


@dataclass
class BuildReport:
    """What a backend tells about a build, shown in the summary and kept in the manifest."""

    notes: list[str] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


Engine = Callable[..., Sequence["torch.Tensor"]]


class Backend(ABC):
    """One way to turn an exported program into an engine file."""

    name: ClassVar[str]
    #: Engine file suffix, e.g. ``.pt2``.
    file_suffix: ClassVar[str]
    settings_class: ClassVar[type[BuildSettings]] = BuildSettings
    #: Devices the backend can build for.
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    #: How many fresh processes the build's check runs in, each on inputs of its own: more
    #: than one for a backend whose engine may compute differently from one process to the
    #: next (kernels chosen when the engine is loaded).
    check_processes: ClassVar[int] = 1
    #: Whether ``verify`` may check several of its engines in one fresh process (one import
    #: of torch and the model libraries instead of one per engine).
    shares_process: ClassVar[bool] = True
    #: Modules, besides the backend's own, whose code shapes its engines: their source enters
    #: the cache key (``engine_status.code_fingerprint``), as the components' ``code_modules``.
    code_modules: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def version(self) -> str:
        """Version string that enters the cache key (read without importing torch)."""

    @abstractmethod
    def unavailable_reason(self, device: str) -> str | None:
        """None when the backend can build and run on ``device`` here, else why not."""

    @abstractmethod
    def build(self, request: BuildRequest, out_path: Path) -> BuildReport:
        """Compile ``request.exported`` into the file ``out_path``."""

    @abstractmethod
    def load(self, path: Path, device: str) -> Engine:
        """Load an engine file; the result is called with the inputs in ``InputSpec`` order and
        returns the outputs in the component's ``output_names`` order."""

    def settings(self, values: Mapping[str, Any] | None) -> BuildSettings:
        return self.settings_class(**dict(values or {}))
