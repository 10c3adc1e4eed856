"""What ``framepack-trt list`` shows: each engine of the cache and whether it can run here, the
orphan files, and the ``backend: auto`` choices, with the speed-up auto measured joined onto
the engines it kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from framepack_trt.cache import Cache, Choice
from framepack_trt.engine_status import entry_status


@dataclass
class ListedEngine:
    """One engine as ``list`` shows it (``--json``: one object of "entries")."""

    key: str
    name: str
    component: str
    backend: str
    backend_version: str
    dtype: str
    dims: dict[str, dict[str, int]]
    #: The build settings that change the engine (nd_tiling, share_weights, ...).
    build: dict[str, Any]
    size: int
    device: str
    created: str
    status: str  # ok | stale | missing | corrupt
    reason: str
    engine: str
    #: eager / engine as ``backend: auto`` measured it, for an engine auto kept; else None.
    speedup: float | None = None


@dataclass
class Listing:
    cache_dir: Path
    engines: list[ListedEngine]
    #: Files no entry references, relative to the cache (``purge`` removes them).
    orphans: list[str]
    #: The recorded ``backend: auto`` choices, by name.
    choices: list[Choice]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"cache_dir": str(self.cache_dir), "entries": [asdict(e) for e in self.engines],
                "orphans": self.orphans, "choices": [c.to_dict() for c in self.choices],
                "warnings": self.warnings}


def list_cache(cache: Cache) -> Listing:
    """The cache's engines by name (then key), each with its state here; the manifest's
    warnings (unreadable or malformed entries) are in ``warnings``."""
    entries = cache.entries()
    choices = sorted(cache.choices().values(), key=lambda c: c.name)
    engines = []
    for key, e in sorted(entries.items(), key=lambda kv: (kv[1].name, kv[0])):
        st = entry_status(cache, e)
        engines.append(ListedEngine(
            key=key, name=e.name, component=e.component, backend=e.backend,
            backend_version=e.backend_version, dtype=e.dtype,
            dims={n: r.to_dict() for n, r in e.dims.items()}, build=e.engine_settings,
            size=e.engine.size, device=e.device_name or "", created=e.created or "",
            status=st.state, reason=st.reason, engine=e.engine.file,
            speedup=kept_speedup(choices, key)))
    orphans = [p.relative_to(cache.root).as_posix() for p in cache.orphans(entries)]
    return Listing(cache.root, engines, orphans, choices, list(cache.warnings))


def kept_speedup(choices: list[Choice], key: str) -> float | None:
    """The speed-up ``backend: auto`` measured for the engine with this key, when it kept it."""
    kept = next((c for ch in choices for c in ch.candidates
                 if c.key == key and c.outcome == "kept"), None)
    return kept.speedup if kept else None
