"""FramePack's section loop, timed as a user meets it: demo_gradio.py's own ``worker``
(``framepack_worker.load_worker``: FramePack's code, unchanged) generating a video of N sections,
eagerly and through the cache's engines, each run in a fresh process (``framepack_run``).

Per run: the seconds from the process's start to its models loaded and its engines attached
(``ready``), what attaching took, each section's seconds (from the worker's "Start sampling"
to the section's video being handed over, decode included), the steps of each section that ran
the transformer's block stack (TeaCache skips the others), the peak GPU memory, and the rel L2
of each section's latents against the eager run's. Low-VRAM mode: ``vram_budget`` GiB left
free on the card (the rest held by a tensor before FramePack looks), so that FramePack itself
decides it runs on a small card and streams the transformer with its ``DynamicSwapInstaller``;
or ``low_vram``, which sets it up whatever is free (on the CPU too, where FramePack's memory
helpers see the host's memory: ``framepack_worker``).

The models (random weights): the transformer is FramePack's ``HunyuanVideoTransformer3DModelPacked``
loaded with from_pretrained from the checkpoint the cache's transformer engines were built from,
grown to ``depth`` blocks after the engines are attached where asked (the block engines serve
any depth of their architecture; a smaller-depth build such as profiles/realwidth-blocks.yaml
then times FramePack's whole model). The encoders and the VAE come from the cache's engines'
checkpoints where it has them, else they are stand-ins of FramePack's classes with the widths
the transformer reads (LLaMA 3 layers, CLIP and SigLIP 1 layer: they run once before the
sections), and on CUDA HunyuanVideo's full-size VAE (it decodes every section). The run's
``models`` field says which.

    framepack-trt bench --framepack --cache-dir DIR [--sections 4] [--vram-budget 24 | --low-vram]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from framepack_trt.cache import Cache, Entry
from framepack_trt.components.base import FRAMEPACK_MODULES
from framepack_trt.engine_status import entry_status
from framepack_trt.errors import FramepackTrtError, UsageError
from framepack_trt.framepack_worker import SCRIPTS, find_framepack
from framepack_trt.transformer.names import PIECE_COMPONENTS, WHOLE

#: What the transformer's engines are called in the cache, whole or in pieces.
TRANSFORMER_COMPONENTS = (WHOLE, *PIECE_COMPONENTS)


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
    #: FramePack's low-VRAM mode whatever the device has free (without CUDA: the only way).
    low_vram: bool = False

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

def transformer_entries(cache: Cache) -> list[Entry]:
    return [e for e in cache.entries().values() if e.component in TRANSFORMER_COMPONENTS
            and entry_status(cache, e).state == "ok"]


def check_settings(settings: SectionSettings) -> None:
    """One clear line for what cannot run: a FramePack folder that is not one, a cache without
    transformer engines, a budget larger than the card or without one."""
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
    unknown = sorted(set(settings.modules or ()) - set(FRAMEPACK_MODULES))
    if unknown:
        raise UsageError(f"--modules {','.join(unknown)}: FramePack's modules are "
                         + ", ".join(FRAMEPACK_MODULES))
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
    framepack_trt.framepack_run``), one after the other; the engines' latents compared with
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
            proc = subprocess.run([sys.executable, "-m", "framepack_trt.framepack_run",
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
        rows.append([r.mode, "high" if r.high_vram else
                     f"low ({r.free_gib:g} GiB free)" if r.free_gib else "low",
                     f"{r.depth[0]} + {r.depth[1]}", f"{r.ready_s:.1f}", f"{r.attach_s:.2f}",
                     " ".join(f"{s:.1f}" for s in r.sections_s),
                     " ".join(f"{s:.1f}" for s in r.sample_s),
                     " ".join(f"{s:.1f}" for s in r.decode_s),
                     " ".join(map(str, r.stack_steps)), f"{r.total_s:.1f}",
                     f"{eager.total_s / r.total_s:.2f}x" if eager else "-", ratio,
                     f"{r.peak_gib:.1f}", f"{r.rel_l2[-1]:.2e}" if r.rel_l2 else "-"])
    return head, rows
