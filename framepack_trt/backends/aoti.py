"""AOTInductor: ``torch._inductor.aoti_compile_and_package`` into a ``.pt2`` package.

Runs on CPU (a C++ compiler is needed) and on CUDA. The package holds the compiled kernels and
the weights, and loads in a fresh process with ``aoti_load_package``; it is tied to the torch
version and the device it was built for, which the cache key records.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from framepack_trt.backends.base import Backend, BuildReport, BuildRequest, BuildSettings


@dataclass(frozen=True)
class AotiSettings(BuildSettings):
    """AOTInductor build settings.

    max_autotune: benchmark kernel variants while compiling (slower build, maybe faster engine).
    compile_threads: parallel C++/Triton compile jobs (None: inductor's default).
    nd_tiling: CUDA: Triton kernels tiled in up to three dimensions, which take their indices
        from the launch grid instead of dividing by run-time sizes per element (inductor's
        ``triton.prefer_nd_tiling``, ``triton.max_tiles: 3``). For engines with dynamic sizes:
        the real-width VAE decoder's window 1.45x eager with it, 1.13x without (docs/vae.md).
    """

    max_autotune: bool = False
    compile_threads: int | None = None
    nd_tiling: bool = False

    ENGINE_FIELDS = frozenset({"max_autotune", "nd_tiling"})

    def inductor_configs(self) -> dict:
        """The inductor options these settings set for the compile."""
        configs: dict = {"max_autotune": self.max_autotune}
        if self.compile_threads is not None:
            configs["compile_threads"] = self.compile_threads
        if self.nd_tiling:
            configs.update({"triton.prefer_nd_tiling": True, "triton.max_tiles": 3})
        return configs


#: Added to the link of every package's shared library; see ``extra_link_flags``.
LINK_FLAGS = "-static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL -Wl,-Bsymbolic"


@contextmanager
def extra_link_flags(flags: str = LINK_FLAGS) -> Iterator[list[str]]:
    """Add ``flags`` to the link of every shared library inductor builds meanwhile; yields the
    list of link commands it changed.

    Why (docs/aoti-cuda.md): inductor links a package's wrapper library without libstdc++
    among its dependencies, so at load time the wrapper's C++ standard-library references bind
    to whatever the process already exports first, which includes libtorch's own copies of
    libstdc++ template code (std::regex among them) built by torch's compiler. On the CUDA
    machine with torch 2.11 the wrapper's ``std::regex`` in ``parse_device_str`` then recursed
    until the stack overflowed: a segfault in ``aoti_load_package`` for every package, cured by
    ``LD_PRELOAD`` of libstdc++. ``LINK_FLAGS`` gives the wrapper its own libstdc++ and libgcc,
    statically, with their symbols hidden (``--exclude-libs``), and binds its own definitions
    to itself (``-Bsymbolic``), so what it runs no longer depends on the loading process.
    """
    from torch._inductor import cpp_builder

    original = cpp_builder.CppBuilder.get_command_line
    changed: list[str] = []

    def get_command_line(self) -> str:
        cmd = original(self)
        compiler = getattr(self, "_compiler", "")
        if getattr(self, "_do_link", False) and compiler and cmd.startswith(compiler) \
                and not compiler.endswith(("cl", "cl.exe")):
            cmd = f"{compiler} {flags}{cmd[len(compiler):]}"
            changed.append(cmd)
        return cmd

    cpp_builder.CppBuilder.get_command_line = get_command_line
    try:
        yield changed
    finally:
        cpp_builder.CppBuilder.get_command_line = original


@contextmanager
def stride_check_fix() -> Iterator[list[str]]:
    """Let inductor lower a convolution whose input strides it cannot compare symbolically;
    yields the list of range computations it rescued.

    Why (docs/vae.md): lowering a convolution, inductor asks whether the input's strides are
    in order (``guard_or_false(Eq(left % right, 0))``), a question that may be answered "not
    known" (then it copies the input to the strides it wants). With the VAE decoder's frame
    count dynamic (T over 3..5), sympy rewrites one such ``Mod`` of two stride products into a
    form with a power -1, and torch's value-range analysis (``pow_by_natural``, torch 2.13)
    raises ValueRangeError on it instead of answering "not known": the whole build fails.
    Meanwhile the power's range is "unknown", which makes the question "not known" again, as
    inductor meant it; a wrong answer is impossible, at worst an extra copy.
    """
    from torch.utils._sympy import value_ranges

    analysis = value_ranges.SymPyValueRangeAnalysis
    original = analysis.__dict__["pow_by_natural"]
    rescued: list[str] = []

    def pow_by_natural(cls, a, b):
        try:
            return original.__func__(cls, a, b)
        except value_ranges.ValueRangeError:
            rescued.append(f"pow_by_natural({a}, {b})")
            return value_ranges.ValueRanges.unknown()

    analysis.pow_by_natural = classmethod(pow_by_natural)
    try:
        yield rescued
    finally:
        analysis.pow_by_natural = original


class AotiBackend(Backend):
    name = "aoti"
    file_suffix = ".pt2"
    settings_class = AotiSettings

    def version(self) -> str:
        # The link fix is part of the engine: packages built before it crash on CUDA.
        return "torch-" + metadata.version("torch") + "+own-libstdcxx"

    def unavailable_reason(self, device: str) -> str | None:
        if device == "cpu":
            if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++", "cl")):
                return "AOTInductor on CPU needs a C++ compiler (g++ or clang++) on PATH"
            return None
        import torch

        if not torch.cuda.is_available():
            return f"AOTInductor on cuda needs a CUDA build of torch and a GPU (torch {torch.__version__})"
        return None

    def build(self, request: BuildRequest, out_path: Path) -> BuildReport:
        import torch

        settings: AotiSettings = request.settings  # type: ignore[assignment]
        configs = settings.inductor_configs()
        with extra_link_flags(), stride_check_fix() as rescued:
            torch._inductor.aoti_compile_and_package(
                request.exported, package_path=str(out_path), inductor_configs=configs
            )
        details = {"inductor_configs": configs, "link": LINK_FLAGS}
        if rescued:
            details["stride_check_fix"] = len(rescued)
        return BuildReport(details=details)

    def load(self, path: Path, device: str):
        import torch

        runner = torch._inductor.aoti_load_package(str(path))

        def engine(*inputs):
            with torch.inference_mode():
                out = runner(*inputs)
            return tuple(out) if isinstance(out, (list, tuple)) else (out,)

        return engine
