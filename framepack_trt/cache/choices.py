"""One recorded ``backend: auto`` choice: what ``build`` tried for a component, what each
backend's engine measured against eager, and which one it kept (``auto.py`` decides).

The manifest keeps each choice as a JSON object under its choice key. ``Choice.from_dict``
reads one (``ChoiceError`` says what is wrong with a malformed one; the manifest reader then
skips it and the next build chooses again) and ``to_dict`` writes it back as it was: fields an
older framepack-trt did not write stay unwritten, fields this version does not know are kept
(``extra``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ChoiceError(ValueError):
    """Why a recorded choice cannot be used: a field missing or of the wrong type."""


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise ChoiceError(what)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class TimedCase:
    """One size a candidate was timed at, eager and engine in the same fresh process
    (``bench.time_entry``): medians in ms, eager / engine, and the error between them."""

    case: str
    sizes: dict[str, int]
    eager_ms: float
    engine_ms: float
    speedup: float
    rel_l2: float

    @classmethod
    def from_dict(cls, raw: Any) -> TimedCase:
        _need(isinstance(raw, dict) and isinstance(raw.get("case"), str)
              and isinstance(raw.get("sizes"), dict)
              and all(_number(raw.get(n)) for n in ("eager_ms", "engine_ms", "speedup", "rel_l2")),
              "a timed case is not {case, sizes, eager_ms, engine_ms, speedup, rel_l2}")
        return cls(raw["case"], dict(raw["sizes"]), raw["eager_ms"], raw["engine_ms"],
                   raw["speedup"], raw["rel_l2"])

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "sizes": dict(self.sizes), "eager_ms": self.eager_ms,
                "engine_ms": self.engine_ms, "speedup": self.speedup, "rel_l2": self.rel_l2}


#: A candidate's outcomes: ``unavailable`` (its backend cannot build here), ``failed`` (build,
#: check or timing), ``verified`` (while ``build`` runs; then one of the three after it).
OUTCOMES = ("", "unavailable", "failed", "verified", "kept", "slower", "not-faster-than-eager")


@dataclass
class Candidate:
    """One backend ``backend: auto`` tried, filled in as ``build`` goes: the key of the engine
    it built ("" when none), its outcome, the geometric-mean speed-up over ``cases`` (None when
    not timed), and why it failed."""

    backend: str
    backend_version: str
    key: str = ""
    outcome: str = ""
    speedup: float | None = None
    cases: list[TimedCase] = field(default_factory=list)
    error: str = ""

    @classmethod
    def from_dict(cls, raw: Any) -> Candidate:
        _need(isinstance(raw, dict) and isinstance(raw.get("backend"), str)
              and isinstance(raw.get("backend_version"), str)
              and isinstance(raw.get("key"), str) and raw.get("outcome") in OUTCOMES
              and (raw.get("speedup") is None or _number(raw.get("speedup")))
              and isinstance(raw.get("cases"), list) and isinstance(raw.get("error"), str),
              "a candidate is not {backend, backend_version, key, outcome, speedup, cases, "
              "error}")
        return cls(raw["backend"], raw["backend_version"], raw["key"], raw["outcome"],
                   raw["speedup"], [TimedCase.from_dict(c) for c in raw["cases"]], raw["error"])

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "backend_version": self.backend_version,
                "key": self.key, "outcome": self.outcome, "speedup": self.speedup,
                "cases": [c.to_dict() for c in self.cases], "error": self.error}


#: Fields a choice may lack (older framepack-trt, hand-written caches), with their JSON types.
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "min_speedup": (int, float), "created": str, "source": dict, "dtype": str, "device": str}


@dataclass(frozen=True)
class Choice:
    """What ``backend: auto`` chose for a profile entry: every candidate, and the key of the
    engine it kept (None: none beat eager, the runtime runs the eager model). ``source``,
    ``dtype`` and ``device``: what the runtime needs to apply a choice of eager to a model (the
    transformer's pieces; older choices lack them)."""

    name: str
    component: str
    kept: str | None
    candidates: tuple[Candidate, ...]
    min_speedup: float | None = None
    created: str | None = None
    #: ``Source.to_dict()`` of the weights.
    source: dict[str, Any] | None = None
    dtype: str | None = None
    device: str | None = None
    #: Fields this version does not know, written back as they were.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any) -> Choice:
        _need(isinstance(raw, dict), f"is a {type(raw).__name__}, not an object")
        _need(isinstance(raw.get("name"), str) and isinstance(raw.get("component"), str),
              "its name or component is missing")
        _need(isinstance(raw.get("candidates"), list), "its candidates are not a list")
        _need(raw.get("kept") is None or isinstance(raw.get("kept"), str),
              "its kept key is not a string")
        opt = {}
        for name, typ in _OPTIONAL.items():
            value = raw.get(name)
            if value is not None:
                _need(isinstance(value, typ) and not isinstance(value, bool),
                      f"field {name!r} is of the wrong type")
                opt[name] = value
        known = {"name", "component", "kept", "candidates", *_OPTIONAL}
        return cls(raw["name"], raw["component"], raw.get("kept"),
                   tuple(Candidate.from_dict(c) for c in raw["candidates"]), **opt,
                   extra={k: v for k, v in raw.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "component": self.component, "kept": self.kept,
                               "candidates": [c.to_dict() for c in self.candidates]}
        for name in _OPTIONAL:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out.update(self.extra)
        return out

    @property
    def kept_candidate(self) -> Candidate | None:
        """The candidate whose engine was kept, None when none was."""
        return next((c for c in self.candidates if c.key == self.kept), None) \
            if self.kept else None
