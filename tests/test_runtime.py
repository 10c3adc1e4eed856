"""Runtime: find the engine that covers a call's shapes, check shapes on every call."""

from __future__ import annotations

import json

import pytest
import torch
from tests_helpers import made_entry

from framepack_trt.cache import Cache
from framepack_trt.errors import ShapeError
from framepack_trt.runtime.loading import load_engine
from framepack_trt.runtime.selection import call_sizes, find_engine


def test_find_and_run_checked_engine(built_cache):
    _, root = built_cache
    cache = Cache(root)
    (entry,) = cache.entries().values()
    size = entry.inputs[0].shape[2]
    x = torch.randn(2, 3, size, size)
    assert find_engine(cache, "siglip_image", {"pixel_values": x}).key == entry.key
    assert find_engine(cache, "siglip_image", [torch.randn(3, 3, size, size)]) is None  # batch max 2
    assert find_engine(cache, "clip_text", [x]) is None
    engine = load_engine(cache, entry)
    (out,) = engine(x)
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    with pytest.raises(ShapeError, match=r"batch=3 is outside the engine's range 1\.\.2"):
        engine(torch.randn(3, 3, size, size))
    with pytest.raises(ShapeError, match="dim 2 is 8, the engine is built for"):
        engine(torch.randn(1, 3, 8, size))


def test_call_sizes_disagreement():
    entry = made_entry("llama_text", "llama_text", {"input_ids": ["batch", "text_len"],
                                                    "attention_mask": ["batch", "text_len"]})
    assert call_sizes(entry, [(1, 5), (1, 5)]) == {"batch": 1, "text_len": 5}
    with pytest.raises(ShapeError, match="dim text_len is 5 in one input and 6 in attention_mask"):
        call_sizes(entry, [(1, 5), (1, 6)])
    with pytest.raises(ShapeError, match="takes 2 input"):
        call_sizes(entry, [(1, 5)])
    json.dumps(entry.to_dict())


def test_transformer_engine_takes_framepack_calls(tiny_build):
    """A transformer engine called the way FramePack calls its model (its argument names, fp32
    clean latents, int64 (1, n) indices, a bool mask over 512 text slots) gives the diffusers
    module's output; a bucket outside the range is refused. The engine is the tiny profile's
    (latent 52..120, every 640 bucket), the module its weights loaded with from_pretrained."""
    from tests_helpers import framepack_call

    from framepack_trt.transformer.model import transformer_class

    built, _ = tiny_build
    cache = Cache(built)  # read only
    (weights,) = (built / "weights").glob("transformer-*")
    model = transformer_class().from_pretrained(weights).eval()
    diffusers_kwargs, framepack_kwargs = framepack_call(model.config, 88, 68, 100, seed=4)
    entry = find_engine(cache, "transformer", framepack_kwargs)
    assert entry is not None
    engine = load_engine(cache, entry)
    (got,) = engine(**framepack_kwargs)
    with torch.no_grad():
        expected = model(**diffusers_kwargs, return_dict=False)[0]
    rel = float((got.double() - expected.double()).norm() / expected.double().norm())
    assert got.shape == expected.shape == (1, 16, 9, 88, 68) and rel <= 1e-4, rel
    # diffusers' names (the same as the engine's inputs) are prepared too: text cropped to the
    # mask's 100 tokens, history padded; at the other bucket, with 60 of 512 text slots.
    for (h, w, length, seed) in ((88, 68, 100, 4), (68, 88, 60, 6)):
        diffusers_kwargs, _ = framepack_call(model.config, h, w, length, seed=seed)
        (got,) = engine(**diffusers_kwargs)
        with torch.no_grad():
            expected = model(**diffusers_kwargs, return_dict=False)[0]
        rel = float((got.double() - expected.double()).norm() / expected.double().norm())
        assert rel <= 1e-4, (h, w, length, rel)
    _, too_big = framepack_call(model.config, 128, 68, 10, seed=5)  # 1024 px: outside 416..960
    assert find_engine(cache, "transformer", too_big) is None
    # Said in the profile's terms (latent height, pixels), not the engine's patch rows.
    with pytest.raises(ShapeError, match=r"latent_height=128 \(1024 pixels\) is outside the "
                       r"engine's range 52\.\.120 \(416\.\.960 pixels\)"):
        engine(**too_big)
    # Calls the engine cannot take: find_engine says None, the engine says why.
    batch2 = {k: (torch.cat([v, v]) if k in ("hidden_states", "latents_clean") else v)
              for k, v in framepack_kwargs.items()}
    no_guidance = {**framepack_kwargs, "guidance": None}
    for call, why in ((batch2, "takes batch 1"), (no_guidance, "needs guidance")):
        assert find_engine(cache, "transformer", call) is None
        with pytest.raises(ShapeError, match=why):
            engine(**call)



def test_selection_ranks_the_covering_engines_and_says_why_not_the_others():
    """The one selection: of the engines given, those that cover the call, preferred first,
    then nearest to their opt sizes, then the narrowest; the others each with their reason."""
    from framepack_trt.runtime.selection import select

    def entry(name, lo, opt, hi, dtype="float16", device="cpu"):
        dims = {"batch": {"min": 1, "opt": 1, "max": 1},
                "text_len": {"min": lo, "opt": opt, "max": hi}}
        return made_entry(name, "clip_text", {"input_ids": ["batch", "text_len"]}, dims, dtype,
                          device)

    entries = [entry("wide", 1, 77, 77), entry("near", 10, 30, 40), entry("exact", 32, 32, 32),
               entry("short", 1, 8, 16), entry("half", 1, 77, 77, dtype="bfloat16"),
               entry("gpu", 1, 77, 77, device="cuda")]
    chosen = select(entries, lambda e: call_sizes(e, [(1, 32)]), dtype="torch.float16",
                    device="cpu")
    assert [e.name for e in chosen.choices] == ["exact", "near", "wide"]
    assert chosen.reasons == ["short: text_len=32 is outside the engine's range 1..16",
                              "engine half is bfloat16, the model float16",
                              "engine gpu runs on cuda, the call is on cpu"]
    # ``prefer`` is a sort key ranked before the fit (False first: the transformer's pieces
    # put their fp8 blocks first): the widest engine preferred, then the others by fit.
    preferred = select(entries[:3], lambda e: call_sizes(e, [(1, 32)]),
                       prefer=lambda e: e.name != "wide")
    assert [e.name for e in preferred.choices] == ["wide", "exact", "near"]
    refused = select(entries[:1], lambda e: call_sizes(e, [(1, 32), (1, 32)]))
    assert not refused.choices and "takes 1 input(s)" in refused.reasons[0]
