"""The library versions FramePack pins and framepack-trt supports, against what is installed.

FramePack's ``requirements.txt`` pins the model libraries (diffusers 0.33.1, transformers
4.46.2, accelerate 1.6.0); its Windows one-click package ships them in its own Python.
framepack-trt supports those and the newest (pyproject.toml's ranges; CI runs both ends,
README "Tested versions"), so it installs into FramePack's environment without changing them.
No torch import here (``doctor`` reports a broken torch instead of failing on it).
"""

from __future__ import annotations

import re
from pathlib import Path

from framepack_trt.device import package_version

#: FramePack's pins of the libraries framepack-trt runs with (lllyasviel/FramePack
#: requirements.txt). A FramePack folder's own requirements.txt is read instead when known.
FRAMEPACK_PINS = {"diffusers": "0.33.1", "transformers": "4.46.2", "accelerate": "1.6.0"}

#: What framepack-trt supports: (lowest, first unsupported or None), as in pyproject.toml.
SUPPORTED = {"torch": ("2.9", None), "diffusers": ("0.33.1", None),
             "transformers": ("4.46.2", "6")}

#: The two ends CI runs the suite on (README "Tested versions").
TESTED = {"diffusers": ("0.33.1", "0.42.1"), "transformers": ("4.46.2", "5.25.0")}

_PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)")


def read_pins(requirements: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, for the libraries of FRAMEPACK_PINS."""
    pins = {}
    for line in requirements.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _PIN.match(line)
        if m and m.group(1).lower() in FRAMEPACK_PINS:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def framepack_pins(folder: Path | None = None) -> tuple[dict[str, str], str]:
    """FramePack's pins and where they come from: ``folder``'s requirements.txt when it has
    one that pins any of them, else FRAMEPACK_PINS (FramePack's upstream file)."""
    if folder is not None and (folder / "requirements.txt").is_file():
        pins = read_pins(folder / "requirements.txt")
        if pins:
            return pins, str(folder / "requirements.txt")
    return dict(FRAMEPACK_PINS), "FramePack's upstream requirements.txt"


def _key(version: str) -> tuple:
    """A version as a tuple for comparisons (release numbers; a local suffix is ignored)."""
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(version).release)
    except InvalidVersion:
        return (1, tuple(int(p) for p in re.findall(r"\d+", version)))


def unsupported(name: str, version: str | None) -> str | None:
    """Why ``version`` of ``name`` is outside what framepack-trt supports, or None."""
    if name not in SUPPORTED:
        return None
    low, below = SUPPORTED[name]
    if version is None:
        return f"{name} is not installed; framepack-trt needs {name}>={low}"
    if _key(version) < _key(low):
        return (f"{name} {version} is older than framepack-trt supports (>={low}): "
                f"`pip install \"{name}>={low}\"`")
    if below is not None and _key(version) >= _key(below):
        return (f"{name} {version} is newer than framepack-trt supports (<{below}): "
                f"`pip install \"{name}<{below}\"`")
    return None


def pin_mismatches(pins: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """(name, pinned, installed) for every pinned library whose installed version differs."""
    out = []
    for name, pinned in pins.items():
        installed = package_version(name)
        if installed is None or _key(installed) != _key(pinned):
            out.append((name, pinned, installed))
    return out
