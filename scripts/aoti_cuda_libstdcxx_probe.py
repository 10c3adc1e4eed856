"""Probe: why an AOTInductor package built on CUDA segfaults in ``aoti_load_package``, and
which link of the package's wrapper library cures it (docs/aoti-cuda.md has the results).

    python scripts/aoti_cuda_libstdcxx_probe.py [OUT_DIR]

Builds a two-layer MLP package with torch's own link and with each set of extra link flags in
VARIANTS (added through ``framepack_trt.backends.aoti.extra_link_flags``), records the link
commands and each wrapper's DT_NEEDED list, then loads every package in a fresh process that
imports torch first: plainly, and for torch's own link also with the already-loaded libstdc++
promoted to RTLD_GLOBAL. Prints a table last and writes aoti_libstdcxx_probe.json to OUT_DIR.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from framepack_trt.backends.aoti import extra_link_flags  # noqa: E402

CHILD = r"""
import sys, os, json, ctypes
mode, pkg = sys.argv[1], sys.argv[2]
lib = os.environ["PROBE_LIBSTDCXX"]
import torch
if mode == "promote-after-torch":
    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL | os.RTLD_NOLOAD)
r = torch._inductor.aoti_load_package(pkg)
x = torch.randn(4, 64, device="cuda")
print("RAN", r(x).float().abs().sum().item(), flush=True)
"""


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout


VARIANTS = {
    "torch's link": None,
    "libstdc++ first": "-Wl,--push-state,--no-as-needed -lstdc++ -Wl,--pop-state",
    "static libstdc++, hidden, Bsymbolic":
        "-static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL -Wl,-Bsymbolic",
    "Bsymbolic": "-Wl,-Bsymbolic",
}


def build(path: str, flags: str | None) -> tuple[str, list[str]]:
    import torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 8)).cuda()
    ep = torch.export.export(m, (torch.randn(4, 64, device="cuda"),))
    with extra_link_flags(flags) if flags else nullcontext([]) as changed:
        try:
            torch._inductor.aoti_compile_and_package(ep, package_path=path)
        except Exception as exc:  # a variant whose link fails
            return "", [f"build failed: {type(exc).__name__}: {str(exc)[-1500:]}"]
    return path, list(changed)


def wrapper_needed(pkg: str) -> list[str]:
    ex = Path(tempfile.mkdtemp())
    zipfile.ZipFile(pkg).extractall(ex)
    so = glob.glob(str(ex / "**" / "*wrapper.so"), recursive=True)[0]
    return [line.split("[", 1)[1].rstrip("]") for line in sh(f"readelf -d {so}").splitlines()
            if "(NEEDED)" in line]


def child(mode: str, pkg: str, lib: str, env: dict | None = None) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, mode, pkg], capture_output=True, text=True,
                       env={**os.environ, "PROBE_LIBSTDCXX": lib, **(env or {})}, timeout=120)
    return {"rc": p.returncode, "stdout": p.stdout[-2000:], "stderr": p.stderr[-2000:]}


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = os.path.realpath(sh("g++ -print-file-name=libstdc++.so.6").strip())
    report: dict = {"gxx": sh("g++ --version").splitlines()[0], "gxx_libstdcxx": lib}
    work = Path(tempfile.mkdtemp())
    runs = {}
    for i, (name, flags) in enumerate(VARIANTS.items()):
        pkg, cmds = build(str(work / f"v{i}.pt2"), flags)
        report[name] = {"link_commands": cmds, "needed": wrapper_needed(pkg) if pkg else None}
        print(name, json.dumps(report[name])[:1500], flush=True)
        runs[name + ", plain load"] = child("load", pkg, lib) if pkg else {"rc": "no package",
                                                                          "stdout": ""}
        if flags is None:
            runs[name + ", promote libstdc++ after torch"] = child("promote-after-torch", pkg, lib)
    report["runs"] = runs
    (out_dir / "aoti_libstdcxx_probe.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))
    print("\n| package, load | exit code | ran |")
    print("|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['rc']} | {'RAN' in r['stdout']} |")


if __name__ == "__main__":
    main()
