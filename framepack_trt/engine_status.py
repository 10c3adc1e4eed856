"""Whether a cached engine can run here: its files are whole (the cache's storage) and it is
not stale (the cache's staleness), against what this installation would build now.

The two values staleness needs from above the cache, each backend's version and the
fingerprint of the code that turns a component into an engine with a backend, are computed
here, where the backends and the components are known, and passed down.
"""

from __future__ import annotations

import functools

from framepack_trt.backends import BACKENDS
from framepack_trt.cache.entry import Entry
from framepack_trt.cache.keys import modules_fingerprint
from framepack_trt.cache.staleness import staleness
from framepack_trt.cache.storage import Cache, EntryStatus
from framepack_trt.components.base import get_component
from framepack_trt.errors import UsageError


@functools.cache
def code_fingerprint(component: str, backend: str) -> str:
    """sha256 of the source of the code that turns ``component`` into an engine with
    ``backend``: the adapter's module, the modules it exports through (``code_modules``) and
    the backend's module with those it compiles through (its ``code_modules``). Read from the
    files; nothing is imported."""
    adapter = get_component(component)
    modules = {type(adapter).__module__, *adapter.code_modules}
    if backend in BACKENDS:
        modules.update((BACKENDS[backend].__module__, *BACKENDS[backend].code_modules))
    return modules_fingerprint(modules)


def backend_version(name: str) -> str | None:
    """The installed version of a backend, None for a backend this version does not know."""
    backend = BACKENDS.get(name)
    return backend().version() if backend else None


def entry_status(cache: Cache, entry: Entry, deep: bool = False) -> EntryStatus:
    """ok / missing / corrupt (``Cache.file_state``; ``deep`` re-hashes every file) / stale
    (``staleness``, with the reason)."""
    files = cache.file_state(entry, deep)
    if files.state != "ok":
        return files
    try:
        code = code_fingerprint(entry.component, entry.backend)
    except UsageError:
        code = None
    reason = staleness(entry, backend_version(entry.backend), code)
    return EntryStatus("stale", reason) if reason else EntryStatus("ok")
