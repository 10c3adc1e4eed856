"""What this machine can build: torch, CUDA, the GPU, each backend, the cache; and this
environment against FramePack's needs: the library versions found against FramePack's pins and
what framepack-trt supports, the engines of the cache built with other versions (stale), and
whether FramePack's folder (``--framepack-dir``, or the current folder) imports here. Every
finding is one line."""

from __future__ import annotations

import platform
import sys
from typing import Any

from framepack_trt import __version__
from framepack_trt.backends import BACKENDS
from framepack_trt.cache import Cache
from framepack_trt.engine_status import entry_status
from framepack_trt.util import human_size

#: The libraries whose versions doctor lists.
LIBRARIES = ("diffusers", "transformers", "accelerate", "huggingface_hub", "tokenizers",
             "safetensors", "numpy")

#: FramePack's modules the check imports besides its workers' imports: its transformer class,
#: what demo_gradio.py loads and hands to ``use_engines``.
FRAMEPACK_MODULES = ("diffusers_helper.models.hunyuan_video_packed",)

_IMPORT_PROBE = """
import importlib, sys
from framepack_trt.framepack_worker import worker_imports
mods = worker_imports(sys.argv[1])
for m in sys.argv[2:]:
    importlib.import_module(m)
print("IMPORTED " + " ".join(sorted(set(mods) | set(sys.argv[2:]))))
"""


def report(cache: Cache, framepack_dir=None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "framepack-trt": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = f"{torch.__version__} (CUDA build: {torch.version.cuda or 'no'})"
        if torch.cuda.is_available():
            from framepack_trt.transformer.fp8 import fp8_unsupported_reason

            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                fp8 = fp8_unsupported_reason(f"cuda:{i}")
                info[f"gpu {i}"] = (f"{p.name}, sm {p.major}.{p.minor}, "
                                    f"{p.total_memory / 2**30:.1f} GiB, fp8 block engines: "
                                    f"{'yes' if fp8 is None else 'no (below 8.9)'}")
        else:
            info["gpu"] = "none (torch.cuda.is_available() is False)"
    except Exception as exc:  # report, do not crash: doctor is for broken set-ups
        info["torch"] = f"cannot import: {exc}"
    for name, cls in BACKENDS.items():
        backend = cls()
        status = {}
        for device in backend.devices:
            try:
                reason = backend.unavailable_reason(device)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            status[device] = "available" if reason is None else f"unavailable: {reason}"
        info[f"backend {name}"] = {"version": backend.version(), **status}
    info.update(environment(cache, framepack_dir))
    info["cache dir"] = str(cache.root)
    if cache.root.exists() and not cache.root.is_dir():
        info["cache"] = "not a directory: choose another cache dir"
    elif cache.root.is_dir():
        entries = cache.entries()
        info["cache"] = f"{len(entries)} engine(s), {human_size(cache.size())}"
    else:
        info["cache"] = "does not exist yet"
    return info


def environment(cache: Cache, framepack_dir=None) -> dict[str, str]:
    """This environment against FramePack's needs, one line per finding (see the module
    docstring). ``framepack_dir``: FramePack's folder as given (else the current folder when
    it is one)."""
    from pathlib import Path

    from framepack_trt.device import package_version
    from framepack_trt.sources import framepack_folder, hub_caches, is_framepack_folder
    from framepack_trt.versions import SUPPORTED, framepack_pins, pin_mismatches, unsupported

    info: dict[str, str] = {}
    info["libraries"] = ", ".join(f"{n} {package_version(n) or 'not installed'}"
                                  for n in LIBRARIES)
    folder = Path(framepack_dir).expanduser() if framepack_dir is not None else framepack_folder()
    pins, where = framepack_pins(folder if folder is not None and folder.is_dir() else None)
    mismatches = pin_mismatches(pins)
    for name, pinned, installed in mismatches:
        info[f"version mismatch: {name}"] = (
            f"{name} {installed or 'not installed'} here, FramePack pins {pinned} ({where}); "
            f"FramePack's own code is written for {pinned}, framepack-trt runs with both: in "
            f"FramePack's environment `pip install {name}=={pinned}`")
    if not mismatches:
        info["FramePack's pins"] = ", ".join(f"{n} {v}" for n, v in pins.items()) + f" ({where})"
    for name in SUPPORTED:
        problem = unsupported(name, package_version(name))
        if problem:
            info[f"unsupported: {name}"] = problem
    info["transformer class"] = _transformer_class()
    info.update(_stale_engines(cache))
    if folder is not None:
        info["FramePack folder"] = (_framepack_imports(folder) if is_framepack_folder(folder) else
                                    f"{folder}: not a FramePack checkout (it has no "
                                    "demo_gradio.py or no diffusers_helper/)"
                                    + (f"; FramePack's one-click package keeps it in "
                                       f"{folder / 'webui'}: pass that"
                                       if is_framepack_folder(folder / "webui") else ""))
    info["weights looked up in"] = "; ".join(f"{p} ({why})" for p, why in hub_caches())
    return info


def _transformer_class() -> str:
    try:
        from framepack_trt.transformer.model import transformer_source
    except Exception as exc:  # diffusers missing or broken: say so, do not crash
        return f"cannot import diffusers: {type(exc).__name__}: {exc}"
    from framepack_trt.device import package_version

    if transformer_source() == "diffusers":
        return "diffusers' HunyuanVideoFramepackTransformer3DModel"
    return (f"framepack_trt's own HunyuanVideoFramepackTransformer3DModel (diffusers "
            f"{package_version('diffusers')} has none; the same modules, weights and forward)")


def _stale_engines(cache: Cache) -> dict[str, str]:
    """One line per reason engines of the cache are stale: which, why, what to do."""
    if not cache.root.is_dir():
        return {}
    try:
        entries = cache.entries()
    except Exception as exc:  # a manifest of another format: the cache line says more
        return {"stale engines": f"cannot read the manifest: {exc}"}
    groups: dict[str, list[str]] = {}
    for e in entries.values():
        st = entry_status(cache, e)
        if st.state == "stale":
            groups.setdefault(st.reason, []).append(e.name)
    out = {}
    for n, (reason, names) in enumerate(sorted(groups.items()), 1):
        key = "stale engines" if len(groups) == 1 else f"stale engines ({n})"
        elsewhere = (" (or use them from the environment that built them)"
                     if "other model libraries" in reason else "")
        out[key] = (f"{len(names)}: {', '.join(sorted(names))}: {reason}; they cannot be used "
                    f"here: `framepack-trt build` builds them for this environment{elsewhere}, "
                    "`framepack-trt purge --stale --yes` removes them")
    return out


def _framepack_imports(folder, timeout: float = 300) -> str:
    """Whether FramePack's folder imports here (its workers' imports and its transformer
    class), checked in a process of its own: FramePack's modules print at import and patch
    torch's layer norms for the whole process."""
    import subprocess

    try:
        proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, str(folder),
                               *FRAMEPACK_MODULES], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"{folder}: importing FramePack's modules took over {timeout:.0f} s; stopped"
    done = [line for line in proc.stdout.splitlines() if line.startswith("IMPORTED ")]
    if proc.returncode == 0 and done:
        return f"{folder}: imports ({len(done[-1].split()) - 1} of FramePack's modules)"
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
    return (f"{folder}: does not import here: {last} (install FramePack's requirements.txt in "
            "this environment)")
