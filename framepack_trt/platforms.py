"""Which operating system this is, and what differs on Windows (docs/windows.md).

FramePack's largest group of users runs its one-click Windows package. What framepack-trt does
differently there, each decided here or at the one place that needs it:

- AOTInductor compiles C++ with MSVC's ``cl.exe`` (torch's choice on Windows; ``$CXX`` to
  override), which must be on PATH: a shell opened as "x64 Native Tools Command Prompt for
  VS 2022" or after ``vcvars64.bat`` (``aoti_unavailable_on_windows``). Its CUDA kernels are
  Triton's, which has no official Windows wheels.
- The libstdc++ link fix of AOTInductor packages (``backends.aoti.extra_link_flags``) is for
  Linux's dynamic linker; MSVC links its own runtime, so nothing is added there.
- FramePack's worker without CUDA (tests, CPU benches) reads free host memory with
  ``os.sysconf``: Linux only, refused on Windows in one line.
- Peak host memory of a build is read from ``/proc``: not measured on Windows (said so).
- The CPU's vector ISA (part of a CPU engine's cache key) comes from ``/proc/cpuinfo`` on
  Linux and from ``IsProcessorFeaturePresent`` on Windows.
- A file another process has open (an engine FramePack loaded) cannot be deleted on Windows:
  ``purge`` says so instead of calling the cache unwritable.

Every check reads ``sys.platform`` when it runs, so tests can simulate another platform.
"""

from __future__ import annotations

import os
import shutil
import sys


def is_windows() -> bool:
    return sys.platform == "win32"


def is_linux() -> bool:
    return sys.platform.startswith("linux")


#: What to do on Windows when AOTInductor's compiler is missing (the exact steps:
#: docs/windows.md).
MSVC_HINT = ("install Visual Studio 2022 (Build Tools suffice) with 'Desktop development with "
             "C++' and its English language pack, then run framepack-trt from the 'x64 Native "
             "Tools Command Prompt for VS 2022' (or after calling vcvars64.bat); docs/windows.md")


def aoti_unavailable_on_windows(device: str) -> str | None:
    """Why AOTInductor cannot build for ``device`` on this Windows machine, or None."""
    compiler = os.environ.get("CXX", "cl")
    if not shutil.which(compiler):
        return (f"AOTInductor on Windows compiles with MSVC, and {compiler} is not on PATH: "
                f"{MSVC_HINT}")
    if device == "cuda":
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            return ("AOTInductor on CUDA compiles its GPU kernels with Triton, which has no "
                    "official Windows wheels: `pip install triton-windows` (community builds, "
                    "untested here; docs/windows.md), or use the TensorRT backend")
    return None


def linux_only(what: str, instead: str) -> str:
    """The one line for a code path that runs on Linux only."""
    return f"{what} is Linux-only (this is {sys.platform}): {instead}"


#: Windows' IsProcessorFeaturePresent feature numbers, widest first (winnt.h).
WINDOWS_ISA_FEATURES = (("avx512f", 41), ("avx2", 40))


def windows_vector_isa(present=None) -> str:
    """The widest vector ISA of this CPU, named as on Linux (``avx512f``, ``avx2``, ``base``),
    from ``IsProcessorFeaturePresent`` (``present``: a stand-in for it, tests only)."""
    if present is None:
        import ctypes

        present = ctypes.windll.kernel32.IsProcessorFeaturePresent  # type: ignore[attr-defined]
    for name, feature in WINDOWS_ISA_FEATURES:
        if present(feature):
            return name
    return "base"
