"""``framepack-trt build --jobs N``: build up to N engines at once, each in a process of its own.

Compiling an engine is mostly one Python thread (tracing, lowering, code generation) plus the
C++ and Triton compilers; on a machine with many cores, engines built side by side finish
sooner than one after the other (the transformer's four pieces on an H100 machine of 16 cores:
docs/benchmarks.md). Each building process runs ``build.build`` on one planned item at a time,
exactly as a one-job build does (its own checking process, the per-entry lock, the manifest
entry committed last), so the cache sees N builds of different entries, which its locks
already allow. Progress comes back to the caller's listener through a queue; the results come
back in the plan's order. An engine that fails among others is built once more alone, after
them: engines side by side share the GPU's memory (the full-size VAE's decoder windows, five at
once on an 80 GB H100, ran out of it at their golden samples and checks), so its failure may be
theirs; its result says so.

What it costs: each process loads the model it builds (the transformer's pieces load the same
one once per process) and its checking process loads it again, on the build's device.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from framepack_trt.build import BuildResult, Listener, _run_item, build
from framepack_trt.build_plan import PlanItem, plan_item
from framepack_trt.cache import Cache
from framepack_trt.profile import Profile

#: In a building process: where its listener's events go.
_EVENTS = None


class _Forward(Listener):
    """A building process's listener: every event to the parent, by the item's name."""

    def start(self, item: PlanItem) -> None:
        _EVENTS.put(("start", item))

    def stage(self, item: PlanItem, stage: str) -> None:
        _EVENTS.put(("stage", item, stage))


def _init(events) -> None:
    global _EVENTS
    from framepack_trt.util import quiet_torch_warnings

    quiet_torch_warnings()
    _EVENTS = events


def _build_in_process(profile: Profile, root: str, item: PlanItem) -> BuildResult:
    return build(profile, Cache(root), [item], _Forward())[0]


def build_with_jobs(profile: Profile, cache: Cache, items: list[PlanItem],
                    listener: Listener | None = None, jobs: int = 1) -> list[BuildResult]:
    """``build.build``, or with ``jobs`` > 1 and more than one engine to build, up to ``jobs``
    of them at once (``build_in_processes``)."""
    if jobs > 1 and sum(i.action in ("build", "rebuild") for i in items) > 1:
        return build_in_processes(profile, cache, items, listener or Listener(), jobs)
    return build(profile, cache, items, listener)


def build_in_processes(profile: Profile, cache: Cache, items: list[PlanItem],
                       listener: Listener, jobs: int) -> list[BuildResult]:
    """``build.build`` of ``items`` with up to ``jobs`` items building at once."""
    todo = [i for i in items if i.action in ("build", "rebuild")]
    results: dict[int, BuildResult] = {}
    for n, item in enumerate(items):  # cached and unplannable ones: nothing to build
        if item.action not in ("build", "rebuild"):
            results[n] = _run_item(profile, cache, item, listener)
            listener.finish(item, results[n])
    ctx = multiprocessing.get_context("spawn")  # no CUDA state or locks inherited by fork
    events = ctx.Queue()
    with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo))), mp_context=ctx,
                             initializer=_init, initargs=(events,)) as pool:
        futures = {pool.submit(_build_in_process, profile, str(cache.root), item): n
                   for n, item in enumerate(items) if item.action in ("build", "rebuild")}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _relay(events, listener)
            for future in done:
                n = futures[future]
                item = items[n]
                try:
                    result = future.result()
                except BrokenProcessPool:
                    result = BuildResult(item.spec.name, "failed", item.key, item.spec.backend,
                                         error="a building process died (killed, out of "
                                               "memory, or a crash in compiled code)",
                                         failed_stage="compile")
                _relay(events, listener)
                if result.outcome != "failed":
                    listener.finish(item, result)
                results[n] = result
    _relay(events, listener)
    for n, item in enumerate(items):  # failed beside others: once more, alone
        first = results[n]
        if item.action in ("build", "rebuild") and first.outcome == "failed":
            results[n] = _alone(profile, cache, item, first, listener)
            listener.finish(item, results[n])
    return [results[n] for n in range(len(items))]


def _alone(profile: Profile, cache: Cache, item: PlanItem, first: BuildResult,
           listener: Listener) -> BuildResult:
    again = plan_item(item.spec, cache, cache.entries(), force=item.reason == "--force")
    again.fallback_from = item.fallback_from
    result = build(profile, cache, [again], listener)[0]
    result.notes.insert(0, f"built again alone: beside other builds it failed at "
                           f"{first.failed_stage or 'start'}: {first.error[:300]}")
    return result


def _relay(events, listener: Listener) -> None:
    """The building processes' events so far, to the caller's listener."""
    while True:
        try:
            event = events.get_nowait()
        except (queue_module.Empty, OSError, ValueError):
            return
        kind, item, *rest = event
        getattr(listener, kind)(item, *rest)
