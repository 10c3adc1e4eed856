"""The one engine loader: a cache entry's engine file, loaded by its backend for its device,
wrapped so that every call's shapes are checked against the engine's ranges first; and the one
model loader: the eager model an entry was built from. The swaps, ``verify``, ``bench`` and
FramePack's bench runs all load engines through ``load_engine`` and models through
``load_model``.

    entry = find_engine(cache, "siglip_image", {"pixel_values": x})
    model, engine = load_model(cache, entry), load_engine(cache, entry)
"""

from __future__ import annotations

from framepack_trt import sources
from framepack_trt.backends import get_backend
from framepack_trt.cache import Cache, Entry
from framepack_trt.components.base import get_component
from framepack_trt.errors import ShapeError
from framepack_trt.runtime.selection import call_sizes, out_of_range, prepared_inputs
from framepack_trt.sources import Source


class CheckedEngine:
    """An engine that checks each call's shapes against its ranges before running it."""

    def __init__(self, entry: Entry, engine):
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
        # Looked up at every call: moving a module gives its buffers new tensor objects.
        module = get_component(self.entry.component).export_module(model)
        tensors = {**dict(module.named_parameters(remove_duplicate=False)),
                   **dict(module.named_buffers(remove_duplicate=False))}
        return self._engine.share(tensors)

    def __call__(self, *inputs, **kwargs):
        """Positional: the engine's inputs. By keyword: a call as the model takes it (for the
        transformer: diffusers' or FramePack's names), prepared first."""
        if kwargs:
            if inputs:
                raise TypeError("pass the inputs by position or by keyword, not both")
            inputs = tuple(prepared_inputs(self.entry, kwargs))
        sizes = call_sizes(self.entry, [tuple(t.shape) for t in inputs])
        problem = out_of_range(self.entry, sizes)
        if problem:
            raise ShapeError(f"{self.entry.name}: {problem}; build an engine that covers it "
                             "(widen the profile's dims) or run the eager model")
        # Contiguous: an AOTInductor package reads its inputs with the strides it was traced
        # with, so a view (diffusers' VAE tiles are slices of the frame) gave wrong numbers.
        return self._engine(*(t.contiguous() for t in inputs))


def load_engine(cache: Cache, entry: Entry) -> CheckedEngine:
    """The entry's engine, loaded from the cache by the backend that built it."""
    engine = get_backend(entry.backend).load(cache.root / entry.engine.file, entry.device_type)
    return CheckedEngine(entry, engine)


def load_model(cache: Cache, entry: Entry, dtype=None, device: str | None = None,
               keep: bool = False):
    """The eager model the entry's engine was built from: its component's model class, loaded
    from the weights the entry records (``sources.load_model``), in ``dtype`` (a torch dtype;
    default: the engine's) on ``device`` (default: the engine's). ``keep``: the model is kept
    for the next call that asks for the same (``sources.load_model``)."""
    from framepack_trt.export import torch_dtype

    return sources.load_model(get_component(entry.component), Source.from_dict(entry.source),
                              torch_dtype(entry.dtype) if dtype is None else dtype,
                              entry.device_type if device is None else device, cache.weights_dir,
                              keep=keep)
