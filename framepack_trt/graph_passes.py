"""Rewrites of an exported graph that keep its function and avoid a backend's converter gaps.

``positive_slice_bounds``: torch_tensorrt's slice converter (2.11, standard and RTX) handles a
negative *constant* bound but takes a *symbolic* bound as it is: ``x[:, :-t]`` with a dynamic
``t`` becomes a TensorRT slice of length ``-t``, which the builder rejects ("ISliceLayer size
elements must be non-negative"), and ``x[:, -t:]`` a slice at a negative start. diffusers'
HunyuanVideo blocks split image from text tokens exactly so
(``hidden_states[:, :-text_seq_length]``). The pass rewrites each slice bound that is provably
negative over the whole dynamic range as ``size + bound``, which is what the bound means.
"""

from __future__ import annotations

import operator

import torch


def _known_negative(value) -> bool:
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    return isinstance(value, torch.SymInt) and bool(statically_known_true(value < 0))


def positive_slice_bounds(program: torch.export.ExportedProgram) -> int:
    """Rewrite, in place, slice bounds that are negative symbolic ints; returns how many."""
    graph = program.graph
    rewritten = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.slice.Tensor:
            continue
        args = list(node.args)
        kwargs = dict(node.kwargs)
        source = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        for pos, name in ((2, "start"), (3, "end")):
            bound = args[pos] if len(args) > pos else kwargs.get(name)
            if not (isinstance(bound, torch.fx.Node) and _known_negative(bound.meta.get("val"))):
                continue
            with graph.inserting_before(node):
                size = graph.call_function(torch.ops.aten.sym_size.int, (source, dim))
                size.meta["val"] = source.meta["val"].shape[dim]
                positive = graph.call_function(operator.add, (size, bound))
                positive.meta["val"] = size.meta["val"] + bound.meta["val"]
            if len(args) > pos:
                args[pos] = positive
            else:
                kwargs[name] = positive
            rewritten += 1
        node.args, node.kwargs = tuple(args), kwargs
    if rewritten:
        graph.lint()
        program.graph_module.recompile()
    return rewritten
