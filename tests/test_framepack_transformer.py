"""``framepack_trt.transformer.model``: the transformer class the engines are built from on
every supported diffusers. Where diffusers has no ``HunyuanVideoFramepackTransformer3DModel``
(0.33.1, FramePack's pin) this project's own class is used: here it loads the weights of
FramePack's own ``HunyuanVideoTransformer3DModelPacked`` (tests/framepack_upstream) with no
key missing or left over, and its forward, and the export module's forward over it
(``FramepackTransformerForExport``, what the engines run), equal FramePack's forward on the CPU
in float32 at several buckets, text lengths and both samplers' index layouts; and equal
diffusers' own class where that is installed."""

from __future__ import annotations

import json

import pytest
import torch
from tests_helpers import framepack_call, framepack_random_weights, rel_l2

from framepack_trt.transformer.export import FramepackTransformerForExport, prepare_call
from framepack_trt.transformer.model import (
    HunyuanVideoFramepackTransformer3DModel,
    diffusers_class,
    is_export_layout,
    transformer_class,
    transformer_source,
)

pytestmark = pytest.mark.usefixtures("restore_layer_norms")

#: Two blocks of each kind (a block's output feeds the next), FramePack's layout flags.
CONFIG = dict(num_attention_heads=2, attention_head_dim=16, num_layers=2, num_single_layers=2,
              num_refiner_layers=1, text_embed_dim=32, pooled_projection_dim=16,
              rope_axes_dim=(4, 6, 6), has_image_proj=True, image_proj_dim=24,
              has_clean_x_embedder=True)

#: (latent height, width, text length, F1's index layout): wide and tall, sizes that the
#: history kernels pad (not multiples of 8) and one they do not, text lengths 1 to 256. Small
#: latents (3 frames): the model's arithmetic is the same at every size, the CPU time is not.
CASES = [(12, 20, 1, False), (20, 12, 256, True), (10, 14, 77, False), (16, 24, 40, True)]
FRAMES = 3


@pytest.fixture(scope="module")
def framepack_model(tmp_path_factory):
    """FramePack's own class with random weights (every parameter drawn), as FramePack
    writes it (save_pretrained: config.json names ``HunyuanVideoTransformer3DModelPacked``)."""
    from framepack_trt.framepack_worker import VENDORED, import_framepack

    import_framepack(VENDORED)
    from diffusers_helper.models.hunyuan_video_packed import HunyuanVideoTransformer3DModelPacked

    model = HunyuanVideoTransformer3DModelPacked(**CONFIG)
    framepack_random_weights(model, seed=11)
    folder = tmp_path_factory.mktemp("framepack-transformer")
    model.save_pretrained(folder)
    return model.eval(), folder


def _load(cls, folder):
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


def _vanilla(d: dict, fp: dict, frames: int = FRAMES) -> None:
    """F1's index layout (start, 4x, 2x, 1x, the section) in both call conventions."""
    idx = torch.arange(0, 1 + 16 + 2 + 1 + frames)
    start, c4, c2, c1, latent = idx.split([1, 16, 2, 1, frames])
    for name, fp_name, value in (("indices_latents", "latent_indices", latent),
                                 ("indices_latents_clean", "clean_latent_indices",
                                  torch.cat([start, c1])),
                                 ("indices_latents_history_2x", "clean_latent_2x_indices", c2),
                                 ("indices_latents_history_4x", "clean_latent_4x_indices", c4)):
        d[name], fp[fp_name] = value, value[None]


@pytest.mark.parametrize("h,w,length,vanilla", CASES)
def test_own_class_and_export_module_equal_framepacks_forward(framepack_model, h, w, length,
                                                              vanilla):
    framepack, folder = framepack_model
    ours = _load(HunyuanVideoFramepackTransformer3DModel, folder)
    d, fp = framepack_call(ours.config, h, w, length, frames=FRAMES, seed=h * w + length)
    if vanilla:
        _vanilla(d, fp)
    with torch.no_grad():
        expected = framepack(**fp, return_dict=False)[0]
        own = ours(**d, return_dict=False)[0]
        engine_path = FramepackTransformerForExport(ours)(*prepare_call(fp, torch.float32, "cpu"))[0]
    assert expected.shape == (1, 16, FRAMES, h, w) and expected.abs().mean() > 0.1
    assert rel_l2(own, expected) <= 1e-5
    assert rel_l2(engine_path, expected) <= 1e-5


def test_equals_diffusers_class_where_installed(framepack_model):
    """On diffusers 0.34+: this project's class and diffusers' agree on FramePack's weights.
    (On FramePack's pin there is no diffusers class to compare with: the test says so.)"""
    cls = diffusers_class()
    if cls is None:
        pytest.skip("diffusers has no HunyuanVideoFramepackTransformer3DModel (before 0.34)")
    _, folder = framepack_model
    ours, theirs = _load(HunyuanVideoFramepackTransformer3DModel, folder), _load(cls, folder)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    d, _ = framepack_call(ours.config, 18, 26, 100, frames=FRAMES, seed=3)
    with torch.no_grad():
        assert rel_l2(ours(**d, return_dict=False)[0], theirs(**d, return_dict=False)[0]) <= 1e-5


def test_transformer_class_follows_the_installed_diffusers(framepack_model):
    """diffusers' class from 0.34 on, this project's before; both load FramePack's checkpoint
    and run the export code (``is_export_layout``); FramePack's own class does not."""
    from packaging.version import Version

    from framepack_trt.components.base import get_component
    from framepack_trt.device import package_version

    new = Version(package_version("diffusers")) >= Version("0.34")
    assert transformer_source() == ("diffusers" if new else "framepack_trt")
    assert (transformer_class() is diffusers_class()) == new
    for name in ("transformer", "transformer_dual_block", "transformer_output"):
        assert get_component(name).load_model_class() is transformer_class()
    framepack, folder = framepack_model
    assert json.loads((folder / "config.json").read_text())["_class_name"] == (
        "HunyuanVideoTransformer3DModelPacked")
    assert is_export_layout(_load(transformer_class(), folder))
    assert not is_export_layout(framepack)
