"""diffusers' own FramePack pipeline (``HunyuanVideoFramepackPipeline``) with the transformer
engine swapped in by ``use_engines``: the README demo's transformer engine (tiny random weights,
AOTInductor, CPU) against the same pipeline on the eager model, both sampling orders, without
and with true CFG. The pipeline makes every transformer call itself (diffusers' argument names,
a float text mask, fp32 history latents cast to the model's dtype); ``strict=True`` turns any
call the engine would not serve into an error, so the counts below are engine calls only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tests_helpers import framepack_loop

from framepack_trt.framepack import EngineFallback, use_engines
from framepack_trt.transformer.model import diffusers_class

# diffusers' FramePack pipeline came with its transformer, in 0.34: FramePack's pin (0.33.1) has
# neither. (FramePack's own section loop, which does not need it, is test_framepack_worker's.)
pytestmark = pytest.mark.skipif(diffusers_class() is None,
                                reason="diffusers before 0.34 has no HunyuanVideoFramepackPipeline")

HEIGHT, WIDTH = 416, 960      # a 640 bucket: latent 52 x 120, inside the tiny engine's range
WINDOW, STEPS = 9, 2
NUM_FRAMES = 2 * ((WINDOW - 1) * 4 + 1)  # two sections of 33 frames


@pytest.fixture(scope="module")
def pipeline(tiny_build):
    cache, _ = tiny_build
    return make_pipeline(cache), cache


def make_pipeline(cache):
    """diffusers' pipeline around the tiny build's transformer (loaded from the random weights
    the engine was built from); no text encoders (the prompt states are given)."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoFramepackPipeline,
        HunyuanVideoFramepackTransformer3DModel,
    )
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    (path,) = (cache / "weights").glob("transformer-*")
    transformer = HunyuanVideoFramepackTransformer3DModel.from_pretrained(path).eval()
    cfg = transformer.config
    torch.manual_seed(0)
    # The image encoder stays eager here; it only has to fit the transformer: 729 tokens
    # (27 x 27 patches, as SigLIP so400m at 384 px) of the transformer's image width.
    image_encoder = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=cfg.image_proj_dim, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, image_size=27, patch_size=1)).eval()
    # The VAE encodes the start image (eager, the same in both runs); with output_type="latent"
    # nothing is decoded.
    vae = AutoencoderKLHunyuanVideo(block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                                    norm_num_groups=4).eval()
    pipe = HunyuanVideoFramepackPipeline(
        text_encoder=None, tokenizer=None, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), text_encoder_2=None,
        tokenizer_2=None, image_encoder=image_encoder,
        feature_extractor=SiglipImageProcessor(size={"height": 27, "width": 27}))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, sampling_type, cfg_scale: float, height: int = HEIGHT, width: int = WIDTH):
    cfg = pipe.transformer.config
    gen = torch.Generator().manual_seed(11)
    pixels = np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)

    def text(n):  # LLaMA states of an n-token prompt, FramePack pads the mask; here no padding
        return (torch.randn(1, n, cfg.text_embed_dim, generator=gen), torch.ones(1, n),
                torch.randn(1, cfg.pooled_projection_dim, generator=gen))

    (emb, mask, pooled), (neg, neg_mask, neg_pooled) = text(60), text(17)
    out = pipe(
        image=Image.fromarray(pixels),
        prompt_embeds=emb, prompt_attention_mask=mask, pooled_prompt_embeds=pooled,
        negative_prompt_embeds=neg, negative_prompt_attention_mask=neg_mask,
        negative_pooled_prompt_embeds=neg_pooled, true_cfg_scale=cfg_scale,
        height=height, width=width, num_frames=NUM_FRAMES, latent_window_size=WINDOW,
        num_inference_steps=STEPS, guidance_scale=10.0, sampling_type=sampling_type,
        generator=torch.Generator().manual_seed(3), output_type="latent")
    return out.frames  # the history latents after each section


@pytest.mark.parametrize(("sampling", "cfg_scale"), [("inverted_anti_drifting", 1.0),
                                                     ("vanilla", 2.0)])
def test_pipeline_runs_the_transformer_engine(pipeline, sampling, cfg_scale):
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import (
        FramepackSamplingType,
    )

    pipe, cache = pipeline
    kind = FramepackSamplingType(sampling)
    with torch.no_grad():
        want = run(pipe, kind, cfg_scale)
    engines = use_engines(cache, strict=True, transformer=pipe.transformer)
    try:
        with torch.no_grad():
            got = run(pipe, kind, cfg_scale)
        counts = engines.counts()
    finally:
        engines.restore()
    sections = NUM_FRAMES // ((WINDOW - 1) * 4 + 1)
    calls = sections * STEPS * (2 if cfg_scale > 1 else 1)
    assert counts == {"transformer": {"engine": calls, "eager": 0}}
    assert len(got) == len(want) == sections
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and torch.isfinite(g).all()
        assert float((g - w).norm() / w.norm()) < 1e-4


def test_teacache_and_a_bucket_outside_every_engine_run_eager(pipeline):
    """TeaCache on (FramePack's default; it needs the eager block stack), or a size no engine
    covers (384 pixels is latent 48, below the engine's 52): every call runs the eager model,
    with one warning that says why, and the latents are exactly eager's; strict raises."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import (
        FramepackSamplingType,
    )

    pipe, cache = pipeline
    inverted = FramepackSamplingType.INVERTED_ANTI_DRIFTING
    calls = NUM_FRAMES // ((WINDOW - 1) * 4 + 1) * STEPS
    for why, size, teacache in (("TeaCache is on", (HEIGHT, WIDTH), True),
                                (r"latent_height=48 \(384 pixels\)", (384, 416), False)):
        pipe.transformer.enable_teacache = teacache  # what FramePack's initialize_teacache sets
        try:
            with torch.no_grad():
                want = run(pipe, inverted, 1.0, *size)
            engines = use_engines(cache, transformer=pipe.transformer)
            with pytest.warns(UserWarning, match=why) as caught, torch.no_grad():
                got = run(pipe, inverted, 1.0, *size)
            assert len([w for w in caught if "runs eager" in str(w.message)]) == 1
            assert engines.counts() == {"transformer": {"engine": 0, "eager": calls}}
            assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
            engines.restore()
            engines = use_engines(cache, strict=True, transformer=pipe.transformer)
            with pytest.raises(EngineFallback, match=why), torch.no_grad():
                run(pipe, inverted, 1.0, *size)
            engines.restore()
        finally:
            del pipe.transformer.enable_teacache


@pytest.mark.parametrize("f1", [False, True], ids=["inverted", "f1"])
def test_framepack_section_loop(pipeline, f1):
    """FramePack's own calling convention in its loop through the engine (strict) against the
    same loop on diffusers' eager model: every
    call served by the engine, the history latents as eager's. (TeaCache on: see above.)"""
    pipe, cache = pipeline
    transformer = pipe.transformer
    with torch.no_grad():
        want = framepack_loop(transformer, f1, framepack_names=False)
    engines = use_engines(cache, strict=True, transformer=transformer)
    try:
        with torch.no_grad():
            got = framepack_loop(transformer, f1, framepack_names=True)
        counts = engines.counts()
    finally:
        engines.restore()
    assert counts == {"transformer": {"engine": 3 * 2, "eager": 0}}
    assert got.shape == want.shape and float((got - want).norm() / want.norm()) < 1e-4
