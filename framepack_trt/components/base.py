"""What every component adapter declares, and the registry that holds them.

A component adapter is one small class: which real model class it loads, which inputs it
takes (shapes written with named dims), what it returns, default ranges and tolerances, how
to make random inputs, how a profile entry of it becomes engines (``expand``), and which of
FramePack's modules it serves and how FramePack calls it (``framepack_module``,
``parse_call``, ``wrap_output``). Adding a component is one new file in this package plus a
profile entry. Importing this module does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from framepack_trt.components.expand import static_specs
from framepack_trt.errors import UsageError
from framepack_trt.shapes import DimRange, random_sizes, sizes_at

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria for an engine output against the eager output.

    ``rel_l2`` is ||engine - eager|| / ||eager||; ``cosine`` is the cosine similarity of the
    flattened outputs. Both average over the whole output, so a small wrong region (a zeroed
    3x3 patch of one frame of a 120x120 latent moves rel L2 by 8e-3) can pass them;
    ``max_abs_std`` bounds the largest absolute difference in units of the eager output's
    standard deviation, which such a region exceeds. ``max_abs`` (optional) bounds the largest
    absolute difference itself.

    ``reference: fp32`` judges a float16/bfloat16 engine against the model run in float32
    instead: the engine passes when its rel L2 and max_abs_std against float32 are within
    ``reference_factor`` times eager's own (eager in the engine's dtype against float32), so an
    engine is not refused for an error that eager in its precision makes too.
    """

    rel_l2: float
    cosine: float
    max_abs: float | None = None
    max_abs_std: float | None = None
    reference: str = "eager"
    reference_factor: float = 2.0

    def to_dict(self) -> dict[str, float | str | None]:
        return {"rel_l2": self.rel_l2, "cosine": self.cosine, "max_abs": self.max_abs,
                "max_abs_std": self.max_abs_std, "reference": self.reference,
                "reference_factor": self.reference_factor}


#: What ``reference`` may be: the eager model in the engine's dtype, or the model in float32.
REFERENCES = ("eager", "fp32")

#: FramePack's modules (demo_gradio.py's names, as ``use_engines`` takes them), which the
#: components run (``Component.framepack_module``).
FRAMEPACK_MODULES = ("transformer", "text_encoder", "text_encoder_2", "image_encoder", "vae")


#: Sensible defaults per dtype; a component or a profile entry may override them. The
#: max_abs_std bounds leave room for rounding and still catch a wrong region, whose errors are
#: of the order of the output's own spread: good real-width fp16/bf16 engines on an H200
#: measured 0.008 to 0.030 (docs/benchmarks.md), so 0.2 leaves them a factor of 6.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(rel_l2=1e-4, cosine=0.99999, max_abs_std=1e-2),
    "float16": Tolerance(rel_l2=1e-2, cosine=0.999, max_abs_std=0.2),
    "bfloat16": Tolerance(rel_l2=2e-2, cosine=0.999, max_abs_std=0.2),
}

#: One entry of an input's shape: a dim name (shared wherever it appears), a static size, or
#: (dim name, factor) for a size that is always ``factor`` times the dim.
ShapeEntry = str | int | tuple[str, int]


def entry_size(entry: ShapeEntry, sizes: Mapping[str, int]) -> int:
    """The concrete size of one shape entry."""
    if isinstance(entry, int):
        return entry
    if isinstance(entry, str):
        return sizes[entry]
    name, factor = entry
    return factor * sizes[name]


@dataclass(frozen=True)
class InputSpec:
    """One engine input: its shape (dim names and static sizes) and dtype.

    ``dtype`` is a torch dtype name, or ``"model"`` for the component's compute dtype.
    """

    name: str
    shape: tuple[ShapeEntry, ...]
    dtype: str = "model"


class Component:
    """Base class of component adapters. Subclasses set the class attributes and register."""

    #: Registry name, used in profiles (``component: clip_text``).
    name: ClassVar[str]
    #: One line for ``--help`` and the README.
    description: ClassVar[str]
    #: Import path of the real model class, e.g. ``transformers.CLIPTextModel``.
    model_class: ClassVar[str]
    #: The dtype FramePack runs this component in.
    default_dtype: ClassVar[str] = "float16"
    #: Named dims with their default ranges (the profile may narrow or widen them).
    default_dims: ClassVar[Mapping[str, DimRange]]
    #: Hard limits per dim that no profile may exceed (None: no limit from the adapter).
    dim_limits: ClassVar[Mapping[str, tuple[int, int | None]]] = {}
    #: Output names, in the order the engine returns them.
    output_names: ClassVar[tuple[str, ...]]
    #: Per-dtype tolerance overrides (falls back to DEFAULT_TOLERANCES).
    tolerances: ClassVar[Mapping[str, Tolerance]] = {}
    #: Verify at every size of ``verify --full`` (a fresh eager reference) before caching an
    #: engine, instead of only the stored golden samples.
    full_check_at_build: ClassVar[bool] = False
    #: Tiny config used by ``source: {random: ...}``, merged with the profile's overrides.
    tiny_config: ClassVar[Mapping[str, Any]] = {}
    #: Modules, besides the adapter's own, whose code shapes the exported graph: their source
    #: enters the cache key (``code_fingerprint``), so an engine built before they changed is
    #: stale. No revision number to remember.
    code_modules: ClassVar[tuple[str, ...]] = (
        "framepack_trt.components.base", "framepack_trt.export", "framepack_trt.graph_passes")
    #: The engine takes the weights of the module it runs as inputs, after the call's own
    #: (``weight_specs``, ``weights``): one engine serves every block of a kind and every
    #: checkpoint of the architecture, so the cache key holds the architecture's config
    #: instead of the weights' fingerprint, and checking it needs the model loaded.
    weights_as_inputs: ClassVar[bool] = False
    #: Folder name prefix of its random weights under the cache (default: the name); components
    #: that load the same model share it.
    weights_folder: ClassVar[str | None] = None
    #: (height dim, width dim) for components that take images at FramePack's buckets.
    bucket_dims: ClassVar[tuple[str, str] | None] = None
    #: Pixels per unit of those dims (8 for latents).
    pixels_per_unit: ClassVar[int] = 8
    #: A bucket's height and width must be multiples of this many pixels.
    bucket_multiple: ClassVar[int] = 8
    #: Low-VRAM mode's spatial tiles in latent units, (tile, stride), where FramePack cuts the
    #: component's input into tiles (``static: tiles``); None where it does not.
    tile_latents: ClassVar[tuple[int, int] | None] = None
    #: The FramePack module whose calls the engine serves (``FRAMEPACK_MODULES``); None for a
    #: component FramePack does not hold as a module (a piece of another).
    framepack_module: ClassVar[str | None] = None
    #: The submodule of that module whose ``forward`` the engine replaces ("": its own).
    framepack_part: ClassVar[str] = ""

    @classmethod
    def dims_for_buckets(cls, buckets: Sequence[tuple[int, int]]) -> dict[str, DimRange]:
        """One range over every bucket's height and width; opt is the first bucket."""
        assert cls.bucket_dims is not None
        hs = [h // cls.pixels_per_unit for h, _ in buckets]
        ws = [w // cls.pixels_per_unit for _, w in buckets]
        h_dim, w_dim = cls.bucket_dims
        return {h_dim: DimRange(min(hs), hs[0], max(hs)), w_dim: DimRange(min(ws), ws[0], max(ws))}

    @classmethod
    def tiles(cls, height: int, width: int) -> list[tuple[int, int]]:
        """The (height, width) of every distinct tile of an input of that size, in ``dims``
        units (``tile_latents``)."""
        raise NotImplementedError

    @classmethod
    def expand(cls, entry: Any, problems: Any) -> list:
        """The engines a checked profile entry (``profile.ProfileEntry``) becomes, as specs:
        the entry's own, or with ``static`` one static-size spec per bucket and size
        (``expand.static_specs``). What cannot be expanded goes to ``problems``
        (``.add(field, message)``)."""
        if entry.static:
            return static_specs(cls, entry, problems)
        return [entry.spec]

    # -- declared ---------------------------------------------------------------------------
    @classmethod
    def tolerance(cls, dtype: str) -> Tolerance:
        return cls.tolerances.get(dtype, DEFAULT_TOLERANCES[dtype])

    @classmethod
    def load_model_class(cls) -> type:
        module, _, attr = cls.model_class.rpartition(".")
        return getattr(importlib.import_module(module), attr)

    def input_specs(self, config: Any) -> Sequence[InputSpec]:
        """The engine's inputs for a loaded model config (static sizes may come from it)."""
        raise NotImplementedError

    def check_dims(self, config: Any, dims: Mapping[str, DimRange]) -> list[str]:
        """Problems with the dims that only the loaded config can reveal (empty if none)."""
        return []

    def snap_sizes(self, sizes: dict[str, int]) -> dict[str, int]:
        """Nearest sizes the model accepts (e.g. even latent sizes); identity by default. Used
        on randomly drawn in-range sizes."""
        return sizes

    def case_sizes(self, dims: Mapping[str, DimRange], case: str, rng) -> dict[str, int]:
        """Sizes at ``min``, ``opt`` or ``max`` of every dim, or (``random``) drawn in range with
        ``rng`` (a ``random.Random``) and snapped to sizes the model accepts."""
        return self.snap_sizes(random_sizes(dims, rng)) if case == "random" else sizes_at(dims, case)

    def check_sizes(self, dims: Mapping[str, DimRange],
                    buckets: Sequence[tuple[int, int]] = ()) -> list[tuple[str, dict[str, int]]]:
        """Named sizes that ``verify --full`` (and, with ``full_check_at_build``, the build)
        checks besides min, opt, max and a random one (``buckets``: the profile's own, in
        pixels); none by default."""
        return []

    def timing_sizes(self, dims: Mapping[str, DimRange]) -> list[tuple[str, dict[str, int]]]:
        """Where ``backend: auto`` times a candidate against eager: the opt sizes."""
        return [("opt", sizes_at(dims, "opt"))]

    def user_sizes(self, sizes: Mapping[str, int]) -> dict[str, int]:
        """The profile's dims a call's engine sizes stand for, where the engine's inputs are in
        other units (the transformer's patch rows -> latent height); none by default."""
        return {}

    def prepare_kwargs(self, kwargs: Mapping[str, torch.Tensor], names: Sequence[str],
                       dtype: torch.dtype, device: str | None) -> tuple[torch.Tensor, ...]:
        """Engine inputs from a call by keyword (``names``: the call's input names)."""
        missing = [n for n in names if n not in kwargs]
        unknown = [n for n in kwargs if n not in names]
        if missing or unknown:
            raise UsageError(f"{self.name}: takes {', '.join(names)}; missing {missing}, "
                             f"unknown {unknown}")
        return self.prepare(tuple(kwargs[n] for n in names), dtype, device)

    def derived_dims(self, dims: Mapping[str, DimRange]) -> dict[str, DimRange]:
        """Engine dims computed from the profile's dims (none by default)."""
        return {}

    def raw_input_names(self, config: Any) -> list[str]:
        """Names of the inputs of a call as the model takes it (``make_inputs`` order); by
        default the engine's own inputs."""
        return [spec.name for spec in self.input_specs(config)]

    def prepare(self, inputs: Sequence[torch.Tensor], dtype: torch.dtype,
                device: str) -> tuple[torch.Tensor, ...]:
        """Engine inputs from a call's inputs (identity by default). Runs eagerly, per call."""
        return tuple(inputs)

    # -- inside FramePack (``framepack_module``) ------------------------------------------------
    def parse_call(self, model: Any, args: Sequence[Any],
                   kwargs: Mapping[str, Any]) -> tuple[tuple | None, str]:
        """A call of the module's ``forward`` as the engine's inputs; or None, and why an engine
        cannot serve the call (it then runs eager). ``components.calls`` has the helpers."""
        raise NotImplementedError

    def wrap_output(self, model: Any, outputs: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """The engine's outputs for a call (``kwargs``: its keyword arguments) as the module's
        ``forward`` returns them."""
        raise NotImplementedError

    # -- torch side -------------------------------------------------------------------------
    def export_module(self, model: torch.nn.Module) -> torch.nn.Module:
        """A module over the model's own parameters whose ``forward(*inputs)`` returns a tuple
        of output tensors and that ``torch.export`` can trace with the named dims dynamic."""
        raise NotImplementedError

    def reference(self, model: torch.nn.Module, inputs: Sequence[torch.Tensor],
                  index: int = 0) -> tuple:
        """The eager outputs, computed through the real model's own public call (``index``:
        which of the modules the engine serves, for ``weights_as_inputs``)."""
        raise NotImplementedError

    # -- weights as inputs (``weights_as_inputs``) ----------------------------------------------
    def weight_specs(self, model: torch.nn.Module) -> list[InputSpec]:
        """The engine's weight inputs (static shapes), after ``input_specs``; none by default."""
        return []

    def pieces(self, config: Any) -> int:
        """How many modules of the model one engine serves (blocks of a kind); 1 by default."""
        return 1

    def weights(self, model: torch.nn.Module, index: int, dtype: torch.dtype,
                device: str) -> tuple[torch.Tensor, ...]:
        """The weights of module ``index`` as the engine takes them; none by default."""
        return ()

    def engine_specs(self, model: torch.nn.Module) -> list[InputSpec]:
        """Every input of the engine: the call's, then the weights'."""
        return [*self.input_specs(model.config), *self.weight_specs(model)]

    def engine_inputs(self, model: torch.nn.Module | None, inputs: Sequence[torch.Tensor],
                      dtype: torch.dtype, device: str, index: int = 0) -> tuple:
        """The engine's inputs for a call's raw inputs: prepared, then the weights of module
        ``index`` of ``model`` (which may be None when the engine takes no weights)."""
        prepared = self.prepare(inputs, dtype, device)
        if not self.weights_as_inputs:
            return tuple(prepared)
        return (*prepared, *self.weights(model, index, dtype, device))

    def case_index(self, config: Any, case_number: int) -> int:
        """Which module a check case runs (cycling through them: block 0, the last, ...)."""
        n = self.pieces(config)
        return [0, n - 1, *range(1, n - 1)][case_number % n] if n > 1 else 0

    def make_inputs(
        self,
        config: Any,
        sizes: Mapping[str, int],
        dtype: torch.dtype,
        device: str,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, ...]:
        """Random inputs (never zeros) at concrete sizes, in ``input_specs`` order."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Component]] = {}


def register(cls: type[Component]) -> type[Component]:
    """Class decorator: add a component adapter under its ``name``; duplicates are refused."""
    for attr in ("name", "description", "model_class", "default_dims", "output_names"):
        if not hasattr(cls, attr):
            raise TypeError(f"component {cls.__name__} must set {attr!r}")
    if cls.name in _REGISTRY:
        raise TypeError(
            f"component name {cls.name!r} is registered twice "
            f"({_REGISTRY[cls.name].__qualname__} and {cls.__qualname__})"
        )
    unknown = set(cls.dim_limits) - set(cls.default_dims)
    if unknown:
        raise TypeError(f"component {cls.name!r}: dim_limits names unknown dims {sorted(unknown)}")
    if cls.framepack_module not in (None, *FRAMEPACK_MODULES):
        raise TypeError(f"component {cls.name!r}: framepack_module {cls.framepack_module!r} is "
                        f"not one of FramePack's modules ({', '.join(FRAMEPACK_MODULES)})")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> Mapping[str, type[Component]]:
    """Every registered component. All of them: importing this module runs the package's
    ``__init__`` first, which imports every adapter module."""
    return dict(_REGISTRY)


def framepack_modules() -> dict[str, tuple[str, ...]]:
    """FramePack's modules (``FRAMEPACK_MODULES``) and the components that serve each."""
    served = registry()
    return {module: tuple(name for name, cls in served.items()
                          if cls.framepack_module == module) for module in FRAMEPACK_MODULES}


def get_component(name: str) -> Component:
    reg = registry()
    if name not in reg:
        raise UsageError(f"unknown component {name!r}; known components: {', '.join(sorted(reg))}")
    return reg[name]()


def random_ids(
    shape: Sequence[int], low: int, high: int, generator: torch.Generator, device: str
) -> torch.Tensor:
    """Random int64 token ids in [low, high), drawn on the CPU generator, moved to device."""
    import torch

    return torch.randint(low, high, tuple(shape), generator=generator).to(device)


def random_floats(
    shape: Sequence[int], dtype: torch.dtype, generator: torch.Generator, device: str,
    scale: float = 1.0,
) -> torch.Tensor:
    """Standard-normal values times ``scale`` (never zeros), drawn on the CPU generator."""
    import torch

    return (torch.randn(tuple(shape), generator=generator) * scale).to(device=device, dtype=dtype)
