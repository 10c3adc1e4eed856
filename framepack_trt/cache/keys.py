"""Cache keys: the fields that make an engine what it is, hashed into its key.

A key is the sha256 of the canonical JSON of exactly ``KEY_FIELDS`` (sorted keys, no
whitespace): the same fields give the same key, any one field changed gives a new key. The
fields are computed by the build's plan (``build.key_fields``), which knows the components and
backends; this module knows neither, and fingerprints code from module names it is given.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from framepack_trt.util import canonical_json, sha256_text

#: The fields of a cache key. Change any one, get a new key.
KEY_FIELDS = ("component", "code", "weights", "dims", "dtype", "backend", "backend_version",
              "torch", "libraries", "device", "build")


def engine_key(fields: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of exactly the KEY_FIELDS."""
    missing = set(KEY_FIELDS) - set(fields)
    extra = set(fields) - set(KEY_FIELDS)
    if missing or extra:
        raise ValueError(f"key fields: missing {sorted(missing)}, unexpected {sorted(extra)}")
    return sha256_text(canonical_json(fields))


def modules_fingerprint(modules: Iterable[str]) -> str:
    """sha256 of the source files of these modules (by dotted name), read from disk (found
    with ``importlib.util.find_spec``, not imported). An engine's key field ``code`` is this
    over the modules that turn its component into an engine with its backend
    (``engine_status.code_fingerprint``)."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        spec = importlib.util.find_spec(name)
        h.update(name.encode() + b"\0")
        h.update(Path(spec.origin).read_bytes() if spec and spec.origin else b"missing")
    return h.hexdigest()
