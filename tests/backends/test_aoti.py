"""The AOTInductor backend's packages carry their own C++ runtime: the wrapper library links
libstdc++ and libgcc statically with hidden symbols, so the load no longer depends on which
copies of libstdc++ code the loading process exports (torch 2.11 on CUDA segfaulted in
``aoti_load_package`` without this; docs/aoti-cuda.md). Checked on the engine the CLI built."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile

import pytest
from conftest import siglip_with_torchs_own_loader

needs_readelf = pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf")


def _entry(cache):
    return next(iter(json.loads((cache / "manifest.json").read_text())["entries"].values()))


@needs_readelf
def test_wrapper_library_has_its_own_libstdcxx(built_cache, tmp_path):
    _, cache = built_cache
    package = cache / _entry(cache)["engine"]["file"]
    zipfile.ZipFile(package).extractall(tmp_path)
    wrappers = list(tmp_path.rglob("*wrapper.so"))
    assert wrappers, "no wrapper library in the package"
    for so in wrappers:
        dynamic = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True,
                                 check=True).stdout
        needed = [line for line in dynamic.splitlines() if "(NEEDED)" in line]
        assert needed and not any("libstdc++" in n or "libgcc_s" in n for n in needed), needed
        assert "SYMBOLIC" in dynamic  # -Bsymbolic: its own definitions bind to itself


def test_package_loads_with_torchs_own_loader(built_cache):
    """A plain process that imported torch first, no LD_PRELOAD, torch's loader, not ours."""
    _, cache = built_cache
    assert siglip_with_torchs_own_loader(cache, "cpu") < 1e-4


def test_nd_tiling_sets_inductor_options_that_exist():
    """``nd_tiling`` is an engine field (a different key) and names inductor options this torch
    has: a renamed option fails here, not in the middle of a build (inductor's patch refuses
    unknown names)."""
    import torch._inductor.config as inductor_config

    from framepack_trt.backends.aoti import AotiSettings

    plain, tiled = AotiSettings(), AotiSettings(nd_tiling=True)
    assert plain.engine_fields() != tiled.engine_fields()
    extra = {k: v for k, v in tiled.inductor_configs().items()
             if k not in plain.inductor_configs()}
    assert extra == {"triton.prefer_nd_tiling": True, "triton.max_tiles": 3}
    with inductor_config.patch(tiled.inductor_configs()):
        assert inductor_config.triton.prefer_nd_tiling and inductor_config.triton.max_tiles == 3
    assert AotiSettings(compile_threads=2).inductor_configs()["compile_threads"] == 2
