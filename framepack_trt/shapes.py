"""Named dimensions: a min / opt / max range per name, shared wherever the name appears.

Pure Python (no torch), so profiles can be validated and cache keys computed without it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: FramePack's resolution-640 buckets, (height, width) in pixels; latent = pixel / 8.
FRAMEPACK_640_BUCKETS: tuple[tuple[int, int], ...] = (
    (416, 960), (448, 864), (480, 832), (512, 768), (544, 704), (576, 672), (608, 640),
    (640, 608), (672, 576), (704, 544), (768, 512), (832, 480), (864, 448), (960, 416),
)


@dataclass(frozen=True)
class DimRange:
    """One dynamic (or static, when min == max) dimension of an engine."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not (1 <= self.min <= self.opt <= self.max):
            raise ValueError(f"need 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")

    @property
    def static(self) -> bool:
        return self.min == self.max

    def covers(self, size: int) -> bool:
        return self.min <= size <= self.max

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    def __str__(self) -> str:
        return str(self.min) if self.static else f"{self.min}..{self.opt}..{self.max}"


Dims = dict[str, DimRange]


def dims_from_dict(raw: dict[str, dict[str, int]]) -> Dims:
    """Dims from their ``to_dict`` form (as the manifest keeps them)."""
    return {name: DimRange(**r) for name, r in raw.items()}


def format_dims(dims: Dims) -> str:
    return ", ".join(f"{name}={rng}" for name, rng in dims.items())


def sizes_at(dims: Dims, which: str) -> dict[str, int]:
    """Concrete sizes at ``min``, ``opt`` or ``max`` of every dim."""
    return {name: getattr(rng, which) for name, rng in dims.items()}


def random_sizes(dims: Dims, rng: random.Random) -> dict[str, int]:
    """A random in-range size for every dim."""
    return {name: rng.randint(r.min, r.max) for name, r in dims.items()}


def trace_sizes(dims: Dims, avoid: set[int] = frozenset(),
                multiples: dict[str, int] | None = None) -> dict[str, int]:
    """Sizes to trace ``torch.export`` with.

    Dynamic dims need an example size that is not 0 or 1 (export specialises those) and that
    no other dim (or static size in ``avoid``) shares, or export would assume they are equal.
    Sizes start at opt and move outwards within the range, keeping to ``multiples[name]`` (the
    transformer's latent sizes are even: a square bucket's equal height and width must not
    push one of them to an odd size).
    """
    used = set(avoid)
    out: dict[str, int] = {}
    for name, r in dims.items():
        if r.static:
            out[name] = r.min
            continue
        candidates = [r.opt] + [v for d in range(1, r.max - r.min + 1) for v in (r.opt + d, r.opt - d)]
        step = (multiples or {}).get(name, 1)  # e.g. even latent sizes for a 2x2 patch
        ok = [v for v in candidates if r.min <= v <= r.max and v >= 2 and v % step == 0] or \
            [v for v in candidates if r.min <= v <= r.max and v >= 2]
        pick = next((v for v in ok if v not in used), ok[0])
        out[name] = pick
        used.add(pick)
    return out
