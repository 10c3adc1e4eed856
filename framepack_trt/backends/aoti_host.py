"""What an AOTInductor package needs of its host's CPU (and GPU), settled without inductor's
CPU probe where it can be.

Inductor's probe (``pick_vec_isa``) compiles and loads a test program for each vector ISA the
CPU reports: seconds per process, tens of seconds on a GPU machine (docs/first-use.md). At
build time a CPU package is compiled for the ISA the probe picks, its answers recorded once per
machine (``known_vec_isa``); a CUDA package's C++ is compiled for no vector ISA, with no probe
(``no_vec_isa``). At load time the package's recorded ISA and compute capability are compared
with the CPU's feature bits and the CUDA driver's answer (``host_problem``), and the package is
loaded as ``aoti_load_package`` loads it, without its probe (``load_package``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The package metadata that says which host it runs on, and how to read this host's side.
_ISA_KEY, _CAPABILITY_KEY = "AOTI_CPU_ISA", "AOTI_COMPUTE_CAPABILITY"


def host_problem(metadata: dict) -> str | None:
    """Why a package with this metadata cannot run here, or None. What a loaded package needs
    of the host: the CPU instructions its C++ was compiled for (``AOTI_CPU_ISA``: the wrapper
    of a CUDA package is compiled with the build host's vector ISA flags too, and a missing
    instruction set is a crash, not an error) and, for CUDA, a GPU of the compute capability
    its kernels were compiled for. Both are read from the CPU's feature bits and the CUDA
    driver, so no compiler runs (``aoti_load_package`` instead compares the package with
    ``pick_vec_isa()``, which compiles and loads test programs: once per process, seconds to
    tens of seconds, and only to warn)."""
    import platform

    import torch

    isa = (metadata.get(_ISA_KEY) or "").lower()
    if isa and isa != "invalid_vec_isa" and platform.machine() in ("x86_64", "AMD64"):
        from torch._inductor.cpu_vec_isa import x86_isa_checker

        # str(VecISA) names its flags: "avx512", "avx2", "amx_tile avx512_vnni" ...
        have = set(x86_isa_checker())
        lacking = [flag for flag in isa.split() if flag not in have]
        if lacking:
            return (f"it was compiled for CPU instructions {isa.upper()}, which this CPU lacks "
                    f"({', '.join(lacking)}; it has {', '.join(sorted(have)) or 'none of AVX2/AVX-512'})")
    want = metadata.get(_CAPABILITY_KEY)
    if metadata.get("AOTI_DEVICE_KEY") == "cuda" and want and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        if want not in (f"{major}{minor}", f"{major}.{minor}"):
            return (f"its kernels were compiled for compute capability {want}, this GPU is "
                    f"{major}.{minor}")
    return None


def load_package(path: Path):
    """The package's runner, loaded as ``torch._inductor.aoti_load_package`` loads it, less
    that function's host comparison (``host_problem`` instead, which raises)."""
    import torch

    try:
        from torch.export.pt2_archive._package import AOTICompiledModel
    except ImportError:  # older torch
        from torch._inductor.package.package import AOTICompiledModel

    def refuse(metadata: dict) -> None:
        problem = host_problem(metadata)
        if problem:
            raise RuntimeError(f"{path.name} cannot run on this machine: {problem}; rebuild it "
                               "here (`framepack-trt build`)")

    loader_cls = torch._C._aoti.AOTIModelPackageLoader
    read = getattr(loader_cls, "load_metadata_from_package", None)
    if read is not None:  # before the package's code is loaded
        refuse(read(str(path), "model"))
    runner = AOTICompiledModel(loader_cls(str(path), "model", False, 1, -1))
    if read is None:
        refuse(runner.get_metadata())
    return runner


def _machine_key() -> str:
    """What inductor's CPU probe depends on: torch, the platform, the CPU's vector feature bits
    (as torch reads them) and the C++ compiler (its path, size and time: a new compiler is
    probed again)."""
    import hashlib
    import os
    import platform
    import sys

    import torch
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.cpu_vec_isa import x86_isa_checker

    compiler = shutil.which(get_cpp_compiler()) or get_cpp_compiler()
    try:
        st = os.stat(os.path.realpath(compiler))
        stamp = [os.path.realpath(compiler), st.st_size, st.st_mtime_ns]
    except OSError:
        stamp = [compiler]
    text = repr([torch.__version__, sys.platform, platform.machine(), x86_isa_checker(), stamp])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@contextmanager
def known_vec_isa(state_dir: Path) -> Iterator[str]:
    """Inductor's CPU probe (``pick_vec_isa``: for each vector ISA the CPU reports, and for some
    of their extensions such as AVX-512 BF16, compile a test program and load it in a child
    process; 44-50 s in a fresh process on an H100 machine, docs/first-use.md) once per machine
    instead of once per building process: each test's answer is recorded in ``state_dir``
    (``vec_isa.json``, under ``_machine_key``), and while the block runs (the compile inside it
    included) a test already answered on this machine is answered from the record, the others
    are run and recorded. So a package is compiled for the same ISA and flags as with the probe.
    Yields the ISA."""
    import hashlib
    import json

    from torch._inductor.cpu_vec_isa import VecISA, pick_vec_isa, valid_vec_isa_list

    if valid_vec_isa_list.cache_info().currsize:  # this process knows it already
        yield str(pick_vec_isa())
        return
    record = Path(state_dir) / "vec_isa.json"
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        known = {}
    key = _machine_key()
    answers: dict[str, bool] = dict(known.get(key, {}))
    learned = False
    probe = VecISA.__dict__["check_build"]

    def check_build(self, code: str) -> bool:
        nonlocal learned
        test = (f"{type(self).__name__} {self.build_arch_flags()} "
                f"{hashlib.sha256(code.encode()).hexdigest()[:16]}")
        if test not in answers:
            answers[test] = bool(probe(self, code))
            learned = True
        return answers[test]

    VecISA.check_build = check_build
    try:
        yield str(pick_vec_isa())
    finally:
        VecISA.check_build = probe
        if learned:
            known[key] = answers
            try:
                from framepack_trt.util import atomic_write_text

                record.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(record, json.dumps(known, indent=1, sort_keys=True))
            except OSError:
                pass  # a read-only state folder: probed again next time


@contextmanager
def no_vec_isa() -> Iterator[None]:
    """A CUDA package without inductor's CPU probe: its kernels are Triton's, and its C++ (the
    wrapper that launches them, and the shape arithmetic of dynamic sizes) has no vector code
    to specialise, so it is compiled for no vector ISA: ``pick_vec_isa`` finds no valid ISA
    and compiles no test program (the package's AOTI_CPU_ISA is then INVALID_VEC_ISA, and it
    runs on any x86 CPU). A CPU kernel inside such a graph would still compile, without AVX.
    Not ``cpp.vec_isa_ok = False``: the AVX-512 ISAs cache their answer for the process
    (``functools.cache`` on ``__bool__``), so a CPU build after it would lose AVX-512."""
    import torch._inductor.cpu_vec_isa as isa_module

    real = isa_module.valid_vec_isa_list
    isa_module.valid_vec_isa_list = lambda: []
    try:
        yield
    finally:
        isa_module.valid_vec_isa_list = real
