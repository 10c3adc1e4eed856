"""TensorRT through ``torch_tensorrt.dynamo``: one backend for the standard and the RTX edition
(both expose the same API; which one is installed enters the cache key).

Engine file format: ``.trt.pt2``, a ``torch.export`` ExportedProgram archive written by
``torch_tensorrt.save(..., output_format="exported_program", retrace=False)``. The TensorRT
engines are embedded in it (as serialized engine objects), together with any part of the graph
left to PyTorch and its weights, so it loads in a fresh process with ``torch_tensorrt.load``
(``torch.export.load`` plus torch_tensorrt's runtime ops) without re-exporting and without the
eager model. It is a zip of a serialized graph and tensors, not a pickle of Python objects, and
it keeps partially converted graphs runnable, which a bare TensorRT plan file would not.

``torch_tensorrt`` imports fail on a CPU build of torch, so everything here is imported lazily;
``unavailable_reason`` says why the backend cannot run and which extra to install.
"""

from __future__ import annotations

import inspect
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from framepack_trt.backends.base import Backend, BuildReport, BuildRequest, BuildSettings
from framepack_trt.device import package_version
from framepack_trt.errors import BuildError

#: Distributions per edition: (torch_tensorrt package, TensorRT packages).
EDITIONS = {
    "rtx": ("torch-tensorrt-rtx", ("tensorrt-rtx", "tensorrt-rtx-cu13-bindings",
                                   "tensorrt-rtx-cu12-bindings", "tensorrt-rtx-cu13-libs")),
    "standard": ("torch-tensorrt", ("tensorrt", "tensorrt-cu13", "tensorrt-cu12",
                                    "tensorrt-cu13-bindings", "tensorrt-cu12-bindings")),
}
INSTALL_HINT = ("install the extra: pip install 'framepack-trt[tensorrt-rtx]' (TensorRT for RTX, "
                "wheels on PyPI) or 'framepack-trt[tensorrt]' (standard TensorRT)")


def installed_edition() -> tuple[str, str, str] | None:
    """(edition, torch_tensorrt version, TensorRT version) of the installed edition, or None."""
    for edition, (torch_trt, trt_names) in EDITIONS.items():
        version = package_version(torch_trt)
        if version:
            return edition, version, package_version(*trt_names) or "unknown"
    return None


@dataclass(frozen=True)
class TensorRTSettings(BuildSettings):
    """TensorRT build settings (profile ``build:``).

    optimization_level: TensorRT builder optimisation level 0-5 (None: TensorRT's default, 3).
    workspace_gb: limit on the builder's workspace memory in GiB (None: no limit).
    torch_executed_ops: aten ops to keep in PyTorch, e.g.
        ``aten._scaled_dot_product_flash_attention.default`` (TensorRT-RTX attention is about
        2x slower than flash attention on Hopper); an op without overload keeps all overloads.
    min_block_size: smallest run of convertible ops that becomes a TensorRT engine.
    offload_module_to_cpu: keep the PyTorch module on the CPU while building (less GPU memory).
    use_python_runtime: run engines through the Python runtime instead of the C++ one.
    """

    optimization_level: int | None = None
    workspace_gb: float | None = None
    torch_executed_ops: tuple[str, ...] = ()
    min_block_size: int = 5
    offload_module_to_cpu: bool = False
    use_python_runtime: bool = False

    ENGINE_FIELDS = frozenset({"optimization_level", "workspace_gb", "torch_executed_ops",
                               "min_block_size", "use_python_runtime"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "torch_executed_ops", tuple(self.torch_executed_ops))
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise ValueError(f"optimization_level {self.optimization_level} is not in 0..5")


def resolve_ops(names: tuple[str, ...]) -> set[str]:
    """Qualified op names (``torch.ops.aten.x.overload``); an op without overload gives all."""
    import torch

    out: set[str] = set()
    for name in names:
        qualified = name if name.startswith("torch.ops.") else f"torch.ops.{name}"
        parts = qualified.split(".")  # torch, ops, namespace, op[, overload]
        namespace, op = parts[2], parts[3] if len(parts) > 3 else ""
        packet = getattr(getattr(torch.ops, namespace), op, None) if op else None
        if packet is None:
            raise BuildError(f"torch_executed_ops: {name!r} is not an operator (torch.ops.{namespace}"
                             f".{op} does not exist)")
        if len(parts) > 4:
            out.add(qualified)
        else:
            out.update(f"torch.ops.{namespace}.{op}.{ov}" for ov in packet.overloads())
    return out


class TensorRTBackend(Backend):
    name = "tensorrt"
    file_suffix = ".trt.pt2"
    settings_class = TensorRTSettings
    devices = ("cuda",)
    #: TensorRT-RTX chooses its kernels when a process loads the engine, and a tiny transformer
    #: engine computed right in some processes and wrong in others (docs/tensorrt-rtx.md): an
    #: engine is cached only when three fresh processes, each on inputs drawn from its own seed,
    #: all compute it right.
    check_processes = 3
    #: Loading several engines (and eager models) into one process crashed with
    #: torch_tensorrt 2.11: verify gives each engine a process of its own.
    shares_process = False

    def version(self) -> str:
        found = installed_edition()
        if not found:
            return "not installed"
        edition, torch_trt, trt = found
        return f"torch_tensorrt-{torch_trt} ({edition} edition, TensorRT {trt})"

    def unavailable_reason(self, device: str) -> str | None:
        if device != "cuda":
            return "TensorRT builds engines for CUDA GPUs only"
        if installed_edition() is None:
            return f"torch_tensorrt is not installed; {INSTALL_HINT}"
        try:
            import torch

            if not torch.cuda.is_available():
                return f"needs a CUDA build of torch and a GPU (torch {torch.__version__})"
            import torch_tensorrt  # noqa: F401
        except Exception as exc:  # ImportError, or a CUDA/TensorRT library error at import
            return f"import torch_tensorrt failed: {type(exc).__name__}: {exc}"
        return None

    def build(self, request: BuildRequest, out_path: Path) -> BuildReport:
        module, report = self.compile(request)
        self.save(module, request, out_path, report)
        return report

    @staticmethod
    def _inputs(request: BuildRequest) -> list:
        """One torch_tensorrt.Input (min/opt/max shapes, dtype) per engine input."""
        import torch_tensorrt

        from framepack_trt.components.base import entry_size
        from framepack_trt.export import input_dtype, torch_dtype
        from framepack_trt.shapes import sizes_at

        model_dtype = torch_dtype(request.dtype)
        inputs = []
        for spec in request.inputs:
            shapes = {which: tuple(entry_size(e, sizes_at(request.dims, which)) for e in spec.shape)
                      for which in ("min", "opt", "max")}
            inputs.append(torch_tensorrt.Input(min_shape=shapes["min"], opt_shape=shapes["opt"],
                                               max_shape=shapes["max"],
                                               dtype=input_dtype(spec, model_dtype), name=spec.name))
        return inputs

    def compile(self, request: BuildRequest):
        """The compiled module (TensorRT engines, plus PyTorch for ops left out) and a report."""
        import torch
        import torch_tensorrt

        from framepack_trt.graph_passes import positive_slice_bounds

        settings: TensorRTSettings = request.settings  # type: ignore[assignment]
        inputs = self._inputs(request)
        gpu = torch.cuda.get_device_properties(0)
        timing_cache = request.state_dir / (
            "timing-" + re.sub(r"[^A-Za-z0-9]+", "_", f"{gpu.name}-sm{gpu.major}{gpu.minor}") + ".bin")
        wanted = {
            "arg_inputs": inputs,
            "device": torch.device("cuda", 0),
            # Precision comes from the graph's dtypes (explicit typing; torch_tensorrt >= 2.13
            # has no enabled_precisions at all).
            "use_explicit_typing": True,
            # FramePack's attention masks are not causal; since 2.11 the default is True.
            "attn_bias_is_causal": False,
            "min_block_size": settings.min_block_size,
            "torch_executed_ops": resolve_ops(settings.torch_executed_ops),
            "optimization_level": settings.optimization_level,
            "workspace_size": int(settings.workspace_gb * 2**30) if settings.workspace_gb else 0,
            "offload_module_to_cpu": settings.offload_module_to_cpu,
            "use_python_runtime": settings.use_python_runtime,
            "timing_cache_path": str(timing_cache),
            # This project's cache is the engine cache; torch_tensorrt's own keys ignore weights.
            "cache_built_engines": False,
            "reuse_cached_engines": False,
        }
        accepted = inspect.signature(torch_tensorrt.dynamo.compile).parameters
        kwargs = {k: v for k, v in wanted.items() if k in accepted}
        report = BuildReport()
        dropped = sorted(set(wanted) - set(kwargs))
        if dropped:
            report.notes.append(f"this torch_tensorrt does not take {', '.join(dropped)}")
        rewritten = positive_slice_bounds(request.exported)
        if rewritten:
            report.notes.append(f"{rewritten} slice bound(s) of the form x[:, :-n] with a dynamic n "
                                "rewritten as x[:, :size-n] (torch_tensorrt takes them as lengths)")
        with torch.no_grad(), TensorRTErrors() as trt_errors:
            try:
                trt_module = torch_tensorrt.dynamo.compile(request.exported, **kwargs)
            except Exception as exc:
                if not trt_errors.messages:
                    raise
                # torch_tensorrt goes on after a failed engine build and fails later with an
                # unrelated error (deserialize_cuda_engine(None)); TensorRT's own message is
                # the one that says what went wrong.
                raise BuildError("TensorRT: " + " | ".join(trt_errors.messages[-3:])) from exc
        report.details.update(partition_report(trt_module))
        left = report.details["ops_in_pytorch"]
        if left:
            report.notes.append(
                f"partial conversion: {report.details['trt_engines']} TensorRT engine(s); "
                f"{sum(left.values())} op(s) left to PyTorch: "
                + ", ".join(f"{op} x{n}" for op, n in sorted(left.items())))
        return trt_module, report

    def save(self, module, request: BuildRequest, out_path: Path, report: BuildReport) -> None:
        import torch_tensorrt

        from framepack_trt.export import dynamic_shapes

        accepted = inspect.signature(torch_tensorrt.save).parameters
        save_kwargs = {"output_format": "exported_program", "retrace": False}
        if "pickle_protocol" in accepted:
            # The default (2) cannot hold an engine over 4 GiB (the real-width transformer's is).
            save_kwargs["pickle_protocol"] = 4
        try:
            torch_tensorrt.save(module, str(out_path), **save_kwargs)
            return
        except Exception as first:
            # The legacy exporter (retrace=False) cannot serialize a partitioned graph whose
            # TensorRT engines pass sizes (SymInts) to the PyTorch parts (torch_tensorrt 2.11,
            # pytorch/TensorRT#4620); re-exporting the inlined graph with the engine's dims can.
            if not report.details.get("ops_in_pytorch"):
                raise
            out_path.unlink(missing_ok=True)
            try:
                torch_tensorrt.save(module, str(out_path), **{
                    **save_kwargs, "retrace": True, "arg_inputs": self._inputs(request),
                    "dynamic_shapes": dynamic_shapes(request.inputs, request.dims)})
            except Exception as second:
                raise BuildError(f"saving the partially converted module failed: with retrace=False: "
                                 f"{type(first).__name__}: {str(first).splitlines()[0][:300]}; with "
                                 f"retrace=True: {type(second).__name__}: "
                                 f"{str(second).splitlines()[0][:300]}") from second
            report.notes.append("saved by re-exporting the partitioned graph (retrace=True)")

    def load(self, path: Path, device: str):
        import torch
        import torch_tensorrt

        module = torch_tensorrt.load(str(path)).module()

        def engine(*inputs):
            # no_grad, not inference_mode: the outputs are ordinary tensors, as eager's are
            # (diffusers edits decoded windows in place outside inference mode).
            with torch.no_grad():
                out = module(*inputs)
            return tuple(out) if isinstance(out, (list, tuple)) else (out,)

        return engine


class TensorRTErrors(logging.Handler):
    """Collects the error messages torch_tensorrt logs (TensorRT's builder errors among them)
    while active."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # TensorRT's logger is "torch_tensorrt [TensorRT Conversion Context]": not a child of
        # "torch_tensorrt" by name, so the handler sits on the root logger.
        if record.name.startswith("torch_tensorrt"):
            self.messages.append(record.getMessage().strip())

    def __enter__(self) -> TensorRTErrors:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self)


def partition_report(module) -> dict:
    """How a compiled module is split: TensorRT engines vs ops run by PyTorch."""
    trt_engines = 0
    ops: dict[str, int] = {}
    for name, child in module.named_children():
        if "_run_on_acc" in name:
            trt_engines += 1
        elif "_run_on_gpu" in name and hasattr(child, "graph"):
            for node in child.graph.nodes:
                if node.op == "call_function" and "getitem" not in str(node.target):
                    key = str(node.target)
                    ops[key] = ops.get(key, 0) + 1
    return {"trt_engines": trt_engines, "ops_in_pytorch": ops}
