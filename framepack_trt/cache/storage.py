"""The cache's storage: a folder of engine files, golden samples and one JSON manifest, its
locks, and the manifest read (into ``entry.Entry`` and ``choices.Choice`` objects) and written.

Layout (``<cache>`` is ``--cache-dir``, else $FRAMEPACK_TENSORRT_CACHE_DIR, else the profile's
``cache_dir``, else ``Cache/tensorrt_engines`` under the FramePack directory):

    manifest.json            versioned index: one entry per engine, keyed by its cache key
    engines/NAME-KEY16-BUILD.EXT    engine files (.pt2 for AOTInductor, ...); BUILD is 8 hex
                             digits new for every build, so a rebuild never writes over the
                             files of the entry it replaces
    golden/NAME-KEY16-BUILD.safetensors   random inputs and eager outputs, saved at build time
    weights/                 random-source weights, written once with save_pretrained
    state/                   files a backend keeps between builds (TensorRT timing caches)
    locks/                   lock files (manifest and per-engine build locks)
    tmp/                     files being written; never referenced by the manifest

An entry enters the manifest only after its files are complete (temp file + ``os.replace``),
so a crash leaves at worst an orphan file, which ``list`` reports and ``purge`` removes. A
rebuild commits its new files in place of the old entry and only then deletes the old files.
Removal goes the other way: the entry leaves the manifest first, then its files. Files of an
engine whose build lock is held are never removed.

No torch import here: ``framepack-trt list`` must start fast.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from framepack_trt.cache.choices import Choice, ChoiceError
from framepack_trt.cache.entry import Entry, EntryError, FileRecord
from framepack_trt.errors import CacheError
from framepack_trt.util import atomic_write_text, dir_size, sha256_file

MANIFEST_FORMAT = 1
ENV_VAR = "FRAMEPACK_TENSORRT_CACHE_DIR"
DEFAULT_SUBDIR = Path("Cache") / "tensorrt_engines"


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


#: ``-KEY16-BUILD`` (or the older ``-KEY16``) before a file's suffix: the key of the engine
#: a cache file belongs to. Names may contain dots and dashes; the last match counts.
_FILE_KEY = re.compile(r"-([0-9a-f]{16})(?:-[0-9a-f]{8})?(?=\.|$)")


def file_key16(path: Path) -> str | None:
    """The 16-digit key prefix in a cache file's name, or None for a foreign file."""
    found = _FILE_KEY.findall(path.name)
    return found[-1] if found else None


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
        self._read()  # a manifest of another format: refuse before any work is done

    # -- locks -----------------------------------------------------------------------------
    def _lock(self, name: str) -> FileLock:
        """A lock file under locks/; a cache we cannot write is a CacheError, not a traceback."""
        try:
            self.locks_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._not_writable(exc) from exc
        return FileLock(str(self.locks_dir / name))

    def _not_writable(self, exc: OSError) -> CacheError:
        return CacheError(f"cannot write in cache dir {self.root}: {exc.strerror or exc}; this "
                          f"command changes the cache: run it where the cache is writable, or "
                          f"choose another with --cache-dir or ${ENV_VAR}")

    @contextmanager
    def _held(self, lock: FileLock, timeout: float = -1) -> Iterator[None]:
        try:
            lock.acquire(timeout=timeout)
        except Timeout:  # an OSError too, but not a permissions problem
            raise
        except OSError as exc:
            raise self._not_writable(exc) from exc
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def manifest_lock(self) -> Iterator[None]:
        with self._held(self._lock("manifest.lock")):
            yield

    @contextmanager
    def entry_lock(self, key: str, timeout: float = -1) -> Iterator[None]:
        """Held while one engine is built or removed, so two processes never build the same
        entry and nothing removes the files of an engine being built. With ``timeout`` >= 0,
        ``filelock.Timeout`` when another process holds it that long."""
        with self._held(self._lock(f"{key[:16]}.lock"), timeout):
            yield

    # -- manifest --------------------------------------------------------------------------
    def entries(self) -> dict[str, Entry]:
        """The manifest's entries. An unreadable manifest or a malformed entry is skipped with a
        warning (in ``self.warnings``): its engines are then missing and get rebuilt. A manifest
        in a format this version does not know is a CacheError: nothing may change it."""
        return self._load()[0]

    def choices(self) -> dict[str, Choice]:
        """The recorded ``backend: auto`` choices (auto.py), by choice key. A malformed one is
        skipped with a warning: that component is chosen again by the next build."""
        return self._load()[1]

    def _load(self) -> tuple[dict[str, Entry], dict[str, Choice]]:
        """Entries and choices from one read of the manifest (see ``entries``, ``choices``)."""
        doc = self._read() or {}
        entries: dict[str, Entry] = {}
        raw = doc.get("entries")
        if raw is not None and not isinstance(raw, dict):
            self.warnings.append(f"{self.manifest_path}: 'entries' is a {type(raw).__name__}, "
                                 f"not an object; its entries are ignored and will be rebuilt")
        for key, value in (raw.items() if isinstance(raw, dict) else ()):
            try:
                entry = Entry.from_dict(value)
                if entry.key != key:
                    raise EntryError("its key does not match its place in the manifest")
            except EntryError as exc:
                self.warnings.append(f"manifest entry {str(key)[:16]} is malformed ({exc}); "
                                     f"ignored, it will be rebuilt")
            else:
                entries[key] = entry
        choices: dict[str, Choice] = {}
        raw = doc.get("choices") or {}
        for key, c in (raw.items() if isinstance(raw, dict) else ()):
            try:
                choices[key] = Choice.from_dict(c)
            except ChoiceError:
                self.warnings.append(f"manifest choice {str(key)[:16]} is malformed; ignored, "
                                     f"it will be made again")
        return entries, choices

    def _read(self) -> dict[str, Any] | None:
        """The manifest document, None when there is none or it cannot be parsed (a warning)."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"cache dir {self.root} exists and is not a directory; choose "
                             f"another with --cache-dir or ${ENV_VAR}")
        if not self.manifest_path.is_file():
            return None
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            self.warnings.append(f"{self.manifest_path} is unreadable ({exc}); treated as empty")
            return None
        if not isinstance(data, dict):
            self.warnings.append(f"{self.manifest_path} is not a JSON object; treated as empty")
            return None
        if data.get("format") != MANIFEST_FORMAT:
            raise CacheError(
                f"{self.manifest_path} has format {data.get('format')!r}; this framepack-trt "
                f"reads and writes format {MANIFEST_FORMAT} only, and changes nothing in this "
                f"cache. Use the framepack-trt that wrote it, or another --cache-dir")
        return data

    def record_choice(self, key: str, choice: Choice) -> None:
        with self.manifest_lock():
            entries, choices = self._load()
            choices[key] = choice
            self._write(entries, choices)

    def remove_choices(self, keys: list[str] | None = None) -> int:
        """Forget the auto choices with these keys (all when None)."""
        with self.manifest_lock():
            entries, choices = self._load()
            keep = {k: c for k, c in choices.items() if keys is not None and k not in keys}
            if len(keep) != len(choices):
                self._write(entries, keep)
        return len(choices) - len(keep)

    def _write(self, entries: dict[str, Entry], choices: dict[str, Choice]) -> None:
        """Write the manifest (called under the manifest lock, with what ``_load`` read)."""
        doc = {"format": MANIFEST_FORMAT,
               "entries": {k: e.to_dict() for k, e in sorted(entries.items())},
               "choices": {k: c.to_dict() for k, c in sorted(choices.items())}}
        try:
            atomic_write_text(self.manifest_path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise self._not_writable(exc) from exc

    def commit(self, entry: Entry) -> Entry | None:
        """Add (or replace) one entry; its files must already be complete at their paths. The
        files of the entry it replaces are deleted after the new entry is in the manifest.
        Returns the replaced entry."""
        for record in entry.files:
            if not (self.root / record.file).is_file():
                raise CacheError(f"refusing to commit {entry.name}: {record.file} is missing")
        with self.manifest_lock():
            entries, choices = self._load()
            old = entries.get(entry.key)
            entries[entry.key] = entry
            self._write(entries, choices)
        if old:
            self._delete_files(old, keep=entry, in_use_ok=True)
        return old

    def _delete_files(self, entry: Entry, keep: Entry | None = None,
                      in_use_ok: bool = False) -> list[Path]:
        """Delete an entry's files (not those ``keep`` has). ``in_use_ok``: a file another
        process has open on Windows stays, as an orphan, with a warning (a rebuild's old files:
        the new entry is in already)."""
        kept = {r.file for r in keep.files} if keep else set()
        deleted = []
        for record in entry.files:
            if record.file in kept:
                continue
            path = self.root / record.file
            try:
                path.unlink()
                deleted.append(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                problem = self._in_use(path, exc)
                if problem and in_use_ok:
                    self.warnings.append(f"{problem}; it stays as an orphan file, which "
                                         "`framepack-trt purge --stale --yes` removes later")
                    continue
                raise (CacheError(problem) if problem else self._not_writable(exc)) from exc
        return deleted

    @staticmethod
    def _in_use(path: Path, exc: OSError) -> str | None:
        """On Windows a file another process has open (an engine FramePack loaded) cannot be
        deleted: the one line that says so, instead of "not writable"; None elsewhere."""
        from framepack_trt.platforms import is_windows

        if is_windows() and isinstance(exc, PermissionError):
            return (f"cannot delete {path}: another process has it open (Windows does not delete "
                    "files in use, such as an engine FramePack has loaded); close that process "
                    "and run the command again")
        return None

    def remove(self, keys: list[str]) -> tuple[list[Path], list[str]]:
        """Remove entries from the manifest, then their files. An entry whose engine is being
        built right now (its lock is held) is left alone. Returns the files deleted and the
        keys left alone."""
        deleted: list[Path] = []
        busy: list[str] = []
        for key in keys:
            try:
                with self.entry_lock(key, timeout=0):
                    with self.manifest_lock():
                        entries, choices = self._load()
                        gone = entries.pop(key, None)
                        if gone is not None:
                            self._write(entries, choices)
                    if gone is not None:
                        deleted += self._delete_files(gone)
            except Timeout:
                busy.append(key)
        return deleted, busy

    # -- files -----------------------------------------------------------------------------
    def file_stem(self, name: str, key: str) -> str:
        """A new stem for one build's files: never that of a file already in the cache."""
        return f"{name}-{key[:16]}-{secrets.token_hex(4)}"

    def describe_file(self, path: Path) -> FileRecord:
        st = path.stat()
        return FileRecord(path.relative_to(self.root).as_posix(), sha256_file(path), st.st_size,
                          st.st_mtime_ns)

    def orphans(self, entries: dict[str, Entry] | None = None) -> list[Path]:
        """Files under engines/, golden/ and tmp/ that no manifest entry references."""
        entries = self.entries() if entries is None else entries
        referenced = {self.root / r.file for e in entries.values() for r in e.files}
        out = []
        for d in (self.engines_dir, self.golden_dir, self.tmp_dir):
            if d.is_dir():
                out += [p for p in sorted(d.iterdir()) if p not in referenced]
        return out

    def remove_orphans(self) -> list[Path]:
        """Delete the orphan files, except those of an engine being built right now (its build
        lock is held: its files exist before its manifest entry does). Returns what went."""
        import shutil

        removed = []
        for path in self.orphans():
            key16 = file_key16(path)
            try:
                with self.entry_lock(key16, timeout=0) if key16 else nullcontext():
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
                    removed.append(path)
            except Timeout:
                continue  # a build of this engine is in progress
            except CacheError:
                raise
            except OSError as exc:
                problem = self._in_use(path, exc)
                raise (CacheError(problem) if problem else self._not_writable(exc)) from exc
        return removed

    def size(self) -> int:
        return dir_size(self.root) if self.root.is_dir() else 0

    # -- the files' state ------------------------------------------------------------------
    def file_state(self, entry: Entry, deep: bool = False) -> EntryStatus:
        """missing / corrupt / ok for the entry's files. Quick mode re-hashes a file only when
        its size or modification time changed; ``deep`` always re-hashes."""
        for record in entry.files:
            path = self.root / record.file
            if not path.is_file():
                return EntryStatus("missing", f"{record.file} is missing")
            st = path.stat()
            if st.st_size != record.size:
                return EntryStatus("corrupt", f"{record.file} has {st.st_size} bytes, "
                                   f"expected {record.size}")
            if deep or st.st_mtime_ns != record.mtime_ns:
                if sha256_file(path) != record.sha256:
                    return EntryStatus("corrupt", f"{record.file} fails its sha256 checksum")
        return EntryStatus("ok")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
