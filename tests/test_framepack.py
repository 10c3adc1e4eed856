"""The encoders inside FramePack: ``use_engines`` swaps the forward of the modules FramePack
loaded (real transformers classes, tiny random weights, loaded with from_pretrained as FramePack
does) for engines built here with AOTInductor; calls as FramePack makes them return what the
eager modules return; calls no engine covers run eager with one warning, or raise when strict."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import save_tiny, weights_folder

from framepack_trt.framepack import EngineFallback, use_engines

COMPONENTS = ("llama_text", "clip_text", "siglip_image")


@pytest.fixture(scope="module")
def framepack_engines(tiny_build):
    """The README demo's cache (the tiny profile, built once per session): an engine for each
    module FramePack calls, and the random weights they were built from, in ``weights/``."""
    built, _ = tiny_build
    return built


def load(path, cls):
    return cls.from_pretrained(path).eval()


def close(a, b):
    return float((a - b).norm() / b.norm()) < 1e-4


def test_encoders_run_as_framepack_calls_them(framepack_engines):
    from transformers import CLIPTextModel, LlamaModel, SiglipVisionModel

    llama = load(weights_folder(framepack_engines, "llama_text"), LlamaModel)
    clip = load(weights_folder(framepack_engines, "clip_text"), CLIPTextModel)
    siglip = load(weights_folder(framepack_engines, "siglip_image"), SiglipVisionModel)
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 1000, (1, 40), generator=gen)
    mask = torch.ones(1, 40, dtype=torch.int64)
    mask[:, 29:] = 0  # a prompt of 29 tokens, padded
    clip_ids = torch.randint(3, 1000, (1, 77), generator=gen)
    px = torch.randn(1, 3, 32, 32, generator=gen)
    with torch.no_grad():
        want = (llama(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-3],
                clip(clip_ids).pooler_output, siglip(pixel_values=px).last_hidden_state)

    engines = use_engines(framepack_engines, strict=True, text_encoder=llama, text_encoder_2=clip,
                          image_encoder=siglip)
    dtype_before = llama.dtype
    with torch.no_grad():
        got = (llama(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-3],
               clip(clip_ids).pooler_output, siglip(pixel_values=px).last_hidden_state)
    assert all(close(g, w) for g, w in zip(got, want, strict=True))
    # Ordinary tensors, as eager returns under no_grad (FramePack edits some in place).
    assert not any(t.is_inference() for t in (*got, *want))
    assert engines.counts() == {c: {"engine": 1, "eager": 0} for c in COMPONENTS}
    assert "transformer: no engine" not in engines.report()
    assert "llama_text: 1 engine, 0 eager calls" in engines.report()
    # Everything else is the eager module's: class, dtype, config, parameters.
    assert type(llama) is LlamaModel and llama.dtype == dtype_before
    assert sum(p.numel() for p in llama.parameters()) > 0
    with pytest.raises(LookupError, match=r"hidden_states\[-3\] only"):
        llama(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]

    # Outside every engine (text 80 > 64): strict raises; otherwise eager, warned once.
    long_ids = torch.randint(3, 1000, (1, 80), generator=gen)
    long_mask = torch.ones(1, 80, dtype=torch.int64)
    with pytest.raises(EngineFallback, match="text_len=80 is outside the engine's range 1..64"):
        llama(input_ids=long_ids, attention_mask=long_mask, output_hidden_states=True)
    for s in engines.swaps.values():
        s.strict = False
    with pytest.warns(UserWarning, match="runs eager: no engine covers the call") as caught:
        with torch.no_grad():
            a = llama(input_ids=long_ids, attention_mask=long_mask, output_hidden_states=True)
            b = llama(input_ids=long_ids, attention_mask=long_mask, output_hidden_states=True)
    assert len([w for w in caught if "runs eager" in str(w.message)]) == 1
    engines.restore()
    with torch.no_grad():
        c = llama(input_ids=long_ids, attention_mask=long_mask, output_hidden_states=True)
    assert torch.equal(a.hidden_states[-3], c.hidden_states[-3])
    assert torch.equal(b.last_hidden_state, c.last_hidden_state)
    assert engines.counts() == {} and "forward" not in llama.__dict__


def test_another_checkpoint_is_never_served(framepack_engines, tmp_path):
    from transformers import LlamaModel

    other = load(save_tiny("llama_text", tmp_path / "other", seed=99), LlamaModel)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engines = use_engines(framepack_engines, text_encoder=other)
    assert any("stays eager: no engine of its checkpoint" in str(w.message) for w in caught)
    assert engines.swaps == {} and engines.missing == ["llama_text"]
    assert "forward" not in other.__dict__
    # strict: a module given that no engine serves is an error at once, not an eager run.
    with pytest.raises(EngineFallback, match=r"strict: no engine in .* serves text_encoder "
                       r"\(llama_text\)"):
        use_engines(framepack_engines, strict=True, text_encoder=other)
    assert "forward" not in other.__dict__


def test_transformer_runs_as_framepack_and_diffusers_call_it(framepack_engines):
    from diffusers.models.modeling_outputs import Transformer2DModelOutput
    from tests_helpers import framepack_call

    from framepack_trt.transformer.model import transformer_class

    model = load(weights_folder(framepack_engines, "transformer"), transformer_class())
    calls = [framepack_call(model.config, h, w, n, seed=s)
             for h, w, n, s in ((88, 68, 100, 1), (68, 88, 60, 2))]
    with torch.no_grad():
        want = [model(**d, return_dict=False)[0] for d, _ in calls]
    engines = use_engines(framepack_engines, strict=True, transformer=model)
    with torch.no_grad():
        for (d, fp), w in zip(calls, want, strict=True):
            (got,) = model(**fp, return_dict=False)  # FramePack's names, a tuple
            out = model(**d)                          # diffusers' names, an output object
            assert isinstance(out, Transformer2DModelOutput)
            assert close(got, w) and close(out.sample, w)
    assert engines.counts() == {"transformer": {"engine": 4, "eager": 0}}

    # TeaCache (FramePack's own class sets enable_teacache) needs the eager block stack.
    model.enable_teacache = True
    with pytest.raises(EngineFallback, match="TeaCache is on"):
        model(**calls[0][1], return_dict=False)
    del model.enable_teacache
    _, outside = framepack_call(model.config, 128, 68, 10, seed=3)  # 1024 px: outside 416..960
    with pytest.raises(EngineFallback, match=r"latent_height=128 \(1024 pixels\)"):
        model(**outside, return_dict=False)
    engines.restore()


def test_framepack_command_line_flags(framepack_engines, monkeypatch, tmp_path):
    """The fork's flags through FramePack's argparse: --enable-tensorrt swaps the image encoder,
    --tensorrt-transformer / --tensorrt-text-encoders add theirs, the environment variables set
    the defaults, FRAMEPACK_TENSORRT_CACHE_DIR finds the cache, and a module flag without
    --enable-tensorrt is refused."""
    import argparse

    from transformers import CLIPTextModel, LlamaModel, SiglipVisionModel

    from framepack_trt.errors import UsageError
    from framepack_trt.framepack import add_arguments, engines_from_args

    models = {"text_encoder": load(weights_folder(framepack_engines, "llama_text"), LlamaModel),
              "text_encoder_2": load(weights_folder(framepack_engines, "clip_text"), CLIPTextModel),
              "image_encoder": load(weights_folder(framepack_engines, "siglip_image"), SiglipVisionModel)}

    def parse(*argv):
        parser = argparse.ArgumentParser()
        parser.add_argument("--share", action="store_true")  # one of FramePack's own
        add_arguments(parser)
        return parser.parse_args(argv)

    for var in ("FRAMEPACK_ENABLE_TENSORRT", "FRAMEPACK_TRT_TRANSFORMER",
                "FRAMEPACK_TRT_TEXT_ENCODERS", "FRAMEPACK_TENSORRT_CACHE_DIR",
                "FRAMEPACK_TRT_OFFLOAD_BF16"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no Cache/tensorrt_engines here
    assert engines_from_args(parse("--share"), **models) is None
    assert not any("forward" in m.__dict__ for m in models.values())
    with pytest.raises(UsageError, match="--tensorrt-text-encoders need --enable-tensorrt"):
        engines_from_args(parse("--tensorrt-text-encoders"), **models)

    monkeypatch.setenv("FRAMEPACK_ENABLE_TENSORRT", "1")
    monkeypatch.setenv("FRAMEPACK_TENSORRT_CACHE_DIR", str(framepack_engines))
    engines = engines_from_args(parse(), **models)
    assert sorted(engines.swaps) == ["image_encoder"] and not engines.missing
    px = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        models["image_encoder"](pixel_values=px)
    assert engines.counts() == {"siglip_image": {"engine": 1, "eager": 0}}
    engines.restore()

    monkeypatch.setenv("FRAMEPACK_TRT_TEXT_ENCODERS", "1")
    engines = engines_from_args(parse("--tensorrt-strict"), **models)
    assert sorted(engines.swaps) == ["image_encoder", "text_encoder", "text_encoder_2"]
    assert all(s.strict for s in engines.swaps.values())
    engines.restore()
    with pytest.raises(UsageError, match="--tensorrt-offload-bf16 .* needs --enable-tensorrt "
                       "and --tensorrt-transformer"):
        engines_from_args(parse("--tensorrt-offload-bf16"), **models)

    monkeypatch.delenv("FRAMEPACK_TENSORRT_CACHE_DIR")
    with pytest.warns(UserWarning, match="stays eager: no engine of its checkpoint"):
        engines = engines_from_args(parse("--tensorrt-cache-dir", str(tmp_path / "empty")),
                                    **models)
    assert engines.swaps == {} and sorted(engines.missing) == sorted(COMPONENTS)
    with pytest.raises(EngineFallback, match="strict: no engine in .* serves image_encoder"):
        engines_from_args(parse("--tensorrt-cache-dir", str(tmp_path / "empty"),
                                "--tensorrt-strict"), **models)


def test_an_engine_that_fails_at_run_time_is_dropped_for_eager(framepack_engines, tmp_path):
    """An engine file that passes the cache's quick check (size and mtime) but cannot be loaded: the
    first call warns once and runs eager, later calls go straight to eager, the report says
    so; strict raises."""
    import os
    import shutil

    from transformers import SiglipVisionModel

    from framepack_trt.cache import Cache
    from framepack_trt.engine_status import entry_status

    cache = tmp_path / "cache"
    shutil.copytree(framepack_engines, cache)
    (entry,) = [e for e in Cache(cache).entries().values() if e.component == "siglip_image"]
    engine = cache / entry.engine.file
    engine.write_bytes(os.urandom(engine.stat().st_size))  # same size, not a package,
    mtime = entry.engine.mtime_ns                           # same mtime: not re-hashed
    os.utime(engine, ns=(mtime, mtime))
    assert entry_status(Cache(cache), entry).state == "ok"
    siglip = load(weights_folder(cache, "siglip_image"), SiglipVisionModel)
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = siglip(pixel_values=px).last_hidden_state

    engines = use_engines(cache, image_encoder=siglip)
    with pytest.warns(UserWarning, match="engine siglip_image failed at run time") as caught:
        with torch.no_grad():
            got = [siglip(pixel_values=px).last_hidden_state for _ in range(3)]
    assert len([w for w in caught if "runs eager" in str(w.message)]) == 1
    assert all(torch.equal(g, want) for g in got)
    assert engines.counts() == {"siglip_image": {"engine": 0, "eager": 3}}
    assert "1 engine(s) broken" in engines.report()
    engines.restore()

    engines = use_engines(cache, strict=True, image_encoder=siglip)
    with pytest.raises(EngineFallback, match="failed at run time"), torch.no_grad():
        siglip(pixel_values=px)
    engines.restore()


def test_stale_engines_are_named_with_their_reason(framepack_engines, tmp_path):
    """A cache whose engines were built by other code (an older framepack-trt: their code
    fingerprint differs) serves nothing; strict says they are stale, why, and that a build
    makes them again, instead of only "no engine"."""
    import json
    import shutil

    from transformers import LlamaModel

    root = tmp_path / "cache"
    shutil.copytree(framepack_engines, root)
    manifest = json.loads((root / "manifest.json").read_text())
    for entry in manifest["entries"].values():
        entry["key_fields"]["code"] = "00" * 32
    (root / "manifest.json").write_text(json.dumps(manifest))
    llama = load(weights_folder(root, "llama_text"), LlamaModel)
    with pytest.raises(EngineFallback, match=r"serves text_encoder \(llama_text\).*1 engine\(s\) "
                       r"of it there are stale \(the code that exports or compiles it has "
                       r"changed since it was built\): `framepack-trt build` builds them again"):
        use_engines(root, strict=True, text_encoder=llama)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        use_engines(root, text_encoder=llama).restore()
    assert any("stays eager" in str(w.message) and "stale" in str(w.message) for w in caught)
