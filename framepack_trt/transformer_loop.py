"""FramePack's transformer forward over the piece engines (``transformer_pieces``): the input
engine, then the block loop in Python (each block's engine call takes that block's own weights,
read from the model FramePack holds, wherever it keeps them), then the output engine; with
FramePack's TeaCache, exactly as FramePack's ``HunyuanVideoTransformer3DModelPacked.forward``
decides and reuses (lllyasviel/FramePack ``diffusers_helper/models/hunyuan_video_packed.py``).

``PieceSwap`` is what ``framepack.use_engines`` puts in place of the transformer's forward when
the cache has the four piece engines of the model's architecture: like ``framepack.Swap``, it
falls back to the eager forward (one warning per reason; ``strict`` raises) for a call no set
of pieces covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from framepack_trt.cache import Cache
from framepack_trt.engine_status import entry_status
from framepack_trt.errors import FramepackTrtError

PIECE_COMPONENTS = {"input": "transformer_input", "dual_block": "transformer_dual_block",
                    "single_block": "transformer_single_block", "output": "transformer_output"}
#: Block engines with fp8 linears (a profile's ``quantize: fp8``), by piece: where the cache
#: has them for the model, the loop prefers them to the bf16 ones (they were asked for).
QUANTIZED_COMPONENTS = {"dual_block": "transformer_dual_block_fp8",
                        "single_block": "transformer_single_block_fp8"}


def same_architecture(entry: Mapping[str, Any], model, cache: Cache) -> bool:
    """Whether the entry was built for the model's architecture (its config, less the keys
    naming files, classes and versions; the model's class may be FramePack's own)."""
    import json

    from framepack_trt.framepack import _checkpoint_dir
    from framepack_trt.sources import architecture_config

    local, _ = _checkpoint_dir(entry, cache)
    if local is None or not (local / "config.json").is_file():
        return False
    built = architecture_config(json.loads((local / "config.json").read_text()))
    mine = architecture_config(model.config)
    shared = set(built) & set(mine)
    return bool(shared) and all(built[k] == mine[k] for k in shared)


#: What ``teacache_step`` reads of the first dual-stream block, eagerly: its modulation
#: linear stays on the GPU under ``offload_bf16``.
TEACACHE_READS = ("norm1.linear",)


def teacache_step(model, tokens, temb) -> bool:
    """FramePack's TeaCache decision for this call (its state lives on the model, as FramePack's
    ``initialize_teacache`` set it): True when the block stack must run. Verbatim logic of
    FramePack's forward, on the same modulated input (block 0's ``norm1``)."""
    modulated_inp = model.transformer_blocks[0].norm1(tokens, emb=temb)[0]
    if model.cnt == 0 or model.cnt == model.num_steps - 1:
        should_calc = True
        model.accumulated_rel_l1_distance = 0
    else:
        prev = model.previous_modulated_input
        curr_rel_l1 = ((modulated_inp - prev).abs().mean() / prev.abs().mean()).cpu().item()
        model.accumulated_rel_l1_distance += model.teacache_rescale_func(curr_rel_l1)
        should_calc = model.accumulated_rel_l1_distance >= model.rel_l1_thresh
        if should_calc:
            model.accumulated_rel_l1_distance = 0
    model.previous_modulated_input = modulated_inp
    model.cnt += 1
    if model.cnt == model.num_steps:
        model.cnt = 0
    return should_calc


def engine_weight_names(entry: Mapping[str, Any]) -> list[str]:
    """The weight inputs of a piece engine, by the parameter names it was built with."""
    return [i["name"].removeprefix("weight.") for i in entry["inputs"]
            if i["name"].startswith("weight.")]


def run_pieces(model, engines: Mapping[str, Any], components: Mapping[str, Any], prepared,
               dtype, counters=None, names: Mapping[str, list[str]] | None = None):
    """The transformer's output for prepared inputs (``transformer_export.prepare_call``),
    through the piece engines, with TeaCache when the model has it on. A piece whose engine is
    None runs eagerly (``backend: auto`` found no engine faster than eager for it)."""
    from framepack_trt.transformer_pieces import RUNS, piece_module, unpatchify

    device = prepared[0].device

    def call(piece, index, *acts):
        if engines[piece] is None:
            return RUNS[piece](piece_module(model, piece, index), *acts)
        weights = components[piece].weights(model, index, dtype, device,
                                            (names or {}).get(piece))
        return engines[piece](*acts, *weights)

    frames, height, width = prepared[0].shape[2:]
    p = model.config.patch_size
    rows, cols = height // p, width // p
    tokens, context, temb, cos, sin = call("input", 0, *prepared)
    run_blocks = True
    if getattr(model, "enable_teacache", False):
        run_blocks = teacache_step(model, tokens, temb)
    if run_blocks:
        before = tokens.clone() if getattr(model, "enable_teacache", False) else None
        for i in range(model.config.num_layers):
            tokens, context = call("dual_block", i, tokens, context, temb, cos, sin)
        for i in range(model.config.num_single_layers):
            tokens, context = call("single_block", i, tokens, context, temb, cos, sin)
        if before is not None:
            model.previous_residual = tokens - before
    else:
        tokens = tokens + model.previous_residual
    if counters is not None:
        counters["block_stack" if run_blocks else "teacache_skip"] += 1
    latent = tokens[:, :(frames // model.config.patch_size_t) * rows * cols]
    (projected,) = call("output", 0, latent, temb)
    return unpatchify(projected, model.config, frames, rows, cols)


def piece_sizes(prepared, text_len: int) -> dict[str, dict[str, int]]:
    """The named sizes each piece's engine sees for a prepared call."""
    from framepack_trt.components.transformer import IMAGE_TOKENS
    from framepack_trt.components.transformer_pieces import image_tokens

    frames, height, width = prepared[0].shape[2:]
    return {"dual_block": {"image_tokens": image_tokens(frames, height, width),
                           "context_len": IMAGE_TOKENS + text_len},
            "single_block": {"image_tokens": image_tokens(frames, height, width),
                             "context_len": IMAGE_TOKENS + text_len},
            "output": {"latent_tokens": frames * (height // 2) * (width // 2)}}


def prefer_quantized(piece: str, entries: list[dict]) -> None:
    """Sort a piece's entries fp8 first (``quantize: fp8`` was asked for at build time), the
    cache's order otherwise."""
    entries.sort(key=lambda e: e["component"] != QUANTIZED_COMPONENTS.get(piece))


def find_pieces(cache: Cache, model, model_dtype: str) -> tuple[dict[str, list[dict]],
                                                                 dict[str, set[str]]]:
    """Usable entries of each piece built for the model's architecture and dtype; and per
    piece, the devices on which ``backend: auto`` measured eager as the fastest (no engine
    kept: the loop runs that piece eagerly there)."""
    def piece_of(record):
        return next((p for table in (PIECE_COMPONENTS, QUANTIZED_COMPONENTS)
                     for p, c in table.items() if c == record["component"]), None)

    out: dict[str, list[dict]] = {piece: [] for piece in PIECE_COMPONENTS}
    for entry in cache.entries().values():
        piece = piece_of(entry)
        if (piece is None or f"torch.{entry['key_fields']['dtype']}" != model_dtype
                or entry_status(cache, entry).state != "ok" or not same_architecture(entry, model, cache)):
            continue
        out[piece].append(entry)
    for piece, entries in out.items():
        prefer_quantized(piece, entries)
    eager: dict[str, set[str]] = {piece: set() for piece in PIECE_COMPONENTS}
    for choice in cache.choices().values():
        piece = piece_of(choice)
        if (piece is None or choice.get("kept") or "source" not in choice
                or f"torch.{choice.get('dtype')}" != model_dtype
                or not any(c.get("outcome") == "not-faster-than-eager"
                           for c in choice.get("candidates", []))
                or not same_architecture(choice, model, cache)):
            continue
        eager[piece].add(choice["device"])
    return out, eager


class PieceSwap:
    """Mixed into ``framepack.Swap`` by ``use_engines``: the transformer through its pieces."""

    #: Move the bf16 weights that the fp8 block engines replace to the CPU after their first
    #: call on the GPU (``fp8.park_bf16``), back before an eager call and at ``restore()``
    #: (``use_engines(..., offload_bf16=True)``).
    offload_bf16 = False

    def init_pieces(self, cache: Cache) -> None:
        from collections import Counter

        self.pieces, self.eager_pieces = find_pieces(cache, self.model, str(self.model.dtype))
        from framepack_trt.framepack_transformer import is_export_layout

        if not is_export_layout(self.model):
            # A piece runs eagerly on diffusers' modules only (FramePack's own class has other
            # RoPE and embedding call conventions): elsewhere a piece without an engine means
            # the whole call runs the model's own forward.
            self.eager_pieces = {p: set() for p in self.eager_pieces}
        self.stack: Counter[str] = Counter()
        self._piece_engines: dict[str, Any] = {}
        self._piece_pick: dict[tuple, dict[str, str] | None] = {}

    @property
    def has_pieces(self) -> bool:
        """Every piece has an engine, or auto chose eager for it; and one has an engine."""
        return (all(self.pieces[p] or self.eager_pieces[p] for p in self.pieces)
                and any(self.pieces.values()))

    def pick_pieces(self, prepared, text_len: int) -> tuple[dict[str, dict] | None, str]:
        """One entry per piece that covers the call, or None and why not (memoised)."""
        from framepack_trt.runtime import call_sizes, out_of_range

        key = (text_len, *(tuple(t.shape) for t in prepared), prepared[0].device.type)
        if key not in self._piece_pick:
            sizes = piece_sizes(prepared, text_len)
            picked, why = {}, []
            for piece, entries in self.pieces.items():
                for e in entries:
                    if e["key_fields"]["device"]["type"] != prepared[0].device.type:
                        continue
                    if piece == "input":
                        try:
                            s = call_sizes({**e, "inputs": e["inputs"][:len(prepared)]},
                                           [tuple(t.shape) for t in prepared])
                        except FramepackTrtError as exc:
                            why.append(str(exc))
                            continue
                    else:
                        s = sizes[piece]
                    problem = out_of_range(e, s)
                    if problem:
                        why.append(f"{e['name']}: {problem}")
                        continue
                    picked[piece] = e
                    break
                if (piece not in picked and not entries
                        and prepared[0].device.type in self.eager_pieces[piece]):
                    picked[piece] = None  # auto measured eager as the fastest for this piece
            missing = [p for p in self.pieces if p not in picked]
            self._piece_pick[key] = ((picked, "") if not missing else
                                     (None, f"no {', '.join(missing)} piece engine covers the "
                                            f"call ({'; '.join(why) or 'none on this device'}); "
                                            "widen the profile's dims and run `framepack-trt "
                                            "build`"))
        return self._piece_pick[key]

    def piece_engine(self, entry):
        if entry["key"] not in self._piece_engines:
            from framepack_trt.runtime import load_engine

            self._piece_engines[entry["key"]] = load_engine(self.cache, entry)
        return self._piece_engines[entry["key"]]

    def forward_pieces(self, args, kwargs):
        """The swapped forward: pieces when they cover the call, else eager (or raise)."""
        from framepack_trt.transformer_export import diffusers_kwargs, prepare_call, text_length

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
        broken = [e["key"] for e in used if e["key"] in self.broken]
        if broken:
            return self._eager(self._broken_why(broken[0]), args, kwargs)
        try:
            engines = {p: self.piece_engine(e) if e is not None else None
                       for p, e in picked.items()}
            from framepack_trt.components.base import get_component

            components = {p: get_component(e["component"]) for p, e in picked.items()
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
                self.broken[e["key"]] = f"{type(exc).__name__}: {exc}"
            return self._eager(self._broken_why(used[0]["key"]), args, kwargs)
        self.calls["engine"] += 1
        # Calls each piece engine served: the block engines only where the stack ran (TeaCache
        # reuses the last residual otherwise).
        ran_blocks = self.stack["block_stack"] > stacks_before
        for piece, e in picked.items():
            if e is not None and (ran_blocks or piece in ("input", "output")):
                self.served[e["name"]] += 1
        return self._wrap(self.model, (sample,), kwargs.get("return_dict", True))

    def _blocks(self, piece: str) -> list:
        from framepack_trt.transformer_pieces import piece_count, piece_module

        return [piece_module(self.model, piece, i) for i in range(piece_count(self.model, piece))]

    def place_bf16(self, picked: Mapping[str, dict | None], device) -> None:
        """``offload_bf16``: the bf16 weights of the blocks that fp8 engines serve on the GPU
        go to the CPU (once: later calls find them there; their GPU memory goes back to the
        device). A call that runs parked blocks otherwise (bf16 engines, eagerly) brings every
        parked weight back and turns the option off (``unpark``)."""
        from framepack_trt import fp8

        in_fp8 = [piece for piece, component in QUANTIZED_COMPONENTS.items()
                  if picked.get(piece) is not None and picked[piece]["component"] == component
                  and device.type == fp8.PARK_FROM]
        if any(fp8.is_parked(block) for piece in QUANTIZED_COMPONENTS if piece not in in_fp8
               for block in self._blocks(piece)):
            self.unpark("a call ran blocks through bf16 engines or eagerly")
            return
        moved = False
        for piece in in_fp8:
            for index, block in enumerate(self._blocks(piece)):
                moved |= fp8.park_bf16(block, TEACACHE_READS if (piece, index) == (
                    "dual_block", 0) else ())
        if moved:
            import torch

            torch.cuda.empty_cache()

    def place_low_vram(self, picked: Mapping[str, dict | None], device) -> None:
        """In FramePack's low-VRAM mode, the quantized copies of the blocks that fp8 engines
        serve follow FramePack's placement of the blocks, and take the GPU memory that their
        linears' bf16 weights leave (``fp8.place_low_vram``); the first dual-stream block's
        modulation linear keeps its bf16 weight (TeaCache reads it eagerly). Blocks that run
        otherwise get their bf16 weights back where FramePack put them (``fp8.unplace``)."""
        from framepack_trt import fp8

        pieces = [piece for piece, component in QUANTIZED_COMPONENTS.items()
                  if picked.get(piece) is not None and picked[piece]["component"] == component]
        self.unplace([piece for piece in QUANTIZED_COMPONENTS if piece not in pieces])
        blocks = [block for piece in pieces for block in self._blocks(piece)]
        if blocks and fp8._low_vram(blocks[0]):
            keep = ((0, name) for name in TEACACHE_READS) if pieces[0] == "dual_block" else ()
            fp8.place_low_vram(blocks, device, tuple(keep))

    def unplace(self, pieces=tuple(QUANTIZED_COMPONENTS)) -> None:
        """``fp8.unplace`` for every block of ``pieces`` (all by default)."""
        from framepack_trt.fp8 import unplace

        for piece in pieces:
            for block in self._blocks(piece):
                unplace(block)

    def unpark(self, why: str | None = None) -> None:
        """Move the weights ``place_bf16`` moved back to the GPU. With ``why`` (a call that
        needs them), offloading stops for good, with one warning: moving them back and forth
        at every such call would cost seconds each."""
        from framepack_trt.fp8 import unpark_bf16

        moved = False
        for piece in QUANTIZED_COMPONENTS:
            for block in self._blocks(piece):
                moved |= unpark_bf16(block)
        if moved and why is not None:
            self.offload_bf16 = False
            self._warn(f"offload_bf16 is off from now on: {why}, which needs the bf16 weights "
                       "on the GPU", stacklevel=5)

    def release(self) -> None:
        """At ``restore()``: every block's bf16 weights back where they were, and the fp8
        copies made for its engines dropped."""
        import torch

        from framepack_trt.fp8 import release

        for piece in QUANTIZED_COMPONENTS:
            for block in self._blocks(piece):
                release(block)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the dropped copies' memory, back to the device

    def _eager(self, why: str, args, kwargs):
        self.unplace()  # low-VRAM mode: the bf16 weights where FramePack put them
        if self.offload_bf16:  # the model's own forward needs its bf16 weights where they were
            self.unpark("a call ran eager")
        return super()._eager(why, args, kwargs)
