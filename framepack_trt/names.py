"""Which engines a list of names selects: ``-c NAME`` of build, list, verify, purge and bench.

A name selects an engine by its own name, its component's name, the profile entry that asked
for it (``static: true`` and ``engines: blocks`` make several engines of one entry), or a
whole component for its pieces (``-c transformer``: the transformer's block engines). The
same rule selects a profile's entries and the recorded ``backend: auto`` choices.
"""

from __future__ import annotations

from framepack_trt.cache.entry import Entry
from framepack_trt.transformer.names import PIECES_OF


def selects(names: list[str] | None, name: str, component: str,
            profile_entry: str | None = None) -> bool:
    """Whether ``names`` select what is called ``name``, of ``component``, made for the
    profile entry ``profile_entry`` (all are selected when ``names`` is empty)."""
    return (not names or name in names or component in names or profile_entry in names
            or any(component in PIECES_OF.get(n, ()) for n in names))


def entry_matches(entry: Entry, names: list[str] | None) -> bool:
    """Whether an engine in the cache is selected by ``names``."""
    return selects(names, entry.name, entry.component, entry.profile_entry)
