"""Where a component's weights come from, and how they are loaded (offline, always).

Three kinds of source:
  path:   a local directory written by ``save_pretrained`` (config + safetensors);
  repo:   a Hugging Face repo id (+ subfolder, revision), read from the local HF cache only;
  random: the component's tiny config plus overrides, random weights from a seed. They are
          written once with ``save_pretrained`` under the cache directory and loaded back
          through the same ``from_pretrained`` path as real weights.

Fingerprints identify the weights for the cache key without re-reading every byte on each
run: a repo's fingerprint is its snapshot revision plus config; a local directory's is the
config plus a content hash per weight file, memoised by (path, size, mtime, inode) in
``fingerprints.json`` inside the cache; a random source's is its class, config and seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framepack_trt.errors import WeightsNotFoundError
from framepack_trt.util import atomic_write_text, canonical_json, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from framepack_trt.components.base import Component

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class Source:
    kind: str  # "path" | "repo" | "random"
    path: str | None = None
    repo: str | None = None
    subfolder: str | None = None
    revision: str | None = None
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "path":
            return {"path": self.path}
        if self.kind == "repo":
            d: dict[str, Any] = {"repo": self.repo}
            if self.subfolder:
                d["subfolder"] = self.subfolder
            if self.revision:
                d["revision"] = self.revision
            return d
        return {"random": {"seed": self.seed, "config": dict(self.config)}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Source:
        if "path" in d:
            return cls("path", path=d["path"])
        if "repo" in d:
            return cls("repo", repo=d["repo"], subfolder=d.get("subfolder"),
                       revision=d.get("revision"))
        r = d["random"]
        return cls("random", seed=int(r.get("seed", 0)), config=dict(r.get("config", {})))

    def describe(self) -> str:
        if self.kind == "path":
            return self.path or ""
        if self.kind == "repo":
            sub = f"/{self.subfolder}" if self.subfolder else ""
            rev = f"@{self.revision}" if self.revision else ""
            return f"hf:{self.repo}{sub}{rev}"
        return f"random(seed={self.seed})"


# -- fingerprints ----------------------------------------------------------------------------

class _FileHashMemo:
    """Content hashes of weight files, memoised by stat so each file is read once."""

    def __init__(self, memo_path: Path | None):
        self.path = memo_path
        self.data: dict[str, Any] = {}
        if memo_path and memo_path.exists():
            try:
                self.data = json.loads(memo_path.read_text())
            except (OSError, ValueError):
                self.data = {}
        self.dirty = False

    def sha256(self, file: Path) -> str:
        st = file.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        key = str(file.resolve())
        hit = self.data.get(key)
        if hit and hit.get("stat") == stamp:
            return hit["sha256"]
        digest = sha256_file(file)
        self.data[key] = {"stat": stamp, "sha256": digest}
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.path and self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True))


#: FramePack's folder, for the commands and the processes they start: ``--framepack-dir`` sets
#: it (``use_framepack_dir``); without it, the current folder when it is a FramePack checkout.
FRAMEPACK_DIR_ENV = "FRAMEPACK_DIR"


def is_framepack_folder(folder: Path) -> bool:
    """A FramePack checkout: ``demo_gradio.py`` and ``diffusers_helper/``."""
    return (folder / "demo_gradio.py").is_file() and (folder / "diffusers_helper").is_dir()


def use_framepack_dir(folder: str | os.PathLike | None) -> None:
    """Make ``folder`` FramePack's folder for this process and the processes it starts."""
    if folder is not None:
        os.environ[FRAMEPACK_DIR_ENV] = str(Path(folder).expanduser().resolve())


def framepack_folder() -> Path | None:
    """``$FRAMEPACK_DIR`` (``--framepack-dir``), else the current folder if it is FramePack's."""
    if os.environ.get(FRAMEPACK_DIR_ENV):
        return Path(os.environ[FRAMEPACK_DIR_ENV])
    cwd = Path.cwd()
    return cwd if is_framepack_folder(cwd) else None


def hub_caches() -> list[tuple[Path, str]]:
    """The Hugging Face hub caches a ``repo`` source is looked up in, in order, each with why.

    ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` when either is set (the user chose). Else, as FramePack
    does (its demo_gradio.py sets ``HF_HOME`` to its own ``hf_download`` folder before loading
    anything), FramePack's ``hf_download/hub`` first when FramePack's folder is known
    (``framepack_folder``), then Hugging Face's default (``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return [(Path(os.environ["HF_HUB_CACHE"]).expanduser(), "$HF_HUB_CACHE")]
    if os.environ.get("HF_HOME"):
        return [(Path(os.environ["HF_HOME"]).expanduser() / "hub", "$HF_HOME")]
    from huggingface_hub import constants

    out = []
    folder = framepack_folder()
    if folder is not None:
        out.append((folder / "hf_download" / "hub",
                    "FramePack's hf_download, where demo_gradio.py keeps its weights"))
    out.append((Path(constants.HF_HUB_CACHE), "Hugging Face's default; no HF_HOME set"))
    return out


def resolve_local_dir(source: Source) -> Path:
    """The directory holding config + weights for a path or repo source (offline)."""
    if source.kind == "path":
        p = Path(source.path or "")
        if not p.is_dir():
            raise WeightsNotFoundError(f"weights directory {p} does not exist")
        if not (p / "config.json").is_file():
            raise WeightsNotFoundError(f"{p} has no config.json (expected a save_pretrained folder)")
        return p
    if source.kind == "repo":
        from huggingface_hub import try_to_load_from_cache

        sub = f"{source.subfolder}/" if source.subfolder else ""
        caches = hub_caches()
        for cache, _ in caches:
            cfg = try_to_load_from_cache(source.repo, f"{sub}config.json",
                                         cache_dir=str(cache), revision=source.revision)
            if isinstance(cfg, str):
                return Path(cfg).parent
        looked = "; ".join(f"{cache} ({why})" for cache, why in caches)
        raise WeightsNotFoundError(
            f"{source.describe()} is not in the local Hugging Face cache (looked in: {looked}); "
            f"download it first, e.g. `hf download {source.repo}"
            + (f" --include '{source.subfolder}/*'" if source.subfolder else "") + "`"
            + (", with HF_HOME set to FramePack's hf_download to keep it there (running "
               "FramePack once downloads its weights there too)"
               if framepack_folder() is not None else "")
        )
    raise ValueError(source.kind)


def snapshot_revision(local_dir: Path) -> str | None:
    """The commit hash of an HF cache snapshot directory (``.../snapshots/<commit>/...``)."""
    parts = local_dir.absolute().parts
    for i, part in enumerate(parts[:-1]):
        if part == "snapshots":
            return parts[i + 1]
    return None


def fingerprint(source: Source, component: Component, memo_path: Path | None = None) -> str:
    """A stable id of the weights (see module docstring)."""
    if source.kind == "random":
        payload = {"class": component.model_class, "config": random_config(source, component),
                   "seed": source.seed}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()
    local = resolve_local_dir(source)
    config_hash = hashlib.sha256((local / "config.json").read_bytes()).hexdigest()
    if source.kind == "repo":
        payload = {"repo": source.repo, "subfolder": source.subfolder,
                   "revision": snapshot_revision(local), "config": config_hash}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()
    memo = _FileHashMemo(memo_path)
    files = sorted(p for p in local.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise WeightsNotFoundError(f"{local} has no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    payload = {"config": config_hash, "files": {p.name: memo.sha256(p) for p in files}}
    memo.save()
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def architecture_config(config: Any) -> dict[str, Any]:
    """A model config without the keys that name a file, a class or a library version (those
    starting with ``_``), as plain JSON values: what fixes the shapes of the weights."""
    items = config.items() if hasattr(config, "items") else vars(config).items()
    return json.loads(canonical_json({k: v for k, v in items if not k.startswith("_")}))


def architecture(source: Source, component: Component) -> str:
    """A stable id of the architecture only (the model class and its config), for engines that
    take their weights as inputs: every checkpoint of one architecture shares them."""
    if source.kind == "random":
        config = random_config(source, component)
    else:
        config = json.loads((resolve_local_dir(source) / "config.json").read_text())
    payload = {"class": component.model_class, "config": architecture_config(config)}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def random_config(source: Source, component: Component) -> dict[str, Any]:
    return {**component.tiny_config, **source.config}


# -- loading ---------------------------------------------------------------------------------

def quiet_transformers() -> None:
    """No per-file progress bars or config chatter from transformers/diffusers in our output."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()


def is_transformers_class(cls: type) -> bool:
    return hasattr(cls, "config_class")


def construct(cls: type, config: dict[str, Any]):
    """A randomly initialised model of ``cls`` (a transformers or a diffusers class)."""
    if is_transformers_class(cls):
        return cls(cls.config_class(**config))
    return cls.from_config(config)


#: The transformers release that renamed ``from_pretrained(torch_dtype=)`` to ``dtype=`` (the
#: old name is deprecated from then on; before it, ``dtype=`` reaches the model's ``__init__``
#: and fails: FramePack pins transformers 4.46.2).
TRANSFORMERS_DTYPE_KWARG_SINCE = "4.56"


def dtype_kwargs(cls: type, dtype) -> dict[str, Any]:
    """The ``from_pretrained`` keyword that sets the dtype, for ``cls`` and the installed
    library: ``dtype`` for transformers from 4.56, ``torch_dtype`` for older transformers and
    for diffusers (every version). The one place that knows the difference."""
    if is_transformers_class(cls):
        from packaging.version import Version

        from framepack_trt.device import package_version

        if Version(package_version("transformers") or "0") >= Version(TRANSFORMERS_DTYPE_KWARG_SINCE):
            return {"dtype": dtype}
    return {"torch_dtype": dtype}


def from_pretrained(cls: type, local: Path | str, dtype, **kwargs):
    """``from_pretrained`` from a local folder, offline, for transformers and diffusers."""
    return cls.from_pretrained(str(local), local_files_only=True, **dtype_kwargs(cls, dtype),
                               **kwargs)


def materialize_random(source: Source, component: Component, weights_dir: Path) -> Path:
    """Write the random-weight model once with save_pretrained; return its directory."""
    import torch

    fp = fingerprint(source, component)
    # The transformer's pieces share the transformer's folder (the same model).
    target = weights_dir / f"{component.weights_folder or component.name}-{fp[:16]}"
    if (target / "config.json").is_file():
        return target
    from filelock import FileLock

    weights_dir.mkdir(parents=True, exist_ok=True)
    # Builds side by side (--jobs) make it once: the others wait for it, then load it.
    with FileLock(str(weights_dir / f".{target.name}.lock")):
        if (target / "config.json").is_file():
            return target
        quiet_transformers()
        cls = component.load_model_class()
        torch.manual_seed(source.seed)
        model = construct(cls, random_config(source, component)).eval()
        tmp = weights_dir / f".tmp-{target.name}-{os.getpid()}"
        model.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process materialised it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return target


#: The last model ``load_model(..., keep=True)`` loaded, by what it was loaded from.
_KEPT: dict[tuple, torch.nn.Module] = {}


def load_model(
    component: Component, source: Source, dtype: torch.dtype, device: str, weights_dir: Path,
    keep: bool = False,
) -> torch.nn.Module:
    """The real model class, loaded with ``from_pretrained`` from local files only.

    ``keep``: the model is kept (the last one only) and returned again to the next such call
    for the same class, source, dtype and device, unchanged: for the engines that take their
    weights as inputs, which several engines of one model share (the transformer's four
    pieces), so that a build or a checking process loads it once. Callers must not modify it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_transformers()
    cls = component.load_model_class()
    memo = (cls, repr(source.to_dict()), str(dtype), str(device), str(weights_dir))
    if keep and memo in _KEPT:
        return _KEPT[memo]
    _KEPT.clear()  # a model kept before: its memory back before the next one loads
    model = _load(cls, component, source, dtype, device, weights_dir)
    if keep:
        _KEPT[memo] = model
    return model


def _load(cls, component: Component, source: Source, dtype: torch.dtype, device: str,
          weights_dir: Path) -> torch.nn.Module:
    if source.kind == "random":
        local = materialize_random(source, component, weights_dir)
    else:
        local = resolve_local_dir(source)
    try:
        model = from_pretrained(cls, local, dtype)
    except OSError as exc:
        raise WeightsNotFoundError(f"cannot load {component.model_class} from {local}: {exc}") from exc
    return model.to(device).eval()
