"""One manifest entry: an engine in the cache, as ``build`` records it and every reader uses it.

The manifest keeps each entry as a JSON object. ``Entry.from_dict`` reads one, and is the one
place a malformed entry is caught: ``EntryError`` names the field, and the manifest reader
skips the entry with that reason (it is then rebuilt). ``to_dict`` writes it back field for
field: an entry read and written again is the same JSON, fields this version does not know
included (``extra``). Fields an older framepack-trt did not write read as None and are not
written.

The key fields (``key_fields``) stay the dict the key was hashed from (``keys.engine_key``);
the accessors below read them (``backend``, ``dtype``, ``device_type``, ``dims``, ...). Readers
use the attributes and accessors: an entry is not a mapping (``entry["name"]`` is a TypeError).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from framepack_trt.shapes import Dims, dims_from_dict

#: The key fields every manifest entry must have to be listed at all (older entries may lack
#: the others; they are then stale).
CORE_KEY_FIELDS = ("component", "dims", "dtype", "backend", "backend_version", "torch", "device")


class EntryError(ValueError):
    """Why a manifest entry cannot be used: a field missing or of the wrong type."""


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise EntryError(what)


@dataclass(frozen=True)
class FileRecord:
    """One of an entry's files as it was committed: its path under the cache root (POSIX),
    sha256, size and modification time (the quick check trusts size and mtime)."""

    file: str
    sha256: str
    size: int
    mtime_ns: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str) -> FileRecord:
        for name, typ in (("file", str), ("sha256", str), ("size", int), ("mtime_ns", int)):
            value = raw.get(name)
            _need(isinstance(value, typ) and not isinstance(value, bool),
                  f"field {where}.{name} is missing or not a {typ.__name__}")
        return cls(raw["file"], raw["sha256"], raw["size"], raw["mtime_ns"])

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "size": self.size,
                "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class EngineInput:
    """One input of an engine, in order. ``shape``: per axis a size (int), a dim's name, or
    (dim name, factor) for an axis that is a multiple of a dim; ``dtype``: "model" for the
    model's dtype, else a dtype's name."""

    name: str
    shape: tuple[int | str | tuple[str, int], ...]
    dtype: str

    @classmethod
    def from_dict(cls, raw: Any) -> EngineInput:
        _need(isinstance(raw, dict) and isinstance(raw.get("name"), str)
              and isinstance(raw.get("shape"), list) and isinstance(raw.get("dtype"), str),
              "field 'inputs' has an input that is not {name, shape, dtype}")
        return cls(raw["name"], tuple(tuple(a) if isinstance(a, list) else a
                                      for a in raw["shape"]), raw["dtype"])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": [list(a) if isinstance(a, tuple) else a
                                             for a in self.shape], "dtype": self.dtype}


@dataclass(frozen=True)
class GoldenCase:
    """One golden sample saved at build time: which case (opt, random), its sizes, and the
    piece index a multi-piece component ran it at (None: written before the index existed,
    meaning 0)."""

    case: str
    sizes: dict[str, int]
    index: int | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> GoldenCase:
        _need(isinstance(raw, dict) and isinstance(raw.get("case"), str)
              and isinstance(raw.get("sizes"), dict)
              and (raw.get("index") is None or isinstance(raw.get("index"), int)),
              "field 'golden_cases' has a case that is not {case, sizes, index}")
        return cls(raw["case"], dict(raw["sizes"]), raw.get("index"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"case": self.case, "sizes": dict(self.sizes)}
        if self.index is not None:
            out["index"] = self.index
        return out


#: The optional fields and the JSON type each must have when present.
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "source": dict, "tolerance": dict, "inputs": list, "raw_inputs": list, "engine_dims": dict,
    "buckets": list, "outputs": list, "golden_cases": list, "build_settings": dict,
    "build_seconds": dict, "build_notes": list, "build_check": dict, "profile": str,
    "profile_entry": str, "created": str, "device_name": str, "peak_host_gib": (int, float),
    "peak_gpu_used_gib": (int, float), "peak_gpu_gib": (int, float),
}
_REQUIRED = ("key", "name", "component", "key_fields", "engine", "golden")


@dataclass(frozen=True)
class Entry:
    """An engine in the cache: its key and what it was built from (``key_fields``), its two
    files, and what the build recorded to load, check and describe it."""

    key: str
    name: str
    component: str
    key_fields: dict[str, Any]
    engine: FileRecord
    golden: FileRecord
    #: ``Source.to_dict()`` of the weights, ``Tolerance.to_dict()`` of the checks.
    source: dict[str, Any] | None = None
    tolerance: dict[str, Any] | None = None
    inputs: tuple[EngineInput, ...] | None = None
    #: The component's inputs before it prepares them (None: the engine's inputs).
    raw_inputs: tuple[str, ...] | None = None
    #: The engine's ranges: the profile's dims plus those the component derives from them.
    engine_dims: dict[str, dict[str, int]] | None = None
    buckets: tuple[tuple[int, ...], ...] | None = None
    outputs: tuple[str, ...] | None = None
    golden_cases: tuple[GoldenCase, ...] | None = None
    build_settings: dict[str, Any] | None = None
    build_seconds: dict[str, float] | None = None
    build_notes: tuple[str, ...] | None = None
    #: How the build checked the engine: mode, seed, processes, reference, cases.
    build_check: dict[str, Any] | None = None
    profile: str | None = None
    #: The profile entry that asked for it (``static: true`` and blocks make several engines).
    profile_entry: str | None = None
    created: str | None = None
    device_name: str | None = None
    peak_host_gib: float | None = None
    peak_gpu_used_gib: float | None = None
    peak_gpu_gib: float | None = None
    #: Fields this version does not know (a newer framepack-trt's), written back as they were.
    extra: dict[str, Any] = field(default_factory=dict)

    # -- JSON ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Any) -> Entry:
        """The entry of a manifest object; EntryError says what is wrong with a malformed one."""
        _need(isinstance(raw, dict), f"is a {type(raw).__name__}, not an object")
        for name, typ in zip(_REQUIRED, (str, str, str, dict, dict, dict), strict=True):
            _need(isinstance(raw.get(name), typ), f"field {name!r} is missing or not a {typ.__name__}")
        engine = FileRecord.from_dict(raw["engine"], "engine")
        golden = FileRecord.from_dict(raw["golden"], "golden")
        fields = raw["key_fields"]
        missing = [f for f in CORE_KEY_FIELDS if f not in fields]
        _need(not missing, f"key_fields lacks {', '.join(missing)}")
        _need(isinstance(fields["device"], dict) and isinstance(fields["device"].get("type"), str),
              "key_fields.device is not a device description")
        _need(_ranges(fields["dims"]), "key_fields.dims is not a set of min/opt/max ranges")
        opt: dict[str, Any] = {}
        for name, typ in _OPTIONAL.items():
            value = raw.get(name)
            if value is None:
                continue
            _need(isinstance(value, typ) and not isinstance(value, bool),
                  f"field {name!r} is not a {getattr(typ, '__name__', 'number')}")
            opt[name] = _plain(value)
        _need("engine_dims" not in opt or _ranges(opt["engine_dims"]),
              "field 'engine_dims' is not a set of min/opt/max ranges")
        for name in ("raw_inputs", "outputs", "build_notes"):
            if name in opt:
                _need(all(isinstance(v, str) for v in opt[name]), f"field {name!r} is not a list "
                      "of strings")
                opt[name] = tuple(opt[name])
        if "inputs" in opt:
            opt["inputs"] = tuple(EngineInput.from_dict(i) for i in opt["inputs"])
        if "golden_cases" in opt:
            opt["golden_cases"] = tuple(GoldenCase.from_dict(c) for c in opt["golden_cases"])
        if "buckets" in opt:
            _need(all(isinstance(b, list) for b in opt["buckets"]),
                  "field 'buckets' is not a list of (height, width)")
            opt["buckets"] = tuple(tuple(b) for b in opt["buckets"])
        extra = {k: v for k, v in raw.items() if k not in _OPTIONAL and k not in _REQUIRED}
        return cls(raw["key"], raw["name"], raw["component"], _plain(fields), engine, golden,
                   **opt, extra=_plain(extra))

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON object of this entry (a new one each call: change it freely)."""
        out: dict[str, Any] = {"key": self.key, "name": self.name, "component": self.component,
                               "key_fields": _plain(self.key_fields),
                               "engine": self.engine.to_dict(), "golden": self.golden.to_dict()}
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[name] = _plain(value)
        out.update(_plain(self.extra))
        return out

    # -- what readers need -----------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.key_fields["backend"]

    @property
    def backend_version(self) -> str:
        return self.key_fields["backend_version"]

    @property
    def torch_version(self) -> str:
        """The torch version it was built with."""
        return self.key_fields["torch"]

    @property
    def libraries(self) -> dict[str, str] | None:
        """The model libraries' versions it was built with (diffusers, transformers; None: an
        older framepack-trt did not record them)."""
        return self.key_fields.get("libraries")

    @property
    def code(self) -> str | None:
        """The fingerprint of the code that built it (``keys.modules_fingerprint``)."""
        return self.key_fields.get("code")

    @property
    def dtype(self) -> str:
        """The engine's dtype's name (float16, bfloat16, float32)."""
        return self.key_fields["dtype"]

    @property
    def device(self) -> dict[str, Any]:
        """The device description it was built for (``device.current_device``)."""
        return self.key_fields["device"]

    @property
    def device_type(self) -> str:
        """cpu or cuda."""
        return self.key_fields["device"]["type"]

    @property
    def dims(self) -> Dims:
        """The profile's dims it was built for (part of its key)."""
        return dims_from_dict(self.key_fields["dims"])

    @property
    def ranges(self) -> Dims:
        """The engine's ranges: the profile's dims plus those the component derives from them
        (older entries recorded only the profile's)."""
        return dims_from_dict(self.engine_dims or self.key_fields["dims"])

    @property
    def engine_settings(self) -> dict[str, Any]:
        """The build settings that change the engine (part of its key; {} when none)."""
        return self.key_fields.get("build") or {}

    @property
    def input_names(self) -> list[str]:
        """The engine's inputs' names, in order."""
        return [i.name for i in self.inputs or ()]

    @property
    def raw_input_names(self) -> list[str]:
        """The component's inputs before it prepares them (older entries: the engine's)."""
        return list(self.raw_inputs) if self.raw_inputs else self.input_names

    @property
    def build_time(self) -> float:
        """Seconds the build's stages took, added up (0 when not recorded)."""
        return sum((self.build_seconds or {}).values())

    @property
    def files(self) -> tuple[FileRecord, FileRecord]:
        """The engine file and the golden-sample file."""
        return self.engine, self.golden

    def __hash__(self) -> int:  # by its key: the key fields are a dict
        return hash(self.key)


def _ranges(raw: Any) -> bool:
    """Whether ``raw`` is a dict of min/opt/max ranges (``shapes.dims_from_dict`` reads it)."""
    try:
        dims_from_dict(raw)
    except (AttributeError, TypeError, ValueError):
        return False
    return isinstance(raw, dict)


def _plain(value: Any) -> Any:
    """A fresh copy of JSON data: dicts and lists copied, tuples as lists, the small records
    above as their dicts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value
