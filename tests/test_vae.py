"""The VAE inside diffusers' own ``vae.encode`` and ``vae.decode``: the tiny profile's engines
(AOTInductor, CPU, built once per run from a tiny random-weight ``AutoencoderKLHunyuanVideo``:
``vae_encode``, ``vae_decode`` over windows of 3..5 latent frames and ``vae_decode_tail`` for 1),
swapped in by ``use_engines(vae=...)`` for ``vae.encoder`` and ``vae.decoder``, against the
same calls on the eager model:
- encode: a whole frame (FramePack's high-VRAM mode) and spatial tiles (its low-VRAM mode,
  ``vae.enable_tiling()``: the encoder runs once per tile, tiles of several sizes);
- decode: FramePack's section lengths (9 or 10 latent frames first, 18, 19 last), framewise
  windows of 5 at stride 3 (the tail windows of 3, 4 and 1), whole and tiled;
- a frame or window outside the engines: eager, one warning; strict raises."""

from __future__ import annotations

import pytest
import torch
from tests_helpers import rel_l2

from framepack_trt.framepack import EngineFallback, use_engines


@pytest.fixture(scope="module")
def vae_cache(tiny_build):
    """The tiny profile's cache, and the random VAE its three VAE engines were built from."""
    cache, _ = tiny_build
    (weights,) = (cache / "weights").glob("vae-*")
    return cache, weights


def load(path):
    from diffusers import AutoencoderKLHunyuanVideo

    return AutoencoderKLHunyuanVideo.from_pretrained(path).eval()


def frame(height, width, seed=0):
    """One frame in [-1, 1], (1, 3, 1, H, W), as FramePack hands its start image over."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, 1, height, width, generator=g) * 2 - 1)


def encode(vae, pixels):
    with torch.no_grad():
        return vae.encode(pixels).latent_dist.parameters


def latents(frames, height, width, seed=0):
    """Latents as FramePack's sampler hands them to ``vae.decode``, (1, 16, T, h, w)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, frames, height, width, generator=g)


def decode(vae, z):
    with torch.no_grad():
        return vae.decode(z).sample


def small_tiles(vae):
    """FramePack's low-VRAM mode (``vae.enable_tiling()``), with tiles small enough for the tiny
    test: 64 pixels (latent 8) at stride 48 (latent 6)."""
    vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64,
                      tile_sample_stride_height=48, tile_sample_stride_width=48)


@pytest.mark.parametrize(("height", "width", "tiled", "calls"),
                         [(96, 128, False, 1), (112, 144, True, 9)], ids=["whole", "tiled"])
def test_encode_through_the_engine(vae_cache, height, width, tiled, calls):
    cache, weights = vae_cache
    vae = load(weights)
    if tiled:
        small_tiles(vae)
    pixels = frame(height, width)
    want = encode(vae, pixels)
    engines = use_engines(cache, strict=True, vae=vae)
    try:
        got = encode(vae, pixels)
        counts = engines.counts()
    finally:
        engines.restore()
    # 112 x 144 pixels in 64-pixel tiles at stride 48: 3 x 3 tiles of latent 8, 8, 2 by 8, 8, 6.
    assert counts == {"vae_encode": {"engine": calls, "eager": 0},
                      "vae_decode": {"engine": 0, "eager": 0}}
    assert got.shape == want.shape == (1, 32, 1, height // 8, width // 8)
    assert rel_l2(got, want) < 1e-5, rel_l2(got, want)
    assert "forward" not in vae.encoder.__dict__  # restored
    assert torch.equal(encode(vae, pixels), want)


def windows_seen(vae) -> list[int]:
    """The latent frames of each call to ``vae.decoder``, from now on (a list that fills)."""
    seen, forward = [], vae.decoder.forward

    def counting(hidden_states):
        seen.append(hidden_states.shape[2])
        return forward(hidden_states)

    vae.decoder.forward = counting
    return seen


#: Framewise decoding (windows of 5 latent frames at stride 3): the windows per section length.
WINDOWS = {9: [5, 5, 3], 10: [5, 5, 4, 1], 18: [5, 5, 5, 5, 5, 3], 19: [5, 5, 5, 5, 5, 4, 1]}


@pytest.mark.parametrize("frames", sorted(WINDOWS))
def test_decode_through_the_engines(vae_cache, frames):
    """``vae.decode`` of a FramePack section: every window through an engine (the tail window
    of 1 through ``vae_decode_tail``), whole and in low-VRAM mode's tiles, equal to eager."""
    cache, weights = vae_cache
    vae = load(weights)
    z = latents(frames, 8, 10, seed=frames)
    for tiled in (False, True):
        if tiled:  # latent 8 x 10 in tiles of 8 at stride 6: 2 x 2 tiles (8, 2 by 8, 4) a window
            small_tiles(vae)
        want = decode(vae, z)
        real_decoder = type(vae.decoder).forward
        engines = use_engines(cache, strict=True, vae=vae)
        seen = windows_seen(vae)
        try:
            got = decode(vae, z)
            counts = engines.counts()
        finally:
            engines.restore()
        tiles = 4 if tiled else 1
        assert seen == [t for t in WINDOWS[frames] for _ in range(tiles)]
        assert counts["vae_decode"] == {"engine": len(seen), "eager": 0}
        assert got.shape == want.shape == (1, 3, 4 * frames - 3, 64, 80)
        assert rel_l2(got, want) < 1e-5, (tiled, rel_l2(got, want))
        # Called as FramePack's vae_decode calls it (no_grad): diffusers' blend_t edited the
        # windows in place, which inference tensors from an engine would have refused.
        assert not got.is_inference()
        assert vae.decoder.forward.__func__ is real_decoder  # restored


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
    assert counts["vae_encode"] == {"engine": 0, "eager": 2}
    assert torch.equal(got, want)
    engines = use_engines(cache, strict=True, vae=vae)
    try:
        with pytest.raises(EngineFallback, match="latent_height"):
            encode(vae, pixels)
        # 2 latent frames: decoded whole (not framewise), a window no engine covers.
        with pytest.raises(EngineFallback, match="latent_frames"):
            decode(vae, latents(2, 8, 8))
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
        assert sorted(engines.swaps) == ["vae.decoder", "vae.encoder"]
        got = encode(vae, frame(64, 96, seed=1))
        z = latents(9, 8, 12)
        got_frames = decode(vae, z)
        counts = engines.counts()
    finally:
        engines.restore()
    assert counts == {"vae_encode": {"engine": 1, "eager": 0},
                      "vae_decode": {"engine": 3, "eager": 0}}
    assert rel_l2(got, encode(vae, frame(64, 96, seed=1))) < 1e-5
    assert rel_l2(got_frames, decode(vae, z)) < 1e-5


def test_a_static_engine_is_picked_over_a_range_for_its_sizes(vae_cache, tmp_path):
    """Two engines cover a window equally near their opt sizes: ``find_engine`` and the
    swapped decoder pick the one built for exactly its sizes (a static-size engine, as the
    per-bucket decoder windows of profiles/realwidth-vae.yaml), and the range serves the other
    windows. The static entry is the tiny build's vae_decode entry recorded again with every
    size fixed at its opt sizes (its engine file covers them too), after the ranged one."""
    import dataclasses
    import json
    import shutil

    from framepack_trt.cache import Cache
    from framepack_trt.engine_status import entry_status
    from framepack_trt.runtime.selection import find_engine

    cache_dir, weights = vae_cache
    root = tmp_path / "cache"
    shutil.copytree(cache_dir, root)
    (ranged,) = [e for e in Cache(root).entries().values() if e.name == "vae_decode"]
    opt = {n: r.opt for n, r in ranged.ranges.items()}
    fixed = {n: {"min": v, "opt": v, "max": v} for n, v in opt.items()}
    static = dataclasses.replace(ranged, name="vae_decode_static", key="0" * 64,
                                 engine_dims=fixed, key_fields={**ranged.key_fields, "dims": fixed})
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["entries"][static.key] = static.to_dict()
    (root / "manifest.json").write_text(json.dumps(manifest))
    h, w = opt["latent_height"], opt["latent_width"]
    assert opt["latent_frames"] == 5
    cache = Cache(root)
    assert find_engine(cache, "vae_decode", [latents(5, h, w)]).name == "vae_decode_static"
    assert find_engine(cache, "vae_decode", [latents(3, h, w)]).name == "vae_decode"

    vae = load(root / "weights" / weights.name)
    z = latents(9, h, w, seed=9)  # windows of 5, 5 and 3 latent frames
    want = decode(vae, z)
    engines = use_engines(root, strict=True, vae=vae)
    try:
        got = decode(vae, z)
        served = engines.served()
    finally:
        engines.restore()
    assert served["vae_decode"] == {"vae_decode_static": 2, "vae_decode": 1}
    assert rel_l2(got, want) < 1e-5

    # The static engine's file broken (same size and mtime: the cache's quick check passes):
    # its first window warns once and the ranged engine serves it, and every later one.
    import os

    broken = root / "static.pt2"
    broken.write_bytes(os.urandom((root / ranged.engine.file).stat().st_size))
    static = dataclasses.replace(static, engine=dataclasses.replace(
        static.engine, file=broken.name, mtime_ns=broken.stat().st_mtime_ns))
    manifest["entries"][static.key] = static.to_dict()
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert entry_status(Cache(root), static).state == "ok"
    engines = use_engines(root, strict=True, vae=vae)
    try:
        with pytest.warns(UserWarning, match="engine vae_decode_static failed at run time "
                          r".*; the next engine takes over") as caught:
            got = decode(vae, z)
        served = engines.served()
    finally:
        engines.restore()
    assert len([w for w in caught if "failed at run time" in str(w.message)]) == 1
    assert served["vae_decode"] == {"vae_decode": 3}
    assert rel_l2(got, want) < 1e-5


@pytest.mark.parametrize(("height", "width"), [(544, 704), (416, 960)])
def test_tile_shapes_are_the_tiles_diffusers_cuts(height, width):
    # static: tiles builds one engine per shape of vae.tile_shapes: the shapes diffusers'
    # tiled decode and encode (FramePack's low-VRAM mode, default tiles) send to the cores.
    from diffusers import AutoencoderKLHunyuanVideo

    from framepack_trt.components.vae import VaeDecode, tile_shapes

    vae = AutoencoderKLHunyuanVideo(**VaeDecode.tiny_config).eval()
    vae.enable_tiling()
    sizes: dict[str, set] = {"encoder": set(), "decoder": set()}
    for core in sizes:
        module = getattr(vae, core)
        module.register_forward_pre_hook(lambda m, a, core=core: sizes[core].add(
            tuple(a[0].shape[-2:])))
    h, w = height // 8, width // 8
    encode(vae, frame(height, width))
    decode(vae, latents(1, h, w))
    assert sizes["decoder"] == set(tile_shapes(h, w))
    assert sizes["encoder"] == {(a * 8, b * 8) for a, b in tile_shapes(h, w)}
