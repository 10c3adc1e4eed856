"""The pass criteria: the averages (rel L2, cosine) cannot see a small wrong region of a large
output; max_abs_std (largest difference in standard deviations of the eager output) does, and
rounding-sized errors still pass."""

from __future__ import annotations

import torch

from framepack_trt.compare import compare
from framepack_trt.components.base import get_component


def transformer_like(seed: int) -> torch.Tensor:
    """A random output of the transformer's shape at the 120x120 latent bucket edge."""
    return torch.randn(1, 16, 9, 120, 120, generator=torch.Generator().manual_seed(seed))


def test_a_zeroed_patch_of_one_frame_fails_though_the_averages_pass():
    tol = get_component("transformer").tolerance("bfloat16")
    eager = transformer_like(0)
    gen = torch.Generator().manual_seed(1)
    engine = eager + 5e-3 * torch.randn(eager.shape, generator=gen)  # bf16-sized noise
    good = compare("sample", engine, eager, tol)
    assert good.passed, good.reason
    assert good.max_abs_std < 0.1

    broken = engine.clone()
    broken[0, :, 4, 60:63, 60:63] = 0.0  # one frame, a 3x3 latent patch
    bad = compare("sample", broken, eager, tol)
    assert bad.rel_l2 <= tol.rel_l2 and bad.cosine >= tol.cosine  # the averages miss it
    assert not bad.passed and "standard deviations" in bad.reason
    assert bad.max_abs_std > tol.max_abs_std
