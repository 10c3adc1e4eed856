"""Which engines belong to a loaded model: by its checkpoint (the folder or repo it was loaded
from), or, for engines that take the weights as inputs, by its architecture. Engines are never
picked by component name alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from framepack_trt.cache import Cache, Choice, Entry
from framepack_trt.components.base import get_component
from framepack_trt.errors import FramepackTrtError
from framepack_trt.sources import Source, architecture_config, materialize_random, resolve_local_dir


def checkpoint_dir(entry: Entry | Choice, cache: Cache) -> tuple[Path | None, str | None]:
    """The local folder and (for repo sources) the repo id an entry's (or an auto choice's)
    weights came from."""
    source = Source.from_dict(entry.source)
    try:
        if source.kind == "random":
            local = materialize_random(source, get_component(entry.component), cache.weights_dir)
        else:
            local = resolve_local_dir(source)
    except FramepackTrtError:
        local = None
    return (local.resolve() if local else None), (source.repo if source.kind == "repo" else None)


def same_checkpoint(entry: Entry, model, cache: Cache) -> bool:
    """Whether ``model`` was loaded from the weights the entry was built from (by the folder or
    repo id transformers records as ``config._name_or_path``)."""
    loaded_from = str(getattr(model.config, "_name_or_path", "") or "")
    if not loaded_from:
        return False
    local, repo = checkpoint_dir(entry, cache)
    if repo is not None and loaded_from == repo:
        return True
    p = Path(loaded_from)
    if local is None or not p.is_dir():
        return False
    # from_pretrained(folder, subfolder=...) records the folder without the subfolder.
    subfolder = Source.from_dict(entry.source).subfolder
    return p.resolve() == local or (bool(subfolder) and p.resolve() / subfolder == local)


def same_architecture(entry: Entry | Choice, model, cache: Cache) -> bool:
    """Whether the entry was built for the model's architecture (its config, less the keys
    naming files, classes and versions; the model's class may be FramePack's own)."""
    local, _ = checkpoint_dir(entry, cache)
    if local is None or not (local / "config.json").is_file():
        return False
    built = architecture_config(json.loads((local / "config.json").read_text()))
    mine = architecture_config(model.config)
    shared = set(built) & set(mine)
    return bool(shared) and all(built[k] == mine[k] for k in shared)
