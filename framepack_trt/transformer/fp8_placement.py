"""Where the fp8 block engines' quantized copies live while FramePack runs (docs/fp8.md): the
process-wide state that ``transformer.fp8``'s maths leaves out.

``quantized_block`` makes a block's quantized copy once and keeps it while the block's weights
stay the same tensors. Two placements then save GPU memory: ``park_bf16``
(``use_engines(..., offload_bf16=True)``, high-VRAM mode) moves the bf16 weights the copy
replaces to the CPU; in FramePack's low-VRAM mode, where FramePack moves the blocks itself,
the copy lives in buffers of the block's own linears (``ATTACHED``) and ``place_low_vram``
swaps it onto the GPU in place of their bf16 weights before each engine call. ``unplace``,
``unpark_bf16`` and ``release`` undo them.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from framepack_trt.transformer.fp8 import quantize_block, replaced_names

#: Each block's quantized copy (``quantized_block``), with the stamp of the weights it was
#: made from.
_QUANTIZED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: Blocks whose quantized linears' bf16 weights ``park_bf16`` moved to the CPU: name -> device.
_PARKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: The device type whose weights ``park_bf16`` moves to the CPU (tests set "cpu": the moves are
#: then no-ops, and the bookkeeping runs as on a GPU).
PARK_FROM = "cuda"
#: FramePack's low-VRAM mode: for each bf16 weight that ``place_low_vram`` swapped to the CPU,
#: that host tensor, and the weight's version and checksum then. FramePack's next move of the
#: linear to the GPU (each section) would free it, and the next swap copy the weight back into
#: new host memory: over FramePack's 60 blocks about 10 GiB of device-to-host copies at every
#: section's first call. Kept, the swap points the weight at it again, unless the weight was
#: modified since: its version (changes through the Parameter) or the checksum of its bits
#: (changes through ``weight.data``, as LoRA merges often write) differ. It takes no host
#: memory that the engine calls do not take anyway (the swapped weights live on the CPU while
#: they run), except where FramePack moves a block to the GPU and off again with no engine
#: call between: its new host copy and the kept one then live side by side until FramePack
#: moves it to the GPU again (freeing its copy) or ``release``. A weight that ``unplace``
#: moves back to the GPU drops its kept tensor.
_HOST = WeakTensorKeyDictionary()


def _quantized_weights(block: torch.nn.Module):
    """The stored weights of the linears the quantized copy replaces (past any swap-on-access
    hook)."""
    return [block.get_submodule(n)._parameters["weight"] for n in replaced_names(block)]


def _stamp(block: torch.nn.Module) -> tuple:
    """What identifies the weights a quantized copy was made from: storage, version, device.
    An inference tensor (a model loaded under torch.inference_mode) has no version counter,
    and cannot be modified in place outside inference mode anyway. In FramePack's low-VRAM
    mode, where FramePack moves the weights between devices (new storage, same Parameter and
    version) and the copy moves with them (``ATTACHED``): the Parameter itself (a weak
    reference: a new Parameter, as ``load_state_dict(assign=True)`` makes, is another weight
    even where it reuses a freed one's address), its version, shape and dtype, and whether the
    linear still holds its quantized buffers as made."""
    if _low_vram(block):
        return tuple((weakref.ref(w), _version(w), tuple(w.shape),
                      w.dtype, _attached_ok(block.get_submodule(n)))
                     for n, w in zip(replaced_names(block), _quantized_weights(block),
                                     strict=True))
    return tuple((w.data_ptr(), _version(w), str(w.device))
                 for w in _quantized_weights(block))


def _version(w: torch.Tensor) -> int | None:
    """The tensor's version counter; None for an inference tensor, which has none (also once
    ``.data`` has been assigned to it: it then says it is not one, and still has none)."""
    try:
        return None if w.is_inference() else w._version
    except RuntimeError:
        return None


def _checksum(w: torch.Tensor) -> int:
    """The sum of the tensor's bit patterns as integers, computed where it is (on the GPU: a
    few milliseconds for FramePack's 10 GiB of resident block weights): it changes with any
    realistic change of the values, such as a LoRA merged through ``weight.data``, which the
    version counter does not see."""
    bits = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[w.element_size()]
    total = torch.zeros((), dtype=torch.int64, device=w.device)
    for chunk in w.detach().reshape(-1).view(bits).split(1 << 22):  # torch sums integers as
        total += chunk.sum(dtype=torch.int64)  # a cast copy first: 32 MiB at a time, not 4x
    return int(total)  # the weight's bytes


def _current(block: torch.nn.Module) -> bool:
    """Whether the block's kept copy was made from its linears' weights as they are now."""
    kept = _QUANTIZED.get(block)
    if kept is None:
        return False
    old, new = kept[0], _stamp(block)
    if len(old) != len(new):
        return False
    for a, b in zip(old, new, strict=True):
        if isinstance(a[0], weakref.ref) != isinstance(b[0], weakref.ref):
            return False  # FramePack's low-VRAM hook came or went since
        if isinstance(a[0], weakref.ref):
            if a[0]() is not b[0]() or a[1:] != b[1:]:
                return False
        elif a != b:
            return False
    return True


#: In FramePack's low-VRAM mode, the names under which a linear of the block holds its
#: quantized weight and scale: non-persistent buffers (not in the state dict), which
#: FramePack's ``m.to(device)`` moves with the linear and ``DynamicSwapInstaller`` streams.
ATTACHED = {"weight": "quantized_weight", "weight_scale": "quantized_weight_scale"}
#: An empty buffer that only FramePack's moves move (``place_low_vram`` never does): where
#: FramePack last put the linear, whatever has become of its weight and copy since.
HOME = "quantized_home"


def _attached_ok(linear: torch.nn.Module) -> bool:
    """Whether the linear holds its quantized buffers, in their dtypes (a ``module.to(dtype)``
    would have cast them: made again)."""
    w, s = (linear._buffers.get(b) for b in ATTACHED.values())
    return (w is not None and s is not None and w.dtype in (torch.float8_e4m3fn, torch.int8)
            and s.dtype == torch.float32)


def _attach(block: torch.nn.Module, quantized: torch.nn.Module) -> None:
    """Low-VRAM mode: the quantized copy's weights and scales become buffers of the block's own
    linears (where they were made: the GPU for a linear FramePack moved there, else the CPU),
    and the copy keeps only their shapes (meta tensors: its names and dtypes)."""
    for name in replaced_names(block):
        linear, module = block.get_submodule(name), quantized.get_submodule(name)
        for leaf, buffer in ATTACHED.items():
            linear.register_buffer(buffer, module._buffers[leaf], persistent=False)
            module._buffers[leaf] = module._buffers[leaf].to("meta")
        if HOME not in linear._buffers:  # where the linear is: its bias, else its weight
            where = linear._parameters.get("bias")
            where = linear._parameters["weight"] if where is None else where
            linear.register_buffer(HOME, torch.empty(0, dtype=torch.uint8, device=where.device),
                                   persistent=False)


def _detach(block: torch.nn.Module) -> None:
    """Low-VRAM mode undone: every weight back where FramePack put it (``unplace``), then the
    buffers and the kept host tensors (``_HOST``) dropped."""
    unplace(block)
    for name in replaced_names(block):
        linear = block.get_submodule(name)
        _HOST.pop(linear._parameters["weight"], None)
        for buffer in (*ATTACHED.values(), HOME):
            if buffer in linear._buffers:
                delattr(linear, buffer)


def read_quantized(block: torch.nn.Module, name: str) -> torch.Tensor:
    """A quantized tensor of the block's copy by its name in the copy (``attn.to_q.weight``,
    ``attn.to_q.weight_scale``): in low-VRAM mode the buffer its linear holds, read through
    the linear as FramePack's swap-on-access hook sees reads (a copy on the GPU when the
    linear is on the CPU); else the copy's own."""
    owner, _, leaf = name.rpartition(".")
    if _low_vram(block):
        return getattr(block.get_submodule(owner), ATTACHED[leaf])
    return getattr(_QUANTIZED[block][1].get_submodule(owner), leaf)


def _low_vram(block: torch.nn.Module) -> bool:
    """Whether FramePack's low-VRAM ``DynamicSwapInstaller`` manages the block (it keeps the
    module's own class in ``forge_backup_original_class``): FramePack moves its weights."""
    return "forge_backup_original_class" in block.__dict__


def quantized_block(block: torch.nn.Module) -> torch.nn.Module:
    """``quantize_block(block)``, made once and kept while the block lives and its linears'
    weights stay the same tensors, unmodified (a LoRA merged in place through the Parameter,
    such as ``weight.add_(delta)``, or new weights loaded afterwards, makes it again; a change
    written in place through ``weight.data`` is not seen: torch does not count it). The
    quantized weights live where the block's weights are stored: on the GPU in FramePack's
    high-VRAM mode. In its low-VRAM mode they are buffers of the block's own linears
    (``ATTACHED``), made where each linear is and moved with it by FramePack (its moves do
    not make them again; a new tensor assigned to ``weight.data`` is not seen there either),
    and placed by ``place_low_vram`` before each engine call."""
    if not _current(block):
        if not _low_vram(block):  # FramePack's hook is gone: so are the copies it moved
            _detach(block)
        quantized = quantize_block(block)
        if _low_vram(block):
            # FramePack's low-VRAM mode moves this block between devices itself (a prefix of
            # the model to the GPU for each section, off it for the VAE): the copy goes into
            # the block's own linears, so that it moves with them (``place_low_vram``).
            _attach(block, quantized)
        else:
            # Weights park_bf16 moved to the CPU (and changed there since): the copy goes
            # where they were.
            for name, device in _PARKED.get(block, {}).items():
                module = quantized.get_submodule(name)
                module.weight = module.weight.to(device)
                module.weight_scale = module.weight_scale.to(device)
        _QUANTIZED[block] = (_stamp(block), quantized)
    return _QUANTIZED[block][1]


def _move_weight(block: torch.nn.Module, name: str, device: torch.device) -> None:
    """Move the named linear's weight to ``device``, keeping its Parameter (the block's state
    dict and parameter list are unchanged), and the quantized copy made from it: it was made
    from the same values. In low-VRAM mode a move to the CPU reuses the host tensor the
    weight last left there (``_HOST``) when it is unmodified since (its version and checksum),
    and keeps the new one; a move to the GPU (``unplace``) drops it."""
    current = _current(block)
    with torch.no_grad(), torch.inference_mode(False):
        weight = block.get_submodule(name)._parameters["weight"]
        version = _version(weight)
        keep = device.type == "cpu" and version is not None and _low_vram(block)
        mark = _checksum(weight) if keep else None  # where the weight is: on the GPU
        host = _HOST.get(weight) if keep else None
        if (host is not None and host[0] == version and host[1].shape == weight.shape
                and host[1].dtype == weight.dtype and host[2] == mark):
            weight.data = host[1]  # the same values: the weight is unmodified since
        else:
            weight.data = weight.data.to(device)
        if keep:
            _HOST[weight] = (version, weight.data, mark)
        else:  # back on the GPU for an eager call: FramePack's next move off would copy it
            _HOST.pop(weight, None)  # to the host beside the kept tensor
    if current:
        _QUANTIZED[block] = (_stamp(block), _QUANTIZED[block][1])


def park_bf16(block: torch.nn.Module, keep: tuple[str, ...] = ()) -> bool:
    """Move the bf16 weights of the linears the block's quantized copy replaces (fp8 and int8)
    from the GPU to the CPU, once that copy (``quantized_block``, on the GPU) is made: the
    engines need only the copy, so the GPU holds about half of those weights' bytes instead of
    one and a half. The weights stay the block's Parameters, on the CPU; ``unpark_bf16`` moves
    them back (before the block runs eagerly). The linears named in ``keep`` stay (something
    else reads them eagerly). Nothing moves in FramePack's low-VRAM mode (its weights stay on
    the CPU, or FramePack moves them). True when any moved."""
    if _low_vram(block):
        return False
    quantized_block(block)
    moved = False
    for name, weight in zip(replaced_names(block), _quantized_weights(block), strict=True):
        if weight.device.type == PARK_FROM and name not in keep:
            device = weight.device
            _move_weight(block, name, torch.device("cpu"))
            _PARKED.setdefault(block, {})[name] = device  # one at a time: a failure loses none
            moved = True
    return moved


class Placement(NamedTuple):
    """A replaced linear in FramePack's low-VRAM mode, as ``place_low_vram`` finds it."""

    home_on_gpu: bool  # FramePack put the linear on the GPU (``HOME``)
    bf16_on_gpu: bool  # its bf16 weight is on the GPU
    copy_on_gpu: bool  # its quantized buffers are on the GPU
    keep: bool         # its bf16 weight stays where it is (something reads it eagerly)
    bf16_bytes: int
    copy_bytes: int


def plan_low_vram(linears: Sequence[Placement]) -> tuple[list[int], list[int], list[int]]:
    """Where the quantized copies go in FramePack's low-VRAM mode, by index into ``linears``
    (every replaced linear of the blocks that fp8 engines serve, in the model's order):

    - swap: the linears FramePack put on the GPU (not kept) whose bf16 weight is there or
      whose copy is not: the engines read only the copies, so those go to the GPU and the
      bf16 weights to the CPU (an eager forward finds them there, through FramePack's
      swap-on-access hook; ``unplace`` moves them back first).
    - promote: copies of linears FramePack left on the CPU, which each engine call would
      stream, moved to the GPU: in the model's order, each that still fits in the bytes of
      FramePack's placement of the bf16 weights less what its linears hold once swapped;
    - demote: copies on the GPU of linears FramePack left on the CPU that no longer fit so
      (FramePack moved linears off the GPU since), back to the CPU (before any promotion).

    The same placement planned again changes nothing.

    FramePack sized its placement by its free-memory rule, so the copies never take memory
    it left free."""
    swap = [i for i, p in enumerate(linears)
            if p.home_on_gpu and not p.keep and (p.bf16_on_gpu or not p.copy_on_gpu)]
    swapped = set(swap)
    planned = sum(p.bf16_bytes for p in linears if p.home_on_gpu)
    # What FramePack's linears hold once swapped: their copies, and the kept bf16 weights.
    credit = planned - sum((p.bf16_bytes if p.bf16_on_gpu and i not in swapped else 0)
                           + (p.copy_bytes if p.copy_on_gpu or i in swapped else 0)
                           for i, p in enumerate(linears) if p.home_on_gpu)
    wanted = set()  # the other copies on the GPU: in order, each that still fits
    for i, p in enumerate(linears):
        if not p.home_on_gpu and p.copy_bytes <= credit:
            wanted.add(i)
            credit -= p.copy_bytes
    promote = [i for i in sorted(wanted) if not linears[i].copy_on_gpu]
    demote = [i for i, p in enumerate(linears)
              if not p.home_on_gpu and p.copy_on_gpu and i not in wanted]
    return swap, promote, demote


def _move_attached(linear: torch.nn.Module, device: torch.device) -> None:
    for buffer in ATTACHED.values():
        linear._buffers[buffer] = linear._buffers[buffer].to(device)


def _same(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def _placements(block: torch.nn.Module, index: int, device: torch.device,
                keep: tuple[tuple[int, str], ...]) -> list[tuple[str, Placement]]:
    out = []
    for name in replaced_names(block):
        linear = block.get_submodule(name)
        weight = linear._parameters["weight"]
        copy = [linear._buffers[b] for b in ATTACHED.values()]
        out.append((name, Placement(
            _same(linear._buffers[HOME].device, device), _same(weight.device, device),
            _same(copy[0].device, device), (index, name) in keep,
            weight.nbytes, sum(t.nbytes for t in copy))))
    return out


def place_low_vram(blocks: Sequence[torch.nn.Module], device,
                   keep: tuple[tuple[int, str], ...] = ()) -> tuple[int, int, int]:
    """Before an engine call of the blocks in FramePack's low-VRAM mode (the others are left
    alone), on ``device`` (the GPU), by ``plan_low_vram``: block by block, its quantized copy
    made (once; again after its weights changed) and its linears swapped at once (so the GPU
    never holds more than one block's new copy beside FramePack's bf16 weights); then the
    promotions or demotions over all the blocks. The linears in ``keep`` (index into
    ``blocks``, name: something reads them eagerly) keep their bf16 weight where it is.
    Returns the numbers of linears swapped, promoted and demoted."""
    device, cpu = torch.device(device), torch.device("cpu")
    swapped, found = 0, []
    for index, block in enumerate(blocks):
        if not _low_vram(block):
            continue
        quantized_block(block)
        placements = _placements(block, index, device, keep)
        swap, _, _ = plan_low_vram([p for _, p in placements])
        for i in swap:
            name, p = placements[i]
            if p.bf16_on_gpu:
                _move_weight(block, name, cpu)  # first: its memory serves the copy
            _move_attached(block.get_submodule(name), device)
            placements[i] = (name, p._replace(bf16_on_gpu=False, copy_on_gpu=True))
        swapped += len(swap)
        found += [(block, name, p) for name, p in placements]
    _, promote, demote = plan_low_vram([p for _, _, p in found])
    for i in demote:  # first: their memory serves the promoted ones
        _move_attached(found[i][0].get_submodule(found[i][1]), cpu)
    for i in promote:
        _move_attached(found[i][0].get_submodule(found[i][1]), device)
    return swapped, len(promote), len(demote)


def unplace(block: torch.nn.Module) -> bool:
    """Undo ``place_low_vram`` for one block (before it runs otherwise than through an fp8
    engine: eagerly, or through a bf16 engine): its copies to the CPU, then each bf16 weight
    back where FramePack put its linear. True when anything moved."""
    moved = False
    cpu = torch.device("cpu")
    for name in replaced_names(block):
        linear = block.get_submodule(name)
        if HOME not in linear._buffers:
            continue
        if linear._buffers[ATTACHED["weight"]].device != cpu:
            _move_attached(linear, cpu)  # first: the GPU holds no more than before
            moved = True
        home = linear._buffers[HOME].device
        if linear._parameters["weight"].device != home:
            _move_weight(block, name, home)
            moved = True
    return moved


def is_parked(block: torch.nn.Module) -> bool:
    """Whether ``park_bf16`` moved weights of ``block`` that are not back yet."""
    return bool(_PARKED.get(block))


def unpark_bf16(block: torch.nn.Module) -> bool:
    """Move the weights ``park_bf16`` moved back to where their linear is now (its bias's
    device: FramePack may have moved the block meanwhile), else where they were; True when
    any were parked."""
    away = _PARKED.get(block)
    if not away:
        return False
    for name in list(away):
        linear = block.get_submodule(name)
        bias = linear._parameters.get("bias")
        device = bias.device if bias is not None else away[name]
        if linear._parameters["weight"].device != device:
            _move_weight(block, name, device)
        del away[name]  # one at a time: a failure (out of memory) leaves the rest recorded
    _PARKED.pop(block, None)
    return True


def release(block: torch.nn.Module) -> None:
    """Undo what the runtime did to ``block``: its quantized copy dropped (on the GPU in
    high-VRAM mode: half its linears' bytes; in low-VRAM mode the buffers its linears hold),
    then its parked weights back (``unpark_bf16``)."""
    _QUANTIZED.pop(block, None)
    _detach(block)
    unpark_bf16(block)

