"""Latency of each engine against its eager model, measured in the same run.

For every engine: the eager model is loaded from the engine's recorded source, both run on
the same random inputs at the engine's opt sizes, after warm-up (at least ``timing.WARMUP_S``
seconds each), timed alternately, eager then engine, N times; the median of each is reported, with the
ratio eager / engine (above 1: the engine is faster) and the error between them.
On CUDA every timed run ends with a synchronize.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from framepack_trt.cache import Cache, Entry
from framepack_trt.cache.choices import TimedCase
from framepack_trt.cache.storage import EntryStatus
from framepack_trt.timing import paired_median_ms


@dataclass
class BenchResult:
    name: str
    backend: str
    backend_version: str
    dtype: str
    device: str
    sizes: dict[str, int]
    eager_ms: float
    engine_ms: float
    speedup: float
    rel_l2: float
    cosine: float
    build_s: float
    engine_mb: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_entry(cache: Cache, entry: Entry, warmup: int = 3, iters: int = 20,
                seed: int = 0, sizes: dict[str, int] | None = None, model=None,
                engine=None) -> BenchResult:
    """Eager vs engine at ``sizes`` (default: the engine's opt sizes). ``model`` and
    ``engine``: the eager model and the loaded engine, when the caller has them already."""
    import torch

    from framepack_trt.compare import compare
    from framepack_trt.components.base import Tolerance, get_component
    from framepack_trt.export import torch_dtype
    from framepack_trt.runtime.loading import load_engine, load_model
    from framepack_trt.shapes import sizes_at

    device = entry.device_type
    component = get_component(entry.component)
    dtype = torch_dtype(entry.dtype)
    model = model if model is not None else load_model(cache, entry)
    engine = engine if engine is not None else load_engine(cache, entry)
    sizes = sizes or sizes_at(entry.dims, "opt")
    inputs = component.make_inputs(model.config, sizes, dtype, device,
                                   torch.Generator().manual_seed(seed))

    def eager(*xs):
        with torch.inference_mode():
            return component.reference(model, xs)

    cuda = device == "cuda"
    def engine_call(*xs):  # what the runtime does per call: prepare, then the engine
        return engine(*component.engine_inputs(model, xs, dtype, device))

    eager_ms, engine_ms = paired_median_ms(eager, engine_call, inputs, warmup, iters, cuda)
    check = compare(entry.outputs[0], engine_call(*inputs)[0], eager(*inputs)[0],
                    Tolerance(**entry.tolerance))
    return BenchResult(
        name=entry.name, backend=entry.backend, backend_version=entry.backend_version,
        dtype=entry.dtype, device=entry.device_name or device, sizes=sizes,
        eager_ms=round(eager_ms, 3), engine_ms=round(engine_ms, 3),
        speedup=round(eager_ms / engine_ms, 3), rel_l2=check.rel_l2, cosine=check.cosine,
        build_s=round(entry.build_time, 1), engine_mb=round(entry.engine.size / 2**20, 1),
    )


def profile_model(profile_name: str, component: str, cache_dir: str | None = None):
    """For a benchmark script: the profile's first entry of ``component``, the cache (the
    option, else the profile's), and the eager model loaded from the entry's source in its
    dtype on its device. Returns (spec, cache, model)."""
    from framepack_trt.cache import resolve_cache_dir
    from framepack_trt.components.base import get_component
    from framepack_trt.export import torch_dtype
    from framepack_trt.profile import load_profile
    from framepack_trt.sources import load_model

    profile = load_profile(profile_name)
    spec = next(c for c in profile.components if c.component == component)
    cache = Cache(resolve_cache_dir(cache_dir, profile.cache_dir))
    model = load_model(get_component(component), spec.source, torch_dtype(spec.dtype),
                       spec.device, cache.weights_dir)
    return spec, cache, model


def markdown(results: list[BenchResult], date: str) -> str:
    lines = ["| engine | backend | dtype | device | sizes | eager ms | engine ms | eager/engine "
             "| rel L2 | build s | engine MB | date |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        sizes = " ".join(f"{k}={v}" for k, v in r.sizes.items())
        lines.append(f"| {r.name} | {r.backend} | {r.dtype} | {r.device} | {sizes} | "
                     f"{r.eager_ms:.3f} | {r.engine_ms:.3f} | {r.speedup:.2f}x | {r.rel_l2:.2e} | "
                     f"{r.build_s} | {r.engine_mb} | {date} |")
    return "\n".join(lines)


def selected(cache: Cache, names: list[str] | None = None) -> list[tuple[Entry, EntryStatus]]:
    """The engines ``names`` select (all when none), by name then key, each with its state
    here: only those whose state is ok can be timed."""
    from framepack_trt.engine_status import entry_status
    from framepack_trt.names import entry_matches

    return [(e, entry_status(cache, e))
            for e in sorted(cache.entries().values(), key=lambda e: (e.name, e.key))
            if entry_matches(e, names)]


def markdown_file(cache: Cache, results: list[BenchResult], names: list[str] | None,
                  date: str) -> str:
    """``bench --markdown``'s file: the table, and every candidate ``backend: auto`` timed
    when it chose for the engines ``names`` select."""
    from framepack_trt.auto import markdown as auto_markdown
    from framepack_trt.names import selects

    choices = [c for c in cache.choices().values()
               if selects(names, c.name, c.component)]
    extra = ("\n\nWhat `backend: auto` measured when it chose (every candidate):\n\n"
             + auto_markdown(choices)) if choices else ""
    return markdown(results, date) + extra + "\n"


def rows_markdown(head: list[str], rows: list[list[str]], date: str) -> str:
    """A Markdown table of ``head`` and ``rows`` with a date column (``bench --framepack``)."""
    lines = ["| " + " | ".join(head) + " | date |", "|" + "---|" * (len(head) + 1)]
    lines += ["| " + " | ".join(row) + f" | {date} |" for row in rows]
    return "\n".join(lines) + "\n"


def time_entry(cache: Cache, entry: Entry, warmup: int, iters: int) -> list[TimedCase]:
    """``bench_entry`` at each of the component's timing sizes, the eager model and the
    engine loaded once (a real-width engine takes seconds to load and gigabytes to hold)."""
    from framepack_trt.components.base import get_component
    from framepack_trt.runtime.loading import load_engine, load_model

    model, engine = load_model(cache, entry), load_engine(cache, entry)
    out = []
    for label, sizes in get_component(entry.component).timing_sizes(entry.dims):
        r = bench_entry(cache, entry, warmup=warmup, iters=iters, sizes=sizes, model=model,
                        engine=engine)
        out.append(TimedCase(label, sizes, r.eager_ms, r.engine_ms, r.speedup, r.rel_l2))
    return out


def _child_main(argv: list[str]) -> None:
    """ENTRY_JSON RESULT_JSON CACHE_DIR WARMUP ITERS: time one entry, write the cases."""
    import json
    from pathlib import Path

    entry_file, result_file, root, warmup, iters = argv[:5]
    entry = Entry.from_dict(json.loads(Path(entry_file).read_text()))
    cases = time_entry(Cache(root), entry, int(warmup), int(iters))
    Path(result_file).write_text(json.dumps([c.to_dict() for c in cases]))


if __name__ == "__main__":
    import sys

    _child_main(sys.argv[1:])
