"""``use_engines``: swap engines into FramePack's modules (``swap.Swap``, and for the
transformer ``transformer_swap.TransformerSwap``), and ``Engines``, what it made: counters, a
report, ``restore()``.

    from framepack_trt.framepack import use_engines
    engines = use_engines(cache_dir, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                          image_encoder=image_encoder, vae=vae)
    ...                      # FramePack runs as before
    print(engines.report())  # "llama_text: 12 engine, 0 eager calls; ..."

Which component serves which of FramePack's modules, and which part of it, each component
declares (``framepack_module``, ``framepack_part``): the VAE is two, its encoder and decoder.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from framepack_trt.cache import Cache, resolve_cache_dir
from framepack_trt.components.base import FRAMEPACK_MODULES, framepack_modules
from framepack_trt.runtime.swap import EngineFallback, Swap
from framepack_trt.runtime.transformer_swap import TransformerSwap
from framepack_trt.transformer.names import WHOLE


def stale_note(swap: Swap) -> str:
    """What to add to "no engine serves" a swap's module when the cache has engines of it that
    cannot run here (built by other code, libraries or for another device): how many, the first
    one's reason, and that ``build`` makes them again. Empty when there are none."""
    if not swap.stale:
        return ""
    return (f"; {len(swap.stale)} engine(s) of it there are stale ({swap.stale[0].reason}): "
            "`framepack-trt build` builds them again")


def check_modules(caller: str, models: Mapping[str, Any]) -> None:
    unknown = sorted(set(models) - set(FRAMEPACK_MODULES))
    if unknown:
        raise TypeError(f"{caller}: unknown module(s) {', '.join(unknown)}; "
                        f"it takes {', '.join(FRAMEPACK_MODULES)}")


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
                    f"{s.stack['teacache_skip']})" if isinstance(s, TransformerSwap)
                    and s.has_pieces else "")
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
            if isinstance(s, TransformerSwap):
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
    check_modules("use_engines", models)
    cache = Cache(resolve_cache_dir(cache_dir, None, framepack_dir))
    modules = framepack_modules()
    made, missing = [], []
    for name, model in models.items():
        if model is None:
            continue
        for component in modules[name]:
            swap = (TransformerSwap if component == WHOLE else Swap)(name, component, model, cache,
                                                                    strict)
            where = ".".join(filter(None, (name, swap.part)))
            if not swap.entries and not getattr(swap, "has_pieces", False):
                missing.append((where, swap))
                continue
            made.append((where, swap))
    if strict and missing:  # it would run eager at every call, and the caller not know it
        raise EngineFallback(
            f"strict: no engine in {cache.root} serves "
            + ", ".join(f"{where} ({swap.component})" for where, swap in missing)
            + " (none of its checkpoint, or for the transformer's architecture, that can run "
            "here); build them with `framepack-trt build` (`framepack-trt list` shows the cache)"
            + "".join(stale_note(swap) for _, swap in missing))
    for where, swap in missing:
        warnings.warn(f"framepack-trt: {where} ({swap.component}) stays eager: no engine of its "
                      f"checkpoint in {cache.root}; build one with `framepack-trt build`"
                      + stale_note(swap), stacklevel=2)
    swaps = {}
    for where, swap in made:
        if offload_bf16 and isinstance(swap, TransformerSwap):
            swap.offload_bf16 = True
        swap.target.forward = swap.forward  # the instance's; nn.Module.__call__ runs it
        swaps[where] = swap
    return Engines(swaps, [swap.component for _, swap in missing])
