"""The transformer's swap: through its piece engines (weights as inputs, TeaCache kept) when
the cache has every piece for the model's architecture, else through a whole-model engine of
its checkpoint (TeaCache off only), else eager.

The pieces run in ``transformer.loop``; each call's engines are chosen per piece by the one
selection (``selection.select``: fp8 block engines first where the cache has them, as
``quantize: fp8`` asked, then the best fit). Like every swap, a call no set of pieces covers
runs the eager forward (one warning per reason; ``strict`` raises). With fp8 block engines the
swap also places the blocks' quantized copies (``transformer.fp8_placement``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace

import torch

from framepack_trt.cache import Cache, Entry
from framepack_trt.cache.storage import EntryStatus
from framepack_trt.components.base import get_component
from framepack_trt.engine_status import entry_status
from framepack_trt.errors import FramepackTrtError
from framepack_trt.runtime.checkpoints import same_architecture
from framepack_trt.runtime.loading import load_engine
from framepack_trt.runtime.selection import call_sizes, select
from framepack_trt.runtime.swap import Swap
from framepack_trt.transformer import fp8_placement
from framepack_trt.transformer.export import diffusers_kwargs, prepare_call, text_length
from framepack_trt.transformer.loop import TEACACHE_READS, run_pieces
from framepack_trt.transformer.model import is_export_layout
from framepack_trt.transformer.names import FP8_COMPONENTS, PIECES, piece_of
from framepack_trt.transformer.pieces import piece_count, piece_module
from framepack_trt.transformer.tokens import piece_sizes


def fp8_first(piece: str) -> Callable[[Entry], bool]:
    """Sort key of a piece's entries: fp8 block engines first (``quantize: fp8`` was asked for
    at build time: where the cache has them for the model, they are preferred to the bf16
    ones)."""
    return lambda entry: entry.component != FP8_COMPONENTS.get(piece)


def engine_weight_names(entry: Entry) -> list[str]:
    """The weight inputs of a piece engine, by the parameter names it was built with."""
    return [n.removeprefix("weight.") for n in entry.input_names if n.startswith("weight.")]


def find_pieces(cache: Cache, model, model_dtype: str
                ) -> tuple[dict[str, list[Entry]], dict[str, set[str]], list[EntryStatus]]:
    """Usable entries of each piece built for the model's architecture and dtype; per piece,
    the devices on which ``backend: auto`` measured eager as the fastest (no engine kept: the
    loop runs that piece eagerly there); and the statuses of the piece engines that are stale
    (cannot run here)."""
    out: dict[str, list[Entry]] = {piece: [] for piece in PIECES}
    stale: list[EntryStatus] = []
    for entry in cache.entries().values():
        piece = piece_of(entry.component)
        if piece is None:
            continue
        status = entry_status(cache, entry)
        if status.state == "stale":
            stale.append(status)
        if (f"torch.{entry.dtype}" != model_dtype or status.state != "ok"
                or not same_architecture(entry, model, cache)):
            continue
        out[piece].append(entry)
    eager: dict[str, set[str]] = {piece: set() for piece in PIECES}
    for choice in cache.choices().values():
        piece = piece_of(choice.component)
        if (piece is None or choice.kept or choice.source is None
                or f"torch.{choice.dtype}" != model_dtype
                or not any(c.outcome == "not-faster-than-eager" for c in choice.candidates)
                or not same_architecture(choice, model, cache)):
            continue
        eager[piece].add(choice.device)
    return out, eager, stale


class TransformerSwap(Swap):
    """The transformer's forward, swapped: its pieces where they cover the call, else a
    whole-model engine (``Swap``), else eager."""

    #: Move the bf16 weights that the fp8 block engines replace to the CPU after their first
    #: call on the GPU (``fp8_placement.park_bf16``), back before an eager call and at
    #: ``restore()`` (``use_engines(..., offload_bf16=True)``).
    offload_bf16 = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pieces, self.eager_pieces, stale_pieces = find_pieces(self.cache, self.model,
                                                                   str(self.model.dtype))
        self.stale += stale_pieces
        if not is_export_layout(self.model):
            # A piece runs eagerly on diffusers' modules only (FramePack's own class has other
            # RoPE and embedding call conventions): elsewhere a piece without an engine means
            # the whole call runs the model's own forward.
            self.eager_pieces = {p: set() for p in self.eager_pieces}
        self.stack: Counter[str] = Counter()
        self._piece_pick: dict[tuple, tuple[dict[str, Entry | None] | None, str]] = {}

    @property
    def has_pieces(self) -> bool:
        """Every piece has an engine, or auto chose eager for it; and one has an engine."""
        return (all(self.pieces[p] or self.eager_pieces[p] for p in self.pieces)
                and any(self.pieces.values()))

    def forward(self, *args, **kwargs):
        if self.has_pieces:
            return self.forward_pieces(args, kwargs)
        return super().forward(*args, **kwargs)

    def pick_pieces(self, prepared, text_len: int) -> tuple[dict[str, Entry | None] | None, str]:
        """One entry per piece that covers the call (None: the piece runs eagerly), or None
        and why not (memoised)."""
        device = prepared[0].device.type
        shapes = [tuple(t.shape) for t in prepared]
        key = (text_len, *shapes, device)
        if key not in self._piece_pick:
            sizes = piece_sizes(prepared, text_len)

            def sizes_of(entry, piece):
                if piece == "input":  # the call's inputs: the engine's first (its weights follow)
                    return call_sizes(replace(entry, inputs=(entry.inputs or ())[:len(shapes)]),
                                      shapes)
                return sizes[piece]

            picked, why = {}, []
            for piece, entries in self.pieces.items():
                chosen = select(entries, lambda e, piece=piece: sizes_of(e, piece),
                                device=device, prefer=fp8_first(piece))
                why += chosen.reasons
                if chosen.choices:
                    picked[piece] = chosen.choices[0]
                elif not entries and device in self.eager_pieces[piece]:
                    picked[piece] = None  # auto measured eager as the fastest for this piece
            missing = [p for p in self.pieces if p not in picked]
            self._piece_pick[key] = ((picked, "") if not missing else
                                     (None, f"no {', '.join(missing)} piece engine covers the "
                                            f"call ({'; '.join(why) or 'none on this device'}); "
                                            "widen the profile's dims and run `framepack-trt "
                                            "build`"))
        return self._piece_pick[key]

    def piece_engine(self, entry: Entry):
        if entry.key not in self._engines:
            self._engines[entry.key] = load_engine(self.cache, entry)
        return self._engines[entry.key]

    def forward_pieces(self, args, kwargs):
        """The swapped forward: pieces when they cover the call, else eager (or raise)."""
        if args:
            return self._eager("the call passes arguments by position (FramePack passes them "
                               "by keyword)", args, kwargs)
        if kwargs.get("attention_kwargs"):
            return self._eager("the call passes attention_kwargs", args, kwargs)
        try:
            prepared = prepare_call(kwargs, self.model.dtype, None)
            text_len = text_length(diffusers_kwargs(kwargs)["encoder_attention_mask"])
        except (FramepackTrtError, ValueError, KeyError) as exc:
            return self._eager(str(exc), args, kwargs)
        picked, why = self.pick_pieces(prepared, text_len)
        if picked is None:
            return self._eager(why, args, kwargs)
        used = [e for e in picked.values() if e is not None]
        broken = [e.key for e in used if e.key in self.broken]
        if broken:
            return self._eager(self._broken_why(broken[0]), args, kwargs)
        try:
            engines = {p: self.piece_engine(e) if e is not None else None
                       for p, e in picked.items()}
            components = {p: get_component(e.component) for p, e in picked.items()
                          if e is not None}
            if self.offload_bf16:
                self.place_bf16(picked, prepared[0].device)
            if prepared[0].device.type == "cuda":
                self.place_low_vram(picked, prepared[0].device)
            stacks_before = self.stack["block_stack"]
            sample = run_pieces(self.model, engines, components, prepared, self.model.dtype,
                                self.stack, {p: engine_weight_names(e) for p, e in picked.items()
                                             if e is not None})
        except Exception as exc:  # broken at run time: eager takes over from now on
            for e in used:
                self.broken[e.key] = f"{type(exc).__name__}: {exc}"
            return self._eager(self._broken_why(used[0].key), args, kwargs)
        self.calls["engine"] += 1
        # Calls each piece engine served: the block engines only where the stack ran (TeaCache
        # reuses the last residual otherwise).
        ran_blocks = self.stack["block_stack"] > stacks_before
        for piece, e in picked.items():
            if e is not None and (ran_blocks or piece in ("input", "output")):
                self.served[e.name] += 1
        return self.adapter.wrap_output(self.model, (sample,), kwargs)

    # -- the fp8 blocks' quantized copies -------------------------------------------------------
    def _blocks(self, piece: str) -> list:
        return [piece_module(self.model, piece, i) for i in range(piece_count(self.model, piece))]

    def place_bf16(self, picked: Mapping[str, Entry | None], device) -> None:
        """``offload_bf16``: the bf16 weights of the blocks that fp8 engines serve on the GPU
        go to the CPU (once: later calls find them there; their GPU memory goes back to the
        device). A call that runs parked blocks otherwise (bf16 engines, eagerly) brings every
        parked weight back and turns the option off (``unpark``)."""
        in_fp8 = [piece for piece, component in FP8_COMPONENTS.items()
                  if picked.get(piece) is not None and picked[piece].component == component
                  and device.type == fp8_placement.PARK_FROM]
        if any(fp8_placement.is_parked(block) for piece in FP8_COMPONENTS if piece not in in_fp8
               for block in self._blocks(piece)):
            self.unpark("a call ran blocks through bf16 engines or eagerly")
            return
        moved = False
        for piece in in_fp8:
            for index, block in enumerate(self._blocks(piece)):
                moved |= fp8_placement.park_bf16(block, TEACACHE_READS if (piece, index) == (
                    "dual_block", 0) else ())
        if moved:
            torch.cuda.empty_cache()

    def place_low_vram(self, picked: Mapping[str, Entry | None], device) -> None:
        """In FramePack's low-VRAM mode, the quantized copies of the blocks that fp8 engines
        serve follow FramePack's placement of the blocks, and take the GPU memory that their
        linears' bf16 weights leave (``fp8_placement.place_low_vram``); the first dual-stream
        block's modulation linear keeps its bf16 weight (TeaCache reads it eagerly). Blocks that
        run otherwise get their bf16 weights back where FramePack put them (``unplace``)."""
        pieces = [piece for piece, component in FP8_COMPONENTS.items()
                  if picked.get(piece) is not None and picked[piece].component == component]
        self.unplace([piece for piece in FP8_COMPONENTS if piece not in pieces])
        blocks = [block for piece in pieces for block in self._blocks(piece)]
        if blocks and fp8_placement._low_vram(blocks[0]):
            keep = ((0, name) for name in TEACACHE_READS) if pieces[0] == "dual_block" else ()
            fp8_placement.place_low_vram(blocks, device, tuple(keep))

    def unplace(self, pieces=tuple(FP8_COMPONENTS)) -> None:
        """``fp8_placement.unplace`` for every block of ``pieces`` (all by default)."""
        for piece in pieces:
            for block in self._blocks(piece):
                fp8_placement.unplace(block)

    def unpark(self, why: str | None = None) -> None:
        """Move the weights ``place_bf16`` moved back to the GPU. With ``why`` (a call that
        needs them), offloading stops for good, with one warning: moving them back and forth
        at every such call would cost seconds each."""
        moved = False
        for piece in FP8_COMPONENTS:
            for block in self._blocks(piece):
                moved |= fp8_placement.unpark_bf16(block)
        if moved and why is not None:
            self.offload_bf16 = False
            self._warn(f"offload_bf16 is off from now on: {why}, which needs the bf16 weights "
                       "on the GPU", stacklevel=5)

    def release(self) -> None:
        """At ``restore()``: every block's bf16 weights back where they were, and the fp8
        copies made for its engines dropped."""
        for piece in FP8_COMPONENTS:
            for block in self._blocks(piece):
                fp8_placement.release(block)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the dropped copies' memory, back to the device

    def _eager(self, why: str, args, kwargs):
        self.unplace()  # low-VRAM mode: the bf16 weights where FramePack put them
        if self.offload_bf16:  # the model's own forward needs its bf16 weights where they were
            self.unpark("a call ran eager")
        return super()._eager(why, args, kwargs)
