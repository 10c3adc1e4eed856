"""What a build will do: each selected profile entry's cache key and action.

``plan`` computes the key fields of every entry (``key_fields``: code, weights, dims, dtype,
backend and its version, torch, libraries, device, build settings; no torch import) and
compares the key with the manifest: ``build`` when it is not cached, ``rebuild`` when its
files are missing or corrupt (or ``--force``), ``cached``, or ``error`` with the reason (no
such device, weights not found). A ``backend: auto`` entry is cached when its choice is
recorded. ``build.build`` carries the plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from framepack_trt import auto
from framepack_trt.backends import get_backend
from framepack_trt.cache import Cache, Entry
from framepack_trt.cache.keys import engine_key
from framepack_trt.components.base import get_component
from framepack_trt.device import current_device, library_versions, torch_version
from framepack_trt.engine_status import code_fingerprint
from framepack_trt.errors import BuildError, FramepackTrtError
from framepack_trt.profile import ComponentSpec, Profile
from framepack_trt.sources import architecture, fingerprint


@dataclass
class PlanItem:
    spec: ComponentSpec
    key: str = ""
    key_fields: dict[str, Any] = field(default_factory=dict)
    action: str = "build"  # build | rebuild | cached | error
    reason: str = ""
    #: Set when this item builds with the fallback backend: why the profile's backend is not used.
    fallback_from: str = ""

    def to_dict(self) -> dict[str, Any]:
        """``build --json``'s plan row."""
        return {"name": self.spec.name, "component": self.spec.component,
                "action": self.action, "reason": self.reason, "key": self.key}


def key_fields(spec: ComponentSpec, cache: Cache) -> dict[str, Any]:
    component = get_component(spec.component)
    backend = get_backend(spec.backend)
    settings = backend.settings(spec.build)
    return {
        "component": spec.component,
        "code": code_fingerprint(spec.component, spec.backend),
        # The memo of weight-file hashes lives in the cache; a dry run on a cache that does not
        # exist yet creates nothing. An engine that takes its weights as inputs depends on the
        # architecture only.
        "weights": (f"architecture:{architecture(spec.source, component)}"
                    if component.weights_as_inputs else
                    fingerprint(spec.source, component,
                                cache.root / "fingerprints.json" if cache.root.is_dir() else None)),
        "dims": {n: r.to_dict() for n, r in spec.dims.items()},
        "dtype": spec.dtype,
        "backend": spec.backend,
        "backend_version": backend.version(),
        "torch": torch_version(),
        "libraries": library_versions(),
        "device": current_device(spec.device),
        "build": settings.engine_fields(),
    }


def plan(profile: Profile, cache: Cache, names: list[str] | None = None,
         force: bool = False) -> list[PlanItem]:
    """What ``build`` would do for each selected entry. A profile backend that cannot run here
    is replaced by the entry's fallback backend, when it has one."""
    entries = cache.entries()
    return [plan_item(spec, cache, entries, force) for spec in profile.select(names)]


def fallback_spec(spec: ComponentSpec) -> ComponentSpec:
    assert spec.fallback_backend
    return replace(spec, backend=spec.fallback_backend, build={}, fallback_backend=None)


def check_device(spec: ComponentSpec) -> None:
    """Raise BuildError when this machine has no such device, or its device cannot run the
    component's engines (fp8 on a card without fp8)."""
    if current_device(spec.device) is None:
        raise BuildError(f"no {spec.device} device on this machine")
    # A component that cannot run on some devices says why (fp8 blocks: below 8.9).
    check = getattr(get_component(spec.component), "unsupported_reason", None)
    reason = check(spec.device) if check else None
    if reason:
        raise BuildError(f"{spec.name}: {reason}")


def plan_item(spec: ComponentSpec, cache: Cache, entries: dict[str, Entry],
              force: bool = False) -> PlanItem:
    if spec.backend == auto.AUTO:
        return plan_auto(spec, cache, entries, force)
    item = PlanItem(spec)
    try:
        check_device(spec)
        if spec.fallback_backend:
            reason = get_backend(spec.backend).unavailable_reason(spec.device)
            if reason:
                fallback = plan_item(fallback_spec(spec), cache, entries, force)
                fallback.fallback_from = f"{spec.backend} unavailable: {reason}"
                return fallback
        item.key_fields = key_fields(spec, cache)
        item.key = engine_key(item.key_fields)
    except FramepackTrtError as exc:
        item.action, item.reason = "error", str(exc)
        return item
    entry = entries.get(item.key)
    if entry is None:
        item.action, item.reason = "build", "not in cache"
    elif force:
        item.action, item.reason = "rebuild", "--force"
    elif (state := cache.file_state(entry)).state != "ok":
        item.action, item.reason = "rebuild", state.reason
    else:
        item.action, item.reason = "cached", entry.engine.file
    return item


def plan_auto(spec: ComponentSpec, cache: Cache, entries: dict[str, Entry],
              force: bool = False) -> PlanItem:
    """An auto item is cached when its choice is recorded and the engine it kept (if any) is
    intact; a backend that failed stays failed until ``--force``."""
    item = PlanItem(spec)
    try:
        check_device(spec)
        fields = [key_fields(c, cache) for c in auto.candidates(spec)]
        item.key_fields, item.key = {"auto": fields}, auto.choice_key(fields)
    except FramepackTrtError as exc:
        item.action, item.reason = "error", str(exc)
        return item
    chosen = cache.choices().get(item.key)
    if chosen is None:
        item.action, item.reason = "build", "no choice recorded"
    elif force:
        item.action, item.reason = "rebuild", "--force"
    elif chosen.kept and (chosen.kept not in entries
                          or cache.file_state(entries[chosen.kept]).state != "ok"):
        item.action, item.reason = "rebuild", "the engine auto kept is missing or corrupt"
    else:
        item.action, item.reason = "cached", auto.describe(chosen)
    return item
