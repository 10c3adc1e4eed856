"""Build the engines of a profile into the cache, as its plan (``build_plan.plan``) says.

``build`` runs the stages load -> export -> compile -> save -> verify for each planned entry
that is not cached, under a per-entry lock, and commits the manifest entry last. One failing
component is reported and the others still build. ``BuildReport`` is what it did.
"""

from __future__ import annotations

import random
import secrets
import shutil
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from framepack_trt import auto
from framepack_trt.backends import get_backend
from framepack_trt.build_plan import PlanItem, fallback_spec, plan_item
from framepack_trt.cache import Cache, now_iso
from framepack_trt.cache.entry import EngineInput, Entry, GoldenCase
from framepack_trt.components.base import get_component
from framepack_trt.device import describe
from framepack_trt.errors import BuildError, FramepackTrtError
from framepack_trt.memory import PeakMemory
from framepack_trt.profile import Profile
from framepack_trt.verify import verification_problem, verify_in_fresh_process

STAGES = ("load", "export", "compile", "save", "verify", "time")
#: Golden samples stored per engine: at opt and at a random in-range shape.
GOLDEN_CASES = ("opt", "random")


@dataclass
class BuildResult:
    name: str
    outcome: str  # built | cached | cached-by-other | failed
    key: str = ""
    backend: str = ""
    times: dict[str, float] = field(default_factory=dict)
    engine_size: int = 0
    error: str = ""
    notes: list[str] = field(default_factory=list)
    #: The stage that failed, and the traceback of an unexpected exception (shown with --debug).
    failed_stage: str = ""
    traceback: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "outcome": self.outcome, "key": self.key,
                "backend": self.backend, "seconds": {k: round(v, 3) for k, v in self.times.items()},
                "engine_size": self.engine_size, "error": self.error,
                "failed_stage": self.failed_stage, "notes": self.notes}


@dataclass
class BuildReport:
    """What ``build`` did: the plan, each item's result (None: a dry run), the counts and the
    pass rule (no item failed)."""

    items: list[PlanItem]
    results: list[BuildResult] | None = None

    @property
    def failed(self) -> list[BuildResult]:
        return [r for r in self.results or () if r.outcome == "failed"]

    @property
    def counts(self) -> dict[str, int]:
        results = self.results or ()
        return {"built": sum(r.outcome == "built" for r in results),
                "cached": sum(r.outcome.startswith("cached") for r in results),
                "failed": len(self.failed)}

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"plan": [i.to_dict() for i in self.items],
                "results": [r.to_dict() for r in self.results or []], "passed": self.passed}


class Listener:
    """Progress callbacks; the CLI draws Rich bars with them. All are optional no-ops."""

    def start(self, item: PlanItem) -> None: ...
    def stage(self, item: PlanItem, stage: str) -> None: ...
    def finish(self, item: PlanItem, result: BuildResult) -> None: ...


def build_auto(profile: Profile, cache: Cache, item: PlanItem, listener: Listener) -> BuildResult:
    """Build, verify and time every candidate; keep the fastest verified one if it beats
    eager by auto.MIN_SPEEDUP; remove the others' files; record the choice."""
    spec, force = item.spec, item.reason == "--force"
    records = []
    times: dict[str, float] = {}  # every candidate's stages, added up
    for cand in auto.candidates(spec):
        record = auto.candidate_record(cand)
        records.append(record)
        reason = get_backend(cand.backend).unavailable_reason(spec.device)
        if reason:
            record.outcome, record.error = "unavailable", reason
            continue
        citem = plan_item(cand, cache, cache.entries(), force)
        record.key = citem.key
        result = _run_item(profile, cache, citem, listener)
        for stage, seconds in result.times.items():
            times[stage] = times.get(stage, 0.0) + seconds
        if result.outcome == "failed":
            record.outcome = "failed"
            record.error = f"at {result.failed_stage or 'plan'}: {result.error}"
            continue
        entry = cache.entries()[citem.key]
        if result.outcome == "cached":  # built earlier (by --backend, or an interrupted auto)
            listener.start(citem)
        listener.stage(citem, "time")
        start = time.perf_counter()
        try:
            record.cases = auto.time_in_fresh_process(cache, entry)
        except RuntimeError as exc:
            record.outcome, record.error = "failed", f"at time: {exc}"
            continue
        finally:
            times["time"] = times.get("time", 0.0) + time.perf_counter() - start
        record.outcome, record.speedup = "verified", round(auto.speedup(record.cases), 3)
    kept = auto.decide(records)
    cache.remove([r.key for r in records if r.key and r is not kept
                  and r.outcome in ("slower", "not-faster-than-eager")])
    choice = auto.choice(spec, records, kept)
    cache.record_choice(item.key, choice)
    result = BuildResult(spec.name, "built" if kept else "failed", item.key,
                         f"auto: {kept.backend}" if kept else "auto: eager", times=times)
    if kept is None and any(r.outcome == "not-faster-than-eager" for r in records):
        result.outcome = "built"  # a measured answer: eager is the fastest here
    if result.outcome == "failed":
        result.error = "; ".join(f"{r.backend} {r.outcome}: {r.error}" for r in records) \
            or f"no backend builds for {spec.device}"
    kept_entry = cache.entries().get(kept.key) if kept else None
    result.engine_size = kept_entry.engine.size if kept_entry else 0
    result.notes.append(auto.describe(choice))
    return result


#: The build's checking process (``verify.CheckServer``) while ``build`` runs, else None.
_CHECKER = None


def build(profile: Profile, cache: Cache, items: list[PlanItem],
          listener: Listener | None = None) -> list[BuildResult]:
    """Build the planned items, one after the other (several at once, each in a process of
    its own: ``build_jobs.build_with_jobs``). The engines of backends that may share a
    process are checked in one process of their own (``verify.CheckServer``), started now so
    that its imports overlap the first compile."""
    global _CHECKER
    from framepack_trt.verify import CheckServer

    listener = listener or Listener()
    shared = any(i.action in ("build", "rebuild") and i.spec.backend != auto.AUTO
                 and _checked_in_server(get_backend(i.spec.backend)) for i in items)
    with CheckServer(cache.root) as checker:
        if shared:
            checker.start()
        _CHECKER = checker
        try:
            return _build_items(profile, cache, items, listener)
        finally:
            _CHECKER = None


def _build_items(profile: Profile, cache: Cache, items: list[PlanItem],
                 listener: Listener) -> list[BuildResult]:
    results = []
    for item in items:
        result = _run_item(profile, cache, item, listener)
        if result.outcome == "failed" and _fallback_applies(item, result):
            first = result
            item = plan_item(fallback_spec(item.spec), cache, cache.entries())
            item.fallback_from = f"{first.backend} failed at {first.failed_stage}: {first.error}"
            result = _run_item(profile, cache, item, listener)
        if item.fallback_from:
            result.notes.insert(0, f"used fallback backend {item.spec.backend} because "
                                   f"{item.fallback_from}")
        listener.finish(item, result)
        results.append(result)
    return results


def _run_item(profile: Profile, cache: Cache, item: PlanItem, listener: Listener) -> BuildResult:
    """The result of one planned item: cached, a planning error, or a build."""
    if item.action == "cached":
        return BuildResult(item.spec.name, "cached", item.key, item.spec.backend)
    if item.action == "error":
        return BuildResult(item.spec.name, "failed", item.key, item.spec.backend, error=item.reason)
    if item.spec.backend == auto.AUTO:
        return build_auto(profile, cache, item, listener)
    listener.start(item)
    return build_one(profile, cache, item, listener)


def _fallback_applies(item: PlanItem, result: BuildResult) -> bool:
    """A fallback backend helps when the backend itself failed, not the weights or export."""
    return bool(item.spec.fallback_backend) and result.failed_stage in ("compile", "save", "verify")


def build_one(profile: Profile, cache: Cache, item: PlanItem, listener: Listener) -> BuildResult:
    spec = item.spec
    result = BuildResult(spec.name, "built", item.key, spec.backend)
    with cache.entry_lock(item.key):
        existing = cache.entries().get(item.key)
        # Another process built (or repaired) it while this one waited for the lock.
        if (existing and item.reason != "--force"
                and cache.file_state(existing).state == "ok"):
            result.outcome = "cached-by-other"
            return result
        stem = cache.file_stem(spec.name, item.key)
        backend = get_backend(spec.backend)
        engine_path = cache.engines_dir / f"{stem}{backend.file_suffix}"
        golden_path = cache.golden_dir / f"{stem}.safetensors"
        tmp_engine = cache.tmp_dir / f"{stem}{backend.file_suffix}"
        tmp_golden = cache.tmp_dir / f"{stem}.safetensors"
        committed = False
        try:
            entry = _run_stages(profile, cache, item, listener, result, tmp_engine, tmp_golden,
                                engine_path, golden_path)
            cache.commit(entry)
            committed = True
        except FramepackTrtError as exc:
            result.outcome, result.error = "failed", str(exc)
            result.failed_stage = result.failed_stage or _current_stage(result)
        except Exception as exc:  # a compiler crash must not stop the other components
            result.outcome = "failed"
            result.error = f"{type(exc).__name__}: {exc}".strip()
            result.failed_stage = _current_stage(result)
            result.traceback = traceback.format_exc()
        finally:
            # Ctrl-C included: nothing half-written stays behind, the manifest is untouched,
            # and the files of an entry this build replaces stay until the commit.
            for p in (tmp_engine, tmp_golden) + (() if committed else (engine_path, golden_path)):
                if p.is_dir():  # AOTInductor may leave a folder beside its package
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
    return result


def _current_stage(result: BuildResult) -> str:
    """The last stage entered (stages record their time when they end or fail)."""
    return next(reversed(result.times), "")


def _timed(result: BuildResult, listener: Listener, item: PlanItem, stage: str):
    listener.stage(item, stage)
    start = time.perf_counter()

    class _T:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            result.times[stage] = time.perf_counter() - start
            return False

    return _T()


def _run_stages(profile, cache, item, listener, result, tmp_engine: Path, tmp_golden: Path,
                engine_path: Path, golden_path: Path) -> Entry:
    import os

    import torch
    from safetensors.torch import save_file

    from framepack_trt.backends import BuildRequest
    from framepack_trt.export import export_component, torch_dtype
    from framepack_trt.sources import load_model

    spec = item.spec
    component = get_component(spec.component)
    backend = get_backend(spec.backend)
    dtype = torch_dtype(spec.dtype)
    # The export sample and the golden samples are drawn from the key (a rebuild writes the
    # same files); the build's check draws its own inputs from a fresh seed (recorded), so an
    # engine that is right only at the values it was exported or sampled with is refused.
    seed = int(item.key[:8], 16)
    check_seed = secrets.randbelow(2**31)

    with PeakMemory(cuda=spec.device == "cuda") as memory:
        with _timed(result, listener, item, "load"):
            reason = backend.unavailable_reason(spec.device)
            if reason:
                raise BuildError(f"backend {spec.backend!r} unavailable: {reason}")
            # Engines that take the weights as inputs share one model (the transformer's
            # pieces): loaded once for all of them.
            model = load_model(component, spec.source, dtype, spec.device, cache.weights_dir,
                               keep=component.weights_as_inputs)
            config = model.config
            specs = component.engine_specs(model)
            problems = component.check_dims(config, spec.dims)
            if problems:
                raise BuildError(f"{profile.path}: components[{spec.name}]: " + "; ".join(problems))

        with _timed(result, listener, item, "export"):
            exported = export_component(component, model, spec.dims, dtype, spec.device, seed)
            program = exported.program

        with _timed(result, listener, item, "compile"):
            engine_dims = {**spec.dims, **component.derived_dims(spec.dims)}
            request = BuildRequest(program, specs, engine_dims,
                                   spec.dtype, spec.device, backend.settings(spec.build),
                                   cache.state_dir / spec.backend)
            request.state_dir.mkdir(parents=True, exist_ok=True)
            report = backend.build(request, tmp_engine)
            result.notes += report.notes

        with _timed(result, listener, item, "save"):
            rng = random.Random(seed)
            gen = torch.Generator().manual_seed(seed)
            raw_names = component.raw_input_names(config)
            tensors: dict[str, torch.Tensor] = {}
            cases = []
            for case in GOLDEN_CASES:
                sizes = component.case_sizes(spec.dims, case, rng)
                inputs = component.make_inputs(config, sizes, dtype, spec.device, gen)
                idx = len(cases)
                index = component.case_index(config, idx)
                with torch.inference_mode():
                    outputs = component.reference(model, inputs, index)
                for name, t in zip(raw_names, inputs, strict=True):
                    tensors[f"{idx}.input.{name}"] = t.detach().cpu().contiguous()
                for name, t in zip(component.output_names, outputs, strict=True):
                    tensors[f"{idx}.output.{name}"] = t.detach().cpu().contiguous()
                cases.append(GoldenCase(case, sizes, index))
            save_file(tensors, str(tmp_golden))
            os.replace(tmp_engine, engine_path)
            os.replace(tmp_golden, golden_path)
            del model, exported, program, request

    engine_file = cache.describe_file(engine_path)
    result.engine_size = engine_file.size
    peaks = memory.peaks()
    entry = Entry(
        key=item.key, name=spec.name, component=spec.component, key_fields=item.key_fields,
        engine=engine_file, golden=cache.describe_file(golden_path),
        source=spec.source.to_dict(), tolerance=spec.tolerance.to_dict(),
        inputs=tuple(EngineInput(s.name, tuple(s.shape), s.dtype) for s in specs),
        raw_inputs=tuple(raw_names),
        engine_dims={n: r.to_dict() for n, r in engine_dims.items()},
        buckets=tuple(tuple(b) for b in spec.buckets), outputs=tuple(component.output_names),
        golden_cases=tuple(cases), build_settings=backend.settings(spec.build).to_dict(),
        build_seconds={k: round(v, 3) for k, v in result.times.items()},
        build_notes=tuple(result.notes[:20]), profile=str(profile.path),
        profile_entry=spec.entry or spec.name,  # the entry that asked for it (static: true)
        created=now_iso(), device_name=describe(item.key_fields["device"]), **peaks.to_dict())
    result.notes.append(peaks.describe())

    with _timed(result, listener, item, "verify"):
        # Outside this process (``check_processes`` of them, one after the other, each on
        # inputs of its own; the build's CheckServer for backends that share one): proves the
        # engine loads from its file alone, and a crash while loading or running it (a segfault
        # in compiled code) fails this component only.
        # A component whose one engine spans shapes a backend may get wrong at some of them
        # (full_check_at_build) is checked against a fresh eager reference at every size of
        # `verify --full`; the others against the golden samples just written.
        full = component.full_check_at_build
        seeds = [check_seed + i for i in range(backend.check_processes)]
        for n, seed_n in enumerate(seeds, 1):
            check = check_engine(cache, entry, backend, full=full, seed=seed_n)
            where = f" (check process {n} of {len(seeds)})" if len(seeds) > 1 else ""
            if check["result"] == "skipped":
                raise BuildError(f"{spec.name}: the engine was not checked, so it is not cached: "
                                 f"the checking process{where} found it "
                                 f"{verification_problem(check)}")
            if not check["passed"]:
                raise BuildError(check_failure(spec.name, check, full, seed_n, where))
    return replace(entry, build_check={
        "mode": check["mode"], "seed": check_seed if full else None, "processes": len(seeds),
        "reference": spec.tolerance.reference, "cases": [c["case"] for c in check["cases"]]},
        build_seconds={k: round(v, 3) for k, v in result.times.items()})


def check_engine(cache: Cache, entry: Entry, backend, full: bool, seed: int) -> dict:
    """An engine's check outside this process: in the build's CheckServer where the backend
    shares a process and is checked once, else in a fresh process of its own (a backend
    checked in several processes, TensorRT, needs them independent)."""
    if _CHECKER is not None and _checked_in_server(backend):
        return _CHECKER.check(entry, full=full, seed=seed)
    return verify_in_fresh_process(cache, entry, full=full, seed=seed)


def _checked_in_server(backend) -> bool:
    return backend.shares_process and backend.check_processes == 1


def check_failure(name: str, check: dict, full: bool, seed: int, where: str = "") -> str:
    """Why a build's check failed, in words: an engine the check could not run for want of
    device memory (other builds or programs on the GPU) is not called wrong."""
    problem = verification_problem(check)
    if "out of memory" in problem.lower():
        return (f"{name}: the check ran out of device memory{where}, so the engine was not "
                f"cached (it was not found wrong): free GPU memory (other builds or programs "
                f"using it) and build again ({problem.splitlines()[0][:200]})")
    what = (f"at the sizes of verify --full (inputs drawn with seed {seed})"
            if full else "on the golden samples")
    return f"{name}: the engine does not match eager {what}{where}: {problem}"
