"""What differs on Windows (framepack_trt.platforms, docs/windows.md), tested on Linux by
setting ``sys.platform`` to ``win32`` around the code that reads it: every Linux-only path
refuses in one line naming what to do, and what works there takes its Windows branch. Nothing
here ran on Windows itself (README, "Windows")."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from framepack_trt.backends.aoti import AotiBackend, extra_link_flags
from framepack_trt.errors import CacheError, UsageError
from framepack_trt.platforms import windows_vector_isa


@pytest.fixture
def windows(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")


def _fake_cl(folder: Path) -> Path:
    """An executable named ``cl`` (MSVC's compiler as PATH lookup finds it)."""
    folder.mkdir()
    cl = folder / "cl"
    cl.write_text("#!/bin/sh\nexit 0\n")
    cl.chmod(0o755)
    return folder


def test_aoti_without_msvc_on_windows_says_what_to_install(windows, monkeypatch, tmp_path):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no cl.exe: a shell without vcvars64.bat
    reason = AotiBackend().unavailable_reason("cpu")
    assert reason.startswith("AOTInductor on Windows compiles with MSVC, and cl is not on PATH: "
                             "install Visual Studio 2022")
    assert "x64 Native Tools Command Prompt" in reason and "docs/windows.md" in reason
    assert "\n" not in reason
    # $CXX names the compiler (torch reads it too): found, so AOTInductor can build.
    monkeypatch.setenv("CXX", str(_fake_cl(tmp_path / "msvc") / "cl"))
    assert AotiBackend().unavailable_reason("cpu") is None
    # CUDA: Triton compiles the GPU kernels, and has no official Windows wheels.
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        reason = AotiBackend().unavailable_reason("cuda")
        assert "Triton" in reason and "pip install triton-windows" in reason


def test_libstdcxx_link_fix_is_linux_only(monkeypatch):
    """On Linux every link gets its own static libstdc++; on Windows (MSVC) nothing is
    added, and the backend's version (part of the cache key) does not claim it."""
    from torch._inductor import cpp_builder

    original = cpp_builder.CppBuilder.get_command_line
    with extra_link_flags():
        assert cpp_builder.CppBuilder.get_command_line is not original
    assert AotiBackend().version().endswith("+own-libstdcxx")
    monkeypatch.setattr(sys, "platform", "win32")
    with extra_link_flags() as changed:
        assert cpp_builder.CppBuilder.get_command_line is original and changed == []
    assert not AotiBackend().version().endswith("+own-libstdcxx")


def test_framepack_code_without_cuda_is_refused_off_linux(windows):
    import torch

    from framepack_trt.framepack_worker import VENDORED, import_framepack

    if torch.cuda.is_available():
        pytest.skip("the refusal is for machines without CUDA")
    with pytest.raises(UsageError) as err:
        import_framepack(VENDORED)
    assert str(err.value) == (
        "FramePack's code on a machine without CUDA (free host memory from os.sysconf) is "
        "Linux-only (this is win32): run it with an NVIDIA GPU and a CUDA build of torch")


def test_windows_vector_isa_from_processor_features():
    """IsProcessorFeaturePresent's AVX-512F (41) and AVX2 (40), named as /proc/cpuinfo's."""
    assert windows_vector_isa(lambda f: f in (40, 41)) == "avx512f"
    assert windows_vector_isa(lambda f: f == 40) == "avx2"
    assert windows_vector_isa(lambda f: False) == "base"


def test_peak_host_memory_is_not_claimed_off_linux(windows):
    from framepack_trt.memory import MemoryPeaks

    assert MemoryPeaks(0.0, None, None).describe() == (
        "peak memory during the build: host RSS not measured (read from /proc: Linux only)")


def test_purge_of_an_engine_in_use_on_windows_says_so(monkeypatch, tmp_path):
    """Windows refuses to delete a file another process has open (PermissionError): purge
    names the file and what to do instead of calling the cache unwritable. (Only this
    project's check is told it is Windows: filelock would take its msvcrt locks.)"""
    from framepack_trt import platforms
    from framepack_trt.cache import Cache

    monkeypatch.setattr(platforms, "is_windows", lambda: True)
    cache = Cache(tmp_path / "cache")
    cache.ensure_writable()
    engine = cache.engines_dir / "siglip_image-0123456789abcdef-01234567.pt2"
    engine.write_bytes(os.urandom(64))  # an orphan: no manifest entry references it
    unlink = Path.unlink

    def in_use(self, *args, **kwargs):
        if self == engine:
            raise PermissionError(13, "The process cannot access the file", str(self))
        return unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", in_use)
    with pytest.raises(CacheError) as err:
        cache.remove_orphans()
    assert str(err.value) == (
        f"cannot delete {engine}: another process has it open (Windows does not delete files "
        "in use, such as an engine FramePack has loaded); close that process and run the "
        "command again")
    monkeypatch.setattr(platforms, "is_windows", lambda: False)  # elsewhere: not writable
    with pytest.raises(CacheError, match="cannot write in cache dir"):
        cache.remove_orphans()
