"""How FramePack calls the modules the components run, and what an engine call then returns:
helpers for each component's ``parse_call`` (the call as the engine's inputs, or why an engine
cannot serve it) and ``wrap_output`` (what the module's ``forward`` returns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def by_name(args: Sequence[Any], kwargs: Mapping[str, Any], names: Sequence[str]) -> dict:
    """The call's arguments by name (positional ones mapped to ``names`` in order)."""
    bound = dict(zip(names, args, strict=False))
    return {**bound, **kwargs}


def not_taken(call: Mapping[str, Any], allowed: set[str]) -> str | None:
    """Why the call cannot run as an engine: arguments (other than None or False) it does
    not take; None when there are none."""
    extra = sorted(k for k, v in call.items() if k not in allowed and v not in (None, False))
    return f"the call passes {', '.join(extra)}, which the engine does not take" if extra else None


def one_tensor(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
               ) -> tuple[tuple | None, str]:
    """``parse_call`` of a module that takes one tensor, ``name`` (and ``return_dict``)."""
    call = by_name(args, kwargs, [name])
    why = not_taken(call, {name, "return_dict"})
    if why:
        return None, why
    if call.get("return_dict") is False:
        return None, "return_dict=False"
    if call.get(name) is None:
        return None, f"the engine needs {name}"
    return (call[name],), ""
