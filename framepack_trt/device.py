"""Which device an engine is for, described without importing torch.

CPU: architecture and the widest vector ISA (AOTInductor's CPU code uses it). CUDA: GPU name and
compute capability, from torch when it is already imported, else from ``nvidia-smi``.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from functools import lru_cache
from importlib import metadata


def package_version(*names: str) -> str | None:
    """The installed version of the first distribution found among ``names``, or None."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def torch_version() -> str:
    return package_version("torch") or "not installed"


@lru_cache(maxsize=1)
def cpu_device() -> dict[str, str]:
    arch = platform.machine()
    if sys.platform == "win32":  # no /proc/cpuinfo: Windows' processor feature flags
        from framepack_trt.platforms import windows_vector_isa

        return {"type": "cpu", "arch": arch, "isa": windows_vector_isa()}
    isa = "base"
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        flags = set()
        for line in text.splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[1].split())
                break
        for name in ("avx512f", "avx2", "sve", "asimd"):
            if name in flags:
                isa = name
                break
    except OSError:
        pass
    return {"type": "cpu", "arch": arch, "isa": isa}


def _first_visible_index() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    first = visible.split(",")[0].strip()
    return int(first) if first.isdigit() else 0


@lru_cache(maxsize=1)
def cuda_device() -> dict[str, str] | None:
    """The first visible GPU, or None when there is none."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        return {"type": "cuda", "name": torch.cuda.get_device_name(0),
                "capability": f"{major}.{minor}"}
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    idx = _first_visible_index()
    if not out or idx >= len(out):
        return None
    name, cap = (s.strip() for s in out[idx].rsplit(",", 1))
    return {"type": "cuda", "name": name, "capability": cap}


def current_device(kind: str) -> dict[str, str] | None:
    return cpu_device() if kind == "cpu" else cuda_device()


def describe(device: dict[str, str] | None) -> str:
    if not device:
        return "none"
    if device["type"] == "cpu":
        return f"cpu {device['arch']} ({device['isa']})"
    return f"{device['name']} (sm {device['capability']})"


#: Libraries whose code is traced into the exported graphs (the model classes).
TRACED_LIBRARIES = ("diffusers", "transformers")


def library_versions() -> dict[str, str | None]:
    """Installed versions of TRACED_LIBRARIES (None where one is missing); no import."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in TRACED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
