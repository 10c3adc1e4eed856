"""AOTInductor on CUDA: build the tiny encoders in fp16 on the GPU, load in a fresh process,
verify quick and full against the eager transformers modules."""

from __future__ import annotations

import json

from conftest import cli, write_profile


def test_aoti_cuda_tiny_encoders(tmp_path, tiny_weights):
    p = write_profile(tmp_path / "gpu.yaml", [
        {"component": name, "source": {"path": str(tiny_weights[name])}, "dtype": "float16",
         "dims": {"batch": {"min": 1, "opt": 1, "max": 2}}}
        for name in ("clip_text", "llama_text", "siglip_image")], device="cuda")
    cache = tmp_path / "cache"
    r = cli("build", "--profile", str(p), "--cache-dir", str(cache), check=True)
    assert "3 built, 0 cached, 0 failed" in r.stdout
    rows = json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)["entries"]
    assert all(e["status"] == "ok" and "sm" in e["device"] for e in rows)
    r = cli("verify", "--cache-dir", str(cache), "--full", "--json", check=True)
    assert json.loads(r.stdout)["passed"]
