"""Check engines against PyTorch.

Quick mode re-runs each engine on the golden inputs saved at build time and compares with the
eager outputs saved beside them. Full mode loads the eager module from the recorded source and
compares at the min, opt and max of every dim and at a random in-range shape.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framepack_trt.cache import Cache, Entry
from framepack_trt.cache.storage import EntryStatus
from framepack_trt.compare import OutputCheck
from framepack_trt.engine_status import entry_status
from framepack_trt.util import ChildFailed, run_in_fresh_process

FULL_CASES = ("min", "opt", "max", "random")


@dataclass
class CaseResult:
    case: str
    sizes: dict[str, int]
    checks: list[OutputCheck] = field(default_factory=list)
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and bool(self.checks) and all(c.passed for c in self.checks)


@dataclass
class EngineVerification:
    name: str
    key: str
    mode: str
    status: EntryStatus
    cases: list[CaseResult] = field(default_factory=list)
    error: str = ""

    @property
    def skipped(self) -> bool:
        """Not checked: the engine cannot run here (stale). Never counted as passed."""
        return self.status.state == "stale"

    @property
    def passed(self) -> bool:
        return (self.status.state == "ok" and not self.error and bool(self.cases)
                and all(c.passed for c in self.cases))

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "name": self.name, "key": self.key, "mode": self.mode,
            "status": self.status.state, "status_reason": self.status.reason,
            "result": "skipped" if self.skipped else ("pass" if self.passed else "fail"),
            "error": self.error,
            "cases": [{"case": c.case, "sizes": c.sizes, "passed": c.passed, "error": c.error,
                       "outputs": [o.to_dict() for o in c.checks]} for c in self.cases],
        }


def verify_entry(cache: Cache, entry: Entry, full: bool = False,
                 seed: int | None = None, deep: bool = True,
                 reference: str | None = None) -> EngineVerification:
    """``deep``: re-hash the files (False where the caller has just checked or written them).
    ``reference``: "eager" or "fp32" (default: the entry's tolerance says)."""
    result = EngineVerification(entry.name, entry.key, "full" if full else "quick",
                                entry_status(cache, entry, deep=deep))
    if result.status.state != "ok":
        return result
    try:
        _run(cache, entry, full, seed, result, reference)
    except Exception as exc:  # report a crashing engine as a failure of that engine
        result.error = f"{type(exc).__name__}: {exc}".strip()
    return result


def _run(cache: Cache, entry: Entry, full: bool, seed: int | None,
         result: EngineVerification, reference: str | None = None) -> None:
    import torch
    from safetensors.torch import load_file

    from framepack_trt.compare import compare, compare_to_fp32
    from framepack_trt.components.base import Tolerance, get_component
    from framepack_trt.export import torch_dtype
    from framepack_trt.runtime.loading import load_engine, load_model

    device = entry.device_type
    component = get_component(entry.component)
    tol = Tolerance(**entry.tolerance)
    engine = load_engine(cache, entry)
    raw_names = entry.raw_input_names
    dtype = torch_dtype(entry.dtype)
    reference = reference or tol.reference
    # The model in float32, for an fp32 reference (a float32 engine is its own reference).
    truth_model = (load_model(cache, entry, torch.float32)
                   if reference == "fp32" and dtype != torch.float32 else None)

    # An engine that takes its weights as inputs gets them from the model, in either mode.
    # A checking process of a build (``CheckServer``) keeps that model for the next engine.
    model = (load_model(cache, entry, keep=_SERVING and component.weights_as_inputs)
             if full or component.weights_as_inputs else None)

    def check(case: CaseResult, inputs, expected, index: int = 0) -> None:
        try:
            outs = engine(*component.engine_inputs(model, inputs, dtype, device, index))
        except Exception as exc:  # e.g. a shape the engine refuses
            case.error = f"{type(exc).__name__}: {exc}".strip()
            return
        if truth_model is None:
            for name, out, exp in zip(entry.outputs, outs, expected, strict=True):
                case.checks.append(compare(name, out, exp, tol))
            return
        with torch.inference_mode():
            truth = component.reference(truth_model, [
                x.float() if x.is_floating_point() else x for x in inputs], index)
        for name, out, exp, tru in zip(entry.outputs, outs, expected, truth, strict=True):
            case.checks.append(compare_to_fp32(name, out, exp.to(out.device), tru, tol))

    if not full:
        golden = load_file(str(cache.root / entry.golden.file))
        for idx, meta in enumerate(entry.golden_cases):
            case = CaseResult(f"golden:{meta.case}", meta.sizes)
            inputs = [golden[f"{idx}.input.{n}"].to(device) for n in raw_names]
            expected = [golden[f"{idx}.output.{n}"] for n in entry.outputs]
            check(case, inputs, expected, meta.index or 0)
            result.cases.append(case)
        return

    dims = entry.dims
    seed = random.randrange(2**31) if seed is None else seed
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = [(which, component.case_sizes(dims, which, rng)) for which in FULL_CASES]
    buckets = list(entry.buckets or ())
    for number, (which, sizes) in enumerate(cases + component.check_sizes(dims, buckets)):
        index = component.case_index(model.config, number)
        case = CaseResult(which if component.pieces(model.config) == 1 else f"{which} #{index}",
                          sizes)
        inputs = component.make_inputs(model.config, sizes, dtype, device, gen)
        with torch.inference_mode():
            expected = component.reference(model, inputs, index)
        check(case, inputs, expected, index)
        result.cases.append(case)


def verify_in_fresh_process(cache: Cache, entry: Entry, full: bool = False,
                            seed: int | None = None, timeout: float = 3600,
                            reference: str | None = None) -> dict:
    """``verify_entry`` in a new Python process, for an entry that may not be committed yet.

    The engine gets a process of its own: loading several engines (and eager models) into one
    process crashed with torch_tensorrt 2.11, and a crash inside compiled code then takes only
    that engine down (``verify_all_isolated`` shares one process between the engines of
    backends that allow it). The entry goes to the child, and its result comes back, through files
    in a private temporary folder outside the cache (nothing a ``purge`` touches; the cache may
    be read-only). Returns ``EngineVerification.to_dict()``; a process that dies or overruns
    ``timeout`` seconds comes back as a failure that says so.
    """
    args = [str(cache.root), *_child_options(full, seed, reference)]
    try:
        return run_in_fresh_process("framepack_trt.verify", entry.to_dict(), args, timeout)
    except ChildFailed as exc:
        return _died(entry, full, str(exc))


def _died(entry: Entry, full: bool, how: str) -> dict:
    """The check's result when the process checking the engine died or overran."""
    return {"name": entry.name, "key": entry.key, "mode": "full" if full else "quick",
            "passed": False, "result": "fail", "status": "ok", "status_reason": "", "cases": [],
            "error": f"the process loading and running the engine {how}"}


def verify_all_isolated(cache: Cache, entries: list[Entry], full: bool = False,
                        seed: int | None = None, reference: str | None = None) -> list[dict]:
    """Verify entries away from this process, results in their order: the files are checked
    here (sha256, staleness); the engines of backends that may share a process
    (``Backend.shares_process``: AOTInductor) then run in one fresh process together, the
    others in one process each. When the shared process dies, each of its engines is checked
    again in a process of its own, so a crash is pinned on the engine that caused it."""
    from framepack_trt.backends import get_backend

    mode = "full" if full else "quick"
    results: list[dict | None] = [None] * len(entries)
    shared: list[int] = []
    for i, entry in enumerate(entries):
        status = entry_status(cache, entry, deep=True)
        if status.state != "ok":
            results[i] = EngineVerification(entry.name, entry.key, mode, status).to_dict()
        elif get_backend(entry.backend).shares_process:
            shared.append(i)
    if len(shared) > 1:
        args = [str(cache.root), *_child_options(full, seed, reference)]
        try:
            batch = run_in_fresh_process("framepack_trt.verify",
                                         [entries[i].to_dict() for i in shared], args,
                                         3600.0 * len(shared))
        except ChildFailed:
            pass  # each of them again, one process each, below
        else:
            for i, result in zip(shared, batch, strict=True):
                results[i] = result
    for i, entry in enumerate(entries):
        if results[i] is None:
            results[i] = verify_in_fresh_process(cache, entry, full=full, seed=seed,
                                                 reference=reference)
    return results  # type: ignore[return-value]


def _child_options(full: bool, seed: int | None, reference: str | None) -> list[str]:
    opts = []
    if full:
        opts += ["--full", str(seed if seed is not None else random.randrange(2**31))]
    if reference:
        opts += ["--reference", reference]
    return opts


def verification_problem(result: dict) -> str:
    """The first reason a verification dict failed."""
    if result.get("error"):
        return result["error"]
    if result.get("status") not in (None, "ok"):
        return f"{result['status']}: {result.get('status_reason', '')}"
    for case in result.get("cases", []):
        if case.get("error"):
            return f"{case['case']} {case['sizes']}: {case['error']}"
        for o in case.get("outputs", []):
            if not o["passed"]:
                return f"{case['case']} {case['sizes']} {o['output']}: {o['reason']}"
    return "unknown"


@dataclass
class VerifyReport:
    """``verify``'s answer: each engine's result (``EngineVerification.to_dict()``, in the
    plan's order), the counts, and the pass rule: no engine failed and at least one was
    checked (a stale engine is reported as skipped, never counted as passed)."""

    cache_dir: Path
    seed: int | None
    engines: list[dict[str, Any]]

    @property
    def counts(self) -> dict[str, int]:
        failed = sum(r["result"] == "fail" for r in self.engines)
        skipped = sum(r["result"] == "skipped" for r in self.engines)
        return {"passed": len(self.engines) - failed - skipped, "failed": failed,
                "skipped": skipped}

    @property
    def nothing_checked(self) -> bool:
        """Engines were selected, but every one was skipped."""
        return bool(self.engines) and self.counts["skipped"] == len(self.engines)

    @property
    def passed(self) -> bool:
        return not self.counts["failed"] and not self.nothing_checked

    def to_dict(self) -> dict[str, Any]:
        return {"cache_dir": str(self.cache_dir), "seed": self.seed, "passed": self.passed,
                "counts": self.counts, "engines": self.engines}


@dataclass
class VerifyPlan:
    """The engines ``verify`` checks, by name, and how (``run`` checks them)."""

    cache: Cache
    entries: list[Entry]
    full: bool
    seed: int | None
    reference: str | None

    @property
    def mode(self) -> str:
        return "full" if self.full else "quick"

    def run(self) -> VerifyReport:
        results = verify_all_isolated(self.cache, self.entries, full=self.full, seed=self.seed,
                                      reference=self.reference)
        return VerifyReport(self.cache.root, self.seed, results)


def plan_verify(cache: Cache, names: list[str] | None = None, full: bool = False,
                seed: int | None = None, reference: str | None = None) -> VerifyPlan:
    """The engines ``names`` select (all when none; UsageError naming the cache's engines when
    names select none); full mode draws a seed when none is given; ``reference`` must be one
    of ``REFERENCES`` (None: each engine's tolerance says)."""
    from framepack_trt.components.base import REFERENCES
    from framepack_trt.errors import UsageError
    from framepack_trt.names import entry_matches

    entries = cache.entries()
    selected = sorted((e for e in entries.values() if entry_matches(e, names)),
                      key=lambda e: e.name)
    if names and not selected:
        raise UsageError(f"no engine named {', '.join(names)} in {cache.root}; it has: "
                         f"{', '.join(sorted(e.name for e in entries.values())) or 'none'}")
    if full and seed is None:
        seed = random.randrange(2**31)
    if reference is not None and reference not in REFERENCES:
        raise UsageError(f"--reference {reference!r} is not valid; expected one of: "
                         f"{', '.join(REFERENCES)}")
    return VerifyPlan(cache, selected, full, seed, reference)


#: Set in a ``CheckServer``'s process: models whose weights are engine inputs are kept.
_SERVING = False


class CheckServer:
    """One checking process for the engines a build makes one after another (of backends that
    may share a process: ``Backend.shares_process``), started before the first is compiled:
    it imports torch and the model libraries while the build works, and keeps the model of
    engines that take their weights as inputs (the transformer's four pieces load it once).
    Each check is still outside the building process, on the engine's file alone. A process
    that dies fails the engine it was checking (as ``verify_in_fresh_process`` says), and the
    next check starts a new one. ``check`` returns what ``verify_in_fresh_process`` returns."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._proc = None
        self._tmp = None
        self._jobs = 0

    def start(self) -> None:
        import subprocess

        if self._proc is not None and self._proc.poll() is None:
            return
        self._tmp = tempfile.mkdtemp(prefix="framepack-trt-check-")
        self._log = open(Path(self._tmp) / "stderr.txt", "w+")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "framepack_trt.verify", "--serve", str(self.root)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log, text=True)

    def check(self, entry: Entry, full: bool = False, seed: int | None = None,
              reference: str | None = None, timeout: float = 3600) -> dict:
        import time

        self.start()
        self._jobs += 1
        result_file = Path(self._tmp) / f"result-{self._jobs}.json"
        job = {"entry": entry.to_dict(), "full": full, "seed": seed, "reference": reference,
               "result": str(result_file)}
        try:
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()
        except OSError:
            pass  # it died: said below
        deadline = time.monotonic() + timeout
        while not result_file.is_file():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                code = self._proc.poll()
                how = (f"did not finish within {timeout:.0f} s" if code is None else
                       f"died (killed by signal {-code})" if code < 0 else
                       f"died (exit code {code})")
                self._log.seek(0)
                tail = " | ".join(self._log.read().strip().splitlines()[-3:])
                self.stop()
                return _died(entry, full, f"{how}: {tail}")
            time.sleep(0.02)
        return json.loads(result_file.read_text())

    def stop(self) -> None:
        import shutil

        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._log.close()
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._proc = None

    def __enter__(self) -> CheckServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _serve(root: str) -> None:
    """A ``CheckServer``'s process: imports first, then one JSON job a line on stdin, each
    result written (atomically) to the file the job names."""
    global _SERVING
    _SERVING = True
    import torch  # noqa: F401  (the imports a check needs, while the build compiles)

    import framepack_trt.components.base  # noqa: F401
    from framepack_trt.util import atomic_write_text

    for line in sys.stdin:
        job = json.loads(line)
        result = verify_entry(Cache(root), Entry.from_dict(job["entry"]), full=job["full"],
                              seed=job["seed"], deep=False, reference=job["reference"]).to_dict()
        atomic_write_text(Path(job["result"]), json.dumps(result))


def _child_main(argv: list[str]) -> None:
    """ENTRY_JSON RESULT_JSON CACHE_DIR [--full SEED] [--reference eager|fp32]: verify one
    entry (or a list of them, one after the other), write the result (or the list)."""
    entry_file, result_file, root, *opts = argv
    full = "--full" in opts
    seed = int(opts[opts.index("--full") + 1]) if full else None
    reference = opts[opts.index("--reference") + 1] if "--reference" in opts else None
    entry = json.loads(Path(entry_file).read_text())
    # Both callers checked the files' sha256 (verify_all_isolated) or just wrote and hashed them
    # (build): the child only re-checks size, mtime and staleness.
    results = [verify_entry(Cache(root), Entry.from_dict(e), full=full, seed=seed, deep=False,
                            reference=reference).to_dict()
               for e in (entry if isinstance(entry, list) else [entry])]
    Path(result_file).write_text(json.dumps(results if isinstance(entry, list) else results[0]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2])
    else:
        _child_main(sys.argv[1:])
