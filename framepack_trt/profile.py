"""YAML shape profiles: which components to build, from which weights, for which shapes.

A profile is validated as it is loaded; every problem found is reported in one message that
names the file, the field, the bad value and what is valid. No torch import here.

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
                               # kernels; at most MAX_STATIC engines; not with engines: blocks)
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
from framepack_trt.components.base import REFERENCES, Tolerance, registry
from framepack_trt.errors import ProfileError, UsageError
from framepack_trt.shapes import FRAMEPACK_640_BUCKETS, DimRange
from framepack_trt.sources import Source

DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16",
                 "float": "float32"}
DEVICES = ("cpu", "cuda")
TOP_KEYS = ("name", "description", "cache_dir", "backend", "fallback_backend", "device",
            "components")
ENTRY_KEYS = ("component", "name", "source", "dtype", "backend", "fallback_backend", "device",
              "dims", "buckets", "tolerance", "build", "engines", "quantize", "static")
#: The most engines one ``static: true`` entry may expand into.
MAX_STATIC = 32
#: ``engines:`` of a transformer entry: the four piece engines that take the weights as inputs
#: (``<name>_input``, ``<name>_dual_block``, ``<name>_single_block``, ``<name>_output``;
#: docs/transformer-blocks.md), the default; or one whole-model engine (its weights inside).
TRANSFORMER_ENGINES = ("blocks", "whole")
PIECE_COMPONENTS = ("input", "dual_block", "single_block", "output")
#: ``quantize:`` of a transformer entry with block engines: its block engines' linears in fp8.
QUANTIZE = ("fp8",)
#: The block pieces that ``quantize`` changes (the input and output sides stay as they are).
QUANTIZED_PIECES = ("dual_block", "single_block")
BUCKET_SETS = {"framepack-640": FRAMEPACK_640_BUCKETS}
TOLERANCE_KEYS = ("rel_l2", "cosine", "max_abs", "max_abs_std", "reference", "reference_factor")

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
class Profile:
    path: Path
    name: str
    description: str
    cache_dir: Path | None
    backend: str
    device: str
    components: tuple[ComponentSpec, ...]

    def select(self, names: list[str] | None) -> tuple[ComponentSpec, ...]:
        """The entries named (by entry name or component name); all when ``names`` is empty."""
        if not names:
            return self.components
        from framepack_trt.names import selects

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

        comps = tuple(replace(c, backend=backend, fallback_backend=None, build=settings(c))
                      for c in self.components)
        return replace(self, backend=backend, components=comps)


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


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, field_: str, message: str) -> None:
        self.items.append(f"{field_}: {message}")


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _check_keys(p: _Problems, where: str, raw: Mapping, allowed: tuple[str, ...]) -> None:
    for key in raw:
        if key not in allowed:
            p.add(f"{where}{key}" if where else str(key),
                  f"unknown field; valid fields: {', '.join(allowed)}")


def _dtype(p: _Problems, where: str, value: Any) -> str | None:
    if isinstance(value, str):
        v = DTYPE_ALIASES.get(value.lower(), value.lower())
        if v in DTYPES:
            return v
    p.add(where, f"{_fmt(value)} is not a dtype; valid: {', '.join(DTYPES)}")
    return None


def _choice(p: _Problems, where: str, value: Any, valid: tuple[str, ...] | list[str]) -> str | None:
    if isinstance(value, str) and value in valid:
        return value
    p.add(where, f"{_fmt(value)} is not valid; valid: {', '.join(valid)}")
    return None


def _int(p: _Problems, where: str, value: Any, minimum: int = 1) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        p.add(where, f"{_fmt(value)} is not valid; expected an integer >= {minimum}")
        return None
    return value


def _dim(p: _Problems, where: str, value: Any) -> DimRange | None:
    if isinstance(value, int) and not isinstance(value, bool):
        n = _int(p, where, value)
        return DimRange(n, n, n) if n else None
    if not isinstance(value, Mapping):
        p.add(where, f"{_fmt(value)} is not valid; expected an integer or {{min, opt, max}}")
        return None
    _check_keys(p, where + ".", value, ("min", "opt", "max"))
    if "min" not in value or "max" not in value:
        p.add(where, "needs min and max (opt defaults to max)")
        return None
    lo = _int(p, f"{where}.min", value["min"])
    hi = _int(p, f"{where}.max", value["max"])
    opt = _int(p, f"{where}.opt", value.get("opt", value["max"]))
    if None in (lo, hi, opt):
        return None
    if not lo <= opt <= hi:
        p.add(where, f"min {lo} / opt {opt} / max {hi} is not valid; need min <= opt <= max")
        return None
    return DimRange(lo, opt, hi)


def _source(p: _Problems, where: str, raw: Any, base: Path) -> Source | None:
    forms = "{path: DIR}, {repo: ID, subfolder: SUB, revision: REV} or {random: {seed: N, config: {...}}}"
    if not isinstance(raw, Mapping):
        p.add(where, f"{_fmt(raw)} is not valid; expected {forms}")
        return None
    kinds = [k for k in ("path", "repo", "random") if k in raw]
    if len(kinds) != 1:
        p.add(where, f"give exactly one of path, repo, random; expected {forms}")
        return None
    kind = kinds[0]
    if kind == "path":
        _check_keys(p, where + ".", raw, ("path",))
        if not isinstance(raw["path"], str) or not raw["path"]:
            p.add(f"{where}.path", f"{_fmt(raw['path'])} is not valid; expected a directory path")
            return None
        path = Path(os.path.expanduser(raw["path"]))
        path = path if path.is_absolute() else base / path
        if not path.is_dir():
            p.add(f"{where}.path", f"{_fmt(raw['path'])} is not a directory "
                  f"({'a file' if path.exists() else 'it does not exist'}); expected a "
                  "save_pretrained folder")
            return None
        return Source("path", path=str(path))
    if kind == "repo":
        _check_keys(p, where + ".", raw, ("repo", "subfolder", "revision"))
        ok = True
        for key in ("repo", "subfolder", "revision"):
            if key in raw and (not isinstance(raw[key], str) or not raw[key]):
                p.add(f"{where}.{key}", f"{_fmt(raw[key])} is not valid; expected a string")
                ok = False
        if ok and raw["repo"].count("/") != 1:
            p.add(f"{where}.repo", f"{_fmt(raw['repo'])} is not valid; expected 'owner/name'")
            ok = False
        return Source("repo", repo=raw["repo"], subfolder=raw.get("subfolder"),
                      revision=raw.get("revision")) if ok else None
    _check_keys(p, where + ".", raw, ("random",))
    r = raw["random"]
    if r is True or r is None:
        r = {}
    if not isinstance(r, Mapping):
        p.add(f"{where}.random", f"{_fmt(r)} is not valid; expected {{seed: N, config: {{...}}}}")
        return None
    _check_keys(p, f"{where}.random.", r, ("seed", "config"))
    seed = _int(p, f"{where}.random.seed", r.get("seed", 0), minimum=0)
    config = r.get("config", {}) or {}
    if not isinstance(config, Mapping):
        p.add(f"{where}.random.config", f"{_fmt(config)} is not valid; expected a mapping")
        return None
    return Source("random", seed=seed or 0, config=dict(config)) if seed is not None else None


def _tolerance(p: _Problems, where: str, raw: Any, default: Tolerance) -> Tolerance:
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        p.add(where, f"{_fmt(raw)} is not valid; expected a mapping with {', '.join(TOLERANCE_KEYS)}")
        return default
    _check_keys(p, where + ".", raw, TOLERANCE_KEYS)
    values = default.to_dict()
    for key in TOLERANCE_KEYS:
        if key not in raw:
            continue
        v = raw[key]
        if key == "reference":
            if v not in REFERENCES:
                p.add(f"{where}.{key}", f"{_fmt(v)} is not valid; expected one of: "
                      f"{', '.join(REFERENCES)}")
            else:
                values[key] = v
            continue
        if key.startswith("max_abs") and v is None:
            values[key] = None
            continue
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                or (key == "cosine" and v > 1) or (key == "reference_factor" and v < 1)):
            valid = {"cosine": "a number in [0, 1]", "reference_factor": "a number >= 1"}.get(
                key, "a number >= 0")
            p.add(f"{where}.{key}", f"{_fmt(v)} is not valid; expected {valid}")
            continue
        values[key] = float(v)
    return Tolerance(**values)


def _build_settings(p: _Problems, where: str, raw: Any, backend: str | None,
                    device: str | None = None) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        p.add(where, f"{_fmt(raw)} is not valid; expected a mapping of build settings")
        return {}
    if backend is None:
        return dict(raw)
    if backend not in BACKENDS:  # auto: each setting goes to the backends that know it
        usable = {name: cls for name, cls in BACKENDS.items()
                  if device is None or device in cls.devices}
        types: dict[str, Any] = {}
        for cls in usable.values():
            for key, typ in cls.settings_class.field_types().items():
                types.setdefault(key, typ)
        out = {}
        for key, value in raw.items():
            if key not in types:
                p.add(f"{where}.{key}", f"unknown build setting (backend {backend!r} on "
                      f"{device}: the settings of {', '.join(usable)}: {', '.join(types)})")
            elif not _type_ok(value, str(types[key])):
                p.add(f"{where}.{key}", f"{_fmt(value)} is not valid; expected {types[key]}")
            else:
                out[key] = value
        for name, cls in usable.items():  # each backend's own checks of its values
            fields = cls.settings_class.field_names()
            try:
                cls.settings_class(**{k: v for k, v in out.items() if k in fields})
            except (TypeError, ValueError) as exc:
                p.add(where, f"backend {name}: {exc}")
        return out
    types = BACKENDS[backend].settings_class.field_types()
    out = {}
    for key, value in raw.items():
        if key not in types:
            p.add(f"{where}.{key}", f"unknown build setting for backend {backend!r}; "
                  f"valid: {', '.join(types) or 'none'}")
            continue
        expected = str(types[key])
        if not _type_ok(value, expected):
            p.add(f"{where}.{key}", f"{_fmt(value)} is not valid; expected {expected}")
            continue
        out[key] = value
    try:
        BACKENDS[backend].settings_class(**out)
    except (TypeError, ValueError) as exc:
        p.add(where, f"{exc}")
    return out


def _type_ok(value: Any, annotation: str) -> bool:
    checks = {"bool": lambda v: isinstance(v, bool),
              "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "str": lambda v: isinstance(v, str),
              "None": lambda v: v is None,
              "tuple[str, ...]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)}
    parts = [p.strip() for p in annotation.split("|")]
    return any(checks.get(part, lambda v: True)(value) for part in parts)


def _static_specs(p: _Problems, where: str, spec: ComponentSpec, comp,
                  raw_dims: Mapping[str, Any], tiles: bool = False) -> list[ComponentSpec]:
    """``static: true``: the entry as one static-size spec per bucket (its height and width)
    and per value of each other dim with a range, named ``<name>_<H>x<W>_<dim><value>``.
    ``static: tiles``: one per distinct tile shape of the buckets' low-VRAM tiling instead,
    named ``<name>_<h>x<w>_<dim><value>`` (h and w in latent units)."""
    import itertools
    import math

    bucket_dims = tuple(getattr(comp, "bucket_dims", None) or ())
    tile_latents = getattr(comp, "tile_latents", None)
    if tiles and not tile_latents:
        p.add(f"{where}.static", f"component {spec.component!r} is not cut into tiles; static: "
              "tiles is for vae_decode and vae_encode (true: one engine per bucket)")
        return []
    if tiles and not spec.buckets:
        p.add(f"{where}.static", "static: tiles needs buckets: the tiles of which buckets' "
              "latents (for example buckets: [[544, 704]])")
        return []
    if spec.buckets:
        given = [n for n in bucket_dims if n in raw_dims]
        if given:
            p.add(f"{where}.dims.{given[0]}", "set by buckets under static: tiles (one engine "
                  "per tile shape of the buckets); leave it out, or list the buckets you want"
                  if tiles else "set by buckets under static: true (one engine per bucket); "
                  "leave it out, or list the buckets you want")
            return []
        twice = sorted({b for b in spec.buckets if spec.buckets.count(b) > 1})
        if twice:
            p.add(f"{where}.buckets", f"{list(twice[0])} is listed twice")
            return []
    else:
        loose = [n for n in bucket_dims if spec.dims[n].min != spec.dims[n].max]
        if loose:
            p.add(f"{where}.static", f"{', '.join(loose)} are ranges: give buckets (one engine "
                  "per bucket) or fixed sizes under static: true")
            return []
    per_bucket = ([((h, w), comp.dims_for_buckets([(h, w)])) for h, w in spec.buckets]
                  or [(None, {})])
    if tiles:  # the tile shapes of every bucket, each once, largest first
        from framepack_trt.components.vae import tile_shapes

        unit, (h_dim, w_dim) = comp.pixels_per_unit, bucket_dims
        shapes = sorted({s for h, w in spec.buckets
                         for s in tile_shapes(h // unit, w // unit, *tile_latents)}, reverse=True)
        per_bucket = [(s, {h_dim: DimRange(s[0], s[0], s[0]), w_dim: DimRange(s[1], s[1], s[1])})
                      for s in shapes]
    ranged = [n for n, r in spec.dims.items()
              if not (spec.buckets and n in bucket_dims) and r.min != r.max]
    count = len(per_bucket) * math.prod(spec.dims[n].max - spec.dims[n].min + 1 for n in ranged)
    if count > MAX_STATIC:
        over = ([f"{len(per_bucket)} {'tile shapes' if tiles else 'buckets'}"]
                if spec.buckets else []) + [
            f"{n} {spec.dims[n].min}..{spec.dims[n].max}" for n in ranged]
        p.add(f"{where}.static", f"it would build {count} engines (one per value of "
              f"{' x '.join(over)}); at most {MAX_STATIC}: fix some dims"
              + (" or list fewer buckets" if spec.buckets else ""))
        return []
    choices = [[(n, v) for v in range(spec.dims[n].min, spec.dims[n].max + 1)] for n in ranged]
    out = []
    for bucket, bdims in per_bucket:
        for values in itertools.product(*choices):
            dims = {**spec.dims, **bdims, **{n: DimRange(v, v, v) for n, v in values}}
            parts = ([f"{bucket[0]}x{bucket[1]}"] if bucket else []) + [f"{n}{v}" for n, v in values]
            out.append(replace(spec, name="_".join([spec.name, *parts]), dims=dims,
                               buckets=(bucket,) if bucket and not tiles else ()))
    return out


def _buckets(p: _Problems, where: str, raw: Any, component: str,
             multiple: int) -> tuple[tuple[int, int], ...]:
    if isinstance(raw, str):
        if raw in BUCKET_SETS:
            return BUCKET_SETS[raw]
        p.add(where, f"{_fmt(raw)} is not a bucket set; valid: {', '.join(BUCKET_SETS)} "
              "or a list of [height, width] pairs in pixels")
        return ()
    if not isinstance(raw, list) or not raw:
        p.add(where, f"{_fmt(raw)} is not valid; expected a list of [height, width] pairs")
        return ()
    out = []
    for i, pair in enumerate(raw):
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                           and v % multiple == 0 for v in pair)):
            p.add(f"{where}[{i}]", f"{_fmt(pair)} is not valid; expected [height, width] in "
                  f"pixels, positive multiples of {multiple} for component {component!r}")
            continue
        out.append((pair[0], pair[1]))
    return tuple(out)


def parse_profile(raw: Any, path: Path) -> Profile:
    """Validate a parsed YAML document; raise one ProfileError listing every problem."""
    p = _Problems()
    base = path.resolve().parent
    if not isinstance(raw, Mapping):
        raise ProfileError(str(path), ["the file must be a mapping with a 'components' list"])
    _check_keys(p, "", raw, TOP_KEYS)
    backends = sorted(BACKENDS)
    backend = _choice(p, "backend", raw.get("backend", "aoti"), [*backends, "auto"])
    fallback = (_choice(p, "fallback_backend", raw["fallback_backend"], backends)
                if raw.get("fallback_backend") is not None else None)
    device = _choice(p, "device", raw.get("device", "cuda"), DEVICES)
    cache_dir = None
    if raw.get("cache_dir") is not None:
        if not isinstance(raw["cache_dir"], str):
            p.add("cache_dir", f"{_fmt(raw['cache_dir'])} is not valid; expected a directory path")
        else:
            cd = Path(os.path.expanduser(raw["cache_dir"]))
            cache_dir = cd if cd.is_absolute() else base / cd
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        p.add("name", f"{_fmt(name)} is not valid; expected a non-empty string")
    description = raw.get("description", "")
    entries = raw.get("components")
    comps: list[ComponentSpec] = []
    if not isinstance(entries, list) or not entries:
        p.add("components", f"{_fmt(entries)} is not valid; expected a non-empty list of components")
        entries = []
    known = registry()
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"components[{i}]"
        if not isinstance(entry, Mapping):
            p.add(where, f"{_fmt(entry)} is not valid; expected a mapping with component and source")
            continue
        _check_keys(p, where + ".", entry, ENTRY_KEYS)
        comp_name = entry.get("component")
        if comp_name not in known:
            p.add(f"{where}.component",
                  f"{_fmt(comp_name)} is not a known component; valid: {', '.join(sorted(known))}")
            continue
        comp = known[comp_name]
        ename = entry.get("name", comp_name)
        if not isinstance(ename, str) or not ename.replace("-", "_").replace(".", "_").isidentifier():
            p.add(f"{where}.name", f"{_fmt(ename)} is not valid; expected letters, digits, '_', '-', '.'")
            continue
        if ename in seen:
            p.add(f"{where}.name", f"{_fmt(ename)} is already used by components[{seen[ename]}]; "
                  "give each entry a unique name")
        seen[ename] = i
        if "source" not in entry:
            p.add(f"{where}.source", "missing; every component needs a source of weights")
        source = _source(p, f"{where}.source", entry.get("source"), base)
        dtype = _dtype(p, f"{where}.dtype", entry.get("dtype", comp.default_dtype))
        e_backend = _choice(p, f"{where}.backend", entry.get("backend", backend),
                            [*backends, "auto"]) \
            if "backend" in entry else backend
        e_device = _choice(p, f"{where}.device", entry["device"], DEVICES) \
            if "device" in entry else device
        e_fallback = (_choice(p, f"{where}.fallback_backend", entry["fallback_backend"], backends)
                      if entry.get("fallback_backend") is not None else fallback)
        if e_fallback == e_backend:
            e_fallback = None
        dims = dict(comp.default_dims)
        raw_dims = entry.get("dims") or {}
        if not isinstance(raw_dims, Mapping):
            p.add(f"{where}.dims", f"{_fmt(raw_dims)} is not valid; expected a mapping of dims")
            raw_dims = {}
        buckets: tuple[tuple[int, int], ...] = ()
        if "buckets" in entry:
            bucket_dims = getattr(comp, "bucket_dims", None)
            if not bucket_dims:
                p.add(f"{where}.buckets", f"component {comp_name!r} has no image height/width dims; "
                      f"its dims are: {', '.join(comp.default_dims)}")
            else:
                buckets = _buckets(p, f"{where}.buckets", entry["buckets"], comp_name,
                                   comp.bucket_multiple)
                if buckets:
                    dims.update(comp.dims_for_buckets(buckets))
        for dname, dval in raw_dims.items():
            dwhere = f"{where}.dims.{dname}"
            if dname not in comp.default_dims:
                p.add(dwhere, f"unknown dim for component {comp_name!r}; valid: "
                      f"{', '.join(comp.default_dims)}")
                continue
            rng = _dim(p, dwhere, dval)
            if rng is None:
                continue
            lo, hi = comp.dim_limits.get(dname, (1, None))
            if rng.min < lo or (hi is not None and rng.max > hi):
                p.add(dwhere, f"{rng.min}..{rng.max} is outside what {comp_name!r} supports "
                      f"({lo}..{hi if hi is not None else 'any'})")
                continue
            dims[dname] = rng
        tol = _tolerance(p, f"{where}.tolerance", entry.get("tolerance"),
                         comp.tolerance(dtype or comp.default_dtype))
        build = _build_settings(p, f"{where}.build", entry.get("build"), e_backend, e_device)
        usable = [b for b in (e_backend, e_fallback)
                  if b in BACKENDS and e_device in BACKENDS[b].devices]
        if e_device and e_backend in BACKENDS and not usable:
            p.add(f"{where}.device", f"backend {e_backend!r} cannot build for {e_device!r} "
                  f"(it builds for {', '.join(BACKENDS[e_backend].devices)}); choose another "
                  "device, or a fallback_backend that can")
        engines = "blocks" if comp_name == "transformer" else "whole"
        if "engines" in entry:
            if comp_name != "transformer":
                p.add(f"{where}.engines", f"only a transformer entry has engines (whole or "
                      f"blocks); {comp_name!r} is always one engine")
            else:
                engines = _choice(p, f"{where}.engines", entry["engines"], TRANSFORMER_ENGINES)
        quantize = None
        if "quantize" in entry:
            quantize = _choice(p, f"{where}.quantize", entry["quantize"], QUANTIZE)
            if comp_name != "transformer" or engines != "blocks":
                p.add(f"{where}.quantize", "only a transformer entry with engines: blocks is "
                      "quantized (its block engines' linears)")
        if "static" in entry and not isinstance(entry["static"], bool) and entry["static"] != "tiles":
            p.add(f"{where}.static", f"{_fmt(entry['static'])} is not valid; expected true, false "
                  "or tiles")
        elif entry.get("static") and engines == "blocks":
            p.add(f"{where}.static", "the transformer's block engines take any size; static is "
                  "for engines of one size (engines: whole, or another component)")
        # fp8 block engines, asked for with quantize: fp8 or listed by their component name.
        fp8_field = (f"{where}.quantize" if quantize else f"{where}.component"
                     if getattr(comp, "quantize", None) else None)
        if fp8_field and dtype and dtype != "bfloat16":
            p.add(fp8_field, f"fp8 block engines compute in bfloat16 (their fp8 matmuls' "
                  f"row-wise scales give bfloat16); dtype is {dtype!r}")
        if fp8_field and e_device and e_device != "cuda":
            p.add(fp8_field, f"fp8 needs a CUDA card of compute capability 8.9 or later "
                  f"(RTX 40xx, RTX 50xx, L4, H100/H200); the device is {e_device!r}")
        if source and dtype and e_backend and e_device:
            spec = ComponentSpec(name=ename, component=comp_name, source=source, dtype=dtype,
                                 backend=e_backend, device=e_device, dims=dims, tolerance=tol,
                                 build=build, buckets=buckets, fallback_backend=e_fallback)
            if engines == "blocks":
                for piece in PIECE_COMPONENTS:
                    pname = f"{ename}_{piece}"
                    if pname in seen:
                        p.add(f"{where}.name", f"engines: blocks names an engine {pname!r}, which "
                              f"components[{seen[pname]}] already uses")
                    seen[pname] = i
                    piece_comp, piece_tol = f"transformer_{piece}", tol
                    if quantize and piece in QUANTIZED_PIECES:  # the entry's tolerance keys
                        piece_comp += f"_{quantize}"            # over fp8's own defaults
                        piece_tol = _tolerance(_Problems(), "", entry.get("tolerance"),
                                               known[piece_comp].tolerance(dtype))
                    comps.append(replace(spec, name=pname, component=piece_comp,
                                         tolerance=piece_tol, entry=ename))
            elif entry.get("static") is True or entry.get("static") == "tiles":
                for static in _static_specs(p, where, spec, comp, raw_dims,
                                            tiles=entry["static"] == "tiles"):
                    if static.name == ename:  # nothing to expand: the entry itself
                        comps.append(static)
                        continue
                    static = replace(static, entry=ename)
                    if static.name in seen:
                        p.add(f"{where}.static", f"it names an engine {static.name!r}, which "
                              f"components[{seen[static.name]}] already uses")
                    seen[static.name] = i
                    comps.append(static)
            else:
                comps.append(spec)
    if p.items:
        raise ProfileError(str(path), p.items)
    return Profile(path=path, name=name, description=str(description or ""), cache_dir=cache_dir,
                   backend=backend or "aoti", device=device or "cuda", components=tuple(comps))
