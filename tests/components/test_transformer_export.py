"""The export-ready FramePack transformer against the diffusers module itself (fp32, CPU):
several buckets in both orientations, text lengths 1 / middle / 256, index values as the
inverted (standard) and vanilla (F1) samplers make them, both call conventions, and a
torch.export with dynamic latent height, width and text length."""

from __future__ import annotations

import pytest
import torch
from tests_helpers import rel_l2
from torch.export import Dim

from framepack_trt.transformer.export import (
    ENGINE_INPUTS,
    FramepackTransformerForExport,
    framepack_fp32_output,
    prepare_call,
)

TINY = dict(num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=1,
            num_refiner_layers=1, text_embed_dim=32, pooled_projection_dim=16,
            rope_axes_dim=(4, 6, 6), has_image_proj=True, image_proj_dim=24,
            has_clean_x_embedder=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from framepack_trt.transformer.model import transformer_class

    cls = transformer_class()  # diffusers' (0.34+), else this project's (FramePack's pin)
    path = tmp_path_factory.mktemp("tx")
    torch.manual_seed(0)
    cls(**TINY).save_pretrained(path)
    return cls.from_pretrained(path).eval()


def sampler_indices(frames: int, vanilla: bool):
    """Index tensors as FramePack's samplers build them (batch 1)."""
    if vanilla:  # F1: start, 4x, 2x, 1x history, then the new section
        idx = torch.arange(0, 1 + 16 + 2 + 1 + frames)
        start, c4, c2, c1, latent = idx.split([1, 16, 2, 1, frames])
        return latent, torch.cat([start, c1]), c2, c4
    # inverted: start, the section, then post (1x), 2x and 4x history
    idx = torch.arange(0, 1 + frames + 1 + 2 + 16)
    start, latent, post, c2, c4 = idx.split([1, frames, 1, 2, 16])
    return latent, torch.cat([start, post]), c2, c4


def call(h, w, length, vanilla=False, frames=9, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    mask = torch.zeros(1, 512, dtype=torch.bool)
    mask[:, :length] = True
    latent, clean, c2, c4 = sampler_indices(frames, vanilla)
    return dict(hidden_states=r(1, 16, frames, h, w), timestep=torch.tensor([641.0]),
                guidance=torch.tensor([10000.0]), encoder_hidden_states=r(1, 512, 32),
                encoder_attention_mask=mask, pooled_projections=r(1, 16), image_embeds=r(1, 729, 24),
                indices_latents=latent, latents_clean=r(1, 16, 2, h, w), indices_latents_clean=clean,
                latents_history_2x=r(1, 16, 2, h, w), indices_latents_history_2x=c2,
                latents_history_4x=r(1, 16, 16, h, w), indices_latents_history_4x=c4)


CASES = [(52, 120, 1, False), (120, 52, 128, True), (68, 88, 256, False), (88, 68, 40, True),
         (64, 96, 7, False), (56, 108, 200, True)]  # latent sizes of 640 buckets, both ways


def reference(model, c):
    """The diffusers module's forward, output projection in fp32 as FramePack runs it."""
    with framepack_fp32_output(model):
        return model(**c, return_dict=False)[0]


@pytest.mark.parametrize("h,w,length,vanilla", CASES)
def test_matches_diffusers(model, h, w, length, vanilla):
    c = call(h, w, length, vanilla, seed=h * w + length)
    with torch.no_grad():
        expected = reference(model, c)
        got = FramepackTransformerForExport(model)(*prepare_call(c, torch.float32, "cpu"))[0]
    assert got.shape == expected.shape == (1, 16, 9, h, w)
    assert rel_l2(got, expected) <= 1e-5


def test_framepack_convention_and_dtypes(model):
    """FramePack's own argument names, fp32 clean latents, int64 indices, bool mask."""
    from tests_helpers import TO_FRAMEPACK

    c = call(60, 104, 77, vanilla=False, seed=5)
    fp = {TO_FRAMEPACK.get(k, k): v for k, v in c.items()}
    fp["clean_latent_indices"] = fp["clean_latent_indices"][None]  # FramePack passes (1, n)
    with torch.no_grad():
        expected = reference(model, c)
        got = FramepackTransformerForExport(model)(*prepare_call(fp, torch.float32, "cpu"))[0]
    assert rel_l2(got, expected) <= 1e-5


def test_shares_parameters(model):
    wrapper = FramepackTransformerForExport(model)
    assert wrapper.model.proj_out.weight is model.proj_out.weight
    assert sum(p.numel() for p in wrapper.parameters()) == sum(p.numel() for p in model.parameters())


def test_refuses_non_prefix_mask(model):
    from framepack_trt.errors import ShapeError

    c = call(52, 120, 10)
    c["encoder_attention_mask"][0, 3] = False
    with pytest.raises(ShapeError, match="ones then zeros"):
        prepare_call(c, torch.float32, "cpu")


def test_exports_with_dynamic_height_width_and_text(model):
    """One export covers every 640 bucket: no data-dependent shape, no modular padding."""
    rows, cols = Dim("rows", min=26, max=60), Dim("cols", min=26, max=60)
    h2, w2 = Dim("h2", min=13, max=30), Dim("w2", min=13, max=30)
    h4, w4 = Dim("h4", min=7, max=15), Dim("w4", min=7, max=15)
    text = Dim("text_len", min=1, max=256)
    dyn = {"hidden_states": {3: 2 * rows, 4: 2 * cols}, "encoder_hidden_states": {1: text},
           "latents_clean": {3: 2 * rows, 4: 2 * cols},
           "latents_history_2x": {3: 4 * h2, 4: 4 * w2},
           "latents_history_4x": {3: 8 * h4, 4: 8 * w4}}
    shapes = tuple(dyn.get(name) for name in ENGINE_INPUTS)
    inputs = prepare_call(call(68, 88, 40), torch.float32, "cpu")
    program = torch.export.export(FramepackTransformerForExport(model), inputs,
                                  dynamic_shapes=shapes, strict=False)
    module = program.module()
    for h, w, length, vanilla in CASES[:3]:
        c = call(h, w, length, vanilla, seed=1)
        with torch.no_grad():
            expected = reference(model, c)
            got = module(*prepare_call(c, torch.float32, "cpu"))[0]
        assert rel_l2(got, expected) <= 1e-5, (h, w, length)


def test_bf16_weights_fp32_output(model):
    """bf16 weights as FramePack loads them; the output projection in fp32, the output fp32,
    and the diffusers module (same hook) agrees within bf16 tolerance."""
    import copy

    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    c = {k: (v.to(torch.bfloat16) if v.is_floating_point() and not k.startswith(("timestep", "guidance"))
             else v) for k, v in call(68, 88, 100, seed=9).items()}
    with torch.no_grad():
        expected = reference(bf16, c)
        got = FramepackTransformerForExport(bf16)(*prepare_call(c, torch.bfloat16, "cpu"))[0]
        plain = bf16(**c, return_dict=False)[0]
    assert got.dtype == expected.dtype == torch.float32 and plain.dtype == torch.bfloat16
    assert bf16.proj_out.weight.dtype == torch.bfloat16  # the weights themselves stay bf16
    assert rel_l2(got, expected) <= 1e-2
    cos = torch.nn.functional.cosine_similarity(got.flatten().double(), expected.flatten().double(), dim=0)
    assert cos >= 0.999
