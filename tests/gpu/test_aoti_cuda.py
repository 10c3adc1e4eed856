"""AOTInductor on CUDA: build the tiny encoders in fp16 on the GPU, load in a fresh process,
verify quick and full against the eager transformers modules; and load a package with torch's
own ``aoti_load_package`` in a plain process that imported torch first, with no LD_PRELOAD
(torch 2.11's packages crashed there until the backend linked libstdc++ first)."""

from __future__ import annotations

import json

from conftest import cli, siglip_with_torchs_own_loader, write_profile


def test_aoti_cuda_tiny_encoders(tmp_path, tiny_weights):
    # LLaMA's text length is static on CUDA: torch 2.11 cannot export it dynamic there.
    extra = {"llama_text": {"text_len": 64}}
    p = write_profile(tmp_path / "gpu.yaml", [
        {"component": name, "source": {"path": str(tiny_weights[name])}, "dtype": "float16",
         "dims": {"batch": {"min": 1, "opt": 1, "max": 2}, **extra.get(name, {})}}
        for name in ("clip_text", "llama_text", "siglip_image")], device="cuda")
    cache = tmp_path / "cache"
    r = cli("build", "--profile", str(p), "--cache-dir", str(cache), check=True)
    assert "3 built, 0 cached, 0 failed" in r.stdout
    rows = json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)["entries"]
    assert all(e["status"] == "ok" and "sm" in e["device"] for e in rows)
    r = cli("verify", "--cache-dir", str(cache), "--full", "--json", check=True)
    assert json.loads(r.stdout)["passed"]

    assert siglip_with_torchs_own_loader(cache, "cuda") < 1e-2
