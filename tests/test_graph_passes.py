"""positive_slice_bounds: slices at negative symbolic bounds (x[:, :-t], x[:, -t:]) rewritten as
size + bound, with the function unchanged, on a toy graph and on the exported transformer
against the diffusers module."""

from __future__ import annotations

import random

import torch
from torch.export import Dim

from framepack_trt.graph_passes import _known_negative, positive_slice_bounds


def negative_bounds(program) -> int:
    return sum(1 for n in program.graph.nodes
               if n.op == "call_function" and n.target is torch.ops.aten.slice.Tensor
               for b in n.args[2:4] if isinstance(b, torch.fx.Node) and _known_negative(b.meta.get("val")))


class Split(torch.nn.Module):
    """diffusers' HunyuanVideo single-block split: image tokens then text tokens."""

    def forward(self, image, text):
        joint = torch.cat([image, text], dim=1) * 2.0
        n = text.shape[1]
        return joint[:, :-n] + 1.0, joint[:, -n:].flip(1), joint[:, 1:-n]


def test_toy_split_rewritten_and_unchanged():
    gen = torch.Generator().manual_seed(0)
    image, text = torch.randn(2, 7, 3, generator=gen), torch.randn(2, 5, 3, generator=gen)
    program = torch.export.export(Split(), (image, text), dynamic_shapes=(
        {1: Dim("image", min=3, max=64)}, {1: Dim("text", min=1, max=32)}))
    assert negative_bounds(program) == 3
    assert positive_slice_bounds(program) == 3
    assert negative_bounds(program) == 0
    assert negative_bounds(program.run_decompositions({})) == 0
    for n_image, n_text in ((3, 1), (33, 17), (64, 32)):
        a = torch.randn(2, n_image, 3, generator=gen)
        b = torch.randn(2, n_text, 3, generator=gen)
        for got, want in zip(program.module()(a, b), Split()(a, b), strict=True):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert positive_slice_bounds(program) == 0  # nothing left to do


def test_constant_and_positive_bounds_untouched():
    class M(torch.nn.Module):
        def forward(self, x):
            return x[:, :-2] + x[:, 2:], x[:, -3:]

    x = torch.randn(1, 9, 4)
    program = torch.export.export(M(), (x,), dynamic_shapes=({1: Dim("n", min=4, max=40)},))
    assert positive_slice_bounds(program) == 0


def test_transformer_rewritten_matches_diffusers(tmp_path):
    from framepack_trt.components.base import get_component
    from framepack_trt.export import export_component
    from framepack_trt.shapes import DimRange
    from framepack_trt.sources import construct

    comp = get_component("transformer")
    torch.manual_seed(0)
    construct(comp.load_model_class(), comp.tiny_config).eval().save_pretrained(tmp_path)
    model = comp.load_model_class().from_pretrained(tmp_path).eval()
    # Dynamic height, width and text length as the product exports them; the latent range is
    # the smaller 416..544 x 416..704 pixels (the rewrite does not depend on it, and the
    # eager checks at its max cost a fraction of 960x960's). Full-range exports are checked
    # in tests/components.
    dims = {"batch": DimRange(1, 1, 1), "latent_frames": DimRange(9, 9, 9),
            "latent_height": DimRange(52, 60, 68), "latent_width": DimRange(52, 68, 88),
            "text_len": DimRange(1, 64, 256)}
    program = export_component(comp, model, dims, torch.float32, "cpu").program
    # Every split of image from text tokens in the blocks (diffusers' code) is one of these.
    assert positive_slice_bounds(program) >= 4
    assert negative_bounds(program) == 0
    gen = torch.Generator().manual_seed(1)
    module = program.module()
    for case in ("min", "max", "random"):
        sizes = comp.case_sizes(dims, case, random.Random(2))
        raw = comp.make_inputs(model.config, sizes, torch.float32, "cpu", gen)
        with torch.no_grad():
            got = module(*comp.prepare(raw, torch.float32, "cpu"))[0]
            want = comp.reference(model, raw)[0]
        assert got.shape == want.shape
        rel = ((got - want).norm() / want.norm()).item()
        assert rel <= 1e-5, (sizes, rel)
