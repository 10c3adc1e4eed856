"""Engine selection: which of the cache's engines cover a call, ranked, and why the others do
not. Every engine the runtime runs is chosen here: a swapped module's (``swap.Swap``), each
transformer piece's (``transformer_swap``) and ``find_engine``'s.

    from framepack_trt.runtime.selection import find_engine
    from framepack_trt.runtime.loading import load_engine
    entry = find_engine(cache, "clip_text", {"input_ids": ids})
    engine = load_engine(cache, entry)
    (pooled,) = engine(ids)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from framepack_trt.cache import Cache, Entry
from framepack_trt.cache.entry import EngineInput
from framepack_trt.components.base import get_component
from framepack_trt.engine_status import entry_status
from framepack_trt.errors import FramepackTrtError, ShapeError
from framepack_trt.names import entry_matches


def call_sizes(entry: Entry, shapes: Sequence[Sequence[int]]) -> dict[str, int]:
    """The named sizes of a call, from its input shapes; ShapeError when they disagree with
    the engine's static sizes or with each other."""
    specs = entry.inputs or ()
    if len(shapes) != len(specs):
        raise ShapeError(f"{entry.name}: takes {len(specs)} input(s) "
                         f"({', '.join(s.name for s in specs)}), got {len(shapes)}")
    sizes: dict[str, int] = {}
    for spec, shape in zip(specs, shapes, strict=True):
        if len(shape) != len(spec.shape):
            raise ShapeError(f"{entry.name}: input {spec.name} has rank {len(shape)}, "
                             f"expected {len(spec.shape)} ({_shape(spec)})")
        for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
            if isinstance(want, int):
                if want != got:
                    raise ShapeError(f"{entry.name}: input {spec.name} dim {axis} is {got}, "
                                     f"the engine is built for {want}")
                continue
            name, factor = (want, 1) if isinstance(want, str) else want
            if got % factor:
                raise ShapeError(f"{entry.name}: input {spec.name} dim {axis} is {got}, "
                                 f"the engine needs a multiple of {factor}")
            if sizes.setdefault(name, got // factor) != got // factor:
                raise ShapeError(f"{entry.name}: dim {name} is {sizes[name]} in one input "
                                 f"and {got // factor} in {spec.name}")
    return sizes


def _shape(spec: EngineInput) -> list:
    """An input's shape as the manifest writes it (the words of the errors above)."""
    return spec.to_dict()["shape"]


def out_of_range(entry: Entry, sizes: Mapping[str, int]) -> str | None:
    """Why the engine's ranges do not cover ``sizes``, or None when they do; said in the
    profile's dims where the engine's inputs use other units (latent height and width, with
    pixels, for the transformer; not its patch rows or padded history sizes)."""
    component = get_component(entry.component)
    dims = entry.ranges
    user = component.user_sizes(sizes)
    for name, value in [*user.items(), *sizes.items()]:
        r = dims.get(name)
        if r is None or r.covers(value):
            continue
        if name in (component.bucket_dims or ()):
            return (f"{name}={value} ({value * 8} pixels) is outside the engine's range "
                    f"{r.min}..{r.max} ({r.min * 8}..{r.max * 8} pixels)")
        return f"{name}={value} is outside the engine's range {r.min}..{r.max}"
    return None


def fit(entry: Entry, sizes: Mapping[str, int]) -> tuple[int, int]:
    """How well an engine that covers a call's ``sizes`` fits it, smaller is better: the
    distance of the sizes from the engine's opt sizes, then the width of its ranges (an engine
    built for exactly these sizes, such as a static-size one, before a ranged one)."""
    ranges = {n: r for n, r in entry.ranges.items() if n in sizes}
    return (sum(abs(sizes[n] - r.opt) for n, r in ranges.items()),
            sum(r.max - r.min for r in ranges.values()))


def prepared_inputs(entry: Entry, inputs: Mapping[str, Any] | Sequence[Any]) -> list:
    """Engine inputs from engine inputs (a sequence) or from a call by keyword, always prepared
    by the component (the transformer's text crop and history padding): a keyword call in
    diffusers' names uses the same names as the engine's inputs but is not prepared yet."""
    if not isinstance(inputs, Mapping):
        return list(inputs)
    from framepack_trt.export import torch_dtype

    component = get_component(entry.component)
    return list(component.prepare_kwargs(inputs, entry.raw_input_names, torch_dtype(entry.dtype),
                                         None))


@dataclass
class Selection:
    """The engines that cover a call, best first, and why each of the others does not."""

    choices: list[Entry] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def select(entries: Sequence[Entry], sizes_of: Callable[[Entry], Mapping[str, int]], *,
           dtype: str | None = None, device: str | None = None,
           prefer: Callable[[Entry], Any] | None = None) -> Selection:
    """Of ``entries``, those that cover a call, ranked: ``prefer``'s order first (where
    given), then the best ``fit``, then the order given. ``sizes_of(entry)``: the call's
    named sizes for that engine (usually ``call_sizes`` of its shapes), raising
    FramepackTrtError (or KeyError) for a call the engine cannot take. ``dtype`` (a torch
    dtype name, ``torch.bfloat16``) and ``device`` (a device type): the model's and the
    call's, which the engine must have been built for, where given."""
    covering, reasons = [], []
    for e in entries:
        if dtype is not None and f"torch.{e.dtype}" != dtype:
            reasons.append(f"engine {e.name} is {e.dtype}, the model "
                           f"{dtype.removeprefix('torch.')}")
            continue
        if device is not None and e.device_type != device:
            reasons.append(f"engine {e.name} runs on {e.device_type}, the call is on {device}")
            continue
        try:
            sizes = sizes_of(e)
        except (FramepackTrtError, KeyError) as exc:
            reasons.append(str(exc))
            continue
        problem = out_of_range(e, sizes)
        if problem:
            reasons.append(f"{e.name}: {problem}")
            continue
        covering.append(((prefer(e) if prefer else 0, fit(e, sizes)), e))
    return Selection([e for _, e in sorted(covering, key=lambda c: c[0])], reasons)


def find_engine(cache: Cache, component: str,
                inputs: Mapping[str, Any] | Sequence[Any]) -> Entry | None:
    """The usable engine (status ok) of ``component`` (entry name or component) whose ranges
    cover the call's shapes, the best ``fit``; None if there is none. ``inputs``: the engine's
    inputs in order, or a call by keyword (any convention the component accepts)."""
    entries = [e for e in cache.entries().values()
               if entry_matches(e, [component]) and entry_status(cache, e).state == "ok"]

    def sizes_of(entry):
        return call_sizes(entry, [tuple(t.shape) for t in prepared_inputs(entry, inputs)])

    choices = select(entries, sizes_of).choices
    return choices[0] if choices else None
