"""The transformer's pieces and their components, named once.

A profile's transformer entry with ``engines: blocks`` becomes one engine per piece
(``pieces``); ``quantize: fp8`` gives the block pieces components of their own. The component
adapters take their names from here, the profile expands an entry by it, the runtime sorts the
cache's engines into pieces by it, and the cache selects the pieces by their whole's name
(``-c transformer``). No imports: anything may read it.
"""

from __future__ import annotations

#: The whole-model component: its entry expands into the pieces.
WHOLE = "transformer"
#: The pieces, in the order a call runs them.
PIECES = ("input", "dual_block", "single_block", "output")
#: The pieces that run one block (one engine serves every block of its kind); the ones
#: ``quantize`` changes.
BLOCK_PIECES = ("dual_block", "single_block")
#: ``quantize:`` values, each with the block pieces' components it gives.
QUANTIZE = ("fp8",)

#: Each piece's component.
COMPONENTS = {piece: f"{WHOLE}_{piece}" for piece in PIECES}
#: The block pieces' components with fp8 linears (``quantize: fp8``), by piece.
FP8_COMPONENTS = {piece: f"{WHOLE}_{piece}_fp8" for piece in BLOCK_PIECES}
#: Every component that is a piece of the whole.
PIECE_COMPONENTS = (*COMPONENTS.values(), *FP8_COMPONENTS.values())
#: Components that are pieces of another: naming the whole (``-c transformer``) selects them.
PIECES_OF = {WHOLE: PIECE_COMPONENTS}


def piece_component(piece: str, quantize: str | None = None) -> str:
    """The component of ``piece``, with ``quantize`` (``fp8``) where it changes the piece."""
    if quantize == "fp8" and piece in FP8_COMPONENTS:
        return FP8_COMPONENTS[piece]
    return COMPONENTS[piece]


def piece_of(component_name: str) -> str | None:
    """The piece a component runs, or None for a component that is not a piece."""
    return next((piece for table in (COMPONENTS, FP8_COMPONENTS)
                 for piece, name in table.items() if name == component_name), None)
