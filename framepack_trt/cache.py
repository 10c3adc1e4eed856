"""The engine cache: a folder of engine files, golden samples and one JSON manifest.

Layout (``<cache>`` is ``--cache-dir``, else $FRAMEPACK_TENSORRT_CACHE_DIR, else the profile's
``cache_dir``, else ``Cache/tensorrt_engines`` under the FramePack directory):

    manifest.json            versioned index: one entry per engine, keyed by its cache key
    engines/NAME-KEY16.EXT    engine files (.pt2 for AOTInductor, ...)
    golden/NAME-KEY16.safetensors   random inputs and the eager outputs, saved at build time
    weights/                 random-source weights, written once with save_pretrained
    state/                   files a backend keeps between builds (TensorRT timing caches)
    locks/                   lock files (manifest and per-engine build locks)
    tmp/                     files being written; never referenced by the manifest

An entry enters the manifest only after its files are complete (temp file + ``os.replace``),
so a crash leaves at worst an orphan file, which ``list`` reports and ``purge`` removes.
Removal goes the other way: the entry leaves the manifest first, then its files.

No torch import here: ``framepack-trt list`` must start fast.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from framepack_trt.backends import BACKENDS
from framepack_trt.device import current_device, describe, torch_version
from framepack_trt.errors import CacheError
from framepack_trt.util import atomic_write_text, canonical_json, dir_size, sha256_file, sha256_text

MANIFEST_FORMAT = 1
ENV_VAR = "FRAMEPACK_TENSORRT_CACHE_DIR"
DEFAULT_SUBDIR = Path("Cache") / "tensorrt_engines"

#: The fields of a cache key. Change any one, get a new key.
KEY_FIELDS = ("component", "component_revision", "weights", "dims", "dtype", "backend",
              "backend_version", "torch", "device", "build")


def resolve_cache_dir(
    cli: str | os.PathLike | None = None,
    profile_dir: Path | None = None,
    framepack_dir: str | os.PathLike | None = None,
) -> Path:
    """``--cache-dir``, else the environment variable, else the profile's, else the default."""
    if cli:
        return Path(cli).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    if profile_dir is not None:
        return profile_dir
    return Path(framepack_dir or Path.cwd()) / DEFAULT_SUBDIR


def engine_key(fields: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of exactly the KEY_FIELDS."""
    missing = set(KEY_FIELDS) - set(fields)
    extra = set(fields) - set(KEY_FIELDS)
    if missing or extra:
        raise ValueError(f"key fields: missing {sorted(missing)}, unexpected {sorted(extra)}")
    return sha256_text(canonical_json(fields))


@dataclass
class EntryStatus:
    state: str  # ok | stale | missing | corrupt
    reason: str = ""


class Cache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self.engines_dir = self.root / "engines"
        self.golden_dir = self.root / "golden"
        self.weights_dir = self.root / "weights"
        self.state_dir = self.root / "state"
        self.locks_dir = self.root / "locks"
        self.tmp_dir = self.root / "tmp"
        self.warnings: list[str] = []

    # -- set-up ----------------------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Create the folders; raise CacheError naming the path when that is impossible."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"cache dir {self.root} exists and is not a directory")
        try:
            for d in (self.engines_dir, self.golden_dir, self.weights_dir, self.state_dir,
                      self.locks_dir, self.tmp_dir):
                d.mkdir(parents=True, exist_ok=True)
            probe = self.tmp_dir / f".probe-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise CacheError(f"cache dir {self.root} is not writable: "
                             f"{exc.strerror or exc}; choose another with --cache-dir or "
                             f"${ENV_VAR}") from exc

    # -- locks -----------------------------------------------------------------------------
    @contextmanager
    def manifest_lock(self) -> Iterator[None]:
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.locks_dir / "manifest.lock")):
            yield

    @contextmanager
    def entry_lock(self, key: str) -> Iterator[None]:
        """Held while one engine is built, so two processes never build the same entry."""
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.locks_dir / f"{key[:16]}.lock")):
            yield

    # -- manifest --------------------------------------------------------------------------
    def entries(self) -> dict[str, dict[str, Any]]:
        """The manifest's entries. An unreadable manifest or entry is skipped with a warning
        (in ``self.warnings``); its engines are then orphans and get rebuilt."""
        if not self.manifest_path.exists():
            return {}
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            self.warnings.append(f"{self.manifest_path} is unreadable ({exc}); treated as empty")
            return {}
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            fmt = data.get("format") if isinstance(data, dict) else None
            self.warnings.append(f"{self.manifest_path} has format {fmt!r}, this version reads "
                                 f"{MANIFEST_FORMAT}; its entries are ignored and will be rebuilt")
            return {}
        out = {}
        for key, entry in (data.get("entries") or {}).items():
            if (isinstance(entry, dict) and entry.get("key") == key
                    and all(k in entry for k in ("name", "engine", "golden", "key_fields"))):
                out[key] = entry
            else:
                self.warnings.append(f"manifest entry {key[:16]} is malformed; ignored")
        return out

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        doc = {"format": MANIFEST_FORMAT, "entries": dict(sorted(entries.items()))}
        atomic_write_text(self.manifest_path, json.dumps(doc, indent=2, sort_keys=True) + "\n")

    def commit(self, entry: dict[str, Any]) -> None:
        """Add (or replace) one entry. Its files must already be complete at their paths."""
        for part in ("engine", "golden"):
            if not (self.root / entry[part]["file"]).is_file():
                raise CacheError(f"refusing to commit {entry['name']}: {entry[part]['file']} is missing")
        with self.manifest_lock():
            entries = self.entries()
            entries[entry["key"]] = entry
            self._write(entries)

    def remove(self, keys: list[str]) -> list[Path]:
        """Remove entries from the manifest, then their files. Returns the files deleted."""
        with self.manifest_lock():
            entries = self.entries()
            gone = [entries.pop(k) for k in keys if k in entries]
            self._write(entries)
        deleted = []
        for entry in gone:
            for part in ("engine", "golden"):
                path = self.root / entry[part]["file"]
                if path.exists():
                    path.unlink()
                    deleted.append(path)
        return deleted

    # -- files -----------------------------------------------------------------------------
    def file_stem(self, name: str, key: str) -> str:
        return f"{name}-{key[:16]}"

    def describe_file(self, path: Path) -> dict[str, Any]:
        st = path.stat()
        return {"file": path.relative_to(self.root).as_posix(), "sha256": sha256_file(path),
                "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def orphans(self, entries: dict[str, dict[str, Any]] | None = None) -> list[Path]:
        """Files under engines/, golden/ and tmp/ that no manifest entry references."""
        entries = self.entries() if entries is None else entries
        referenced = {self.root / e[p]["file"] for e in entries.values() for p in ("engine", "golden")}
        out = []
        for d in (self.engines_dir, self.golden_dir, self.tmp_dir):
            if d.is_dir():
                out += [p for p in sorted(d.iterdir()) if p not in referenced]
        return out

    def remove_orphans(self) -> list[Path]:
        """Delete the orphan files, except those of an engine being built right now (its build
        lock is held: its files exist before its manifest entry does). Returns what went."""
        import shutil

        from filelock import Timeout

        removed = []
        for path in self.orphans():
            key16 = path.name.split(".")[0].rsplit("-", 1)[-1]
            lock = FileLock(str(self.locks_dir / f"{key16}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # a build of this engine is in progress
            try:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(path)
            finally:
                lock.release()
        return removed

    def size(self) -> int:
        return dir_size(self.root) if self.root.is_dir() else 0

    # -- status ----------------------------------------------------------------------------
    def file_state(self, entry: dict[str, Any], deep: bool = False) -> EntryStatus:
        """missing / corrupt / ok for the entry's files. Quick mode re-hashes a file only when
        its size or modification time changed; ``deep`` always re-hashes."""
        for part in ("engine", "golden"):
            meta = entry[part]
            path = self.root / meta["file"]
            if not path.is_file():
                return EntryStatus("missing", f"{meta['file']} is missing")
            st = path.stat()
            if st.st_size != meta["size"]:
                return EntryStatus("corrupt", f"{meta['file']} has {st.st_size} bytes, "
                                   f"expected {meta['size']}")
            if deep or st.st_mtime_ns != meta["mtime_ns"]:
                if sha256_file(path) != meta["sha256"]:
                    return EntryStatus("corrupt", f"{meta['file']} fails its sha256 checksum")
        return EntryStatus("ok")

    def status(self, entry: dict[str, Any], deep: bool = False) -> EntryStatus:
        files = self.file_state(entry, deep)
        if files.state != "ok":
            return files
        reason = staleness(entry["key_fields"])
        return EntryStatus("stale", reason) if reason else EntryStatus("ok")


def entry_matches(entry: dict[str, Any], names: list[str] | None) -> bool:
    """Whether an entry is selected by ``names`` (entry names or component names; all when
    ``names`` is empty)."""
    return not names or entry["name"] in names or entry["component"] in names


def staleness(fields: dict[str, Any]) -> str | None:
    """Why an engine cannot run on this machine's device and software, or None if it can."""
    reasons = []
    here = current_device(fields["device"]["type"])
    if here != fields["device"]:
        reasons.append(f"built for {describe(fields['device'])}, this machine has {describe(here)}")
    if fields["torch"] != torch_version():
        reasons.append(f"built with torch {fields['torch']}, installed {torch_version()}")
    backend = BACKENDS.get(fields["backend"])
    now = backend().version() if backend else "unknown backend"
    if now != fields["backend_version"]:
        reasons.append(f"built with {fields['backend_version']}, installed {now}")
    return "; ".join(reasons) or None


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
