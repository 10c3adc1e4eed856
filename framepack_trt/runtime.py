"""Loading engines from the cache at run time: pick the engine whose ranges cover a call's
shapes, check every call's shapes, and say clearly when a shape is outside the range.

    from framepack_trt.runtime import find_engine, load_engine
    entry = find_engine(cache, "clip_text", {"input_ids": ids})
    engine = load_engine(cache, entry)
    (pooled,) = engine(ids)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from framepack_trt.cache import Cache
from framepack_trt.engine_status import entry_status
from framepack_trt.errors import FramepackTrtError, ShapeError
from framepack_trt.names import entry_matches
from framepack_trt.shapes import Dims, dims_from_dict


def call_sizes(entry: Mapping[str, Any], shapes: Sequence[Sequence[int]]) -> dict[str, int]:
    """The named sizes of a call, from its input shapes; ShapeError when they disagree with
    the engine's static sizes or with each other."""
    specs = entry["inputs"]
    if len(shapes) != len(specs):
        raise ShapeError(f"{entry['name']}: takes {len(specs)} input(s) "
                         f"({', '.join(s['name'] for s in specs)}), got {len(shapes)}")
    sizes: dict[str, int] = {}
    for spec, shape in zip(specs, shapes, strict=True):
        if len(shape) != len(spec["shape"]):
            raise ShapeError(f"{entry['name']}: input {spec['name']} has rank {len(shape)}, "
                             f"expected {len(spec['shape'])} ({spec['shape']})")
        for axis, (want, got) in enumerate(zip(spec["shape"], shape, strict=True)):
            if isinstance(want, int):
                if want != got:
                    raise ShapeError(f"{entry['name']}: input {spec['name']} dim {axis} is {got}, "
                                     f"the engine is built for {want}")
                continue
            name, factor = (want, 1) if isinstance(want, str) else want
            if got % factor:
                raise ShapeError(f"{entry['name']}: input {spec['name']} dim {axis} is {got}, "
                                 f"the engine needs a multiple of {factor}")
            if sizes.setdefault(name, got // factor) != got // factor:
                raise ShapeError(f"{entry['name']}: dim {name} is {sizes[name]} in one input "
                                 f"and {got // factor} in {spec['name']}")
    return sizes


def engine_dims(entry: Mapping[str, Any]) -> Dims:
    """The engine's ranges: the profile's dims plus those the component derives from them
    (older entries recorded only the profile's)."""
    return dims_from_dict(entry.get("engine_dims") or entry["key_fields"]["dims"])


def out_of_range(entry: Mapping[str, Any], sizes: Mapping[str, int]) -> str | None:
    """Why the engine's ranges do not cover ``sizes``, or None when they do; said in the
    profile's dims where the engine's inputs use other units (latent height and width, with
    pixels, for the transformer; not its patch rows or padded history sizes)."""
    from framepack_trt.components.base import get_component

    component = get_component(entry["component"])
    dims = engine_dims(entry)
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


def fit(entry: Mapping[str, Any], sizes: Mapping[str, int]) -> tuple[int, int]:
    """How well an engine that covers a call's ``sizes`` fits it, smaller is better: the
    distance of the sizes from the engine's opt sizes, then the width of its ranges (an engine
    built for exactly these sizes, such as a static-size one, before a ranged one)."""
    ranges = {n: r for n, r in engine_dims(entry).items() if n in sizes}
    return (sum(abs(sizes[n] - r.opt) for n, r in ranges.items()),
            sum(r.max - r.min for r in ranges.values()))


def _engine_inputs(entry: Mapping[str, Any], inputs: Mapping[str, Any] | Sequence[Any]):
    """Engine inputs from engine inputs (a sequence) or from a call by keyword, always prepared
    by the component (the transformer's text crop and history padding): a keyword call in
    diffusers' names uses the same names as the engine's inputs but is not prepared yet."""
    if not isinstance(inputs, Mapping):
        return list(inputs)
    names = [s["name"] for s in entry["inputs"]]
    from framepack_trt.components.base import get_component
    from framepack_trt.export import torch_dtype

    component = get_component(entry["component"])
    raw = entry.get("raw_inputs") or names
    return list(component.prepare_kwargs(inputs, raw, torch_dtype(entry["key_fields"]["dtype"]),
                                         None))


def find_engine(cache: Cache, component: str, inputs: Mapping[str, Any] | Sequence[Any]):
    """The usable engine (status ok) of ``component`` (entry name or component) whose ranges
    cover the call's shapes, the best ``fit``; None if there is none. ``inputs``: the engine's
    inputs in order, or a call by keyword (any convention the component accepts)."""
    best, best_score = None, None
    for entry in cache.entries().values():
        if not entry_matches(entry, [component]):
            continue
        if entry_status(cache, entry).state != "ok":
            continue
        try:
            shapes = [tuple(t.shape) for t in _engine_inputs(entry, inputs)]
            sizes = call_sizes(entry, shapes)
        except (FramepackTrtError, KeyError):  # a call this engine cannot take
            continue
        if out_of_range(entry, sizes):
            continue
        score = fit(entry, sizes)
        if best_score is None or score < best_score:
            best, best_score = entry, score
    return best


class CheckedEngine:
    """An engine that checks each call's shapes against its ranges before running it."""

    def __init__(self, entry: Mapping[str, Any], engine):
        self.entry = entry
        self._engine = engine

    @property
    def needs_weights(self) -> bool:
        """Whether the engine can run on the model's own weights (``share_weights``)."""
        return bool(getattr(self._engine, "needs_weights", False))

    def share_model(self, model) -> str | None:
        """Run on ``model``'s own tensors from now on (a ``share_weights`` engine; see
        ``backends.aoti.AotiEngine.share``): named as in the component's export module, which
        the engine was traced from. None when done, else why not."""
        from framepack_trt.components.base import get_component

        # Looked up at every call: moving a module gives its buffers new tensor objects.
        module = get_component(self.entry["component"]).export_module(model)
        tensors = {**dict(module.named_parameters(remove_duplicate=False)),
                   **dict(module.named_buffers(remove_duplicate=False))}
        return self._engine.share(tensors)

    def __call__(self, *inputs, **kwargs):
        """Positional: the engine's inputs. By keyword: a call as the model takes it (for the
        transformer: diffusers' or FramePack's names), prepared first."""
        if kwargs:
            if inputs:
                raise TypeError("pass the inputs by position or by keyword, not both")
            inputs = tuple(_engine_inputs(self.entry, kwargs))
        sizes = call_sizes(self.entry, [tuple(t.shape) for t in inputs])
        problem = out_of_range(self.entry, sizes)
        if problem:
            raise ShapeError(f"{self.entry['name']}: {problem}; build an engine that covers it "
                             "(widen the profile's dims) or run the eager model")
        # Contiguous: an AOTInductor package reads its inputs with the strides it was traced
        # with, so a view (diffusers' VAE tiles are slices of the frame) gave wrong numbers.
        return self._engine(*(t.contiguous() for t in inputs))


def load_engine(cache: Cache, entry: Mapping[str, Any]) -> CheckedEngine:
    from framepack_trt.backends import get_backend

    fields = entry["key_fields"]
    engine = get_backend(fields["backend"]).load(cache.root / entry["engine"]["file"],
                                                  fields["device"]["type"])
    return CheckedEngine(entry, engine)
