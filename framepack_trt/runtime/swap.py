"""One FramePack module's ``forward``, swapped for one that runs the cached engine covering the
call, and the eager forward otherwise (``use_engines`` makes the swaps: ``engines``).

Only ``forward`` of the instance changes: the module keeps its class, ``.dtype``, ``.config``,
``.to()``, its parameters and FramePack's memory helpers, and a call returns what the eager
module returns (the component's ``wrap_output``: ``.hidden_states[-3]``, ``.pooler_output``,
``.last_hidden_state``). A call that no engine covers (another shape, device or dtype, an
argument the engine does not take: the component's ``parse_call``) runs the eager forward,
with one warning per reason that says what would cover it; with ``strict=True`` it raises
instead. An engine that fails at run time is marked broken (never used again) and the next
engine that covers the call takes over, else eager; so does the next engine where a
``share_weights`` engine cannot run on the model's weights. Engines are picked by checkpoint
(``checkpoints.same_checkpoint``), never by component name alone; which engines cover a call
(``selection.select``) is memoised per input shape.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

from framepack_trt.cache import Cache
from framepack_trt.components.base import get_component
from framepack_trt.engine_status import entry_status
from framepack_trt.errors import FramepackTrtError
from framepack_trt.runtime.checkpoints import same_checkpoint
from framepack_trt.runtime.loading import load_engine
from framepack_trt.runtime.selection import call_sizes, select


class EngineFallback(FramepackTrtError):
    """strict=True: a call would have run the eager module."""


class Swap:
    """One module's forward, swapped: picks the engine per call (of those that cover its shapes,
    the best ``selection.fit``: nearest to its opt sizes, then the narrowest; the next where
    that one cannot serve), falls back to eager.
    ``model`` is the module FramePack holds (its dtype, config and checkpoint pick the engine);
    ``target`` is the module whose forward the engine replaces: the model itself, or its
    submodule the component names (``framepack_part``: the VAE's ``encoder`` and ``decoder``)."""

    def __init__(self, name: str, component: str, model, cache: Cache, strict: bool):
        self.name, self.component, self.model, self.cache = name, component, model, cache
        self.adapter = get_component(component)
        self.part = self.adapter.framepack_part
        self.strict = strict
        self.target = getattr(model, self.part) if self.part else model
        self.eager_forward = self.target.forward  # the bound method of the class
        self.calls: Counter[str] = Counter()
        self.served: Counter[str] = Counter()  # engine (entry name) -> calls it served
        self.warned: set[str] = set()
        self._engines: dict[str, Any] = {}       # key -> loaded engine
        self._picked: dict[tuple, list[str]] = {}  # shapes -> covering keys, best first
        self._why: dict[tuple, str] = {}
        self.broken: dict[str, str] = {}
        statuses = [(e, entry_status(cache, e)) for e in cache.entries().values()
                    if e.component == component]
        #: The component's engines that cannot run here (other code, libraries or device):
        #: their statuses, for "stays eager" to say why (``engines.stale_note``).
        self.stale = [status for _, status in statuses if status.state == "stale"]
        self.entries = [e for e, status in statuses
                        if status.state == "ok" and same_checkpoint(e, model, cache)]
        self._name_of = {e.key: e.name for e in self.entries}

    # -- the swapped forward ------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        inputs, why = self.adapter.parse_call(self.model, args, kwargs)
        if inputs is not None:
            keys, why = self._pick(inputs)
            for i, key in enumerate(keys):  # the best fit first; the next where one cannot serve
                try:
                    engine = self._engine(key)
                    # A share_weights engine runs on the model's own weights, wherever they are
                    # now; why not, when it cannot.
                    unshared = engine.share_model(self.model) if engine.needs_weights else None
                    if unshared is None:
                        out = engine(*inputs)
                except Exception as exc:  # broken at run time: never again
                    self.broken[key] = f"{type(exc).__name__}: {exc}"
                    self._engines.pop(key, None)  # its memory, before the next one loads
                    why = self._broken_why(key)
                    if "CUDA error" in str(exc) or type(exc).__name__ == "AcceleratorError":
                        break  # the device's state, not this engine's: the next would fail too
                    if i + 1 < len(keys):  # else the eager call says it
                        self._warn(f"{why}; the next engine takes over", 3)
                    continue
                if unshared is not None:
                    why = unshared
                    if i + 1 < len(keys):
                        self._warn(f"{self._name_of[key]} cannot run on the model's weights: "
                                   f"{why}; the next engine takes over", 3)
                    continue
                self.calls["engine"] += 1
                self.served[self._name_of[key]] += 1
                return self.adapter.wrap_output(self.model, out, kwargs)
        return self._eager(why, args, kwargs)

    def _warn(self, why: str, stacklevel: int = 4) -> None:
        if why not in self.warned:
            self.warned.add(why)
            warnings.warn(f"framepack-trt: {self.name} ({self.component}) {why}",
                          stacklevel=stacklevel)

    def _eager(self, why: str, args, kwargs):
        if self.strict:
            raise EngineFallback(f"{self.name} ({self.component}): {why}")
        self._warn(f"runs eager: {why}")
        self.calls["eager"] += 1
        return self.eager_forward(*args, **kwargs)

    def _pick(self, inputs) -> tuple[list[str], str]:
        """The keys of the engines that cover the call, best first (``selection.select``), less
        the broken ones; and why none does, for when none is left."""
        shape_key = (str(self.model.dtype),
                     *((tuple(t.shape), str(t.dtype), t.device.type) for t in inputs))
        if shape_key not in self._picked:
            shapes = [tuple(t.shape) for t in inputs]
            chosen = select(self.entries, lambda e: call_sizes(e, shapes),
                            dtype=str(self.model.dtype), device=inputs[0].device.type)
            self._picked[shape_key] = [e.key for e in chosen.choices]
            self._why[shape_key] = ("no engine of this checkpoint in the cache; build one with "
                                    "`framepack-trt build`" if not self.entries else
                                    "no engine covers the call (" + "; ".join(chosen.reasons)
                                    + "); widen the profile's dims and run `framepack-trt build`")
        keys = self._picked[shape_key]
        usable = [k for k in keys if k not in self.broken]
        if keys and not usable:  # the last one tried, as the call that broke them said
            return [], self._broken_why(keys[-1])
        return usable, self._why[shape_key]

    def _broken_why(self, key: str) -> str:
        # The same words on every call, so that the warning is given once.
        name = self._name_of.get(key)
        return (f"{'the engine' if name is None else f'engine {name}'} failed at run time and "
                f"is no longer used ({self.broken[key]})")

    def _engine(self, key: str):
        if key not in self._engines:
            entry = next(e for e in self.entries if e.key == key)
            self._engines[key] = load_engine(self.cache, entry)
        return self._engines[key]
