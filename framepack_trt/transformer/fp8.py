"""fp8 (e4m3) linear layers for the transformer's block engines (docs/fp8.md).

The scheme is torchao's float8 dynamic-activation / float8-weight inference with per-row
granularity (``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())``), written with
plain tensors: a weight (N, K) becomes an e4m3 tensor and one float32 scale per output row
(amax / 448), an activation is quantized per row at every call the same way, and
``torch._scaled_mm`` multiplies them into the activation's dtype. torchao's own config is not
used because it wraps the weights in a tensor subclass, and an engine's inputs (the block
engines take their weights as inputs) must be plain tensors: ``torch.export`` and AOTInductor
unwrap subclass parameters, not subclass inputs.

Which layers: every ``nn.Linear`` of a block except the adaptive norms' modulation linears
(``norm1.linear``, ``norm1_context.linear``, ``norm.linear``), whose outputs scale and shift
every token: at real width, 12 per dual-stream block and 5 per single-stream block. The
modulation linears keep a bf16 matmul (their input is one row of ``temb`` per sample), with
their weights stored in int8, one float32 scale per 32 input channels (``Int8Linear``):
weight-only, dequantized in the engine before the matmul. Measured on blocks with outlier
channels in the other linears, that moves a block's output no more than bf16 modulation
weights do, where fp8 ones would; outlier channels in the modulation linears' own inputs
cost int8 and fp8 alike (docs/fp8.md). It brings the blocks' weights from 64 % of bf16 to
about 52 %.

This module is the maths and the quantized block; where the quantized copies live while
FramePack runs is ``fp8_placement``.
"""

from __future__ import annotations

import copy

import torch

from framepack_trt.transformer.pieces import weights_as_inputs

#: The largest finite e4m3 value.
E4M3_MAX = 448.0
#: Smallest amax a scale is computed from (an all-zero row would divide by zero).
AMAX_EPS = 1e-12
#: Input channels per float32 scale of the modulation linears' int8 weights.
MODULATION_GROUP = 32
#: Compute capability from which CUDA cards multiply fp8 natively (Ada, Hopper, Blackwell).
MIN_CAPABILITY = (8, 9)


def fp8_unsupported_reason(device: str) -> str | None:
    """Why fp8 engines cannot be built or run on ``device`` ("cpu", "cuda", "cuda:1"), or None."""
    if not device.startswith("cuda"):
        return (f"quantize: fp8 needs a CUDA card of compute capability "
                f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or later (RTX 40xx, RTX 50xx, L4, "
                f"H100/H200); the device is {device!r}")
    if not torch.cuda.is_available():
        return "quantize: fp8 needs CUDA, and this torch has no CUDA device"
    index = torch.device(device).index or 0
    capability = torch.cuda.get_device_capability(index)
    if capability < MIN_CAPABILITY:
        return (f"quantize: fp8 needs compute capability {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} "
                f"or later (RTX 40xx, RTX 50xx, L4, H100/H200); "
                f"{torch.cuda.get_device_name(index)} is {capability[0]}.{capability[1]}")
    return None


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / scale as e4m3, scale): one float32 scale per row of the 2-D ``x``, amax / 448, so
    every row uses the whole e4m3 range; values saturate at +-448 (casts may not)."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=AMAX_EPS)
    scale = amax / E4M3_MAX
    q = (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


#: Values of a weight quantized at once (``quantize_weight``: whole rows): a float32 working
#: copy of 4 MB stays in the CPU's cache (FramePack's low-VRAM mode quantizes on the CPU: 6x-7x
#: faster than the whole weight at once, measured with scripts/bench/fp8_sizes.py --time).
CHUNK_VALUES = 2**20


#: On a GPU (FramePack's high-VRAM mode), where a chunk's kernels cost their launches: up to
#: 64M values (the largest block weight in one chunk, 256 MB in float32).
CHUNK_VALUES_GPU = 2**26


def _chunk_rows(w: torch.Tensor) -> int:
    values = CHUNK_VALUES if w.device.type == "cpu" else CHUNK_VALUES_GPU
    return max(1, values // w.shape[1])


def quantize_weight(w: torch.Tensor, group: int, dtype: torch.dtype
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight (N, K) in ``dtype`` (e4m3: amax / 448; int8: amax / 127, rounded), one float32
    scale per ``group`` input channels of each row: (weight (N, K), scales (N, K / group)).
    A few rows at a time (``_chunk_rows``), in place on one float32 copy of each chunk; for
    e4m3 over whole rows, the same values as ``quantize_rows(w)`` without three float32 copies
    of the whole weight."""
    n, k = w.shape
    top = E4M3_MAX if dtype == torch.float8_e4m3fn else 127
    q = torch.empty((n, k), dtype=dtype, device=w.device)
    scale = torch.empty((n, k // group), dtype=torch.float32, device=w.device)
    rows = _chunk_rows(w)
    for i in range(0, n, rows):
        chunk = w[i:i + rows].reshape(-1, k // group, group).float()
        s = chunk.abs().amax(dim=-1).clamp_(min=AMAX_EPS).div_(top)
        chunk.div_(s.unsqueeze(-1))
        if dtype == torch.int8:
            chunk.round_()  # a cast to int8 truncates; to e4m3 it rounds itself
        q[i:i + rows] = chunk.clamp_(-top, top).reshape(-1, k)
        scale[i:i + rows] = s
    return q, scale


def quantize_weight_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_rows(w)`` for a weight: e4m3, one scale per row (``quantize_weight``)."""
    return quantize_weight(w, w.shape[1], torch.float8_e4m3fn)


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, W, bias)`` with W = ``weight`` (N, K, e4m3) x ``weight_scale`` (N, 1):
    ``x`` quantized per row, one ``torch._scaled_mm`` with the bias, in ``x``'s dtype."""
    lead, k = x.shape[:-1], x.shape[-1]
    xq, x_scale = quantize_rows(x.reshape(-1, k))
    y = torch._scaled_mm(xq, weight.t(), scale_a=x_scale, scale_b=weight_scale.t(),
                         bias=None if bias is None else bias.to(x.dtype), out_dtype=x.dtype,
                         use_fast_accum=x.is_cuda)
    return y.reshape(*lead, y.shape[-1])


class Fp8Linear(torch.nn.Module):
    """An ``nn.Linear`` with its weight in e4m3 and one scale per output row: buffers
    ``weight`` (N, K) and ``weight_scale`` (N, 1, float32), and the linear's own ``bias``."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # The stored tensors, where the model keeps them: read past a swap-on-access hook
        # (FramePack's low-VRAM DynamicSwapInstaller), which would hand over a GPU copy.
        weight, scale = quantize_weight_rows(linear._parameters["weight"].detach())
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", scale)
        self.bias = linear._parameters["bias"]

    def forward(self, x):
        return fp8_linear(x, self.weight, self.weight_scale, self.bias)


class Int8Linear(torch.nn.Module):
    """An ``nn.Linear`` (a modulation linear) with its weight in int8, one float32 scale per
    ``group`` input channels (amax / 127; per row where the input width is not a multiple of
    ``group``): buffers ``weight`` (N, K) and ``weight_scale`` (N, K / group), and the
    linear's own ``bias``. The weight is dequantized to the input's dtype for the matmul."""

    def __init__(self, linear: torch.nn.Linear, group: int = MODULATION_GROUP):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear._parameters["weight"].detach()  # the stored tensor (see Fp8Linear)
        k = w.shape[1]
        q, scale = quantize_weight(w, group if k % group == 0 else k, torch.int8)
        self.register_buffer("weight", q)
        self.register_buffer("weight_scale", scale)
        self.bias = linear._parameters["bias"]

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        n, k = self.weight.shape
        groups = self.weight_scale.shape[1]
        w = self.weight.reshape(n, groups, k // groups).float() * self.weight_scale.unsqueeze(-1)
        return w.reshape(n, k).to(dtype)

    def forward(self, x):
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, self.dequantized(x.dtype), bias)


def is_modulation(name: str) -> bool:
    """The adaptive norms' linears (``norm1.linear``, ``norm1_context.linear``, ``norm.linear``)."""
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1] == "linear" and parts[-2].startswith("norm")


def quantized_names(block: torch.nn.Module) -> list[str]:
    """The block's linears that run in fp8, by dotted name."""
    return [n for n, m in block.named_modules()
            if isinstance(m, torch.nn.Linear) and not is_modulation(n)]


def modulation_names(block: torch.nn.Module) -> list[str]:
    """The block's modulation linears, by dotted name (their weights go to int8)."""
    return [n for n, m in block.named_modules()
            if isinstance(m, torch.nn.Linear) and is_modulation(n)]


def replaced_names(block: torch.nn.Module) -> list[str]:
    """Every linear whose weight the quantized copy replaces: the fp8 ones, then the
    modulation linears (int8)."""
    return quantized_names(block) + modulation_names(block)


def quantize_block(block: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``block`` whose linears are ``Fp8Linear``s (``quantized_names``) and
    ``Int8Linear``s (``modulation_names``) made from its weights; the block itself is
    unchanged. The copy shares every other parameter."""
    fp8_names, names = quantized_names(block), replaced_names(block)
    memo = {id(p): p for n, p in block.named_parameters()
            if n.rsplit(".", 1)[0] not in names or n.endswith(".bias")}
    for name in names:  # the linears' weights are replaced: not copied (the stored tensors,
        linear = block.get_submodule(name)  # past any hook), nor an earlier copy they hold
        for t in (linear._parameters["weight"], *linear._buffers.values()):
            memo[id(t)] = None
    out = copy.deepcopy(block, memo)
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = out.get_submodule(parent) if parent else out
        kind = Fp8Linear if name in fp8_names else Int8Linear
        setattr(owner, child, kind(block.get_submodule(name)))
    return out


def tensor_names(module: torch.nn.Module) -> list[str]:
    """Every parameter, then every buffer of ``module`` (a quantized block: its fp8 weights and
    scales are buffers), by dotted name: the order of an fp8 block engine's weight inputs."""
    return ([n for n, _ in module.named_parameters()]
            + [n for n, _ in module.named_buffers()])


def is_quantized_tensor(block: torch.nn.Module, name: str) -> bool:
    """Whether ``name`` (of a quantized block) is a quantized linear's weight or scale (fp8
    or int8: passed to the engine as they are)."""
    owner, _, leaf = name.rpartition(".")
    return leaf in ("weight", "weight_scale") and isinstance(block.get_submodule(owner),
                                                             (Fp8Linear, Int8Linear))


def export_module(block: torch.nn.Module, piece: str) -> torch.nn.Module:
    """A quantized block as its engine's module: its activations, then its tensors in
    ``tensor_names`` order (as the bf16 block engines take theirs: ``pieces.weights_as_inputs``)."""
    return weights_as_inputs(block, tensor_names(block), piece)
