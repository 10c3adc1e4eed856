"""YAML shape profiles: which components to build, from which weights, for which shapes.

A profile is validated as it is loaded; every problem found is reported in one message that
names the file, the field, the bad value and what is valid. No torch import here. Each entry
is checked into a ``ProfileEntry`` (the fields' checks: ``profile_checks``); its component then
expands it into the engines to build (``Component.expand``: the transformer's pieces, static
sizes, tiles), the profile's ``components``.

    name: tiny                 # optional, defaults to the file name
    description: ...           # optional
    cache_dir: ...             # optional; relative paths are relative to the profile file
    backend: aoti              # default backend for every component
    device: cpu                # cpu | cuda
    components:
      - component: clip_text   # a registered component (framepack-trt components)
        name: clip_text        # optional, unique; defaults to the component name
        source: {path: DIR} | {repo: ID, subfolder: SUB, revision: REV} | {random: {seed, config}}
        dtype: float16         # float32 | float16 | bfloat16 (fp32 / fp16 / bf16 accepted)
        backend: aoti          # optional override
        device: cuda           # optional override
        dims: {batch: 1, text_len: {min: 1, opt: 77, max: 77}}
        buckets: framepack-640 | [[416, 960], ...]   # image components only
        tolerance: {rel_l2: 1e-2, cosine: 0.999, max_abs: null, max_abs_std: 0.2,
                    reference: eager | fp32, reference_factor: 2}
        build: {...}           # backend build settings (see `framepack-trt components`)
        engines: blocks        # transformer only: blocks (default: four engines that take the
                               # weights as inputs; TeaCache and low-VRAM mode work) | whole
        quantize: fp8          # transformer blocks only, bf16 on CUDA: the block engines' linears
                               # in fp8 (docs/fp8.md)
        static: true           # one static-size engine per bucket and per value of each other
                               # ranged dim, instead of one engine over the ranges (faster
                               # kernels; at most 32 engines; not with engines: blocks)
                               # | tiles: VAE entries with buckets, one static engine per tile
                               # shape of low-VRAM mode at those buckets (and per value of
                               # each other ranged dim)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from framepack_trt.backends import BACKENDS
from framepack_trt.components.base import Tolerance, registry
from framepack_trt.errors import ProfileError, UsageError
from framepack_trt.names import selects
from framepack_trt.profile_checks import (
    Problems,
    check_buckets,
    check_build_settings,
    check_choice,
    check_dim,
    check_dtype,
    check_keys,
    check_source,
    check_tolerance,
    fmt,
)
from framepack_trt.shapes import DimRange
from framepack_trt.sources import Source
from framepack_trt.transformer.names import QUANTIZE, WHOLE

DEVICES = ("cpu", "cuda")
TOP_KEYS = ("name", "description", "cache_dir", "backend", "fallback_backend", "device",
            "components")
ENTRY_KEYS = ("component", "name", "source", "dtype", "backend", "fallback_backend", "device",
              "dims", "buckets", "tolerance", "build", "engines", "quantize", "static")
#: ``engines:`` of a transformer entry: the four piece engines that take the weights as inputs
#: (``<name>_input``, ``<name>_dual_block``, ``<name>_single_block``, ``<name>_output``;
#: docs/transformer-blocks.md), the default; or one whole-model engine (its weights inside).
TRANSFORMER_ENGINES = ("blocks", "whole")

#: Built-in profiles, by name: the repository's profiles/ folder (or its copy in the wheel).
_PACKAGE_DIR = Path(__file__).resolve().parent


def builtin_profiles_dir() -> Path:
    for candidate in (_PACKAGE_DIR / "profiles", _PACKAGE_DIR.parent / "profiles"):
        if candidate.is_dir():
            return candidate
    return _PACKAGE_DIR / "profiles"


def builtin_profiles() -> dict[str, Path]:
    d = builtin_profiles_dir()
    return {p.stem: p for p in sorted(d.glob("*.yaml"))} if d.is_dir() else {}


@dataclass(frozen=True)
class ComponentSpec:
    """One engine to build: a component, its weights, dtype, backend, device and dims."""

    name: str
    component: str
    source: Source
    dtype: str
    backend: str
    device: str
    dims: dict[str, DimRange]
    tolerance: Tolerance
    build: dict[str, Any] = field(default_factory=dict)
    buckets: tuple[tuple[int, int], ...] = ()
    #: The profile entry's name when the entry became several engines (``static: true``, a
    #: transformer's block engines): ``-c`` selects them all by it.
    entry: str = ""
    #: Backend to build with when ``backend`` is unavailable or fails for this component.
    fallback_backend: str | None = None


@dataclass(frozen=True)
class ProfileEntry:
    """One entry of a profile's ``components`` list, checked: the engine it asks for
    (``spec``) and what asks for more than one (``engines``, ``quantize``, ``static``), which
    its component expands (``Component.expand``) into the profile's engine specs."""

    #: Its place in the list (``components[index]``).
    index: int
    #: The entry as one engine.
    spec: ComponentSpec
    #: A transformer's: ``blocks`` (one engine per piece) or ``whole``.
    engines: str = "whole"
    #: ``fp8``: the transformer's block engines with fp8 linears.
    quantize: str | None = None
    #: False, True (one static-size engine per bucket and size) or ``tiles``.
    static: bool | str = False
    #: The dims the entry sets itself.
    given_dims: tuple[str, ...] = ()
    #: The tolerance fields the entry sets, over its component's default.
    tolerance_fields: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"components[{self.index}]"


@dataclass(frozen=True)
class Profile:
    path: Path
    name: str
    description: str
    cache_dir: Path | None
    backend: str
    device: str
    #: The engines to build, each entry expanded by its component.
    components: tuple[ComponentSpec, ...]
    #: The checked entries, one per entry of the file.
    entries: tuple[ProfileEntry, ...] = ()

    def select(self, names: list[str] | None) -> tuple[ComponentSpec, ...]:
        """The entries named (by entry name or component name); all when ``names`` is empty."""
        if not names:
            return self.components
        unknown = [n for n in names if not any(selects([n], c.name, c.component, c.entry or c.name)
                                               for c in self.components)]
        if unknown:
            raise UsageError(
                f"{self.path}: no component {', '.join(map(repr, unknown))} in this profile; "
                f"it has: {', '.join(c.name for c in self.components)}"
            )
        return tuple(c for c in self.components
                     if selects(names, c.name, c.component, c.entry or c.name))

    def with_backend(self, backend: str) -> Profile:
        """The same profile with every component on ``backend`` (the ``--backend`` option)."""
        if backend not in BACKENDS and backend != "auto":
            raise UsageError(f"--backend: unknown backend {backend!r}; known: "
                             f"{', '.join([*BACKENDS, 'auto'])}")
        wrong = [f"{c.name} (device {c.device})" for c in self.components
                 if backend in BACKENDS and c.device not in BACKENDS[backend].devices]
        if wrong:
            raise UsageError(f"--backend {backend}: builds for {', '.join(BACKENDS[backend].devices)} "
                             f"only, and {self.path} has {', '.join(wrong)}; choose another "
                             f"--backend (or auto)")
        def settings(c: ComponentSpec) -> dict[str, Any]:  # those the new backend knows
            if backend not in BACKENDS:
                return dict(c.build)
            known = BACKENDS[backend].settings_class.field_names()
            return {k: v for k, v in c.build.items() if k in known}

        def moved(c: ComponentSpec) -> ComponentSpec:
            return replace(c, backend=backend, fallback_backend=None, build=settings(c))

        return replace(self, backend=backend, components=tuple(map(moved, self.components)),
                       entries=tuple(replace(e, spec=moved(e.spec)) for e in self.entries))


def resolve_profile_path(profile: str | os.PathLike | None) -> Path:
    """A file path, or the name of a built-in profile (``tiny``, ``framepack``)."""
    if profile is None:
        profile = "tiny"
    p = Path(profile)
    if p.is_file():
        return p
    builtins = builtin_profiles()
    if str(profile) in builtins:
        return builtins[str(profile)]
    raise UsageError(
        f"profile {str(profile)!r} not found: not a file, and not a built-in profile "
        f"({', '.join(builtins) or 'none installed'})"
    )


class ProfileLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 does: ``1e-2`` is a float, not the
    string PyYAML 1.1 rules make of it."""


ProfileLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_profile(profile: str | os.PathLike | None = None) -> Profile:
    path = resolve_profile_path(profile)
    try:
        raw = yaml.load(path.read_text(), Loader=ProfileLoader)  # noqa: S506 (a SafeLoader)
    except OSError as exc:
        raise ProfileError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(str(path), [f"not valid YAML{at}: {problem}"]) from exc
    return parse_profile(raw, path)



def parse_profile(raw: Any, path: Path) -> Profile:
    """Validate a parsed YAML document; raise one ProfileError listing every problem. Each
    entry is checked (``ProfileEntry``), then expanded by its component into engine specs."""
    p = Problems()
    base = path.resolve().parent
    if not isinstance(raw, Mapping):
        raise ProfileError(str(path), ["the file must be a mapping with a 'components' list"])
    check_keys(p, "", raw, TOP_KEYS)
    backends = sorted(BACKENDS)
    backend = check_choice(p, "backend", raw.get("backend", "aoti"), [*backends, "auto"])
    fallback = (check_choice(p, "fallback_backend", raw["fallback_backend"], backends)
                if raw.get("fallback_backend") is not None else None)
    device = check_choice(p, "device", raw.get("device", "cuda"), DEVICES)
    cache_dir = None
    if raw.get("cache_dir") is not None:
        if not isinstance(raw["cache_dir"], str):
            p.add("cache_dir", f"{fmt(raw['cache_dir'])} is not valid; expected a directory path")
        else:
            cd = Path(os.path.expanduser(raw["cache_dir"]))
            cache_dir = cd if cd.is_absolute() else base / cd
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        p.add("name", f"{fmt(name)} is not valid; expected a non-empty string")
    description = raw.get("description", "")
    raw_entries = raw.get("components")
    if not isinstance(raw_entries, list) or not raw_entries:
        p.add("components", f"{fmt(raw_entries)} is not valid; expected a non-empty list of "
              "components")
        raw_entries = []
    known = registry()
    seen: dict[str, int] = {}  # engine names, and the entry that uses each
    entries: list[ProfileEntry] = []
    comps: list[ComponentSpec] = []
    defaults = {"backend": backend, "fallback": fallback, "device": device}
    for i, raw_entry in enumerate(raw_entries):
        entry = _check_entry(p, i, raw_entry, known, seen, defaults, base)
        if entry is None:
            continue
        entries.append(entry)
        # Checked entry by entry: an expanded engine's name is checked against the entries
        # (and engines) before it, and the entries after it against its engines.
        ename, where = entry.spec.name, entry.where
        field_, what = ((".name", "engines: blocks names") if entry.engines == "blocks" else
                        (".static", "it names"))
        for spec in known[entry.spec.component].expand(entry, p):
            if spec.name != ename:
                spec = replace(spec, entry=ename)
                if spec.name in seen:
                    p.add(where + field_, f"{what} an engine {spec.name!r}, which "
                          f"components[{seen[spec.name]}] already uses")
                seen[spec.name] = i
            comps.append(spec)
    if p.items:
        raise ProfileError(str(path), p.items)
    return Profile(path=path, name=name, description=str(description or ""), cache_dir=cache_dir,
                   backend=backend or "aoti", device=device or "cuda", components=tuple(comps),
                   entries=tuple(entries))


def _check_entry(p: Problems, i: int, raw: Any, known: Mapping[str, Any],
                 seen: dict[str, int], defaults: Mapping[str, Any],
                 base: Path) -> ProfileEntry | None:
    """One entry of ``components`` (``raw``: as the YAML file has it) checked (its problems
    added to ``p``); None where it is not complete enough to be expanded."""
    where = f"components[{i}]"
    if not isinstance(raw, Mapping):
        p.add(where, f"{fmt(raw)} is not valid; expected a mapping with component and source")
        return None
    check_keys(p, where + ".", raw, ENTRY_KEYS)
    comp_name = raw.get("component")
    if comp_name not in known:
        p.add(f"{where}.component",
              f"{fmt(comp_name)} is not a known component; valid: {', '.join(sorted(known))}")
        return None
    comp = known[comp_name]
    ename = raw.get("name", comp_name)
    if not isinstance(ename, str) or not ename.replace("-", "_").replace(".", "_").isidentifier():
        p.add(f"{where}.name", f"{fmt(ename)} is not valid; expected letters, digits, '_', '-', '.'")
        return None
    if ename in seen:
        p.add(f"{where}.name", f"{fmt(ename)} is already used by components[{seen[ename]}]; "
              "give each entry a unique name")
    seen[ename] = i
    if "source" not in raw:
        p.add(f"{where}.source", "missing; every component needs a source of weights")
    source = check_source(p, f"{where}.source", raw.get("source"), base)
    dtype = check_dtype(p, f"{where}.dtype", raw.get("dtype", comp.default_dtype))
    backends = sorted(BACKENDS)
    e_backend = (check_choice(p, f"{where}.backend", raw["backend"], [*backends, "auto"])
                 if "backend" in raw else defaults["backend"])
    e_device = (check_choice(p, f"{where}.device", raw["device"], DEVICES)
                if "device" in raw else defaults["device"])
    e_fallback = (check_choice(p, f"{where}.fallback_backend", raw["fallback_backend"], backends)
                  if raw.get("fallback_backend") is not None else defaults["fallback"])
    if e_fallback == e_backend:
        e_fallback = None
    dims, buckets, given = _check_dims(p, where, raw, comp)
    tolerance_fields = check_tolerance(p, f"{where}.tolerance", raw.get("tolerance"))
    tol = replace(comp.tolerance(dtype or comp.default_dtype), **tolerance_fields)
    build = check_build_settings(p, f"{where}.build", raw.get("build"), e_backend, e_device)
    usable = [b for b in (e_backend, e_fallback)
              if b in BACKENDS and e_device in BACKENDS[b].devices]
    if e_device and e_backend in BACKENDS and not usable:
        p.add(f"{where}.device", f"backend {e_backend!r} cannot build for {e_device!r} "
              f"(it builds for {', '.join(BACKENDS[e_backend].devices)}); choose another "
              "device, or a fallback_backend that can")
    engines, quantize, static = _check_expansion(p, where, raw, comp, dtype, e_device)
    if not (source and dtype and e_backend and e_device):
        return None
    spec = ComponentSpec(name=ename, component=comp_name, source=source, dtype=dtype,
                         backend=e_backend, device=e_device, dims=dims, tolerance=tol,
                         build=build, buckets=buckets, fallback_backend=e_fallback)
    return ProfileEntry(i, spec, engines, quantize, static, given, tolerance_fields)


def _check_dims(p: Problems, where: str, raw: Mapping[str, Any], comp: Any
                ) -> tuple[dict[str, DimRange], tuple[tuple[int, int], ...], tuple[str, ...]]:
    """The entry's dims (the component's defaults, its buckets' range, then its own), its
    buckets, and the names of the dims it gives."""
    comp_name = comp.name
    dims = dict(comp.default_dims)
    raw_dims = raw.get("dims") or {}
    if not isinstance(raw_dims, Mapping):
        p.add(f"{where}.dims", f"{fmt(raw_dims)} is not valid; expected a mapping of dims")
        raw_dims = {}
    buckets: tuple[tuple[int, int], ...] = ()
    if "buckets" in raw:
        if not comp.bucket_dims:
            p.add(f"{where}.buckets", f"component {comp_name!r} has no image height/width dims; "
                  f"its dims are: {', '.join(comp.default_dims)}")
        else:
            buckets = check_buckets(p, f"{where}.buckets", raw["buckets"], comp_name,
                                    comp.bucket_multiple)
            if buckets:
                dims.update(comp.dims_for_buckets(buckets))
    for dname, dval in raw_dims.items():
        dwhere = f"{where}.dims.{dname}"
        if dname not in comp.default_dims:
            p.add(dwhere, f"unknown dim for component {comp_name!r}; valid: "
                  f"{', '.join(comp.default_dims)}")
            continue
        rng = check_dim(p, dwhere, dval)
        if rng is None:
            continue
        lo, hi = comp.dim_limits.get(dname, (1, None))
        if rng.min < lo or (hi is not None and rng.max > hi):
            p.add(dwhere, f"{rng.min}..{rng.max} is outside what {comp_name!r} supports "
                  f"({lo}..{hi if hi is not None else 'any'})")
            continue
        dims[dname] = rng
    return dims, buckets, tuple(raw_dims)


def _check_expansion(p: Problems, where: str, raw: Mapping[str, Any], comp: Any,
                     dtype: str | None, device: str | None) -> tuple[str, str | None, bool | str]:
    """What makes the entry more than one engine: ``engines`` (the transformer's pieces),
    ``quantize`` (their fp8 blocks) and ``static``, checked."""
    comp_name = comp.name
    engines = "blocks" if comp_name == WHOLE else "whole"
    if "engines" in raw:
        if comp_name != WHOLE:
            p.add(f"{where}.engines", f"only a transformer entry has engines (whole or "
                  f"blocks); {comp_name!r} is always one engine")
        else:
            engines = check_choice(p, f"{where}.engines", raw["engines"], TRANSFORMER_ENGINES)
    quantize = None
    if "quantize" in raw:
        quantize = check_choice(p, f"{where}.quantize", raw["quantize"], QUANTIZE)
        if comp_name != WHOLE or engines != "blocks":
            p.add(f"{where}.quantize", "only a transformer entry with engines: blocks is "
                  "quantized (its block engines' linears)")
    static = raw.get("static", False)
    if "static" in raw and not isinstance(static, bool) and static != "tiles":
        p.add(f"{where}.static", f"{fmt(static)} is not valid; expected true, false or tiles")
        static = False
    elif static and engines == "blocks":
        p.add(f"{where}.static", "the transformer's block engines take any size; static is "
              "for engines of one size (engines: whole, or another component)")
    # fp8 block engines, asked for with quantize: fp8 or listed by their component name.
    fp8_field = (f"{where}.quantize" if quantize else f"{where}.component"
                 if getattr(comp, "quantize", None) else None)
    if fp8_field and dtype and dtype != "bfloat16":
        p.add(fp8_field, f"fp8 block engines compute in bfloat16 (their fp8 matmuls' "
              f"row-wise scales give bfloat16); dtype is {dtype!r}")
    if fp8_field and device and device != "cuda":
        p.add(fp8_field, f"fp8 needs a CUDA card of compute capability 8.9 or later "
              f"(RTX 40xx, RTX 50xx, L4, H100/H200); the device is {device!r}")
    return engines, quantize, static
