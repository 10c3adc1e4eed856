"""``backend: auto``: build the component with every backend that can build for its device,
verify each, time each against eager, and keep the fastest verified engine, but only one
that beats eager by at least ``MIN_SPEEDUP``; otherwise keep none (the runtime then runs the
eager model). Every candidate's numbers, or its failure, are recorded in the manifest as the
component's *choice*, so the next ``build`` builds nothing and a backend that failed is not
tried again unless ``--force``.

Timing runs in a fresh process per candidate (``python -m framepack_trt.bench``): eager and
engine on the same random inputs, one after the other, at the component's timing sizes (opt;
for the transformer also the 416x960, 544x704 and 640x608 buckets in range). The speed-up that
decides is the geometric mean over those sizes.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from framepack_trt.backends import BACKENDS, get_backend
from framepack_trt.cache import Cache, Choice, Entry, now_iso
from framepack_trt.cache.choices import Candidate, TimedCase
from framepack_trt.profile import ComponentSpec
from framepack_trt.util import ChildFailed, canonical_json, run_in_fresh_process, sha256_text

AUTO = "auto"
#: An engine is kept only if eager / engine is at least this.
MIN_SPEEDUP = 1.03
TIMING_WARMUP, TIMING_ITERS = 3, 10


def candidates(spec: ComponentSpec) -> list[ComponentSpec]:
    """One spec per backend that builds for the spec's device; each gets the build settings
    its backend knows."""
    out = []
    for name, cls in sorted(BACKENDS.items()):
        if spec.device not in cls.devices:
            continue
        known = set(cls.settings_class.field_names())
        out.append(replace(spec, backend=name, fallback_backend=None,
                           build={k: v for k, v in spec.build.items() if k in known}))
    return out


def choice_key(candidate_fields: list[dict[str, Any]]) -> str:
    """The key of an auto choice: every candidate's cache-key fields. Installing a backend,
    or any change that makes a candidate's key change, makes a new choice."""
    return sha256_text(canonical_json({"auto": candidate_fields}))


def describe(choice: Choice) -> str:
    """One line: what was kept and why, with every candidate's result."""
    parts = []
    for c in choice.candidates:
        if c.speedup is not None:
            parts.append(f"{c.backend} {c.speedup:.2f}x")
        else:
            parts.append(f"{c.backend} {c.outcome}")
    kept = choice.kept_candidate
    head = (f"kept {kept.backend} ({kept.speedup:.2f}x eager)" if kept else
            f"no engine kept: none verified at >= {MIN_SPEEDUP:.2f}x eager, the runtime uses eager")
    return f"auto: {head}; candidates: {', '.join(parts)}"


def decide(records: list[Candidate]) -> Candidate | None:
    """Mark each verified record kept, slower or not-faster; return the kept one."""
    timed = [r for r in records if r.outcome == "verified"]
    best = max(timed, key=lambda r: r.speedup, default=None)
    for r in timed:
        if r is best and r.speedup >= MIN_SPEEDUP:
            r.outcome = "kept"
        elif r.speedup < MIN_SPEEDUP:
            r.outcome = "not-faster-than-eager"
        else:
            r.outcome = "slower"
    return best if best is not None and best.outcome == "kept" else None


def speedup(cases: list[TimedCase]) -> float:
    """Geometric mean of eager / engine over the timed sizes."""
    return math.exp(sum(math.log(c.speedup) for c in cases) / len(cases))


def time_in_fresh_process(cache: Cache, entry: Entry, timeout: float = 3600) -> list[TimedCase]:
    """Eager vs engine at the component's timing sizes, in a process of its own
    (``python -m framepack_trt.bench``); RuntimeError saying how the child failed."""
    try:
        cases = run_in_fresh_process("framepack_trt.bench", entry.to_dict(),
                                     [str(cache.root), str(TIMING_WARMUP), str(TIMING_ITERS)],
                                     timeout)
    except ChildFailed as exc:
        raise RuntimeError(f"the timing process {exc}") from exc
    return [TimedCase.from_dict(c) for c in cases]


def candidate_record(spec: ComponentSpec) -> Candidate:
    return Candidate(spec.backend, get_backend(spec.backend).version())


def markdown(choices: list[Choice]) -> str:
    """Every candidate of every recorded auto choice, one row per timed size: what ``build``
    measured when it chose (eager and engine in the same fresh process)."""
    lines = ["| engine | backend | version | outcome | sizes | eager ms | engine ms | eager/engine "
             "| rel L2 | created |", "|---|---|---|---|---|---|---|---|---|---|"]
    for ch in sorted(choices, key=lambda c: c.name):
        created = (ch.created or "")[:10]
        for c in ch.candidates:
            rows = c.cases or [None]
            for case in rows:
                if case is None:
                    why = c.error.splitlines()[0][:80] if c.error else ""
                    lines.append(f"| {ch.name} | {c.backend} | {c.backend_version} | "
                                 f"{c.outcome} | {why} | | | | | {created} |")
                    continue
                sizes = " ".join(f"{k}={v}" for k, v in case.sizes.items())
                lines.append(f"| {ch.name} | {c.backend} | {c.backend_version} | "
                             f"{c.outcome} | {sizes} | {case.eager_ms:.3f} | "
                             f"{case.engine_ms:.3f} | {case.speedup:.2f}x | "
                             f"{case.rel_l2:.2e} | {created} |")
    return "\n".join(lines)


def choice(spec: ComponentSpec, records: list[Candidate], kept: Candidate | None) -> Choice:
    """The choice to record for ``spec``, with what the runtime needs to apply a choice of
    eager to a model (the transformer's pieces: its weights, dtype and device)."""
    return Choice(spec.name, spec.component, kept.key if kept else None, tuple(records),
                  min_speedup=MIN_SPEEDUP, created=now_iso(), source=spec.source.to_dict(),
                  dtype=spec.dtype, device=spec.device)
