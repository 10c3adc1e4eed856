"""The VAE encoder engine (``vae_encode``) inside diffusers' own ``vae.encode``: built with
AOTInductor on the CPU from a tiny random-weight ``AutoencoderKLHunyuanVideo``, swapped in by
``use_engines(vae=...)`` for ``vae.encoder``, against the same ``encode`` on the eager model:
a whole frame (FramePack's high-VRAM mode), spatial tiles (its low-VRAM mode,
``vae.enable_tiling()``: the encoder runs once per tile, tiles of several sizes), and a frame
outside the engine's range (eager, one warning; strict raises)."""

from __future__ import annotations

import pytest
import torch
from conftest import cli, save_tiny, write_profile
from tests_helpers import rel_l2

from framepack_trt.framepack import EngineFallback, use_engines


@pytest.fixture(scope="module")
def vae_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae")
    weights = save_tiny("vae_encode", root / "weights", seed=5)
    # Latent 2..16 (16..128 pixels): whole small frames and every tile below.
    profile = write_profile(root / "vae.yaml", [{
        "component": "vae_encode", "source": {"path": str(weights)}, "dtype": "float32",
        "dims": {"latent_height": {"min": 2, "opt": 8, "max": 16},
                 "latent_width": {"min": 2, "opt": 8, "max": 16}}}])
    cli("build", "--profile", str(profile), "--cache-dir", str(root / "cache"), check=True)
    return root / "cache", weights


def load(path):
    from diffusers import AutoencoderKLHunyuanVideo

    return AutoencoderKLHunyuanVideo.from_pretrained(path).eval()


def frame(height, width, seed=0):
    """One frame in [-1, 1], (1, 3, 1, H, W), as FramePack hands its start image over."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, 1, height, width, generator=g) * 2 - 1)


def encode(vae, pixels):
    with torch.inference_mode():
        return vae.encode(pixels).latent_dist.parameters


@pytest.mark.parametrize(("height", "width", "tiled", "calls"),
                         [(96, 128, False, 1), (112, 144, True, 9)], ids=["whole", "tiled"])
def test_encode_through_the_engine(vae_cache, height, width, tiled, calls):
    cache, weights = vae_cache
    vae = load(weights)
    if tiled:  # FramePack's low-VRAM mode, with tiles small enough for the tiny test
        vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64,
                          tile_sample_stride_height=48, tile_sample_stride_width=48)
    pixels = frame(height, width)
    want = encode(vae, pixels)
    engines = use_engines(cache, strict=True, vae=vae)
    try:
        got = encode(vae, pixels)
        counts = engines.counts()
    finally:
        engines.restore()
    # 112 x 144 pixels in 64-pixel tiles at stride 48: 3 x 3 tiles of latent 8, 8, 2 by 8, 8, 6.
    assert counts == {"vae_encode": {"engine": calls, "eager": 0}}
    assert got.shape == want.shape == (1, 32, 1, height // 8, width // 8)
    assert rel_l2(got, want) < 1e-5, rel_l2(got, want)
    assert "forward" not in vae.encoder.__dict__  # restored
    assert torch.equal(encode(vae, pixels), want)


def test_a_frame_outside_the_engine_runs_eager(vae_cache):
    cache, weights = vae_cache
    vae = load(weights)
    pixels = frame(160, 96)  # latent 20 x 12: past the engine's 16
    want = encode(vae, pixels)
    engines = use_engines(cache, vae=vae)
    try:
        with pytest.warns(UserWarning, match="runs eager") as caught:
            got = encode(vae, pixels)
            encode(vae, pixels)
        counts = engines.counts()
    finally:
        engines.restore()
    assert len([w for w in caught if "runs eager" in str(w.message)]) == 1
    assert counts == {"vae_encode": {"engine": 0, "eager": 2}}
    assert torch.equal(got, want)
    engines = use_engines(cache, strict=True, vae=vae)
    try:
        with pytest.raises(EngineFallback, match="latent_height"):
            encode(vae, pixels)
    finally:
        engines.restore()


def test_enable_tensorrt_flag_serves_the_vae(vae_cache, monkeypatch):
    """FramePack's --enable-tensorrt (the fork's flag) swaps the VAE's encoder with the image
    encoder; the encode then runs through the engine."""
    import argparse

    from framepack_trt.framepack import add_arguments, engines_from_args

    cache, weights = vae_cache
    for var in ("FRAMEPACK_ENABLE_TENSORRT", "FRAMEPACK_TRT_TRANSFORMER",
                "FRAMEPACK_TRT_TEXT_ENCODERS"):
        monkeypatch.delenv(var, raising=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    vae = load(weights)
    engines = engines_from_args(parser.parse_args(["--enable-tensorrt", "--tensorrt-cache-dir",
                                                   str(cache), "--tensorrt-strict"]), vae=vae)
    try:
        assert sorted(engines.swaps) == ["vae"]
        got = encode(vae, frame(64, 96, seed=1))
        counts = engines.counts()
    finally:
        engines.restore()
    assert counts == {"vae_encode": {"engine": 1, "eager": 0}}
    assert rel_l2(got, encode(vae, frame(64, 96, seed=1))) < 1e-5
