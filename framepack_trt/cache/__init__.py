"""The engine cache: a folder of engine files, golden samples and one JSON manifest.

    entry.py      one manifest entry, typed (``Entry``): what build writes and readers use
    choices.py    one recorded ``backend: auto`` choice, typed (``Choice``)
    storage.py    the folder, its files and locks, the manifest read and written (``Cache``)
    keys.py       the fields of a cache key and its hash, code fingerprints from module files
    staleness.py  why an engine is stale (device, torch, libraries; backend version and code,
                  passed in by the caller)

Layered: entry, choices < storage < keys, staleness; none of them imports the backends or the components
(``engine_status`` above them joins the files' state and staleness with what they know).
No torch import here: ``framepack-trt list`` must start fast.
"""

from framepack_trt.cache.choices import Choice
from framepack_trt.cache.entry import Entry
from framepack_trt.cache.storage import Cache, now_iso, resolve_cache_dir

__all__ = ["Cache", "Choice", "Entry", "now_iso", "resolve_cache_dir"]
