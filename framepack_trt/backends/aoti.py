"""AOTInductor: ``torch._inductor.aoti_compile_and_package`` into a ``.pt2`` package.

Runs on CPU (a C++ compiler is needed) and on CUDA. The package holds the compiled kernels and
the weights, and loads in a fresh process (``aoti_host.load_package``, which checks the host
without inductor's CPU probe); it is tied to the torch version and the device it was built
for, which the cache key records. Here: the settings, the engine (``AotiEngine``: a
``share_weights`` package runs on the model's own tensors), the fixes applied while inductor
compiles (``extra_link_flags``, ``stride_check_fix``) and the backend.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from framepack_trt.backends.aoti_host import known_vec_isa, load_package, no_vec_isa
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
    share_weights: the compiled code holds no weights: the engine runs on the model's own
        tensors where the runtime has the model (no second copy in memory, so engines of many
        sizes cost no more weight memory than one), else on a copy kept in the package
        (``WEIGHTS_MEMBER``) and loaded at its first call (``verify``, ``bench``).
    tune_pointwise: benchmark variants of the Triton kernels other than matrix multiplies
        (norms, RoPE, activations, fp8 quantization) while compiling, then refine their block
        sizes by coordinate descent (inductor's ``max_autotune_pointwise`` and
        ``coordinate_descent_tuning``); ``max_autotune`` does this and the matrix multiplies.
        A real-width fp8 block's Triton kernels 0.13-0.23 ms shorter of 1.4-1.8 (H200,
        docs/fp8.md).
    """

    max_autotune: bool = False
    compile_threads: int | None = None
    nd_tiling: bool = False
    share_weights: bool = False
    tune_pointwise: bool = False

    ENGINE_FIELDS = frozenset({"max_autotune", "nd_tiling", "share_weights", "tune_pointwise"})

    def inductor_configs(self) -> dict:
        """The inductor options these settings set for the compile."""
        configs: dict = {"max_autotune": self.max_autotune}
        if self.compile_threads is not None:
            configs["compile_threads"] = self.compile_threads
        if self.nd_tiling:
            configs.update({"triton.prefer_nd_tiling": True, "triton.max_tiles": 3})
        if self.share_weights:
            configs["aot_inductor.package_constants_in_so"] = False
        if self.tune_pointwise:
            configs.update({"max_autotune_pointwise": True, "coordinate_descent_tuning": True})
        return configs


#: Where a ``share_weights`` package keeps its copy of the weights (safetensors), under the
#: archive's root folder; AOTInductor's loader ignores it.
WEIGHTS_MEMBER = "data/framepack_trt/weights.safetensors"


def _member_path(zf) -> str:
    """``WEIGHTS_MEMBER``'s path in the archive ``zf`` (under its root folder)."""
    names = zf.namelist()
    return f"{names[0].split('/', 1)[0] if names else ''}/{WEIGHTS_MEMBER}"


def _weights_member(zf) -> str | None:
    name = _member_path(zf)
    return name if name in zf.namelist() else None


def add_weights(package: Path, exported) -> int:
    """Store the exported program's weights (parameters, buffers, constants) in ``package``
    (a ``share_weights`` one) as ``WEIGHTS_MEMBER``; returns the bytes written."""
    import zipfile

    import torch
    from safetensors.torch import save

    tensors = {n: t.detach().to("cpu", copy=True).contiguous()  # not a second copy on the GPU
               for n, t in {**exported.state_dict, **exported.constants}.items()
               if isinstance(t, torch.Tensor)}
    blob = save(tensors)
    with zipfile.ZipFile(package, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(_member_path(zf), blob)
    return len(blob)


#: safetensors' dtype names, as the package's stored copy records them.
_STORED_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
                  "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                  "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _alias(t):
    """A tensor on ``t``'s memory that does not keep it alive. AOTInductor keeps a reference
    to every user-managed constant it is given and never drops it (torch 2.13): handed the
    model's own tensor, it would pin that storage after the model moved away."""
    import torch

    nbytes = t.numel() * t.element_size()
    storage = torch._C._construct_storage_from_data_pointer(t.data_ptr(), t.device, nbytes)
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(storage, 0, t.shape, t.stride())


class AotiEngine:
    """A loaded package, called with the inputs, returning a tuple of outputs. A
    ``share_weights`` package (``needs_weights``) runs on the tensors handed to ``share``
    (the model's own, not copied) or, if none were, on its own copy, loaded at its first call."""

    def __init__(self, runner, path: Path, device: str):
        import json
        import zipfile

        import torch

        self.runner, self.path = runner, path
        # The runner runs on the current device of the type (aoti_load_package's default).
        self.device = (torch.device(device, torch.cuda.current_device())
                       if device == "cuda" else torch.device(device))
        with zipfile.ZipFile(path) as zf:
            self._member = _weights_member(zf)
            stored = {}
            if self._member is not None:
                with zf.open(self._member) as fh:
                    size = int.from_bytes(fh.read(8), "little")
                    stored = json.loads(fh.read(size))
        self.needs_weights = self._member is not None
        #: name -> (dtype, shape) of each weight, as built.
        self.weight_specs = {n: (_STORED_DTYPES.get(v["dtype"], v["dtype"]), tuple(v["shape"]))
                             for n, v in stored.items() if n != "__metadata__"}
        self.weight_names = list(runner.get_constant_fqns()) if self.needs_weights else []
        self._own: dict | None = None  # the stored copy on the device, when used
        self._stamp: tuple | None = None  # the weights in use; None: none yet

    def _stored(self, names) -> dict:
        """The package's copy of ``names``, on the device (loaded once, kept)."""
        import zipfile

        from safetensors.torch import load

        if self._own is None:
            with zipfile.ZipFile(self.path) as zf:
                self._own = {n: t.to(self.device) for n, t in load(zf.read(self._member)).items()}
        lacking = [n for n in names if n not in self._own]
        if lacking:
            raise RuntimeError(f"{self.path.name}: the package's weights lack "
                               f"{', '.join(lacking[:3])}")
        return {n: self._own[n] for n in names}

    def _use(self, tensors: dict, stamp: tuple) -> None:
        if stamp != self._stamp:
            self.runner.load_constants({n: _alias(t) for n, t in tensors.items()},
                                       check_full_update=True, user_managed=True)
            self._stamp = stamp

    def share(self, tensors) -> str | None:
        """Run on ``tensors`` (name -> tensor, the names of ``weight_names``; a name the model
        lacks, such as a constant export made, from the package's copy), without a copy; handed
        over again whenever one of them is another storage than last time (a model moved
        between devices gets new storage). None when done, else why they cannot be used (each
        must have the dtype and shape it was built with, be contiguous, on the engine's device
        and, on CUDA, 16-byte aligned; the engine is unchanged then)."""
        picked, own = {}, []
        for n in self.weight_names:
            t = tensors.get(n)
            if t is None:
                own.append(n)
                continue
            dtype, shape = self.weight_specs.get(n, (None, None))
            if str(t.dtype).removeprefix("torch.") != dtype or tuple(t.shape) != shape:
                return (f"the model's {n} is {str(t.dtype).removeprefix('torch.')} "
                        f"{tuple(t.shape)}, the engine was built for {dtype} {shape}")
            if t.device != self.device:
                return f"the model's weights are on {t.device}, the engine runs on {self.device}"
            if not t.is_contiguous():
                return f"the model's {n} is not contiguous"
            if t.is_cuda and t.data_ptr() % 16:  # Triton kernels assume aligned pointers
                return f"the model's {n} is not 16-byte aligned"
            picked[n] = t
        if own:
            picked.update(self._stored(own))
        self._use(picked, tuple((n, t.data_ptr()) for n, t in picked.items()))
        return None

    def __call__(self, *inputs):
        import torch

        if self.needs_weights and self._stamp is None:
            own = self._stored(self.weight_names)
            self._use(own, ("own",))
        # no_grad, not inference_mode: outputs made in inference mode are inference tensors,
        # which diffusers' VAE decode (blend_t) then edits in place outside it and fails.
        # Under no_grad they are what the eager module returns in the caller's mode.
        with torch.no_grad():
            out = self.runner(*inputs)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)


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

    from framepack_trt.platforms import is_linux

    changed: list[str] = []
    if not is_linux():  # Linux's dynamic linker only; MSVC links its own C++ runtime
        yield changed
        return
    original = cpp_builder.CppBuilder.get_command_line

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
    #: The CPU ISA a package is compiled for is chosen there (``known_vec_isa``, ``no_vec_isa``).
    code_modules = ("framepack_trt.backends.aoti_host",)

    def version(self) -> str:
        # The link fix is part of the engine: packages built before it crash on CUDA. It is
        # applied on Linux only (``extra_link_flags``).
        from framepack_trt.platforms import is_linux

        return "torch-" + metadata.version("torch") + ("+own-libstdcxx" if is_linux() else "")

    def unavailable_reason(self, device: str) -> str | None:
        from framepack_trt.platforms import aoti_unavailable_on_windows, is_windows

        if is_windows():  # MSVC (torch's compiler there), and Triton for CUDA
            problem = aoti_unavailable_on_windows(device)
            if problem or device == "cpu":
                return problem
        elif device == "cpu":
            if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++", "cl")):
                return "AOTInductor on CPU needs a C++ compiler (g++ or clang++) on PATH"
            return None
        import torch

        if not torch.cuda.is_available():
            return f"AOTInductor on cuda needs a CUDA build of torch and a GPU (torch {torch.__version__})"
        return None

    def build(self, request: BuildRequest, out_path: Path) -> BuildReport:
        import torch

        from framepack_trt.platforms import is_linux

        settings: AotiSettings = request.settings  # type: ignore[assignment]
        configs = settings.inductor_configs()
        isa = (no_vec_isa() if request.device == "cuda" else known_vec_isa(request.state_dir))
        with isa, extra_link_flags(), stride_check_fix() as rescued:
            torch._inductor.aoti_compile_and_package(
                request.exported, package_path=str(out_path), inductor_configs=configs
            )
        details = {"inductor_configs": configs, "link": LINK_FLAGS if is_linux() else None}
        if rescued:
            details["stride_check_fix"] = len(rescued)
        if settings.share_weights:
            details["weights_in_package_bytes"] = add_weights(out_path, request.exported)
        return BuildReport(details=details)

    def load(self, path: Path, device: str) -> AotiEngine:
        return AotiEngine(load_package(path), path, device)
