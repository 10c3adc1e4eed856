"""The library versions this run has. In the environment ``make test-pinned`` makes (FramePack's
requirements.txt installed, then framepack-trt with its dependencies resolved by pip), every one
of FramePack's pins is still installed as pinned: installing framepack-trt changed none of them.
``FRAMEPACK_REQUIREMENTS`` names the file the Makefile installed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framepack_trt.cache import Cache
from framepack_trt.device import package_version


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (s.strip() for s in line.split("==", 1))
            pins[name] = version
    return pins


@pytest.mark.skipif(not os.environ.get("FRAMEPACK_REQUIREMENTS"),
                    reason="not FramePack's environment (make test-pinned sets "
                           "FRAMEPACK_REQUIREMENTS)")
def test_installing_framepack_trt_kept_framepacks_pins():
    pins = _pins(Path(os.environ["FRAMEPACK_REQUIREMENTS"]))
    assert {"diffusers", "transformers", "accelerate", "numpy"} <= set(pins)
    moved = {n: (v, package_version(n)) for n, v in pins.items() if package_version(n) != v}
    assert not moved, f"pinned -> installed: {moved}"
    assert package_version("framepack-trt") is not None


@pytest.mark.skipif(not os.environ.get("FRAMEPACK_REQUIREMENTS"),
                    reason="FramePack's environment only: the newest libraries' run builds the "
                           "whole tiny profile (tests/test_e2e.py)")
def test_tiny_profile_text_encoders_build_and_verify_on_framepacks_pins(tmp_path):
    """The tiny profile's two text encoders (transformers' CLIPTextModel and LlamaModel, loaded
    with transformers 4.46's ``torch_dtype``) built, listed and verified against eager in
    FramePack's environment, through the console entry point."""
    import json

    from conftest import cli

    # Two at a time: the pinned run's other tests take seconds, so the second core is free.
    r = cli("build", "--profile", "tiny", "-c", "clip_text", "-c", "llama_text", "--jobs", "2",
            cwd=tmp_path, check=True)
    assert "2 built, 0 cached, 0 failed" in r.stdout
    # Side by side (--jobs 2), each checked in its own process before it was committed.
    manifest = Cache(tmp_path / "Cache" / "tensorrt_engines").entries()
    assert sorted(e.name for e in manifest.values()) == ["clip_text", "llama_text"]
    assert all(e.build_check["mode"] == "quick" and e.build_check["cases"]
               for e in manifest.values())
    rows = json.loads(cli("list", "--json", cwd=tmp_path, check=True).stdout)["entries"]
    assert sorted((e["name"], e["status"]) for e in rows) == [("clip_text", "ok"),
                                                                ("llama_text", "ok")]
    r = cli("verify", "--json", cwd=tmp_path, check=True)
    result = json.loads(r.stdout)
    assert result["passed"] and result["counts"] == {"passed": 2, "failed": 0, "skipped": 0}
