"""How a profile entry becomes several engines: ``static: true`` (one static-size engine per
bucket and per value of each other ranged dim) and ``static: tiles`` (one per tile shape of
low-VRAM mode at the buckets). ``Component.expand`` runs it; the transformer's ``engines:
blocks`` is its own (``components.transformer``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

from framepack_trt.shapes import DimRange

#: The most engines one ``static: true`` entry may expand into.
MAX_STATIC = 32


def static_specs(comp: Any, entry: Any, problems: Any) -> list:
    """``static: true``: the entry (a ``profile.ProfileEntry``) as one static-size spec per
    bucket (its height and width) and per value of each other dim with a range, named
    ``<name>_<H>x<W>_<dim><value>``. ``static: tiles``: one per distinct tile shape of the
    buckets' low-VRAM tiling instead, named ``<name>_<h>x<w>_<dim><value>`` (h and w in latent
    units). What cannot be expanded goes to ``problems`` (``.add(field, message)``)."""
    spec, where, tiles = entry.spec, entry.where, entry.static == "tiles"
    add = problems.add
    bucket_dims = tuple(comp.bucket_dims or ())
    if tiles and not comp.tile_latents:
        add(f"{where}.static", f"component {spec.component!r} is not cut into tiles; static: "
            "tiles is for vae_decode and vae_encode (true: one engine per bucket)")
        return []
    if tiles and not spec.buckets:
        add(f"{where}.static", "static: tiles needs buckets: the tiles of which buckets' "
            "latents (for example buckets: [[544, 704]])")
        return []
    if spec.buckets:
        given = [n for n in bucket_dims if n in entry.given_dims]
        if given:
            add(f"{where}.dims.{given[0]}", "set by buckets under static: tiles (one engine "
                "per tile shape of the buckets); leave it out, or list the buckets you want"
                if tiles else "set by buckets under static: true (one engine per bucket); "
                "leave it out, or list the buckets you want")
            return []
        twice = sorted({b for b in spec.buckets if spec.buckets.count(b) > 1})
        if twice:
            add(f"{where}.buckets", f"{list(twice[0])} is listed twice")
            return []
    else:
        loose = [n for n in bucket_dims if spec.dims[n].min != spec.dims[n].max]
        if loose:
            add(f"{where}.static", f"{', '.join(loose)} are ranges: give buckets (one engine "
                "per bucket) or fixed sizes under static: true")
            return []
    per_bucket = ([((h, w), comp.dims_for_buckets([(h, w)])) for h, w in spec.buckets]
                  or [(None, {})])
    if tiles:  # the tile shapes of every bucket, each once, largest first
        unit, (h_dim, w_dim) = comp.pixels_per_unit, bucket_dims
        shapes = sorted({s for h, w in spec.buckets for s in comp.tiles(h // unit, w // unit)},
                        reverse=True)
        per_bucket = [(s, {h_dim: DimRange(s[0], s[0], s[0]), w_dim: DimRange(s[1], s[1], s[1])})
                      for s in shapes]
    ranged = [n for n, r in spec.dims.items()
              if not (spec.buckets and n in bucket_dims) and r.min != r.max]
    count = len(per_bucket) * math.prod(spec.dims[n].max - spec.dims[n].min + 1 for n in ranged)
    if count > MAX_STATIC:
        over = ([f"{len(per_bucket)} {'tile shapes' if tiles else 'buckets'}"]
                if spec.buckets else []) + [
            f"{n} {spec.dims[n].min}..{spec.dims[n].max}" for n in ranged]
        add(f"{where}.static", f"it would build {count} engines (one per value of "
            f"{' x '.join(over)}); at most {MAX_STATIC}: fix some dims"
            + (" or list fewer buckets" if spec.buckets else ""))
        return []
    choices = [[(n, v) for v in range(spec.dims[n].min, spec.dims[n].max + 1)] for n in ranged]
    out = []
    for bucket, bdims in per_bucket:
        for values in itertools.product(*choices):
            dims = {**spec.dims, **bdims, **{n: DimRange(v, v, v) for n, v in values}}
            parts = ([f"{bucket[0]}x{bucket[1]}"] if bucket else []) + [f"{n}{v}" for n, v in values]
            out.append(replace(spec, name="_".join([spec.name, *parts]), dims=dims,
                               buckets=(bucket,) if bucket and not tiles else ()))
    return out
