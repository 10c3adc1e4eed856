"""Engines inside FramePack: swap a loaded model's ``forward`` for one that runs the cached
engine covering the call, and the eager forward otherwise.

    from framepack_trt.framepack import use_engines
    engines = use_engines(cache_dir, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                          image_encoder=image_encoder, vae=vae)
    ...                      # FramePack runs as before
    print(engines.report())  # "llama_text: 12 engine, 0 eager calls; ..."

Only ``forward`` of the instance changes: the module keeps its class, ``.dtype``, ``.config``,
``.to()``, its parameters and FramePack's memory helpers, and a call returns what the eager
module returns (``.hidden_states[-3]``, ``.pooler_output``, ``.last_hidden_state``). A call
that no engine covers (another shape, device or dtype, an argument the engine does not take)
runs the eager forward, with one warning per reason that says what would cover it; with
``strict=True`` it raises instead. An engine that fails at run time is marked broken (never
used again) and the next engine that covers the call takes over, else eager; so does the next
engine where a ``share_weights`` engine cannot run on the model's weights. Engines are picked
by checkpoint (the folder or repo the model was loaded from),
never by component name alone. Which engine covers a call is memoised per input shape.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from framepack_trt.cache import Cache
from framepack_trt.engine_status import entry_status
from framepack_trt.errors import FramepackTrtError
from framepack_trt.transformer_loop import PieceSwap

#: FramePack's module names (demo_gradio.py) and the components each one runs through (the
#: VAE: its encoder and its decoder, each a component of its own).
MODULES = {"transformer": ("transformer",), "text_encoder": ("llama_text",),
           "text_encoder_2": ("clip_text",), "image_encoder": ("siglip_image",),
           "vae": ("vae_encode", "vae_decode")}


class EngineFallback(FramepackTrtError):
    """strict=True: a call would have run the eager module."""


class HiddenStates(tuple):
    """``hidden_states`` of a LLaMA call served by the engine: only the entry FramePack reads
    (``[-3]``) exists; any other index says so instead of returning something wrong."""

    def __new__(cls, count: int, index: int, tensor):
        self = super().__new__(cls, [None] * count)
        self._index, self._tensor = index % count, tensor
        return self

    def __getitem__(self, i):
        if isinstance(i, int) and i % len(self) == self._index:
            return self._tensor
        raise LookupError(f"the engine computes hidden_states[{self._index - len(self)}] only; "
                          f"index {i} needs the eager model (framepack_trt.framepack.restore)")


def _checkpoint_dir(entry: Mapping[str, Any], cache: Cache) -> tuple[Path | None, str | None]:
    """The local folder and (for repo sources) the repo id an entry's weights came from."""
    from framepack_trt.components.base import get_component
    from framepack_trt.sources import Source, materialize_random, resolve_local_dir

    source = Source.from_dict(entry["source"])
    try:
        if source.kind == "random":
            local = materialize_random(source, get_component(entry["component"]), cache.weights_dir)
        else:
            local = resolve_local_dir(source)
    except FramepackTrtError:
        local = None
    return (local.resolve() if local else None), (source.repo if source.kind == "repo" else None)


def same_checkpoint(entry: Mapping[str, Any], model, cache: Cache) -> bool:
    """Whether ``model`` was loaded from the weights the entry was built from (by the folder or
    repo id transformers records as ``config._name_or_path``)."""
    loaded_from = str(getattr(model.config, "_name_or_path", "") or "")
    if not loaded_from:
        return False
    local, repo = _checkpoint_dir(entry, cache)
    if repo is not None and loaded_from == repo:
        return True
    p = Path(loaded_from)
    if local is None or not p.is_dir():
        return False
    # from_pretrained(folder, subfolder=...) records the folder without the subfolder.
    subfolder = entry["source"].get("subfolder")
    return p.resolve() == local or (bool(subfolder) and p.resolve() / subfolder == local)


class Swap:
    """One module's forward, swapped: picks the engine per call (of those that cover its shapes,
    the best ``runtime.fit``: nearest to its opt sizes, then the narrowest; the next where that
    one cannot serve), falls back to eager.
    ``model`` is the module FramePack holds (its dtype, config and checkpoint pick the engine);
    ``target`` is the module whose forward the engine replaces (by default the model itself,
    else its submodule ``part``)."""

    part = ""

    def __init__(self, name: str, component: str, model, cache: Cache, strict: bool,
                 parse: Callable, wrap: Callable):
        self.name, self.component, self.model, self.cache = name, component, model, cache
        self.strict, self._parse, self._wrap = strict, parse, wrap
        self.target = getattr(model, self.part) if self.part else model
        self.eager_forward = self.target.forward  # the bound method of the class
        self.calls: Counter[str] = Counter()
        self.served: Counter[str] = Counter()  # engine (entry name) -> calls it served
        self.warned: set[str] = set()
        self._engines: dict[str, Any] = {}       # key -> loaded engine
        self._picked: dict[tuple, list[str]] = {}  # shapes -> covering keys, best first
        self._why: dict[tuple, str] = {}
        self.broken: dict[str, str] = {}
        self.entries = [e for e in cache.entries().values()
                        if e["component"] == component and entry_status(cache, e).state == "ok"
                        and same_checkpoint(e, model, cache)]
        self._name_of = {e["key"]: e["name"] for e in self.entries}

    # -- the swapped forward ------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        inputs, why = self._parse(self.model, args, kwargs)
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
                if self.component == "transformer":
                    return self._wrap(self.model, out, kwargs.get("return_dict", True))
                return self._wrap(self.model, out)
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
        """The keys of the engines that cover the call, the best ``runtime.fit`` first, less
        the broken ones; and why none does, for when none is left."""
        from framepack_trt.runtime import call_sizes, fit, out_of_range

        shape_key = (str(self.model.dtype),
                     *((tuple(t.shape), str(t.dtype), t.device.type) for t in inputs))
        if shape_key not in self._picked:
            covering, reasons = [], []
            for e in self.entries:
                device = e["key_fields"]["device"]["type"]
                dtype = e["key_fields"]["dtype"]
                if f"torch.{dtype}" != str(self.model.dtype):
                    reasons.append(f"engine {e['key'][:8]} is {dtype}, the model "
                                   f"{str(self.model.dtype).removeprefix('torch.')}")
                    continue
                if device != inputs[0].device.type:
                    reasons.append(f"engine {e['key'][:8]} runs on {device}, the call is on "
                                   f"{inputs[0].device.type}")
                    continue
                try:
                    sizes = call_sizes(e, [tuple(t.shape) for t in inputs])
                except FramepackTrtError as exc:
                    reasons.append(str(exc))
                    continue
                problem = out_of_range(e, sizes)
                if problem:
                    reasons.append(problem)
                    continue
                covering.append((fit(e, sizes), e["key"]))
            # Ties in the cache's order (as runtime.find_engine): a stable sort on the fit.
            self._picked[shape_key] = [key for _, key in sorted(covering, key=lambda c: c[0])]
            self._why[shape_key] = ("no engine of this checkpoint in the cache; build one with "
                                    "`framepack-trt build`" if not self.entries else
                                    "no engine covers the call (" + "; ".join(reasons) + "); "
                                    "widen the profile's dims and run `framepack-trt build`")
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
            from framepack_trt.runtime import load_engine

            entry = next(e for e in self.entries if e["key"] == key)
            self._engines[key] = load_engine(self.cache, entry)
        return self._engines[key]


class VaeEncoderSwap(Swap):
    """The VAE's ``encoder`` submodule through the ``vae_encode`` engine. diffusers' ``encode``
    around it (framewise and spatial tiling, ``quant_conv``, the posterior) runs as it is and
    calls the encoder once per frame or tile; a tile no engine covers runs eager."""

    part = "encoder"


class VaeDecoderSwap(Swap):
    """The VAE's ``decoder`` submodule through the ``vae_decode`` engines: the engine whose
    latent_frames cover the window (3..5, or the 1-frame tail window); a static-size engine of
    the window's exact sizes before a ranged one. diffusers' ``decode``
    around it (``post_quant_conv``, framewise windows, spatial tiles and their blending) runs
    as it is and calls the decoder once per window or tile."""

    part = "decoder"


class TransformerSwap(PieceSwap, Swap):
    """The transformer: through its piece engines (weights as inputs, TeaCache kept) when the
    cache has all four for the model's architecture, else through a whole-model engine of its
    checkpoint (TeaCache off only), else eager."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_pieces(self.cache)

    def forward(self, *args, **kwargs):
        if self.has_pieces:
            return self.forward_pieces(args, kwargs)
        return super().forward(*args, **kwargs)


# -- per component: which calls an engine can serve, and the output the caller reads ----------

def _kw(args, kwargs, names):
    """The call's arguments by name (positional ones mapped to ``names`` in order)."""
    bound = dict(zip(names, args, strict=False))
    return {**bound, **kwargs}


def _only(call: dict, allowed: set[str]) -> str | None:
    extra = sorted(k for k, v in call.items() if k not in allowed and v not in (None, False))
    return f"the call passes {', '.join(extra)}, which the engine does not take" if extra else None


def _parse_llama(model, args, kwargs):
    call = _kw(args, kwargs, ["input_ids", "attention_mask"])
    why = _only(call, {"input_ids", "attention_mask", "output_hidden_states", "return_dict",
                       "use_cache"})
    if why:
        return None, why
    if not call.get("output_hidden_states"):
        return None, "the call does not ask for hidden_states (the engine computes only [-3])"
    if call.get("return_dict") is False:
        return None, "return_dict=False"
    ids, mask = call.get("input_ids"), call.get("attention_mask")
    if ids is None or mask is None:
        return None, "the engine needs input_ids and attention_mask"
    return (ids, mask.to(ids.dtype)), ""


def _wrap_llama(model, out):
    from transformers.modeling_outputs import BaseModelOutputWithPast

    from framepack_trt.components.llama_text import HIDDEN_STATE_INDEX

    (hidden,) = out
    count = model.config.num_hidden_layers + 1
    return BaseModelOutputWithPast(hidden_states=HiddenStates(count, HIDDEN_STATE_INDEX, hidden))


def _parse_single(name: str):
    def parse(model, args, kwargs):
        call = _kw(args, kwargs, [name])
        why = _only(call, {name, "return_dict"})
        if why:
            return None, why
        if call.get("return_dict") is False:
            return None, "return_dict=False"
        if call.get(name) is None:
            return None, f"the engine needs {name}"
        return (call[name],), ""
    return parse


def _wrap_clip(model, out):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return BaseModelOutputWithPooling(pooler_output=out[0])


def _wrap_siglip(model, out):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return BaseModelOutputWithPooling(last_hidden_state=out[0])


def _parse_transformer(model, args, kwargs):
    """A keyword call in FramePack's or diffusers' names -> the engine's inputs (text cropped
    to the mask, history padded), in the engine's dtype on the latents' device."""
    from framepack_trt.transformer_export import prepare_call

    if args:
        return None, "the call passes arguments by position (FramePack passes them by keyword)"
    if getattr(model, "enable_teacache", False):
        return None, ("TeaCache is on: a whole-model engine cannot skip the block stack as "
                      "TeaCache does; call initialize_teacache(enable_teacache=False) to use it")
    if kwargs.get("attention_kwargs"):  # None or {} change nothing; a LoRA scale would
        return None, "the call passes attention_kwargs"
    try:
        return prepare_call(kwargs, model.dtype, None), ""
    except (FramepackTrtError, ValueError, KeyError) as exc:
        return None, str(exc)


def _wrap_transformer(model, out, return_dict: bool = True):
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    (sample,) = out
    return Transformer2DModelOutput(sample=sample) if return_dict else (sample,)


#: The VAE's encoder and decoder: one tensor in (``hidden_states``), one out.
_VAE_CORE = (_parse_single("hidden_states"), lambda model, out: out[0])

CALLS = {"transformer": (_parse_transformer, _wrap_transformer),
         "llama_text": (_parse_llama, _wrap_llama),
         "clip_text": (_parse_single("input_ids"), _wrap_clip),
         "siglip_image": (_parse_single("pixel_values"), _wrap_siglip),
         "vae_encode": _VAE_CORE,
         "vae_decode": _VAE_CORE}

#: The Swap class of a component where it is not the plain one.
SWAPS = {"transformer": TransformerSwap, "vae_encode": VaeEncoderSwap,
         "vae_decode": VaeDecoderSwap}


class Engines:
    """The swaps made by ``use_engines``: counters, a report, and ``restore()``."""

    def __init__(self, swaps: dict[str, Swap], missing: list[str]):
        self.swaps, self.missing = swaps, missing

    def counts(self) -> dict[str, dict[str, int]]:
        return {s.component: {"engine": s.calls["engine"], "eager": s.calls["eager"]}
                for s in self.swaps.values()}

    def served(self) -> dict[str, dict[str, int]]:
        """Per component, the calls each engine (by entry name) served."""
        return {s.component: dict(s.served) for s in self.swaps.values()}

    def report(self) -> str:
        parts = [f"{s.component}: {s.calls['engine']} engine, {s.calls['eager']} eager calls"
                 + (f" (block stack ran {s.stack['block_stack']}, TeaCache skipped "
                    f"{s.stack['teacache_skip']})" if isinstance(s, PieceSwap) and s.has_pieces
                    else "")
                 + (f" ({len(s.broken)} engine(s) broken)" if s.broken else "")
                 for s in self.swaps.values()]
        return "; ".join(parts + [f"{m}: no engine" for m in self.missing])

    def restore(self) -> None:
        """Give every module its own forward back (the transformer: its bf16 weights, moved to
        the CPU with ``offload_bf16``, their devices, and the fp8 copies of its blocks made for
        fp8 block engines dropped)."""
        swaps, self.swaps = list(self.swaps.values()), {}
        for s in swaps:
            s.target.__dict__.pop("forward", None)
        for s in swaps:
            if isinstance(s, PieceSwap):
                s.release()


def use_engines(cache_dir: str | Path | None = None, *, strict: bool = False,
                framepack_dir: str | Path | None = None, offload_bf16: bool = False,
                **models) -> Engines:
    """Swap in engines for the given FramePack modules (by FramePack's names: transformer,
    text_encoder, text_encoder_2, image_encoder, vae). Modules without an engine of their
    checkpoint stay eager; that is said once, here (``strict``: a module, or a part of one such as
    the VAE's decoder, without an engine raises ``EngineFallback`` instead, and later calls that
    would run eager raise).
    ``Engines.swaps`` is keyed by the module swapped: the name, or ``vae.encoder`` and
    ``vae.decoder``.

    ``offload_bf16``: where fp8 block engines serve the transformer on the GPU, move the bf16
    weights their linears replace to the CPU after the first call (the GPU then holds the fp8
    copies instead of both); a call that runs eager, and ``restore()``, moves them back."""
    from framepack_trt.cache import resolve_cache_dir

    _check_modules("use_engines", models)
    cache = Cache(resolve_cache_dir(cache_dir, None, framepack_dir))
    made, missing = [], []
    for name, model in models.items():
        if model is None:
            continue
        for component in MODULES[name]:
            parse, wrap = CALLS[component]
            swap = SWAPS.get(component, Swap)(name, component, model, cache, strict, parse, wrap)
            where = ".".join(filter(None, (name, swap.part)))
            if not swap.entries and not getattr(swap, "has_pieces", False):
                missing.append((where, component))
                continue
            made.append((where, swap))
    if strict and missing:  # it would run eager at every call, and the caller not know it
        raise EngineFallback(
            f"strict: no engine in {cache.root} serves "
            + ", ".join(f"{where} ({component})" for where, component in missing)
            + " (none of its checkpoint, or for the transformer's architecture, that can run "
            "here); build them with `framepack-trt build` (`framepack-trt list` shows the cache)")
    for where, component in missing:
        warnings.warn(f"framepack-trt: {where} ({component}) stays eager: no engine of its "
                      f"checkpoint in {cache.root}; build one with `framepack-trt build`",
                      stacklevel=2)
    swaps = {}
    for where, swap in made:
        if offload_bf16 and isinstance(swap, PieceSwap):
            swap.offload_bf16 = True
        swap.target.forward = swap.forward  # the instance's; nn.Module.__call__ runs it
        swaps[where] = swap
    return Engines(swaps, [component for _, component in missing])


# -- FramePack's command line --------------------------------------------------------------------

#: The flags of the FramePack fork that added TensorRT (github WifiLast/framepack_test): the
#: argparse attribute, the flag, the environment variable that sets its default there, the
#: modules it turns on, and its help.
FLAGS = {
    "enable_tensorrt": (
        "--enable-tensorrt", "FRAMEPACK_ENABLE_TENSORRT", ("image_encoder", "vae"),
        "Use engines: the SigLIP image encoder and the VAE's encoder and decoder, and what the "
        "flags below add."),
    "tensorrt_transformer": (
        "--tensorrt-transformer", "FRAMEPACK_TRT_TRANSFORMER", ("transformer",),
        "Also the transformer (needs --enable-tensorrt). Block engines (engines: blocks) keep "
        "TeaCache and low-VRAM mode; a whole-model engine runs only with TeaCache off."),
    "tensorrt_text_encoders": (
        "--tensorrt-text-encoders", "FRAMEPACK_TRT_TEXT_ENCODERS", ("text_encoder", "text_encoder_2"),
        "Also the LLaMA and CLIP text encoders (needs --enable-tensorrt)."),
}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _check_modules(caller: str, models: Mapping[str, Any]) -> None:
    unknown = sorted(set(models) - set(MODULES))
    if unknown:
        raise TypeError(f"{caller}: unknown module(s) {', '.join(unknown)}; "
                        f"it takes {', '.join(MODULES)}")


def add_arguments(parser) -> None:
    """Add FramePack's TensorRT flags to its ``argparse`` parser (``demo_gradio.py``)::

        parser = argparse.ArgumentParser()
        ...
        add_arguments(parser)
        args = parser.parse_args()
        ...                                   # FramePack loads its models
        engines = engines_from_args(args, transformer=transformer, text_encoder=text_encoder,
                                    text_encoder_2=text_encoder_2, image_encoder=image_encoder,
                                    vae=vae)
    """
    group = parser.add_argument_group(
        "framepack-trt engines",
        "Run engines built ahead of time with `framepack-trt build` (modules without an engine "
        "of their checkpoint stay PyTorch, with one warning).")
    for flag, env, _, text in FLAGS.values():
        group.add_argument(flag, action="store_true", default=_env_flag(env),
                           help=f"{text} Default: ${env}=1.")
    group.add_argument("--tensorrt-cache-dir", default=None, metavar="DIR",
                       help="The engine cache (default: $FRAMEPACK_TENSORRT_CACHE_DIR, else "
                            "Cache/tensorrt_engines in the current folder).")
    group.add_argument("--tensorrt-strict", action="store_true",
                       help="Fail instead of running PyTorch where no engine covers a call "
                            "(for tests and CI).")
    group.add_argument("--tensorrt-offload-bf16", action="store_true",
                       default=_env_flag("FRAMEPACK_TRT_OFFLOAD_BF16"),
                       help="Where fp8 block engines serve the transformer on the GPU, move "
                            "the bf16 weights they replace to the CPU (back for a PyTorch "
                            "call). Default: $FRAMEPACK_TRT_OFFLOAD_BF16=1.")


def engines_from_args(args, *, framepack_dir: str | Path | None = None,
                      **models) -> Engines | None:
    """``use_engines`` for the modules the flags of ``add_arguments`` turn on; None when
    ``--enable-tensorrt`` is off. A module flag without ``--enable-tensorrt`` is a UsageError
    (as in the fork, the module flags need it)."""
    from framepack_trt.errors import UsageError

    _check_modules("engines_from_args", models)
    if args.tensorrt_offload_bf16 and not (args.enable_tensorrt and args.tensorrt_transformer):
        raise UsageError("--tensorrt-offload-bf16 (or FRAMEPACK_TRT_OFFLOAD_BF16=1) needs "
                         "--enable-tensorrt and --tensorrt-transformer: it moves the weights "
                         "that the transformer's fp8 block engines replace")
    if not args.enable_tensorrt:
        orphan = [FLAGS[a][0] for a in ("tensorrt_transformer", "tensorrt_text_encoders")
                  if getattr(args, a)]
        if orphan:
            raise UsageError(f"{' and '.join(orphan)} need --enable-tensorrt (or "
                             "FRAMEPACK_ENABLE_TENSORRT=1)")
        return None
    wanted = [m for attr, (_, _, mods, _) in FLAGS.items() if getattr(args, attr) for m in mods]
    return use_engines(args.tensorrt_cache_dir, strict=args.tensorrt_strict,
                       framepack_dir=framepack_dir, offload_bf16=args.tensorrt_offload_bf16,
                       **{m: models[m] for m in wanted if models.get(m) is not None})
