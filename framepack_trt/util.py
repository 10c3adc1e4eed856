"""Small helpers shared by the cache, sources and CLI (no torch)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the same object always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class ChildFailed(Exception):
    """A fresh-process run that timed out or died; the message says how."""


def run_in_fresh_process(module: str, entry: Any, args: list[str], timeout: float) -> Any:
    """``python -m MODULE ENTRY_JSON RESULT_JSON *args`` in a new process, with ``entry`` and
    the child's JSON result exchanged through files in a private temporary folder (outside
    any cache: nothing a purge touches, and stray prints on stdout are harmless). Returns the
    result; ChildFailed when the child overruns ``timeout`` seconds or exits without one."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="framepack-trt-") as tmp:
        entry_file, result_file = Path(tmp) / "entry.json", Path(tmp) / "result.json"
        entry_file.write_text(json.dumps(entry))
        cmd = [sys.executable, "-m", module, str(entry_file), str(result_file), *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ChildFailed(f"did not finish within {timeout:.0f} s") from exc
        if proc.returncode == 0 and result_file.is_file():
            return json.loads(result_file.read_text())
    how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
           else f"exit code {proc.returncode}")
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    raise ChildFailed(f"died ({how}): {tail}")


def quiet_torch_warnings() -> None:
    """torch's own deprecation chatter from inside torch.export / inductor, not the user's
    business (the CLI's process and the building processes of ``--jobs``)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
