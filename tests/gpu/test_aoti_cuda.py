"""AOTInductor on CUDA: build each tiny encoder in fp16 on the GPU, load it in a fresh process,
verify quick and full against the eager transformers module; and load the SigLIP package with
torch's own ``aoti_load_package`` in a plain process that imported torch first, with no
LD_PRELOAD (torch 2.11's packages crashed there until the backend linked its own libstdc++).
One test per encoder, so that each result stands on its own (each build takes a minute or two
on an H200)."""

from __future__ import annotations

import json

import pytest
from conftest import cli, siglip_with_torchs_own_loader, write_profile

# LLaMA's text length is static on CUDA: torch 2.11 cannot export it dynamic there.
EXTRA = {"llama_text": {"text_len": 64}}


@pytest.mark.parametrize("name", ["siglip_image", "clip_text", "llama_text"])
def test_aoti_cuda_tiny_encoder(tmp_path, tiny_weights, name):
    p = write_profile(tmp_path / "gpu.yaml", [
        {"component": name, "source": {"path": str(tiny_weights[name])}, "dtype": "float16",
         "dims": {"batch": {"min": 1, "opt": 1, "max": 2}, **EXTRA.get(name, {})}}],
        device="cuda")
    cache = tmp_path / "cache"
    r = cli("build", "--profile", str(p), "--cache-dir", str(cache), check=True)
    assert "1 built, 0 cached, 0 failed" in r.stdout
    (row,) = json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)["entries"]
    assert row["status"] == "ok" and "sm" in row["device"]
    r = cli("verify", "--cache-dir", str(cache), "--full", "--json", check=True)
    assert json.loads(r.stdout)["passed"]
    if name == "siglip_image":
        assert siglip_with_torchs_own_loader(cache, "cuda") < 1e-2
