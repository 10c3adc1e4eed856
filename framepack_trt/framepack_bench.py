"""FramePack's section loop, timed as a user meets it: demo_gradio.py's own ``worker``
(``framepack_worker.load_worker``: FramePack's code, unchanged) generating a video of N sections,
eagerly and through the cache's engines, each run in a fresh process.

Per run: the seconds from the process's start to its models loaded and its engines attached
(``ready``), what attaching took, each section's seconds (from the worker's "Start sampling"
to the section's video being handed over, decode included), the steps of each section that ran
the transformer's block stack (TeaCache skips the others), the peak GPU memory, and the rel L2
of each section's latents against the eager run's. Low-VRAM mode: ``vram_budget`` GiB left
free on the card (the rest held by a tensor before FramePack looks), so that FramePack itself
decides it runs on a small card and streams the transformer with its ``DynamicSwapInstaller``.

The models (random weights): the transformer is FramePack's ``HunyuanVideoTransformer3DModelPacked``
loaded with from_pretrained from the checkpoint the cache's transformer engines were built from,
grown to ``depth`` blocks after the engines are attached where asked (the block engines serve
any depth of their architecture; a smaller-depth build such as profiles/realwidth-blocks.yaml
then times FramePack's whole model). The encoders and the VAE come from the cache's engines'
checkpoints where it has them, else they are stand-ins of FramePack's classes with the widths
the transformer reads (LLaMA 3 layers, CLIP and SigLIP 1 layer: they run once before the
sections), and on CUDA HunyuanVideo's full-size VAE (it decodes every section). The run's
``models`` field says which.

    framepack-trt bench --framepack --cache-dir DIR [--sections 4] [--vram-budget 24]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from framepack_trt.cache import Cache
from framepack_trt.engine_status import entry_status
from framepack_trt.errors import FramepackTrtError, UsageError

#: The prompt of every run (FramePack's example prompt).
PROMPT = "The girl dances gracefully, with clear movements, full of charm."
#: What the transformer's engines are called in the cache, whole or in pieces.
TRANSFORMER_COMPONENTS = ("transformer", "transformer_input", "transformer_dual_block",
                          "transformer_single_block", "transformer_output",
                          "transformer_dual_block_fp8", "transformer_single_block_fp8")
#: The encoders and the VAE: FramePack's module name, its engines' components.
OTHER_MODULES = {"text_encoder": ("llama_text",), "text_encoder_2": ("clip_text",),
                 "image_encoder": ("siglip_image",), "vae": ("vae_encode", "vae_decode")}


@dataclass
class SectionSettings:
    """What the runs do: the worker's UI inputs and the bench's own settings."""

    cache_dir: str
    framepack_dir: str | None = None
    script: str = "demo_gradio.py"
    sections: int = 4
    steps: int = 25
    latent_window_size: int = 9
    bucket: tuple[int, int] = (544, 704)
    depth: tuple[int, int] | None = None
    vram_budget: float | None = None
    teacache: bool = True
    seed: int = 31337
    gs: float = 10.0
    #: Caches whose engines get a run each (default: ``cache_dir``'s); the eager run's models
    #: come from ``cache_dir``'s checkpoints, so the caches must share the transformer's.
    engine_caches: list[str] = field(default_factory=list)
    #: FramePack's modules that get engines in the engines runs (default: every module whose
    #: model comes from the cache's engines' checkpoints); the others run eagerly there too.
    modules: list[str] | None = None

    def caches(self) -> list[str]:
        return self.engine_caches or [self.cache_dir]

    def total_second_length(self) -> float:
        """The video length that makes the worker run ``sections`` sections."""
        return self.sections * self.latent_window_size * 4 / 30


@dataclass
class SectionRun:
    mode: str  # eager, or engines (with the cache folder's name when there are several)
    ready_s: float = 0.0
    attach_s: float = 0.0
    sections_s: list[float] = field(default_factory=list)
    #: Of each section: the seconds in FramePack's sampler and in its VAE decode (the rest:
    #: FramePack's work on the CPU, its model moves in low-VRAM mode, the progress previews).
    sample_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)
    stack_steps: list[int] = field(default_factory=list)
    peak_gib: float = 0.0
    high_vram: bool = True
    free_gib: float = 0.0
    rel_l2: list[float] = field(default_factory=list)
    served: dict[str, Any] = field(default_factory=dict)
    report: str = ""
    models: dict[str, str] = field(default_factory=dict)
    depth: tuple[int, int] = (0, 0)
    device: str = ""

    @property
    def total_s(self) -> float:
        """Attaching the engines plus every section (the models already loaded)."""
        return self.attach_s + sum(self.sections_s)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_s": round(self.total_s, 3)}


# -- the parent: checks, one fresh process per run, the comparison -----------------------------

def transformer_entries(cache: Cache) -> list[dict]:
    return [e for e in cache.entries().values() if e["component"] in TRANSFORMER_COMPONENTS
            and entry_status(cache, e).state == "ok"]


def check_settings(settings: SectionSettings) -> None:
    """One clear line for what cannot run: a FramePack folder that is not one, a cache without
    transformer engines, a budget larger than the card or without one."""
    from framepack_trt.framepack_worker import SCRIPTS, find_framepack

    folder = find_framepack(settings.framepack_dir)
    if settings.script not in SCRIPTS or not (folder / settings.script).is_file():
        raise UsageError(f"--script {settings.script}: FramePack's apps are "
                         f"{', '.join(SCRIPTS)} (in {folder})")
    for folder in dict.fromkeys([settings.cache_dir, *settings.caches()]):
        cache = Cache(Path(folder))
        if not transformer_entries(cache):
            raise UsageError(f"{cache.root}: no transformer engine that can run here, so there "
                             "is nothing to compare with eager; build them first (e.g. "
                             "`framepack-trt build -p realwidth-blocks --cache-dir ...`)")
    unknown = sorted(set(settings.modules or ()) - {"transformer", *OTHER_MODULES})
    if unknown:
        raise UsageError(f"--modules {','.join(unknown)}: FramePack's modules are transformer, "
                         + ", ".join(OTHER_MODULES))
    if settings.modules is not None and "transformer" not in settings.modules:
        raise UsageError("--modules: the transformer is what the runs compare; name it too")
    if settings.sections < 1 or settings.steps < 1 or settings.latent_window_size < 1:
        raise UsageError("--sections, --steps and --latent-window-size: at least 1")
    if settings.depth is not None and min(settings.depth) < 1:
        raise UsageError(f"--depth {settings.depth[0]} {settings.depth[1]}: at least one block "
                         "of each kind")
    if settings.vram_budget is not None:
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--vram-budget: FramePack's low-VRAM mode needs a CUDA GPU; this "
                             "machine has none")
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        if not 0 < settings.vram_budget < total:
            raise UsageError(f"--vram-budget {settings.vram_budget:g}: more than this card has "
                             f"({total:.1f} GiB, {torch.cuda.get_device_name(0)})"
                             if settings.vram_budget >= total else
                             f"--vram-budget {settings.vram_budget:g}: a size in GiB above 0")


def run_sections(settings: SectionSettings, eager: bool = True,
                 log_dir: Path | None = None, on_run=None) -> list[SectionRun]:
    """The eager run, then one run per engine cache, each in a fresh process (``python -m
    framepack_trt.framepack_bench``), one after the other; the engines' latents compared with
    the eager run's."""
    check_settings(settings)
    caches = settings.caches()
    jobs = [("eager", settings.cache_dir)] if eager else []
    jobs += [("engines" if len(caches) == 1 else f"engines ({Path(c).name})", c) for c in caches]
    runs = []
    with tempfile.TemporaryDirectory(prefix="framepack-bench-") as tmp:
        for n, (mode, cache_dir) in enumerate(jobs):
            out = Path(tmp) / str(n)
            out.mkdir()
            job = {"settings": asdict(settings), "mode": mode, "cache": cache_dir,
                   "out": str(out), "spawned": time.time()}
            proc = subprocess.run([sys.executable, "-m", "framepack_trt.framepack_bench",
                                   json.dumps(job)], capture_output=True, text=True)
            if log_dir is not None:
                (log_dir / f"run{n}.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0 or not (out / "run.json").is_file():
                tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
                raise FramepackTrtError(f"the {mode} run failed (exit {proc.returncode}):\n{tail}")
            run = SectionRun(**{k: tuple(v) if k == "depth" else v
                                for k, v in json.loads((out / "run.json").read_text()).items()})
            run.latents_path = out / "latents.pt"  # type: ignore[attr-defined]
            runs.append(run)
            if on_run:
                on_run(run)
        _compare(runs)
    return runs


def _compare(runs: list[SectionRun]) -> None:
    import torch

    eager = next((r for r in runs if r.mode == "eager"), None)
    if eager is None:
        return
    want = torch.load(eager.latents_path)  # type: ignore[attr-defined]
    for run in runs:
        got = torch.load(run.latents_path)  # type: ignore[attr-defined]
        run.rel_l2 = [float((g.float() - w.float()).norm() / w.float().norm())
                      for g, w in zip(got, want, strict=True)]


# -- the child: one run ----------------------------------------------------------------------

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


def _engine_checkpoint(cache: Cache, components) -> tuple[Path, dict] | None:
    """The local checkpoint folder of the cache's first usable engine of ``components``."""
    from framepack_trt.framepack import _checkpoint_dir

    for e in cache.entries().values():
        if e["component"] in components and entry_status(cache, e).state == "ok":
            local, _ = _checkpoint_dir(e, cache)
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

    from framepack_trt.components.base import get_component
    from framepack_trt.export import torch_dtype
    from framepack_trt.sources import from_pretrained

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
    for name, components in OTHER_MODULES.items():
        found = _engine_checkpoint(cache, components)
        if found is not None:
            local, entry = found
            cls = get_component(entry["component"]).load_model_class()
            models[name] = from_pretrained(cls, local, torch_dtype(
                entry["key_fields"]["dtype"])).cpu()
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

    from framepack_trt.framepack_worker import keep_output_capture

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

    from framepack_trt.device import current_device, describe
    from framepack_trt.framepack_worker import import_framepack, load_worker

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
    high_vram = run.free_gib > 60 if cuda else True  # demo_gradio.py's rule
    run.high_vram = high_vram

    cache = Cache(Path(job["cache"]))
    models, run.models = load_models(cache, gpu, out)
    setup_like_demo_gradio(models, high_vram, gpu)
    transformer = models["transformer"]
    engines = None
    start = time.perf_counter()
    if job["mode"] != "eager":
        from framepack_trt.framepack import use_engines

        given = {n: models[n] for n in ("transformer", *OTHER_MODULES)
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


def grow(model, dual: int, single: int) -> None:
    """Give ``model`` ``dual`` dual-stream and ``single`` single-stream blocks: its own, then
    copies of them in turn (or the first ones only, to shrink it), and the config to match (the
    engine loop reads the counts from it; the eager forward walks the module lists)."""
    import copy

    for blocks, count in ((model.transformer_blocks, dual),
                          (model.single_transformer_blocks, single)):
        own = list(blocks)
        del blocks[count:]
        blocks.extend(copy.deepcopy(own[i % len(own)]) for i in range(len(blocks), count))
    model.register_to_config(num_layers=dual, num_single_layers=single)


def table_rows(runs: list[SectionRun]) -> tuple[list[str], list[list[str]]]:
    """The runs as a table: a row each, then the speed-up of each engines run over eager."""
    eager = next((r for r in runs if r.mode == "eager"), None)
    head = ["run", "VRAM mode", "depth", "ready s", "attach s", "sections s", "sampling s",
            "VAE decode s", "block-stack steps", "total s", "vs eager", "first / later",
            "peak GiB", "rel L2 (last section)"]
    rows = []
    for r in runs:
        later = r.sections_s[1:]
        ratio = (f"{r.sections_s[0] / (sum(later) / len(later)):.2f}" if later else "-")
        rows.append([r.mode, "high" if r.high_vram else f"low ({r.free_gib:g} GiB free)",
                     f"{r.depth[0]} + {r.depth[1]}", f"{r.ready_s:.1f}", f"{r.attach_s:.2f}",
                     " ".join(f"{s:.1f}" for s in r.sections_s),
                     " ".join(f"{s:.1f}" for s in r.sample_s),
                     " ".join(f"{s:.1f}" for s in r.decode_s),
                     " ".join(map(str, r.stack_steps)), f"{r.total_s:.1f}",
                     f"{eager.total_s / r.total_s:.2f}x" if eager else "-", ratio,
                     f"{r.peak_gib:.1f}", f"{r.rel_l2[-1]:.2e}" if r.rel_l2 else "-"])
    return head, rows


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
