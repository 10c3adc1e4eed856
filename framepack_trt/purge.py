"""What ``framepack-trt purge`` removes, decided before anything is removed.

``plan_purge`` reads the cache and returns a ``PurgePlan``: the engines that go (with why:
their state here), the ``backend: auto`` choices forgotten with them, the orphan files, the
names that selected nothing, and the bytes freed. ``PurgePlan.execute`` removes them (entries
leave the manifest before their files; an engine being built right now is left alone) and
returns what it did. The CLI shows the plan, asks, then executes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framepack_trt.cache import Cache, Choice, Entry
from framepack_trt.cache.storage import EntryStatus
from framepack_trt.engine_status import entry_status
from framepack_trt.names import entry_matches, selects
from framepack_trt.util import dir_size


@dataclass
class PurgeResult:
    engines: int  # entries removed
    files: list[Path]  # their files deleted
    busy: list[Entry]  # left alone: being built right now
    forgotten: int  # auto choices forgotten
    orphans: list[Path]  # orphan files deleted
    orphans_kept: int  # orphan files of engines being built now, left alone

    def to_dict(self) -> dict[str, Any]:
        return {"engines": self.engines, "files": [str(p) for p in self.files],
                "busy": [e.name for e in self.busy], "forgotten_choices": self.forgotten,
                "orphans": [str(p) for p in self.orphans], "orphans_kept": self.orphans_kept}


@dataclass
class PurgePlan:
    cache: Cache
    #: The engines that go, by key, with their state here.
    engines: dict[str, tuple[Entry, EntryStatus]]
    #: The auto choices forgotten, by key (a purged component is chosen again by the next build).
    choices: dict[str, Choice]
    orphans: list[Path]
    #: Every choice goes (``--all``), including any recorded after this plan was made.
    all_choices: bool = False
    #: Names given that select no engine and no choice.
    unknown: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.engines and not self.orphans and not self.choices

    @property
    def bytes_freed(self) -> int:
        """The size on disk of every file that goes: each engine's engine and golden files
        (those still there), and the orphans."""
        files = [self.cache.root / r.file for e, _ in self.engines.values() for r in e.files]
        return sum(_size(p) for p in [*files, *self.orphans])

    def to_dict(self) -> dict[str, Any]:
        return {"cache_dir": str(self.cache.root),
                "engines": [{"name": e.name, "key": e.key, "engine": e.engine.file,
                             "status": st.state, "reason": st.reason, "size": e.engine.size}
                            for e, st in self.engines.values()],
                "choices": [c.name for c in self.choices.values()],
                "orphans": [p.relative_to(self.cache.root).as_posix() for p in self.orphans],
                "unknown": self.unknown, "bytes_freed": self.bytes_freed}

    def execute(self) -> PurgeResult:
        cache = self.cache
        deleted, busy = cache.remove(list(self.engines))
        forgotten = (cache.remove_choices(None if self.all_choices else list(self.choices))
                     if self.choices else 0)
        removed = cache.remove_orphans()
        return PurgeResult(len(self.engines) - len(busy), deleted,
                           [self.engines[k][0] for k in busy], forgotten, removed,
                           max(0, len(self.orphans) - len(removed)))


def plan_purge(cache: Cache, names: list[str] | None = None, stale: bool = False,
               everything: bool = False) -> PurgePlan:
    """The engines ``names`` select (entry, component or profile-entry names; a whole for its
    pieces), those that cannot run here with ``stale`` (stale, missing or corrupt), or all
    with ``everything``; entries whose files are missing always go, and so do orphan files.
    The auto choices of the names (all with ``everything``) go with them."""
    entries = cache.entries()
    chosen = {}
    for key, e in entries.items():
        st = entry_status(cache, e)
        if (everything or st.state == "missing" or (stale and st.state != "ok")
                or (names and entry_matches(e, names))):
            chosen[key] = (e, st)
    choices = {k: c for k, c in cache.choices().items()
               if everything or (names and selects(names, c.name, c.component))}
    known = ({n for e in entries.values() for n in (e.name, e.component)}
             | {n for c in choices.values() for n in (c.name, c.component)})
    unknown = [n for n in names or () if n not in known]
    return PurgePlan(cache, chosen, choices, cache.orphans(entries), everything, unknown)


def _size(path: Path) -> int:
    """A file's or folder's size, 0 when it is gone."""
    try:
        return dir_size(path) if path.is_dir() else path.stat().st_size
    except OSError:
        return 0
