"""FramePack's own code as the client: ``demo_gradio.py``'s and ``demo_gradio_f1.py``'s
``worker`` (the copy in ``tests/framepack_upstream``, run through
``framepack_trt.framepack_worker``) generates two sections of video end to end, with tiny
random weights of FramePack's own transformer class and of the classes ``demo_gradio.py``
loads, once eagerly and once with every module swapped for the engines of one cache
(``use_engines(strict=True)``: a call no engine serves fails the test). The latents each
section's sampler returns and the pixels FramePack hands to ``save_bcthw_as_mp4`` match the
eager run's; engine outputs go through FramePack's and diffusers' code under ``torch.no_grad``
only, as in FramePack (diffusers' framewise decoding blends decoded windows in place), and an
exception in the worker fails the test instead of being printed (``ReraiseTraceback``).

Shapes are FramePack's own: the 640 buckets (a 100x130 image -> 544x704, latent 68x88), the
LLaMA prompt padded to 256 tokens after the template, SigLIP's 729 image tokens (a 54x54 input
in 2x2 patches). Small are what the user sets in the UI: latent_window_size 2 (I2V's last
section decodes 5 latent frames as framewise windows of 5 and 2 frames, blended in place),
3 steps, TeaCache on. Encoders and VAE run in float32 (FramePack's float16 is for the
GPU), the transformer in bfloat16 as FramePack casts it. The two scripts differ only in their
section loop, so demo_gradio.py runs in high-VRAM mode and demo_gradio_f1.py in low-VRAM mode:
every path of both, in two runs each."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WORKER_SIGLIP, WORKER_WINDOW, cli, weights_folder
from tests_helpers import framepack_random_weights, rel_l2

from framepack_trt.framepack import use_engines
from framepack_trt.framepack_run import write_tokenizers

#: The user's inputs: two sections (0.5 s * 30 / (2 * 4) = 1.875 -> 2), 3 steps, TeaCache. The
#: engines (conftest's WORKER_ENTRIES, fixture worker_engines) are built for these shapes.
PROMPT = "a girl dances gracefully"
SEED, TOTAL_SECONDS, WINDOW, STEPS = 31337, 0.5, WORKER_WINDOW, 3
SECTIONS = 2

COMPONENTS = ("transformer", "llama_text", "clip_text", "siglip_image", "vae_encode", "vae_decode")
PIECES = ("transformer_input", "transformer_dual_block", "transformer_single_block",
          "transformer_output")

#: Engine against eager: the float32 modules' outputs (rel L2).
TOL = 1e-4
#: The latents each section's sampler returns, through the bfloat16 transformer: its block
#: engines' fused kernels round otherwise than FramePack's eager forward (test_transformer_blocks
#: measured 1.5e-3 to 2.1e-3 against diffusers' forward over a loop).
TOL_BF16 = 2e-2


pytestmark = pytest.mark.usefixtures("restore_layer_norms")


def _transformer(cache: Path, root: Path, seed: int):
    """FramePack's ``HunyuanVideoTransformer3DModelPacked`` of the engines' architecture, random
    weights (every parameter drawn: none left at zero or one), written with save_pretrained and
    loaded as demo_gradio.py loads it: from_pretrained in bfloat16, fp32 output on."""
    import inspect

    from diffusers_helper.models.hunyuan_video_packed import HunyuanVideoTransformer3DModelPacked

    config = json.loads((weights_folder(cache, "transformer") / "config.json").read_text())
    params = inspect.signature(HunyuanVideoTransformer3DModelPacked.__init__).parameters
    model = HunyuanVideoTransformer3DModelPacked(**{k: v for k, v in config.items() if k in params})
    framepack_random_weights(model, seed)
    folder = root / f"transformer-{seed}"
    model.save_pretrained(folder)
    model = HunyuanVideoTransformer3DModelPacked.from_pretrained(folder, torch_dtype=torch.bfloat16)
    model.high_quality_fp32_output_for_inference = True
    return model


def load_models(cache: Path, root: Path, transformer_seed: int = 0) -> dict:
    """What demo_gradio.py's module level makes, from the cache's random weights (the
    transformer: FramePack's class, weights of its own)."""
    from diffusers import AutoencoderKLHunyuanVideo
    from transformers import CLIPTextModel, LlamaModel, SiglipImageProcessor, SiglipVisionModel

    from framepack_trt.framepack_worker import VENDORED, import_framepack

    import_framepack(VENDORED)  # this repository's copy of FramePack, importable
    root.mkdir(parents=True, exist_ok=True)
    # FramePack's tokenizers, from folders written here: a word-level LLaMA tokenizer over the
    # template's and the prompt's words, a CLIP BPE tokenizer over letters (the bench's own).
    tokenizer, tokenizer_2 = write_tokenizers(root, PROMPT)
    models = {
        "text_encoder": LlamaModel.from_pretrained(weights_folder(cache, "llama_text")),
        "text_encoder_2": CLIPTextModel.from_pretrained(weights_folder(cache, "clip_text")),
        "tokenizer": tokenizer, "tokenizer_2": tokenizer_2,
        "vae": AutoencoderKLHunyuanVideo.from_pretrained(weights_folder(cache, "vae")),
        "feature_extractor": SiglipImageProcessor(size={"height": WORKER_SIGLIP["image_size"],
                                                        "width": WORKER_SIGLIP["image_size"]}),
        "image_encoder": SiglipVisionModel.from_pretrained(weights_folder(cache, "siglip_image")),
        "transformer": _transformer(cache, root, transformer_seed),
    }
    for name in ("vae", "text_encoder", "text_encoder_2", "image_encoder", "transformer"):
        models[name].eval().requires_grad_(False)
    return models


def run_worker(script: str, models: dict, root: Path, high_vram: bool = True,
               decode: list | None = None) -> dict:
    """FramePack's worker of ``script`` on a random 100x130 image, with the UI's inputs above.
    Returns what FramePack's functions returned, recorded on the way (each call goes to the
    real one): ``sample_hunyuan``'s latents per section, ``vae_decode``'s inputs, the
    encoders' outputs; the pixels given to ``save_bcthw_as_mp4`` (recorded, not written) and
    the output queue's flags. ``decode``: latents ``vae_decode`` decodes in place of the ones
    it is given, one per call (another run's ``decoded``, of the same shapes)."""
    from framepack_trt.framepack_worker import VENDORED, load_worker

    out = {name: [] for name in ("latents", "decoded", "pixels", "encode_prompt_conds",
                                 "vae_encode", "hf_clip_vision_encode")}
    namespace = {**models, "high_vram": high_vram, "outputs_folder": str(root / "outputs")}
    namespace["save_bcthw_as_mp4"] = lambda x, output_filename, fps=10, crf=0: out[
        "pixels"].append(x.clone())
    worker = load_worker(namespace, script, VENDORED)

    def recorder(name, record):
        real = namespace[name]

        def call(*args, **kwargs):
            result = real(*args, **kwargs)
            out[name].append(record(result))
            return result
        namespace[name] = call

    recorder("encode_prompt_conds", lambda r: [t.clone() for t in r])
    recorder("vae_encode", lambda r: r.clone())
    recorder("hf_clip_vision_encode", lambda r: r.last_hidden_state.clone())
    sample_hunyuan, vae_decode = namespace["sample_hunyuan"], namespace["vae_decode"]

    def sample(**kwargs):
        latents = sample_hunyuan(**kwargs)
        out["latents"].append(latents.clone())
        return latents

    def decode_(latents, vae, image_mode=False):
        if decode is not None:
            given = decode[len(out["decoded"])]
            assert given.shape == latents.shape
            latents = given
        out["decoded"].append(latents.clone())
        return vae_decode(latents, vae, image_mode)

    namespace["sample_hunyuan"], namespace["vae_decode"] = sample, decode_
    # The eager forward's TeaCache decisions: its first dual-stream block runs with the stack.
    stacks = []
    hook = models["transformer"].transformer_blocks[0].register_forward_hook(
        lambda *_: stacks.append(1))
    os.makedirs(namespace["outputs_folder"], exist_ok=True)
    image = np.random.default_rng(5).integers(0, 256, (100, 130, 3), dtype=np.uint8)
    assert not torch.is_inference_mode_enabled()
    torch.manual_seed(0)  # vae_encode samples the posterior from torch's global generator
    try:
        worker(image, PROMPT, "", SEED, TOTAL_SECONDS, WINDOW, STEPS, 1.0, 10.0, 0.0, 6, True, 16)
    finally:
        hook.remove()
    out["eager_block_stacks"] = len(stacks)
    out["flags"] = []
    while (item := namespace["stream"].output_queue.pop()) is not None:
        out["flags"].append(item[0])
    return out


def modules(models: dict) -> dict:
    """The models ``use_engines`` takes (FramePack's names), of those ``load_models`` made."""
    return {k: v for k, v in models.items() if not k.startswith(("tokenizer", "feature"))}


def check_same(got: dict, want: dict) -> dict[str, float]:
    """The engine run against the eager run: the float32 modules' outputs within ``TOL``
    (the encoders', and the pixels of a run that decoded the eager run's latents), the
    sampler's latents (through the bfloat16 transformer) within ``TOL_BF16``. Returns the
    largest rel L2 of each."""
    assert got["flags"] == want["flags"] and got["flags"][-1] == "end"
    assert got["flags"].count("file") == SECTIONS and len(got["latents"]) == SECTIONS
    worst = {}
    for name, tol in (("encode_prompt_conds", TOL), ("vae_encode", TOL),
                      ("hf_clip_vision_encode", TOL), ("decoded", 0.0), ("pixels", TOL),
                      ("latents", TOL_BF16)):
        pairs = list(zip(got[name], want[name], strict=True))
        pairs = [p for pair in pairs for p in (zip(*pair, strict=True)
                                               if isinstance(pair[0], list) else [pair])]
        assert pairs and all(g.shape == w.shape for g, w in pairs), name
        worst[name] = max(rel_l2(g, w) for g, w in pairs)
        assert worst[name] <= tol, (name, worst)
    return worst


def check_served(engines, vae_decode_calls: int, eager_block_stacks: int) -> int:
    """Every module ran its engines only (strict would have raised otherwise), the
    transformer's block engines included, and they ran the block stack at the steps where
    FramePack's own forward did (TeaCache skipped the others)."""
    counts = engines.counts()
    assert sorted(counts) == sorted(COMPONENTS), counts
    assert all(c["eager"] == 0 and c["engine"] > 0 for c in counts.values()), counts
    assert counts["transformer"]["engine"] == SECTIONS * STEPS
    assert counts["llama_text"]["engine"] == counts["clip_text"]["engine"] == 1  # cfg 1
    assert counts["vae_decode"]["engine"] == vae_decode_calls, counts
    served = engines.served()
    assert sorted(served["transformer"]) == sorted(PIECES), served
    blocks = served["transformer"]["transformer_dual_block"]
    # TeaCache runs the block stack at each section's first and last step at least.
    assert blocks == eager_block_stacks and 2 * SECTIONS <= blocks <= SECTIONS * STEPS, (
        blocks, eager_block_stacks)
    assert served["transformer"]["transformer_single_block"] == blocks
    assert all(sum(served[c].values()) == counts[c]["engine"] for c in COMPONENTS
               if c != "transformer"), served
    report = engines.report()
    assert "no engine" not in report and "broken" not in report, report
    return blocks


def test_demo_gradio_worker_on_engines(worker_engines, tmp_path):
    """demo_gradio.py (I2V, inverted sampling), high-VRAM mode: every module on its engines,
    the latents and pixels of both sections as eager's. The first section decodes 2 latent
    frames; the last 5, as framewise windows of 5 and 2 frames blended in place (diffusers'
    ``blend_t`` writes into the second window's decoded frames: an engine output)."""
    models = load_models(worker_engines, tmp_path / "models")
    want = run_worker("demo_gradio.py", models, tmp_path / "eager")
    engines = use_engines(worker_engines, strict=True, **modules(models))
    try:
        got = run_worker("demo_gradio.py", models, tmp_path / "engines", decode=want["decoded"])
        # TeaCache skips the middle step of each section with these weights, as FramePack's
        # forward does: the residual reuse runs too.
        assert check_served(engines, 1 + 2, want["eager_block_stacks"]) == 2 * SECTIONS
        assert got["eager_block_stacks"] == 0
        assert engines.served()["vae_decode"] == {"vae_decode": 1, "vae_decode_two": 2}
    finally:
        engines.restore()
    check_same(got, want)
    assert [tuple(p.shape) for p in got["pixels"]] == [(1, 3, 5, 544, 704), (1, 3, 17, 544, 704)]


def test_demo_gradio_f1_worker_low_vram_mode(worker_engines, tmp_path):
    """demo_gradio_f1.py in low-VRAM mode as the script sets it up: the VAE sliced and tiled
    (an engine call per 256-pixel tile: 12 per frame window of 544x704), DynamicSwapInstaller on
    the transformer and the LLaMA encoder (each weight read a copy moved to ``gpu``), and the
    worker's own model moves. F1's transformer is another checkpoint of the architecture the
    block engines were built for. The sections decode 3 and 4 latent frames, tiled (diffusers'
    ``blend_v`` and ``blend_h`` write into the decoded tiles: engine outputs)."""
    from framepack_trt.framepack_worker import keep_output_capture

    models = load_models(worker_engines, tmp_path / "models", transformer_seed=1)
    from diffusers_helper.memory import DynamicSwapInstaller  # FramePack's, from its folder

    gpu = torch.device("cpu")  # the worker's gpu without CUDA (framepack_worker)
    models["vae"].enable_slicing()
    models["vae"].enable_tiling()
    DynamicSwapInstaller.install_model(models["transformer"], device=gpu)
    DynamicSwapInstaller.install_model(models["text_encoder"], device=gpu)
    keep_output_capture(models["text_encoder"])  # transformers 5: its eager hidden_states
    want = run_worker("demo_gradio_f1.py", models, tmp_path / "eager", high_vram=False)
    engines = use_engines(worker_engines, strict=True, **modules(models))
    try:
        got = run_worker("demo_gradio_f1.py", models, tmp_path / "engines", high_vram=False,
                         decode=want["decoded"])
        check_served(engines, 2 * 12, want["eager_block_stacks"])
        assert got["eager_block_stacks"] == 0
        assert engines.counts()["vae_encode"]["engine"] == 12
    finally:
        engines.restore()
    check_same(got, want)
    assert [tuple(p.shape) for p in got["pixels"]] == [(1, 3, 9, 544, 704), (1, 3, 17, 544, 704)]


# -- the driver alone (no engines, no models) --------------------------------------------------

def _namespace(**extra) -> dict:
    """Every name demo_gradio.py's module level makes, as placeholders."""
    names = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae",
             "feature_extractor", "image_encoder", "transformer")
    return {**dict.fromkeys(names), "high_vram": True, "outputs_folder": "unused", **extra}


def test_find_framepack(tmp_path):
    from framepack_trt.errors import UsageError
    from framepack_trt.framepack_worker import VENDORED, find_framepack

    assert find_framepack() == VENDORED.resolve()
    assert (VENDORED / "demo_gradio.py").is_file() and (VENDORED / "LICENSE").is_file()
    (tmp_path / "fp" / "diffusers_helper").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"^FramePack folder .*/fp: not a FramePack checkout, "
                                         r"it has no demo_gradio.py$"):
        find_framepack(tmp_path / "fp")
    (tmp_path / "fp" / "demo_gradio.py").write_text("")
    assert find_framepack(tmp_path / "fp") == (tmp_path / "fp").resolve()
    with pytest.raises(UsageError, match="it has no demo_gradio.py and no diffusers_helper/"):
        find_framepack(tmp_path)
    with pytest.raises(UsageError, match="/nowhere: no such folder"):
        find_framepack(tmp_path / "nowhere")
    # The Windows one-click package: its folder holds FramePack in webui/.
    package = tmp_path / "framepack_cu126_torch26"
    (package / "webui").mkdir(parents=True)
    (tmp_path / "fp").rename(package / "webui" / "fp")
    for part in ("demo_gradio.py", "diffusers_helper"):
        (package / "webui" / "fp" / part).rename(package / "webui" / part)
    with pytest.raises(UsageError) as err:
        find_framepack(package)
    assert str(err.value).endswith(
        f"it has no demo_gradio.py and no diffusers_helper/; FramePack's one-click package "
        f"keeps it in {package / 'webui'}: pass that")
    assert find_framepack(package / "webui") == (package / "webui").resolve()


@pytest.mark.parametrize("script", ["demo_gradio.py", "demo_gradio_f1.py"])
def test_load_worker_takes_the_scripts_own_code(script):
    """The worker is the script's function (its file and line), its imports only those it
    needs (no Gradio); a name the script's module level would have made is asked for."""
    import ast

    from framepack_trt.errors import UsageError
    from framepack_trt.framepack_worker import VENDORED, ReraiseTraceback, load_worker

    namespace = _namespace()
    worker = load_worker(namespace, script)
    code = worker.__wrapped__.__code__  # under FramePack's @torch.no_grad()
    tree = ast.parse((VENDORED / script).read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "worker"]
    first = node.decorator_list[0].lineno  # @torch.no_grad(), as the script has it
    assert (code.co_filename, code.co_firstlineno) == (str(VENDORED / script), first)
    assert "gr" not in namespace and "parser" not in namespace and "login" not in namespace
    assert namespace["gpu"] == torch.device("cpu") or torch.cuda.is_available()
    assert isinstance(namespace["traceback"], ReraiseTraceback)
    assert callable(namespace["sample_hunyuan"]) and namespace["stream"] is not None
    with pytest.raises(UsageError, match=f"^{script}'s worker reads high_vram, vae: give them"):
        load_worker({k: v for k, v in _namespace().items() if k not in ("vae", "high_vram")},
                    script)


def test_worker_exceptions_reach_the_caller():
    """FramePack's worker catches every exception and prints it; here it re-raises, unless
    ``raise_errors=False`` (FramePack's behaviour: printed, then 'end')."""
    from framepack_trt.framepack_worker import load_worker

    def tokenizer(*args, **kwargs):
        raise RuntimeError("the tokenizer failed")

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    worker = load_worker(_namespace(tokenizer=tokenizer))
    with pytest.raises(RuntimeError, match="the tokenizer failed"):
        worker(image, PROMPT, "", SEED, TOTAL_SECONDS, WINDOW, STEPS, 1.0, 10.0, 0.0, 6, True, 16)
    namespace = _namespace(tokenizer=tokenizer)
    worker = load_worker(namespace, raise_errors=False)
    worker(image, PROMPT, "", SEED, TOTAL_SECONDS, WINDOW, STEPS, 1.0, 10.0, 0.0, 6, True, 16)
    flags = []
    while (item := namespace["stream"].output_queue.pop()) is not None:
        flags.append(item[0])
    assert flags[-1] == "end" and "file" not in flags


def test_strict_refuses_a_vae_part_without_engines(worker_engines, tmp_path):
    """``strict=True``: the VAE's decoder without an engine (its encoder has one) would run
    eagerly at every decode, which strict promises never to do silently."""
    import shutil

    from diffusers import AutoencoderKLHunyuanVideo

    from framepack_trt.framepack import EngineFallback

    cache = tmp_path / "cache"
    shutil.copytree(worker_engines, cache)
    cli("purge", "--cache-dir", str(cache), "-c", "vae_decode", "-c", "vae_decode_two", "--yes",
        check=True)
    vae = AutoencoderKLHunyuanVideo.from_pretrained(weights_folder(cache, "vae")).eval()
    with pytest.raises(EngineFallback, match="decod"):
        use_engines(cache, strict=True, vae=vae)


def test_keep_output_capture_gives_the_installers_class_its_hidden_states():
    """FramePack's low-VRAM mode installs ``DynamicSwapInstaller`` on its LLaMA encoder, whose
    class it replaces; FramePack reads ``hidden_states[-3]`` of the call. After
    ``keep_output_capture`` the installed model returns the hidden states it returned before
    (on transformers 5 they are otherwise None; on FramePack's pinned 4.46.2 there is nothing
    to do)."""
    from transformers import LlamaConfig, LlamaModel

    from framepack_trt.framepack_worker import VENDORED, import_framepack, keep_output_capture

    import_framepack(VENDORED)  # this repository's copy of FramePack, importable
    from diffusers_helper.memory import DynamicSwapInstaller  # FramePack's, from its folder

    torch.manual_seed(0)
    model = LlamaModel(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=4,
                                   vocab_size=100)).eval()
    ids = torch.randint(0, 100, (1, 7))
    with torch.no_grad():
        want = model(ids, output_hidden_states=True).hidden_states
        DynamicSwapInstaller.install_model(model, device=torch.device("cpu"))
        assert type(model).__name__ == "DynamicSwap_LlamaModel"
        keep_output_capture(model)
        got = model(ids, output_hidden_states=True).hidden_states
    assert got is not None and len(got) == len(want) == 4
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
