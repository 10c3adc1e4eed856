"""One run of ``framepack_bench``, in the fresh process it starts (``python -m
framepack_trt.framepack_run JOB``): demo_gradio.py's models loaded as the bench's docstring
says (the engines' checkpoints, else stand-ins), set up as demo_gradio.py sets them up, the
engines attached (an engines run), FramePack's own ``worker`` run for the sections, and its
timings, latents and engine counts written for the parent.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from framepack_trt.cache import Cache, Entry
from framepack_trt.components.base import FRAMEPACK_MODULES, framepack_modules, get_component
from framepack_trt.device import current_device, describe
from framepack_trt.engine_status import entry_status
from framepack_trt.framepack_bench import TRANSFORMER_COMPONENTS, SectionRun, SectionSettings, grow
from framepack_trt.framepack_worker import import_framepack, keep_output_capture, load_worker
from framepack_trt.runtime.checkpoints import checkpoint_dir
from framepack_trt.runtime.loading import load_model

#: The prompt of every run (FramePack's example prompt).
PROMPT = "The girl dances gracefully, with clear movements, full of charm."


def write_tokenizers(root: Path, prompt: str = PROMPT):
    """FramePack's two tokenizers, from folders written here (no download): a word-level LLaMA
    tokenizer over the words of HunyuanVideo's prompt template and ``prompt``, and a CLIP BPE
    tokenizer over letters and a few merges. Returns (tokenizer, tokenizer_2)."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTokenizer, PreTrainedTokenizerFast

    words = pre_tokenizers.Whitespace().pre_tokenize_str(
        DEFAULT_PROMPT_TEMPLATE["template"].format(prompt))
    vocab = {"<unk>": 0, "<pad>": 1, "<s>": 2, "</s>": 3}
    for word in sorted({w for w, _ in words}):
        vocab[word] = len(vocab)
    llama = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    llama.pre_tokenizer = pre_tokenizers.Whitespace()
    (root / "tokenizer").mkdir(parents=True, exist_ok=True)
    llama.save(str(root / "tokenizer" / "tokenizer.json"))
    (root / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "unk_token": "<unk>",
         "bos_token": "<s>", "eos_token": "</s>"}))
    letters = "abcdefghijklmnopqrstuvwxyz"
    merges = ["a n", "c e", "an ce", "g i", "gi r"]
    clip = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for token in [*letters, *(c + "</w>" for c in letters), *(m.replace(" ", "") for m in merges)]:
        clip[token] = len(clip)
    (root / "tokenizer_2").mkdir(parents=True, exist_ok=True)
    (root / "tokenizer_2" / "vocab.json").write_text(json.dumps(clip))
    (root / "tokenizer_2" / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return (PreTrainedTokenizerFast.from_pretrained(root / "tokenizer"),
            CLIPTokenizer.from_pretrained(root / "tokenizer_2"))


def _engine_checkpoint(cache: Cache, components) -> tuple[Path, Entry] | None:
    """The local checkpoint folder of the cache's first usable engine of ``components``."""
    for e in cache.entries().values():
        if e.component in components and entry_status(cache, e).state == "ok":
            local, _ = checkpoint_dir(e, cache)
            if local is not None:
                return local, e
    return None


def load_models(cache: Cache, device, root: Path) -> tuple[dict, dict[str, str]]:
    """demo_gradio.py's models (see the module's docstring), on the CPU as FramePack loads them,
    and where each came from."""
    import torch
    from diffusers import AutoencoderKLHunyuanVideo
    from diffusers_helper.models.hunyuan_video_packed import HunyuanVideoTransformer3DModelPacked
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        LlamaConfig,
        LlamaModel,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    where: dict[str, str] = {}
    found = _engine_checkpoint(cache, TRANSFORMER_COMPONENTS)
    assert found is not None  # check_settings
    transformer = HunyuanVideoTransformer3DModelPacked.from_pretrained(
        found[0], torch_dtype=torch.bfloat16).cpu()
    where["transformer"] = f"{found[0].name} (the engines' checkpoint)"
    cfg = transformer.config
    tokenizer, tokenizer_2 = write_tokenizers(root)
    half = torch.float16 if device.type == "cuda" else torch.float32
    models = {"transformer": transformer, "tokenizer": tokenizer, "tokenizer_2": tokenizer_2}
    torch.manual_seed(0)
    for name, components in framepack_modules().items():
        if name == "transformer":
            continue
        found = _engine_checkpoint(cache, components)
        if found is not None:
            local, entry = found
            models[name] = load_model(cache, entry, device="cpu")
            where[name] = f"{local.name} (the engines' checkpoint)"
            continue
        if name == "text_encoder":
            width = cfg.text_embed_dim
            model = LlamaModel(LlamaConfig(
                vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width,
                num_hidden_layers=3, num_attention_heads=max(1, width // 128),
                num_key_value_heads=max(1, width // 128), max_position_embeddings=512))
        elif name == "text_encoder_2":
            width = cfg.pooled_projection_dim
            model = CLIPTextModel(CLIPTextConfig(
                vocab_size=len(tokenizer_2), hidden_size=width, intermediate_size=width,
                num_hidden_layers=1, num_attention_heads=max(1, width // 64),
                max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1))
        elif name == "image_encoder":
            width = cfg.image_proj_dim
            model = SiglipVisionModel(SiglipVisionConfig(
                hidden_size=width, intermediate_size=width, num_hidden_layers=1,
                num_attention_heads=max(1, width // 72), image_size=384, patch_size=14))
        else:  # HunyuanVideo's VAE: full size on CUDA (it decodes every section), tiny on CPU
            model = (AutoencoderKLHunyuanVideo() if device.type == "cuda" else
                     AutoencoderKLHunyuanVideo(**get_component("vae_decode").tiny_config))
        models[name] = model.to(half)
        where[name] = f"stand-in {type(model).__name__}, random"
    side = models["image_encoder"].config.image_size
    models["feature_extractor"] = SiglipImageProcessor(size={"height": side, "width": side})
    return models, where


def setup_like_demo_gradio(models: dict, high_vram: bool, gpu) -> None:
    """What demo_gradio.py does at module level once its models are loaded (its lines after
    ``transformer = ...from_pretrained``): eval, tiling in low-VRAM mode, fp32 output, dtypes,
    no grads, then DynamicSwapInstaller (low VRAM) or everything on the GPU."""
    import torch
    from diffusers_helper.memory import DynamicSwapInstaller

    vae, transformer = models["vae"], models["transformer"]
    for name in ("vae", "text_encoder", "text_encoder_2", "image_encoder", "transformer"):
        models[name].eval()
    if not high_vram:
        vae.enable_slicing()
        vae.enable_tiling()
    transformer.high_quality_fp32_output_for_inference = True
    transformer.to(dtype=torch.bfloat16)
    for name in ("vae", "text_encoder", "text_encoder_2", "image_encoder", "transformer"):
        models[name].requires_grad_(False)
    if not high_vram:
        DynamicSwapInstaller.install_model(transformer, device=gpu)
        DynamicSwapInstaller.install_model(models["text_encoder"], device=gpu)
        # transformers 5 would return no hidden_states from the installer's subclass (eager
        # and engine runs alike); FramePack's pinned transformers 4 needs nothing.
        keep_output_capture(models["text_encoder"])
    else:
        for name in ("text_encoder", "text_encoder_2", "image_encoder", "vae", "transformer"):
            models[name].to(gpu)


def child(job: dict) -> None:
    import numpy as np
    import torch


    settings = SectionSettings(**{k: tuple(v) if k in ("bucket", "depth") and v else v
                                  for k, v in job["settings"].items()})
    out = Path(job["out"])
    cuda = torch.cuda.is_available()
    import_framepack(settings.framepack_dir)
    from diffusers_helper import memory
    from diffusers_helper.memory import get_cuda_free_memory_gb

    gpu = memory.gpu if cuda else torch.device("cpu")  # FramePack's, where it has a GPU

    run = SectionRun(job["mode"], device=describe(current_device("cuda" if cuda else "cpu")))
    held = None
    if settings.vram_budget is not None:  # the rest of the card, held before FramePack looks
        free = torch.cuda.mem_get_info()[0]
        held = torch.empty(max(0, free - int(settings.vram_budget * 2**30)), dtype=torch.uint8,
                           device=gpu)
    run.free_gib = round(get_cuda_free_memory_gb(gpu), 2) if cuda else 0.0
    # demo_gradio.py's rule, unless the bench was told to run low-VRAM mode
    high_vram = not settings.low_vram and (run.free_gib > 60 if cuda else True)
    run.high_vram = high_vram

    cache = Cache(Path(job["cache"]))
    models, run.models = load_models(cache, gpu, out)
    setup_like_demo_gradio(models, high_vram, gpu)
    transformer = models["transformer"]
    engines = None
    start = time.perf_counter()
    if job["mode"] != "eager":
        from framepack_trt.runtime.engines import use_engines

        given = {n: models[n] for n in FRAMEPACK_MODULES
                 if (n == "transformer" or not run.models[n].startswith("stand-in"))
                 and (settings.modules is None or n in settings.modules)}
        engines = use_engines(cache.root, strict=True, **given)
    run.attach_s = time.perf_counter() - start
    if settings.depth is not None:  # copies of its own blocks, where FramePack put them
        grow(transformer, *settings.depth)
    run.depth = (transformer.config.num_layers, transformer.config.num_single_layers)
    if cuda:
        torch.cuda.synchronize()
    run.ready_s = time.time() - job["spawned"]

    # What the worker hands over: its latents per section, its video per section (timed).
    latents, ends, stacks = [], [], []
    counter = {"blocks": 0}
    transformer.transformer_blocks[0].register_forward_pre_hook(
        lambda *a: counter.__setitem__("blocks", counter["blocks"] + 1))
    namespace = {**models, "high_vram": high_vram, "outputs_folder": str(out / "outputs"),
                 "gpu": gpu}

    def save_bcthw_as_mp4(x, output_filename, fps=10, crf=0):  # the video: not written
        if cuda:
            torch.cuda.synchronize()
        ends.append(time.perf_counter())

    namespace["save_bcthw_as_mp4"] = save_bcthw_as_mp4
    worker = load_worker(namespace, settings.script, settings.framepack_dir)
    sample_hunyuan = namespace["sample_hunyuan"]

    vae_decode = namespace["vae_decode"]

    def synced() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def recorded(**kwargs):
        before, start = _stack_count(engines, counter), synced()
        result = sample_hunyuan(**kwargs)
        run.sample_s.append(round(synced() - start, 3))
        run.decode_s.append(0.0)
        latents.append(result.float().cpu())
        stacks.append(_stack_count(engines, counter) - before)
        return result

    def timed_decode(*args, **kwargs):
        start = synced()
        result = vae_decode(*args, **kwargs)
        run.decode_s[-1] = round(run.decode_s[-1] + synced() - start, 3)
        return result

    namespace["sample_hunyuan"] = recorded
    namespace["vae_decode"] = timed_decode
    stream = namespace["stream"]
    push = stream.output_queue.push
    begun: list[float] = []

    def timed_push(item):
        if item[0] == "progress" and "Start sampling" in str(item[1][2]) and not begun:
            begun.append(time.perf_counter())
        push(item)

    stream.output_queue.push = timed_push
    os.makedirs(namespace["outputs_folder"], exist_ok=True)
    image = np.random.default_rng(settings.seed).integers(
        0, 256, (*settings.bucket, 3), dtype=np.uint8)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    worker(image, PROMPT, "", settings.seed, settings.total_second_length(),
           settings.latent_window_size, settings.steps, 1.0, settings.gs, 0.0, 6,
           settings.teacache, 16)
    marks = begun[:1] + ends
    run.sections_s = [round(b - a, 3) for a, b in zip(marks, marks[1:], strict=False)]
    run.stack_steps = stacks
    if len(run.sections_s) != settings.sections:
        raise RuntimeError(f"the worker ran {len(run.sections_s)} sections, not "
                           f"{settings.sections}")
    run.peak_gib = round((torch.cuda.max_memory_allocated() - (held.numel() if held is not None
                                                               else 0)) / 2**30, 2) if cuda else 0
    if engines is not None:
        run.served, run.report = engines.served(), engines.report()
    torch.save(latents, out / "latents.pt")
    (out / "run.json").write_text(json.dumps({k: v for k, v in run.to_dict().items()
                                              if k != "total_s"}))


def _stack_count(engines, counter) -> int:
    """Transformer calls so far that ran the block stack: the engines' count, or (eager) the
    calls of the first block."""
    if engines is not None and "transformer" in engines.swaps:
        swap = engines.swaps["transformer"]
        if getattr(swap, "has_pieces", False):
            return swap.stack["block_stack"]
    return counter["blocks"]


if __name__ == "__main__":
    child(json.loads(sys.argv[1]))
