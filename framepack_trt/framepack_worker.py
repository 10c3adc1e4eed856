"""FramePack's own ``worker`` (``demo_gradio.py``, ``demo_gradio_f1.py``) run as a library:
the section loop exactly as FramePack wrote it, with the models, tokenizers and settings that
the caller provides in place of the script's module-level loading, argparse and Gradio UI.

    from framepack_trt.framepack_worker import load_worker
    namespace = dict(text_encoder=..., text_encoder_2=..., tokenizer=..., tokenizer_2=...,
                     vae=..., feature_extractor=..., image_encoder=..., transformer=...,
                     high_vram=True, outputs_folder="outputs")
    worker = load_worker(namespace)            # demo_gradio.py's worker, unchanged
    worker(input_image, prompt, n_prompt, seed, total_second_length, latent_window_size,
           steps, cfg, gs, rs, gpu_memory_preservation, use_teacache, mp4_crf)
    namespace["stream"].output_queue           # what FramePack pushed for its UI

The script is parsed, not run: of its module-level statements only the imports that bind a
name the worker reads are executed (so neither Gradio nor ``hf_login`` is imported), then the
``worker`` function definition itself, decorator included, with the script's file name and line
numbers (a traceback points into FramePack's file). Nothing of FramePack's files is edited.

On a machine without CUDA, FramePack's ``diffusers_helper/memory.py`` (which asks for the
current CUDA device at import) is imported with ``torch.cuda.current_device`` answering 0 for
that import only; the worker's ``gpu`` is then the CPU device, and ``memory``'s CUDA free-memory
query reports the host's available memory instead. Where ``cv2`` or ``torchvision`` are not
installed (``diffusers_helper/utils.py`` imports both; the worker's code paths use neither,
except ``save_bcthw_as_mp4``'s ``torchvision.io.write_video``), ``utils`` is imported with
stand-in modules that raise on first use, present in ``sys.modules`` during that import only.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from framepack_trt.errors import UsageError

#: FramePack's two apps: the inverted-sampling I2V one and F1.
SCRIPTS = ("demo_gradio.py", "demo_gradio_f1.py")

#: Modules ``diffusers_helper/utils.py`` imports that the worker's code paths do not use.
OPTIONAL_MODULES = ("cv2", "torchvision")

#: The copy this repository keeps for its tests (absent from an installed wheel).
VENDORED = Path(__file__).resolve().parent.parent / "tests" / "framepack_upstream"


def _missing_parts(folder: Path) -> list[str]:
    return [name for name, ok in (("demo_gradio.py", (folder / "demo_gradio.py").is_file()),
                                  ("diffusers_helper/", (folder / "diffusers_helper").is_dir()))
            if not ok]


def check_framepack(folder: str | Path) -> Path:
    """``folder`` resolved, if it is a FramePack folder (it holds ``demo_gradio.py`` and
    ``diffusers_helper/``); else a UsageError of one line naming it and what it lacks."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UsageError(f"FramePack folder {path}: no such folder")
    missing = _missing_parts(path)
    if missing:
        # FramePack's Windows one-click package keeps FramePack itself in webui/.
        hint = (f"; FramePack's one-click package keeps it in {path / 'webui'}: pass that"
                if not _missing_parts(path / "webui") else "")
        raise UsageError(f"FramePack folder {path}: not a FramePack checkout, it has no "
                         f"{' and no '.join(missing)}{hint}")
    return path.resolve()


def find_framepack(framepack_dir: str | Path | None = None) -> Path:
    """FramePack's folder: ``framepack_dir`` when given (it must hold ``demo_gradio.py`` and
    ``diffusers_helper/``), else the parent of an importable ``diffusers_helper``, else this
    repository's copy in ``tests/framepack_upstream`` (where there is one)."""
    if framepack_dir is not None:
        return check_framepack(framepack_dir)
    loaded = sys.modules.get("diffusers_helper")
    try:
        spec = importlib.util.find_spec("diffusers_helper") if loaded is None else loaded.__spec__
    except (ImportError, ValueError):
        spec = None
    locations = list(getattr(spec, "submodule_search_locations", None) or [])
    if locations:
        return check_framepack(Path(locations[0]).parent)
    if VENDORED.is_dir():
        return check_framepack(VENDORED)
    raise UsageError("FramePack not found: pass its folder (framepack_dir, --framepack-dir), or "
                     "run where its diffusers_helper package is importable")


@contextlib.contextmanager
def _cuda_device_for_import() -> Iterator[None]:
    """``memory.py`` computes ``gpu = torch.device(f'cuda:{torch.cuda.current_device()}')`` at
    import, which raises without CUDA: there, answer 0 for that import only."""
    import torch

    if torch.cuda.is_available():
        yield
        return
    original = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0
    try:
        yield
    finally:
        torch.cuda.current_device = original


class _StandIn(types.ModuleType):
    """A module that is not installed: importable, and says so on first use."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ModuleNotFoundError(
            f"{self.__name__} is not installed (framepack_trt.framepack_worker imported "
            f"FramePack's diffusers_helper/utils.py with a stand-in for it): "
            f"{self.__name__}.{attr} cannot run; install {self.__name__}", name=self.__name__)


@contextlib.contextmanager
def _stand_ins(names: tuple[str, ...]) -> Iterator[list[str]]:
    """Stand-in modules for those of ``names`` that cannot be imported, in ``sys.modules``
    during the block only (others' availability checks must not find them afterwards)."""
    placed = []
    for name in names:
        if name in sys.modules:
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            module = _StandIn(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = module
            placed.append(name)
    try:
        yield placed
    finally:
        for name in placed:
            sys.modules.pop(name, None)


def _host_free_memory_gb(original: Callable) -> Callable:
    """``memory.get_cuda_free_memory_gb`` for a machine without CUDA: the host's available
    memory for a CPU device (FramePack's low-VRAM helpers ask it before each module move)."""
    import os

    def free_memory_gb(device=None):
        import torch

        if device is not None and torch.device(device).type == "cpu":
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1024 ** 3
        return original(device)

    free_memory_gb.__wrapped__ = original
    return free_memory_gb


def import_framepack(folder: str | Path | None = None) -> Path:
    """Make FramePack's ``diffusers_helper`` importable from ``folder`` (``find_framepack``)
    and import the modules that need care on this machine (``memory``, ``utils``). One process
    holds one FramePack: a ``diffusers_helper`` already imported from elsewhere is an error."""
    path = find_framepack(folder)
    import torch

    from framepack_trt.platforms import is_linux, linux_only

    if not torch.cuda.is_available() and not is_linux():  # _host_free_memory_gb: os.sysconf
        raise UsageError(linux_only(
            "FramePack's code on a machine without CUDA (free host memory from os.sysconf)",
            "run it with an NVIDIA GPU and a CUDA build of torch"))
    loaded = sys.modules.get("diffusers_helper")
    if loaded is not None:
        where = [Path(p).resolve() for p in getattr(loaded, "__path__", [])]
        if path / "diffusers_helper" not in where:
            raise UsageError(f"FramePack folder {path}: diffusers_helper is already imported "
                             f"from {', '.join(map(str, where)) or '?'} in this process")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    # Before any stand-in exists: diffusers and transformers probe for cv2 and torchvision
    # (importlib.util.find_spec) when they are first imported.
    importlib.import_module("diffusers")
    importlib.import_module("transformers")
    if "diffusers_helper.memory" not in sys.modules:
        with _cuda_device_for_import():
            memory = importlib.import_module("diffusers_helper.memory")
        if not torch.cuda.is_available():
            memory.get_cuda_free_memory_gb = _host_free_memory_gb(memory.get_cuda_free_memory_gb)
    if "diffusers_helper.utils" not in sys.modules:
        with _stand_ins(OPTIONAL_MODULES):
            importlib.import_module("diffusers_helper.utils")
    return path


def _worker_def(tree: ast.Module, script: Path) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "worker":
            return node
    raise UsageError(f"{script}: no module-level function named worker")


def _names_read(func: ast.FunctionDef) -> tuple[set[str], set[str]]:
    """(every name the function loads, decorators included; the names it binds itself:
    parameters, assignments, nested functions and their parameters, except-clause names)."""
    loads, binds = set(), set()
    for node in ast.walk(func):
        if isinstance(node, ast.Name):
            (loads if isinstance(node.ctx, ast.Load) else binds).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            if not isinstance(node, ast.Lambda) and node is not func:
                binds.add(node.name)
            a = node.args
            binds.update(x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs))
            binds.update(x.arg for x in (a.vararg, a.kwarg) if x is not None)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            binds.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            binds.update((a.asname or a.name).split(".")[0] for a in node.names)
    return loads, binds


def _needed_imports(tree: ast.Module, needed: set[str]) -> list[ast.stmt]:
    """The script's module-level import statements, each cut down to the names in
    ``needed`` (statements binding none of them are left out)."""
    out: list[ast.stmt] = []
    for node in tree.body:
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        kept = [a for a in node.names if (a.asname or a.name).split(".")[0] in needed]
        if not kept:
            continue
        new = (ast.Import(names=kept) if isinstance(node, ast.Import)
               else ast.ImportFrom(module=node.module, names=kept, level=node.level))
        out.append(ast.copy_location(new, node))
    return out


def keep_output_capture(model) -> None:
    """After FramePack's ``DynamicSwapInstaller.install_model(model, ...)`` (low-VRAM mode):
    transformers 5 finds what a model can record (``output_hidden_states``) by the name of the
    model's exact class, which the installer replaces with a subclass of its own, so the
    LLaMA encoder returns ``hidden_states=None`` and FramePack's ``encode_prompt_conds``
    fails. Register the subclass under the class's entry. Nothing to do on transformers 4
    (FramePack's pinned version), which has no such registry.

    The registry is a plain dict keyed by ``str(type(model))`` in transformers 5.17 and a dict
    subclass whose ``get``/``[]=`` take the model itself (and key by the same string) in 5.25;
    both are written here."""
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY as registry
    except ImportError:
        return
    keyed_by_model = type(registry).__setitem__ is not dict.__setitem__
    for module in model.modules():
        recordable = getattr(module, "_can_record_outputs", None)
        key = module if keyed_by_model else str(module.__class__)
        if recordable and not registry.get(key):
            registry[key] = recordable


class ReraiseTraceback:
    """In place of the ``traceback`` module in the worker's namespace: the worker's bare
    ``except: traceback.print_exc()`` re-raises the exception it caught instead of printing it
    and going on, so the caller sees a failure (KeyboardInterrupt for a task the user ended)."""

    def __getattr__(self, attr: str):
        import traceback

        return getattr(traceback, attr)

    @staticmethod
    def print_exc(*args, **kwargs):
        raise  # called while the worker handles the exception: re-raises it


def _script_imports(path: Path) -> tuple[ast.FunctionDef, set[str], set[str], dict[str, Any]]:
    """The script's worker, the names it reads and binds, and the namespace its needed
    imports (``_needed_imports``) made, executed with the script's file name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    worker = _worker_def(tree, path)
    loads, binds = _names_read(worker)
    imported: dict[str, Any] = {"__name__": f"framepack_{path.stem}", "__file__": str(path),
                                "__builtins__": builtins}
    code = ast.Module(body=_needed_imports(tree, loads - binds), type_ignores=[])
    exec(compile(code, str(path), "exec"), imported)
    return worker, loads, binds, imported


def worker_imports(framepack_dir: str | Path | None = None,
                   scripts: tuple[str, ...] = SCRIPTS) -> list[str]:
    """Import what FramePack's ``scripts``' workers import, as ``load_worker`` does (nothing
    else of the scripts runs); returns the modules of FramePack's own they came from. Raises
    what an import raises (``doctor`` runs it in a process of its own and reports that)."""
    folder = import_framepack(framepack_dir)
    modules: set[str] = set()
    for script in scripts:
        path = folder / script
        if not path.is_file():
            raise UsageError(f"FramePack folder {folder}: no {script}")
        _, _, _, imported = _script_imports(path)
        modules.update(getattr(v, "__module__", None) or getattr(v, "__name__", "")
                       for v in imported.values())
    return sorted(m for m in modules if m.startswith("diffusers_helper"))


def load_worker(namespace: MutableMapping[str, Any], script: str = "demo_gradio.py",
                framepack_dir: str | Path | None = None, raise_errors: bool = True) -> Callable:
    """FramePack's ``worker`` from ``script`` (``demo_gradio.py`` or ``demo_gradio_f1.py``
    of ``find_framepack(framepack_dir)``), its globals being ``namespace``.

    ``namespace`` gives what the script's module level would have made: ``text_encoder``,
    ``text_encoder_2``, ``tokenizer``, ``tokenizer_2``, ``vae``, ``feature_extractor``,
    ``image_encoder``, ``transformer``, ``high_vram``, ``outputs_folder``; optionally ``stream``
    (default: a new ``AsyncStream``), ``gpu`` (default: FramePack's, the CPU device without
    CUDA) and any name the script imports, to replace it (``save_bcthw_as_mp4``,
    ``sample_hunyuan``, ...). The script's imports fill in the names the caller did not give;
    ``namespace`` is then the worker's module globals (changes to it later are seen by the
    worker). ``raise_errors``: the worker's catch-all ``except`` re-raises instead of printing
    the traceback (``ReraiseTraceback``), unless ``namespace`` has its own ``traceback``.
    A name the worker reads that neither the namespace nor the imports give is a UsageError."""
    import torch

    folder = import_framepack(framepack_dir)
    path = folder / script
    if not path.is_file():
        raise UsageError(f"FramePack folder {folder}: no {script} (FramePack's apps: "
                         f"{', '.join(SCRIPTS)})")
    worker, loads, binds, imported = _script_imports(path)

    defaults = dict(imported)
    if "stream" in loads:
        defaults["stream"] = importlib.import_module("diffusers_helper.thread_utils").AsyncStream()
    if not torch.cuda.is_available():
        defaults["gpu"] = torch.device("cpu")
    if raise_errors:
        defaults["traceback"] = ReraiseTraceback()
    for name, value in defaults.items():
        namespace.setdefault(name, value)
    missing = sorted(n for n in loads - binds
                     if n not in namespace and not hasattr(builtins, n))
    if missing:
        raise UsageError(f"{path.name}'s worker reads {', '.join(missing)}: give "
                         f"{'it' if len(missing) == 1 else 'them'} in the namespace (the script "
                         "makes them at module level, which is not run)")
    exec(compile(ast.Module(body=[worker], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["worker"]
