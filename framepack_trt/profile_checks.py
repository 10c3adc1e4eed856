"""The checks of a profile's fields (``profile.parse_profile`` runs them): each adds what is
wrong with a value to ``Problems``, naming the field, the bad value and what is valid, so
that one ``ProfileError`` lists every problem of a file. No torch import here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from framepack_trt.backends import BACKENDS
from framepack_trt.components.base import REFERENCES
from framepack_trt.shapes import FRAMEPACK_640_BUCKETS, DimRange
from framepack_trt.sources import Source

DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16",
                 "float": "float32"}
BUCKET_SETS = {"framepack-640": FRAMEPACK_640_BUCKETS}
TOLERANCE_KEYS = ("rel_l2", "cosine", "max_abs", "max_abs_std", "reference", "reference_factor")


class Problems:
    """Every problem found in a profile, as ``field: message`` lines."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, field_: str, message: str) -> None:
        self.items.append(f"{field_}: {message}")


def fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_keys(p: Problems, where: str, raw: Mapping, allowed: tuple[str, ...]) -> None:
    for key in raw:
        if key not in allowed:
            p.add(f"{where}{key}" if where else str(key),
                  f"unknown field; valid fields: {', '.join(allowed)}")


def check_dtype(p: Problems, where: str, value: Any) -> str | None:
    if isinstance(value, str):
        v = DTYPE_ALIASES.get(value.lower(), value.lower())
        if v in DTYPES:
            return v
    p.add(where, f"{fmt(value)} is not a dtype; valid: {', '.join(DTYPES)}")
    return None


def check_choice(p: Problems, where: str, value: Any, valid: tuple[str, ...] | list[str]) -> str | None:
    if isinstance(value, str) and value in valid:
        return value
    p.add(where, f"{fmt(value)} is not valid; valid: {', '.join(valid)}")
    return None


def check_int(p: Problems, where: str, value: Any, minimum: int = 1) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        p.add(where, f"{fmt(value)} is not valid; expected an integer >= {minimum}")
        return None
    return value


def check_dim(p: Problems, where: str, value: Any) -> DimRange | None:
    if isinstance(value, int) and not isinstance(value, bool):
        n = check_int(p, where, value)
        return DimRange(n, n, n) if n else None
    if not isinstance(value, Mapping):
        p.add(where, f"{fmt(value)} is not valid; expected an integer or {{min, opt, max}}")
        return None
    check_keys(p, where + ".", value, ("min", "opt", "max"))
    if "min" not in value or "max" not in value:
        p.add(where, "needs min and max (opt defaults to max)")
        return None
    lo = check_int(p, f"{where}.min", value["min"])
    hi = check_int(p, f"{where}.max", value["max"])
    opt = check_int(p, f"{where}.opt", value.get("opt", value["max"]))
    if None in (lo, hi, opt):
        return None
    if not lo <= opt <= hi:
        p.add(where, f"min {lo} / opt {opt} / max {hi} is not valid; need min <= opt <= max")
        return None
    return DimRange(lo, opt, hi)


def check_source(p: Problems, where: str, raw: Any, base: Path) -> Source | None:
    forms = "{path: DIR}, {repo: ID, subfolder: SUB, revision: REV} or {random: {seed: N, config: {...}}}"
    if not isinstance(raw, Mapping):
        p.add(where, f"{fmt(raw)} is not valid; expected {forms}")
        return None
    kinds = [k for k in ("path", "repo", "random") if k in raw]
    if len(kinds) != 1:
        p.add(where, f"give exactly one of path, repo, random; expected {forms}")
        return None
    kind = kinds[0]
    if kind == "path":
        check_keys(p, where + ".", raw, ("path",))
        if not isinstance(raw["path"], str) or not raw["path"]:
            p.add(f"{where}.path", f"{fmt(raw['path'])} is not valid; expected a directory path")
            return None
        path = Path(os.path.expanduser(raw["path"]))
        path = path if path.is_absolute() else base / path
        if not path.is_dir():
            p.add(f"{where}.path", f"{fmt(raw['path'])} is not a directory "
                  f"({'a file' if path.exists() else 'it does not exist'}); expected a "
                  "save_pretrained folder")
            return None
        return Source("path", path=str(path))
    if kind == "repo":
        check_keys(p, where + ".", raw, ("repo", "subfolder", "revision"))
        ok = True
        for key in ("repo", "subfolder", "revision"):
            if key in raw and (not isinstance(raw[key], str) or not raw[key]):
                p.add(f"{where}.{key}", f"{fmt(raw[key])} is not valid; expected a string")
                ok = False
        if ok and raw["repo"].count("/") != 1:
            p.add(f"{where}.repo", f"{fmt(raw['repo'])} is not valid; expected 'owner/name'")
            ok = False
        return Source("repo", repo=raw["repo"], subfolder=raw.get("subfolder"),
                      revision=raw.get("revision")) if ok else None
    check_keys(p, where + ".", raw, ("random",))
    r = raw["random"]
    if r is True or r is None:
        r = {}
    if not isinstance(r, Mapping):
        p.add(f"{where}.random", f"{fmt(r)} is not valid; expected {{seed: N, config: {{...}}}}")
        return None
    check_keys(p, f"{where}.random.", r, ("seed", "config"))
    seed = check_int(p, f"{where}.random.seed", r.get("seed", 0), minimum=0)
    config = r.get("config", {}) or {}
    if not isinstance(config, Mapping):
        p.add(f"{where}.random.config", f"{fmt(config)} is not valid; expected a mapping")
        return None
    return Source("random", seed=seed or 0, config=dict(config)) if seed is not None else None


def check_tolerance(p: Problems, where: str, raw: Any) -> dict[str, Any]:
    """The tolerance fields an entry sets (each checked), to put over a component's default
    (``dataclasses.replace(default, **fields)``)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        p.add(where, f"{fmt(raw)} is not valid; expected a mapping with {', '.join(TOLERANCE_KEYS)}")
        return {}
    check_keys(p, where + ".", raw, TOLERANCE_KEYS)
    values: dict[str, Any] = {}
    for key in TOLERANCE_KEYS:
        if key not in raw:
            continue
        v = raw[key]
        if key == "reference":
            if v not in REFERENCES:
                p.add(f"{where}.{key}", f"{fmt(v)} is not valid; expected one of: "
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
            p.add(f"{where}.{key}", f"{fmt(v)} is not valid; expected {valid}")
            continue
        values[key] = float(v)
    return values


def check_build_settings(p: Problems, where: str, raw: Any, backend: str | None,
                    device: str | None = None) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        p.add(where, f"{fmt(raw)} is not valid; expected a mapping of build settings")
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
                p.add(f"{where}.{key}", f"{fmt(value)} is not valid; expected {types[key]}")
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
            p.add(f"{where}.{key}", f"{fmt(value)} is not valid; expected {expected}")
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


def check_buckets(p: Problems, where: str, raw: Any, component: str,
             multiple: int) -> tuple[tuple[int, int], ...]:
    if isinstance(raw, str):
        if raw in BUCKET_SETS:
            return BUCKET_SETS[raw]
        p.add(where, f"{fmt(raw)} is not a bucket set; valid: {', '.join(BUCKET_SETS)} "
              "or a list of [height, width] pairs in pixels")
        return ()
    if not isinstance(raw, list) or not raw:
        p.add(where, f"{fmt(raw)} is not valid; expected a list of [height, width] pairs")
        return ()
    out = []
    for i, pair in enumerate(raw):
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                           and v % multiple == 0 for v in pair)):
            p.add(f"{where}[{i}]", f"{fmt(pair)} is not valid; expected [height, width] in "
                  f"pixels, positive multiples of {multiple} for component {component!r}")
            continue
        out.append((pair[0], pair[1]))
    return tuple(out)
