"""The transformer's block engines with their linear layers in fp8 (a profile's
``quantize: fp8``; ``framepack_trt.transformer.fp8``, docs/fp8.md): ``transformer_dual_block_fp8`` and
``transformer_single_block_fp8``. The same pieces as ``transformer_dual_block`` and
``transformer_single_block`` (their dims, inputs and eager reference: the bf16 block), whose
weight inputs are the block's fp8 weights with their per-row scales and its other parameters.
They are checked against the eager bf16 block with fp8's own tolerance.
"""

from __future__ import annotations

from typing import ClassVar

from framepack_trt.components.base import InputSpec, Tolerance, register
from framepack_trt.components.transformer_blocks import _Block
from framepack_trt.transformer.names import FP8_COMPONENTS


class _Fp8Block(_Block):
    quantize: ClassVar[str] = "fp8"
    #: max_abs_std: up to 0.37 measured on real-width blocks with outlier channels
    #: (scripts/bench/fp8_quality.py, docs/fp8.md); a wrong region is off by several.
    tolerances = {"bfloat16": Tolerance(rel_l2=2e-2, cosine=0.999, max_abs_std=1.0)}
    code_modules = (*_Block.code_modules, "framepack_trt.transformer.fp8")

    def unsupported_reason(self, device):
        from framepack_trt.transformer.fp8 import fp8_unsupported_reason

        return fp8_unsupported_reason(device)

    def quantized(self, model, index):
        """The quantized copy of block ``index`` (made once while its weights stay the same)."""
        from framepack_trt.transformer.fp8_placement import quantized_block
        from framepack_trt.transformer.pieces import piece_module

        return quantized_block(piece_module(model, self.piece, index))

    def weight_specs(self, model):
        from framepack_trt.transformer.fp8 import tensor_names

        block = self.quantized(model, 0)
        tensors = {**dict(block.named_parameters()), **dict(block.named_buffers())}
        return [InputSpec(f"weight.{n}", tuple(tensors[n].shape),
                          str(tensors[n].dtype).removeprefix("torch."))
                for n in tensor_names(block)]

    def weights(self, model, index, dtype, device, names=None):
        """The quantized block's tensors by name: the fp8 linears' weights and scales as they
        are (``fp8_placement.read_quantized``: in FramePack's low-VRAM mode, the buffers of the block's
        own linears), every other parameter in ``dtype`` (as the bf16 block engines take
        them)."""
        from framepack_trt.transformer.fp8 import is_quantized_tensor, tensor_names
        from framepack_trt.transformer.fp8_placement import read_quantized
        from framepack_trt.transformer.pieces import piece_module, read_weights

        original = piece_module(model, self.piece, index)
        block = self.quantized(model, index)
        names = names if names is not None else tensor_names(block)
        return tuple(read_quantized(original, n).to(device=device, non_blocking=True)
                     if is_quantized_tensor(block, n) else
                     read_weights(block, [n])[0].to(device=device, dtype=dtype, non_blocking=True)
                     for n in names)

    def export_module(self, model):
        from framepack_trt.transformer.fp8 import export_module

        return export_module(self.quantized(model, 0), self.piece)


@register
class TransformerDualBlockFp8(_Fp8Block):
    piece = "dual_block"
    name = FP8_COMPONENTS[piece]
    description = ("FramePack transformer, one dual-stream block with fp8 linears (quantize: "
                   "fp8), weights as inputs: tokens, context -> tokens, context")


@register
class TransformerSingleBlockFp8(_Fp8Block):
    piece = "single_block"
    name = FP8_COMPONENTS[piece]
    description = ("FramePack transformer, one single-stream block with fp8 linears (quantize: "
                   "fp8), weights as inputs: tokens, context -> tokens, context")
