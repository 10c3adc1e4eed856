"""``torch.export`` of a component with the profile's named dims.

One ``torch.export.Dim`` per name, shared by every input where the name appears; a dim whose
min equals its max is static. Tracing uses sizes that are neither 0/1 nor shared between
dims (see ``shapes.trace_sizes``), so export generalises over the whole range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from framepack_trt.components.base import Component, InputSpec, entry_size
from framepack_trt.errors import BuildError
from framepack_trt.shapes import Dims, trace_sizes

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[name]


def input_dtype(spec: InputSpec, model_dtype: torch.dtype) -> torch.dtype:
    return model_dtype if spec.dtype == "model" else getattr(torch, spec.dtype)


def concrete_shape(spec: InputSpec, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(entry_size(e, sizes) for e in spec.shape)


def _dim_name(entry) -> str | None:
    return entry if isinstance(entry, str) else entry[0] if isinstance(entry, tuple) else None


def torch_dims(dims: Dims) -> dict[str, Any]:
    """One export Dim per dynamic name (static dims map to their size)."""
    return {name: (r.min if r.static else torch.export.Dim(name, min=r.min, max=r.max))
            for name, r in dims.items()}


def dynamic_shapes(specs: Sequence[InputSpec], dims: Dims) -> tuple[dict[int, Any], ...]:
    tdims = torch_dims(dims)
    out = []
    for spec in specs:
        names = [_dim_name(e) for e in spec.shape]
        unknown = [n for n in names if n is not None and n not in dims]
        if unknown:
            raise BuildError(f"input {spec.name} uses undeclared dims {unknown}")
        shape: dict[int, Any] = {}
        for i, (entry, name) in enumerate(zip(spec.shape, names, strict=True)):
            if name is None or dims[name].static:
                continue
            shape[i] = tdims[name] if isinstance(entry, str) else entry[1] * tdims[name]
        out.append(shape)
    return tuple(out)


@dataclass
class Exported:
    program: torch.export.ExportedProgram
    inputs: tuple[torch.Tensor, ...]
    sizes: dict[str, int]


def export_component(
    component: Component, model: torch.nn.Module, dims: Dims, dtype: torch.dtype, device: str,
    seed: int = 0,
) -> Exported:
    config = model.config
    specs = component.engine_specs(model)
    avoid = {e for s in specs for e in s.shape if isinstance(e, int)}
    multiple = component.bucket_multiple // component.pixels_per_unit
    sizes = trace_sizes(dims, avoid, {n: multiple for n in component.bucket_dims or ()})
    gen = torch.Generator().manual_seed(seed)
    inputs = component.engine_inputs(model, component.make_inputs(config, sizes, dtype, device, gen),
                                     dtype, device)
    module = component.export_module(model).eval()
    shapes = dynamic_shapes(specs, {**dims, **component.derived_dims(dims)})
    try:
        try:
            with torch.no_grad():
                program = torch.export.export(module, inputs, dynamic_shapes=shapes, strict=False)
        except Exception as first:
            if device != "cuda" or "Constraints violated" not in str(first):
                raise
            # The CUDA SDPA kernels' shape checks can add guards that export cannot prove over
            # a whole range (seen with torch 2.11); the math kernel has none.
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
                program = torch.export.export(module, inputs, dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # torch raises many types here; report them as one build failure
        raise BuildError(f"torch.export failed for {component.name} with dims "
                         f"{ {k: str(v) for k, v in dims.items()} }: {type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    return Exported(program, inputs, sizes)
