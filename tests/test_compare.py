"""The pass criteria: the averages (rel L2, cosine) cannot see a small wrong region of a large
output; max_abs_std (largest difference in standard deviations of the eager output) does, and
rounding-sized errors still pass."""

from __future__ import annotations

from dataclasses import replace

import pytest
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


def test_fp32_reference_passes_an_engine_as_close_as_eager_and_no_closer_than_the_factor():
    from framepack_trt.compare import compare_to_fp32

    tol = replace(get_component("llama_text").tolerance("float16"), reference="fp32")
    gen = torch.Generator().manual_seed(3)
    truth = torch.randn(2, 48, 64, generator=gen)
    eager = truth + 2e-2 * torch.randn(truth.shape, generator=gen)  # eager fp16's own error
    near = truth + 3e-2 * torch.randn(truth.shape, generator=gen)   # 1.5x eager's
    far = truth + 6e-2 * torch.randn(truth.shape, generator=gen)    # 3x eager's

    # Against eager alone, the near engine is refused (rel L2 about 3.6e-2 > 1e-2) ...
    assert not compare("h", near, eager, tol).passed
    # ... against float32 it is within 2x of eager's own error and passes; the far one is not.
    ok = compare_to_fp32("h", near, eager, truth, tol)
    assert ok.passed and ok.reference == "fp32", ok.reason
    assert ok.eager_rel_l2 == pytest.approx(2e-2, rel=0.05) and ok.rel_l2 == pytest.approx(3e-2, rel=0.05)
    bad = compare_to_fp32("h", far, eager, truth, tol)
    assert not bad.passed and "x eager's own" in bad.reason
    nan = far.clone()
    nan[0, 0, 0] = float("nan")
    assert "NaN" in compare_to_fp32("h", nan, eager, truth, tol).reason
