"""Every registered component: its export-ready module, traced by torch.export with the named
dims dynamic, matches the real transformers module's own call at several in-range shapes.

The models are tiny random-weight configs of the real classes, saved with save_pretrained and
loaded back through ``sources.load_model`` (the loading code users hit).
"""

from __future__ import annotations

import re

import pytest
import torch
from tests_helpers import rel_l2

from framepack_trt.components.base import get_component, registry
from framepack_trt.export import export_component
from framepack_trt.shapes import DimRange
from framepack_trt.sources import Source, load_model

#: Per component: the dims to export with and the sizes to check (besides min and max).
CASES = {
    "clip_text": ({"batch": DimRange(1, 1, 3), "text_len": DimRange(5, 77, 77)},
                  [{"batch": 2, "text_len": 77}, {"batch": 3, "text_len": 11}]),
    "llama_text": ({"batch": DimRange(1, 1, 3), "text_len": DimRange(1, 40, 64)},
                   [{"batch": 1, "text_len": 1}, {"batch": 3, "text_len": 37}]),
    "siglip_image": ({"batch": DimRange(1, 1, 4)}, [{"batch": 3}]),
    "transformer": ({"batch": DimRange(1, 1, 1), "latent_frames": DimRange(9, 9, 9),
                     "latent_height": DimRange(52, 68, 120), "latent_width": DimRange(52, 88, 120),
                     "text_len": DimRange(1, 64, 256)},
                    [{"batch": 1, "latent_frames": 9, "latent_height": 60, "latent_width": 104,
                      "text_len": 77},
                     {"batch": 1, "latent_frames": 9, "latent_height": 120, "latent_width": 52,
                      "text_len": 256}]),
}
# The VAE encoder over the 640 buckets' latent range: 52x52 and 120x120 (its corners) and the
# 544x704 bucket (68x88).
CASES["vae_encode"] = ({"latent_height": DimRange(52, 68, 120), "latent_width": DimRange(52, 88, 120)},
                       [{"latent_height": 68, "latent_width": 88}])
# The VAE decoder's framewise windows: T 3..5 with T dynamic (small latents: the decoder's
# mid-block attends over T x h x w tokens), and the 1-frame tail window as a static T.
CASES["vae_decode"] = ({"latent_frames": DimRange(3, 5, 5), "latent_height": DimRange(8, 12, 16),
                        "latent_width": DimRange(8, 10, 16)},
                       [{"latent_frames": 4, "latent_height": 12, "latent_width": 10}])
# The transformer's four pieces (weights as inputs) take the transformer's dims; small latents
# here (the blocks' attention at latent 120x120 is 41400 tokens), a square opt included.
CASES.update({f"transformer_{piece}": (
    {"batch": DimRange(1, 1, 1), "latent_frames": DimRange(9, 9, 9),
     "latent_height": DimRange(16, 24, 32), "latent_width": DimRange(16, 24, 32),
     "text_len": DimRange(1, 64, 256)},
    [{"batch": 1, "latent_frames": 9, "latent_height": 20, "latent_width": 28, "text_len": 77}])
    for piece in ("input", "dual_block", "single_block", "output")})


#: Not run at the range's max here: the whole transformer at latent 120x120 (a minute on 2
#: cores); the tiny profile's build checks its engine there against eager (full_check_at_build).
NOT_AT_MAX = {"transformer"}


#: Tested elsewhere: fp8 blocks are another model than the eager one (tests/test_fp8.py).
ELSEWHERE = {"transformer_dual_block_fp8", "transformer_single_block_fp8"}


def test_all_components_tested():
    assert set(CASES) | ELSEWHERE == set(registry()), "add the new component to CASES"


def test_framepack_modules_are_each_served_by_a_declared_call_convention():
    """Each of FramePack's modules is served by components that declare how FramePack calls
    it (``parse_call``, ``wrap_output``); the transformer's pieces serve none themselves (its
    swap runs them)."""
    from framepack_trt.components.base import FRAMEPACK_MODULES, Component, framepack_modules

    served = framepack_modules()
    assert list(served) == list(FRAMEPACK_MODULES) and all(served.values())
    assert served["vae"] == ("vae_encode", "vae_decode")
    for names in served.values():
        for name in names:
            cls = type(get_component(name))
            assert cls.parse_call is not Component.parse_call, name
            assert cls.wrap_output is not Component.wrap_output, name
    assert not any(registry()[n].framepack_module for n in registry() if n.startswith("transformer_"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_exported_module_matches_eager(name, tiny_weights, tmp_path):
    component = get_component(name)
    dims, extra = CASES[name]
    model = load_model(component, Source("path", path=str(tiny_weights[name])), torch.float32,
                       "cpu", tmp_path)
    exported = export_component(component, model, dims, torch.float32, "cpu", seed=3)
    module = exported.program.module()
    gen = torch.Generator().manual_seed(7)
    maxima = [] if name in NOT_AT_MAX else [{n: r.max for n, r in dims.items()}]
    sizes_list = [{n: r.min for n, r in dims.items()}, *maxima, *extra]
    for number, sizes in enumerate(sizes_list):
        inputs = component.make_inputs(model.config, sizes, torch.float32, "cpu", gen)
        assert all(t.float().abs().sum() > 0 for t in inputs if t.is_floating_point())  # never zeros
        index = component.case_index(model.config, number)  # a block engine serves every block
        with torch.inference_mode():
            expected = component.reference(model, inputs, index)
            got = module(*component.engine_inputs(model, inputs, torch.float32, "cpu", index))
        assert len(got) == len(expected) == len(component.output_names)
        for g, e in zip(got, expected, strict=True):
            assert g.shape == e.shape
            assert rel_l2(g, e) <= 1e-5, (name, sizes, rel_l2(g, e))


def test_llama_engine_runs_only_the_layers_read(tiny_weights, tmp_path):
    """hidden_states[-3] is layer N-2's output: the exported graph holds N-2 layers."""
    component = get_component("llama_text")
    model = load_model(component, Source("path", path=str(tiny_weights["llama_text"])),
                       torch.float32, "cpu", tmp_path)
    n = model.config.num_hidden_layers
    exported = export_component(component, model, CASES["llama_text"][0], torch.float32, "cpu")
    layer_ids = {re.search(r"\.layers\.(\d+)\.", k).group(1)
                 for k in exported.program.state_dict if ".layers." in k}
    assert layer_ids == {str(i) for i in range(n - 2)}
    assert "encoder.norm.weight" not in exported.program.state_dict
    # The shared parameters are the model's own, not copies.
    wrapper = component.export_module(model)
    assert wrapper.encoder.layers[0].self_attn.q_proj.weight is model.layers[0].self_attn.q_proj.weight


def test_inputs_are_random_and_in_shape(tiny_weights, tmp_path):
    component = get_component("llama_text")
    model = load_model(component, Source("path", path=str(tiny_weights["llama_text"])),
                       torch.float32, "cpu", tmp_path)
    gen = torch.Generator().manual_seed(0)
    ids, mask = component.make_inputs(model.config, {"batch": 4, "text_len": 30}, torch.float32,
                                      "cpu", gen)
    assert ids.shape == mask.shape == (4, 30) and ids.dtype == torch.int64
    assert mask[:, 0].all()  # every row keeps at least one token
    assert len(set(ids.flatten().tolist())) > 10


@pytest.mark.parametrize("piece", ["input", "dual_block", "single_block", "output"])
def test_piece_graphs_hold_no_weights(piece, tiny_weights, tmp_path):
    """A piece's exported graph has no parameters, buffers or tensor constants: every weight is
    an input (so one engine serves every block of its kind and every checkpoint)."""
    name = f"transformer_{piece}"
    component = get_component(name)
    model = load_model(component, Source("path", path=str(tiny_weights[name])), torch.float32,
                       "cpu", tmp_path)
    if piece.endswith("block"):
        assert component.pieces(model.config) == 2  # the tiny config has two blocks of each kind
    exported = export_component(component, model, CASES[name][0], torch.float32, "cpu")
    signature = exported.program.graph_signature
    assert not signature.parameters and not signature.buffers and not exported.program.constants
    assert not exported.program.state_dict
    specs = component.engine_specs(model)
    weights = [s for s in specs if s.name.startswith("weight.")]
    assert len(signature.user_inputs) == len(specs) and weights


def test_pieces_take_every_weight_once(tiny_weights, tmp_path):
    """The input and output sides and one block of each kind per block: together, the weights
    the four piece engines take are exactly the model's parameters."""
    total = 0
    for piece in ("input", "dual_block", "single_block", "output"):
        component = get_component(f"transformer_{piece}")
        model = load_model(component, Source("path", path=str(tiny_weights[component.name])),
                           torch.float32, "cpu", tmp_path)
        sizes = [torch.Size(s.shape).numel() for s in component.weight_specs(model)]
        total += sum(sizes) * component.pieces(model.config)
    assert total == sum(p.numel() for p in model.parameters())


def test_vae_decoder_one_frame_window(tiny_weights, tmp_path):
    """The 1-frame tail window of framewise decoding (10 and 19 latent frames) is a graph of its
    own (the causal upsampler does not upsample time for one frame): a static T = 1 export
    matches the eager decoder at two sizes."""
    component = get_component("vae_decode")
    model = load_model(component, Source("path", path=str(tiny_weights["vae_decode"])),
                       torch.float32, "cpu", tmp_path)
    dims = {"latent_frames": DimRange(1, 1, 1), "latent_height": DimRange(8, 12, 16),
            "latent_width": DimRange(8, 10, 16)}
    module = export_component(component, model, dims, torch.float32, "cpu", seed=3).program.module()
    gen = torch.Generator().manual_seed(11)
    for h, w in ((8, 16), (14, 10)):
        (latents,) = component.make_inputs(model.config, {"latent_frames": 1, "latent_height": h,
                                                          "latent_width": w},
                                           torch.float32, "cpu", gen)
        with torch.inference_mode():
            (want,) = component.reference(model, (latents,))
            (got,) = module(latents)
        assert got.shape == want.shape == (1, 3, 1, 8 * h, 8 * w)
        assert rel_l2(got, want) <= 1e-5


def test_frame_causal_mask_equals_diffusers():
    """The decoder engines' mid-block mask (a broadcast comparison of frame ids) has diffusers'
    values, dtype and shape, for random frame counts and sizes, with and without a batch."""
    from diffusers.models.autoencoders.autoencoder_kl_hunyuan_video import (
        prepare_causal_attention_mask,
    )

    from framepack_trt.components.vae import frame_causal_mask

    gen = torch.Generator().manual_seed(5)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        frames, hw = (int(v) for v in torch.randint(1, 7, (2,), generator=gen))
        for batch in (None, 2):
            want = prepare_causal_attention_mask(frames, hw, dtype, "cpu", batch_size=batch)
            got = frame_causal_mask(frames, hw, dtype, "cpu", batch_size=batch)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert torch.equal(got, want), (frames, hw, dtype)
            assert (got == 0).any() and (got == float("-inf")).any() or frames == 1
