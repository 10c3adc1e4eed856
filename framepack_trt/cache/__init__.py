"""The engine cache (being split into storage, keys and staleness: see storage.py)."""

from framepack_trt.cache.storage import (  # noqa: F401
    CORE_KEY_FIELDS,
    DEFAULT_SUBDIR,
    ENV_VAR,
    KEY_FIELDS,
    MANIFEST_FORMAT,
    PIECES_OF,
    Cache,
    EntryStatus,
    code_fingerprint,
    engine_key,
    entry_matches,
    entry_problem,
    file_key16,
    now_iso,
    resolve_cache_dir,
    staleness,
)
