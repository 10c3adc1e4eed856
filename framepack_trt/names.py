"""Which engines a list of names selects: ``-c NAME`` of build, list, verify, purge and bench.

A name selects an engine by its own name, its component's name, the profile entry that asked
for it (``static: true`` and ``engines: blocks`` make several engines of one entry), or a
whole component for its pieces (``-c transformer``: the transformer's block engines).
"""

from __future__ import annotations

from typing import Any

#: Components that are pieces of another (``engines: blocks``): naming the whole
#: (``-c transformer``) selects them too.
PIECES_OF = {"transformer": ("transformer_input", "transformer_dual_block",
                             "transformer_single_block", "transformer_output",
                             "transformer_dual_block_fp8", "transformer_single_block_fp8")}


def entry_matches(entry: dict[str, Any], names: list[str] | None) -> bool:
    """Whether an entry is selected by ``names`` (entry names or component names, a whole for
    its pieces, a profile entry for the engines it became; all when ``names`` is empty)."""
    return (not names or entry["name"] in names or entry["component"] in names
            or entry.get("profile_entry") in names
            or any(entry["component"] in PIECES_OF.get(n, ()) for n in names))
