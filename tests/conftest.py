"""Shared fixtures: tiny random-weight models of the real classes, saved with save_pretrained,
and helpers to write profiles and run the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("FRAMEPACK_TENSORRT_CACHE_DIR", None)
# pytest-xdist's workers run with COLUMNS=80, and the CLI honours COLUMNS when its output is not
# a terminal, so Rich would wrap and cut the tables these tests read. Give them a log's width.
os.environ["COLUMNS"] = "200"

REPO = Path(__file__).resolve().parent.parent


#: The run-wide builds (once_per_run) that tests wait on, longest first (about 7, 3 and 2 min
#: on 2 cores).
SHARED_BUILDS = ("tiny_build", "worker_engines", "blocks")


def pytest_collection_modifyitems(config, items):
    """Order the run for ``make test``'s pytest-xdist workers, which start on consecutive
    chunks of the tests (each worker a quarter of its share, in order: pytest-xdist's load
    scheduling) and then take the rest in order as they go. The first two shared builds start
    the first two chunks, one on each worker (the tiny profile, about 7 min on 2 cores, and
    FramePack's worker's engines, 3 min), the third comes next (the transformer pieces, 2 min);
    then come the tests that need none, then those of each build, the last build's first and
    the longest of each group first. In collection order both workers began with tests of the
    tiny build, and one of them waited minutes for the other."""
    def needs(item) -> str | None:
        names = set(getattr(item, "fixturenames", ()))
        return next((b for b in SHARED_BUILDS if b in names), None)

    starters = [next((i for i in items if needs(i) == b), None) for b in SHARED_BUILDS]
    starters = [i for i in starters if i is not None]
    rank = {None: 0, **{b: n for n, b in enumerate(reversed(SHARED_BUILDS), 1)}}
    rest = sorted((i for i in items if i not in starters),  # sorted() is stable
                  key=lambda i: (rank[needs(i)], not i.nodeid.startswith(LONGEST)))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    chunk = max(len(items) // workers // 4, 2) if workers > 1 else 1
    ordered = []
    for starter in starters[:workers]:  # each at the start of a worker's first chunk
        ordered += [starter, *rest[:chunk - 1]]
        rest = rest[chunk - 1:]
    items[:] = ordered + starters[workers:] + rest


#: Tests of minutes (the rest of their group takes seconds each).
LONGEST = ("tests/test_e2e.py::", "tests/test_build.py::test_force_rebuild")


def save_tiny(component_name: str, target: Path, seed: int = 0, **overrides) -> Path:
    """A tiny random-weight model of the component's real class, written with save_pretrained."""
    import torch

    from framepack_trt.components.base import get_component
    from framepack_trt.sources import construct

    comp = get_component(component_name)
    cls = comp.load_model_class()
    torch.manual_seed(seed)
    construct(cls, {**comp.tiny_config, **overrides}).eval().save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> dict[str, Path]:
    """One save_pretrained folder per registered component."""
    from framepack_trt.components.base import registry

    root = tmp_path_factory.mktemp("weights")
    return {name: save_tiny(name, root / name, seed=i) for i, name in enumerate(sorted(registry()))}


def weights_folder(cache: Path, folder: str) -> Path:
    """The random weights a cache's entries were built from (``source: random``), as written
    under its ``weights/`` folder (``vae`` for both VAE parts)."""
    (path,) = (cache / "weights").glob(f"{folder}-*")
    return path


def write_profile(path: Path, components: list[dict], **top) -> Path:
    doc = {"name": path.stem, "backend": "aoti", "device": "cpu", **top, "components": components}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def build_cuda_blocks(root: Path, **entry) -> tuple[Path, Path]:
    """The transformer's four piece engines of tiny random weights (seed 7), built in bf16 on
    CUDA over the 640 buckets' range (``entry``: more keys of the profile entry, such as
    ``quantize``); all four must build. Returns (cache folder, weights folder)."""
    weights = save_tiny("transformer_input", root / "weights", seed=7)
    profile = write_profile(root / "blocks.yaml", [{
        "component": "transformer", "source": {"path": str(weights)}, "dtype": "bfloat16",
        **entry,
        "dims": {"latent_frames": 9, "latent_height": {"min": 52, "opt": 68, "max": 120},
                 "latent_width": {"min": 52, "opt": 88, "max": 120},
                 "text_len": {"min": 1, "opt": 64, "max": 256}}}], device="cuda")
    r = cli("build", "--profile", str(profile), "--cache-dir", str(root / "cache"), "--json",
            check=True)
    results = json.loads(r.stdout)["results"]
    assert [x["outcome"] for x in results] == ["built"] * 4, results
    return root / "cache", weights


def load_transformer(path: Path, device: str):
    """The FramePack transformer the engines are built from (``transformer_class()``:
    diffusers', else this project's) from a save_pretrained folder, bf16, on ``device``."""
    import torch

    from framepack_trt.transformer.model import transformer_class

    return transformer_class().from_pretrained(
        path, torch_dtype=torch.bfloat16).eval().to(device)


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = False,
        timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess (the timeout only catches a hang: a
    tiny-profile build takes minutes on 2 cores, and more on a loaded machine)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "framepack_trt", *args], cwd=cwd,
                          capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"framepack-trt {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def once_per_run(tmp_path_factory, name: str, make) -> Path:
    """``make(folder)`` run once per test run, in a folder every pytest-xdist worker sees (the
    run's shared temp folder), under a file lock: the first worker to need it makes it, the
    others wait and read it. Without xdist: a fresh temp folder. Returns the folder."""
    from filelock import FileLock

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    shared = tmp_path_factory.getbasetemp().parent / f"{name}-shared"
    with FileLock(str(shared) + ".lock"):
        if not (shared / ".done").exists():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            make(shared)
            (shared / ".done").touch()
    return shared


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> tuple[Path, str]:
    """The README demo's build, done once: ``framepack-trt build`` (the built-in tiny profile:
    7 engines, AOTInductor, CPU) through the console entry point in a fresh folder, whose
    default cache is Cache/tensorrt_engines. Returns that cache and the build's stdout. Tests
    only read it; one that changes a cache works on a ``shutil.copytree`` of it. Under
    pytest-xdist (``make test`` runs two workers) it is built once for both (once_per_run)."""
    def make(folder: Path) -> None:
        r = cli("build", cwd=folder, check=True)
        (folder / "build-stdout.txt").write_text(r.stdout)

    folder = once_per_run(tmp_path_factory, "tiny", make)
    return folder / "Cache" / "tensorrt_engines", (folder / "build-stdout.txt").read_text()


@pytest.fixture(scope="session")
def built_cache(tmp_path_factory, tiny_build):
    """One real engine (SigLIP, AOTInductor, CPU, batch 1..2) in a cache of its own, and a
    profile of it: the tiny build's SigLIP engine (a copy; the CLI purges the others),
    and the tiny profile's SigLIP entry, which plans it as cached."""
    root = tmp_path_factory.mktemp("built")
    cache = root / "cache"
    shutil.copytree(tiny_build[0], cache)
    cli("purge", "--cache-dir", str(cache), "-c", "clip_text", "-c", "llama_text",
        "-c", "transformer", "-c", "vae_encode", "-c", "vae_decode", "--yes", check=True)
    p = write_profile(root / "one.yaml", [
        {"component": "siglip_image", "source": {"random": {"seed": 2}}, "dtype": "float32",
         "dims": {"batch": {"min": 1, "opt": 1, "max": 2}}}])
    r = cli("build", "--profile", str(p), "--cache-dir", str(cache), "--dry-run", check=True)
    assert "not in cache" not in r.stdout and "cached" in r.stdout, r.stdout
    from framepack_trt.cache import Cache

    assert [e.name for e in Cache(cache).entries().values()] == ["siglip_image"]
    return p, cache


_PLAIN_LOAD = r"""
import sys, torch
from safetensors.torch import load_file
pkg, golden, device = sys.argv[1:4]
runner = torch._inductor.aoti_load_package(pkg)
g = load_file(golden)
out = runner(g["0.input.pixel_values"].to(device))[0].float().cpu()
ref = g["0.output.last_hidden_state"].float()
print(float((out - ref).norm() / ref.norm()))
"""


def siglip_with_torchs_own_loader(cache: Path, device: str) -> float:
    """Rel L2 of the cache's SigLIP AOTInductor package against its golden sample, loaded by
    torch's own ``aoti_load_package`` in a plain process that imports torch first, with no
    LD_PRELOAD (torch 2.11's CUDA packages crashed there before the backend's link fix)."""
    from framepack_trt.cache import Cache

    entry = next(e for e in Cache(cache).entries().values() if e.component == "siglip_image")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    proc = subprocess.run([sys.executable, "-c", _PLAIN_LOAD, str(cache / entry.engine.file),
                           str(cache / entry.golden.file), device],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.strip().splitlines()[-1])


# -- FramePack's own worker (tests/test_framepack_worker.py) ----------------------------------

@pytest.fixture(scope="module")
def restore_layer_norms():
    """FramePack's ``dit_common.py`` (imported with its transformer) replaces the ``forward`` of
    torch's and diffusers' layer norms, for the whole process; the same values for one dtype.
    Put them back for the other tests of this pytest worker (a module's
    ``pytestmark = pytest.mark.usefixtures("restore_layer_norms")``)."""
    import torch
    from diffusers.models import normalization

    classes = {torch.nn.LayerNorm, normalization.LayerNorm, normalization.FP32LayerNorm}
    saved = {cls: cls.__dict__.get("forward") for cls in classes}
    yield
    for cls, forward in saved.items():
        if forward is not None:
            cls.forward = forward
        elif "forward" in cls.__dict__:
            delattr(cls, "forward")


#: FramePack's latent_window_size in those tests (the user's input): the transformer engines'
#: latent_frames.
WORKER_WINDOW = 2
#: The encoders' widths as the transformer takes them (LLaMA 64, CLIP 32, SigLIP 32).
WORKER_TRANSFORMER = {"text_embed_dim": 64, "pooled_projection_dim": 32, "image_proj_dim": 32}
#: SigLIP at 729 tokens (27 x 27 patches), what FramePack's transformer is built for.
WORKER_SIGLIP = {"image_size": 54, "patch_size": 2}
#: Two channels (the decoder's full-resolution convolutions are most of the run's time on the
#: CPU: 4 took the test twice as long), no middle-block attention (at 5 latent frames of 68x88
#: its causal mask alone is 3.6 GB).
WORKER_VAE = {"block_out_channels": [2, 2, 2, 2], "norm_num_groups": 2, "mid_block_add_attention": False}


def _side(low: int, high: int, opt: int | None = None) -> dict:
    return {"min": low, "opt": high if opt is None else opt, "max": high}


#: The VAE engines' latent sides: high-VRAM mode's whole frames (68x88) and low-VRAM mode's
#: tiles (32 and 20 by 32 and 16); opt a tile (the build's checks run eager at opt: cheaper).
WORKER_VAE_SIDES = {"latent_height": _side(16, 68, 32), "latent_width": _side(16, 88, 32)}

#: The VAE engines run on the VAE's own weights, as profiles/framepack.yaml builds them.
SHARED = {"share_weights": True}

#: One engine per module at the shapes the worker calls with; the decoder's as two, for
#: windows of 3 to 5 latent frames and of 2 (a graph of its own: the causal upsampler's
#: frames after the first are one, which export cannot take into a range).
WORKER_ENTRIES = [
    {"component": "llama_text", "source": {"random": {"seed": 1}}, "dtype": "float32",
     "dims": {"batch": 1, "text_len": 351}},
    {"component": "clip_text", "source": {"random": {"seed": 0}}, "dtype": "float32",
     "dims": {"batch": 1, "text_len": 77}},
    {"component": "siglip_image", "source": {"random": {"seed": 2, "config": WORKER_SIGLIP}},
     "dtype": "float32", "dims": {"batch": 1}},
    {"component": "vae_encode", "source": {"random": {"seed": 4, "config": WORKER_VAE}},
     "dtype": "float32", "build": SHARED, "dims": WORKER_VAE_SIDES},
    {"component": "vae_decode", "source": {"random": {"seed": 4, "config": WORKER_VAE}},
     "dtype": "float32", "build": SHARED,
     "dims": {"latent_frames": _side(3, 5, 3), **WORKER_VAE_SIDES}},
    {"component": "vae_decode", "name": "vae_decode_two",
     "source": {"random": {"seed": 4, "config": WORKER_VAE}}, "dtype": "float32",
     "build": SHARED, "dims": {"latent_frames": 2, **WORKER_VAE_SIDES}},
    {"component": "transformer", "source": {"random": {"seed": 7, "config": WORKER_TRANSFORMER}},
     "dtype": "bfloat16",  # engines: blocks (the default), served by architecture
     "dims": {"latent_frames": WORKER_WINDOW, "latent_height": 68, "latent_width": 88,
              "text_len": {"min": 1, "opt": 16, "max": 256}}},
]


@pytest.fixture(scope="session")
def worker_engines(tmp_path_factory) -> Path:
    """The cache of WORKER_ENTRIES, built once per test run (shared by the xdist workers)."""
    def make(root: Path) -> None:
        profile = write_profile(root / "worker.yaml", WORKER_ENTRIES)
        r = cli("build", "--profile", str(profile), "--cache-dir", str(root / "cache"), "--json",
                check=True)
        (root / "build.json").write_text(r.stdout)

    root = once_per_run(tmp_path_factory, "framepack_worker", make)
    results = json.loads((root / "build.json").read_text())["results"]
    assert all(r["outcome"] == "built" for r in results), results
    return root / "cache"
