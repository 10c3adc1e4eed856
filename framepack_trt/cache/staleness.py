"""Why a cached engine is stale: built for another device, or with software or code that has
changed since.

An entry's key fields record what it was built with; ``staleness`` compares them (through
the entry's accessors) with this machine. The device, torch and the model libraries are read
here (``device``, no import of torch); the two things only the layers above know, the
backend's version now and the fingerprint of the code that would build the engine now, are
passed in by the caller (``engine_status.entry_status``), so the cache imports neither the
backends nor the components.
"""

from __future__ import annotations

from framepack_trt.cache.entry import Entry
from framepack_trt.device import current_device, describe, library_versions, torch_version


def staleness(entry: Entry, backend_version: str | None, code: str | None) -> str | None:
    """Why the engine cannot run on this machine's device and software, or was built by code
    or libraries that have changed since; None if neither (its key fields say what it was
    built with). ``backend_version``: the installed version of the entry's backend (None: no
    such backend); ``code``: the fingerprint of the code that builds its component now (None:
    no such component)."""
    reasons = []
    here = current_device(entry.device_type)
    if here != entry.device:
        reasons.append(f"built for {describe(entry.device)}, this machine has {describe(here)}")
    if entry.torch_version != torch_version():
        reasons.append(f"built with torch {entry.torch_version}, installed {torch_version()}")
    now = backend_version if backend_version is not None else "unknown backend"
    if now != entry.backend_version:
        reasons.append(f"built with {entry.backend_version}, installed {now}")
    libraries = library_versions()
    if entry.libraries is None:
        reasons.append("built by an older framepack-trt that did not record the diffusers and "
                       "transformers versions")
    elif entry.libraries != libraries:
        changed = [f"{k} {entry.libraries.get(k)} -> {v}" for k, v in libraries.items()
                   if entry.libraries.get(k) != v]
        reasons.append(f"built with other model libraries ({', '.join(changed)})")
    if code is None:
        reasons.append(f"unknown component {entry.component!r}")
    elif entry.code != code:
        reasons.append("the code that exports or compiles it has changed since it was built")
    return "; ".join(reasons) or None
