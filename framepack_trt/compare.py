"""Engine output vs eager output: max abs error (also in units of the eager output's standard
deviation), relative L2, cosine, NaN/Inf."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from framepack_trt.components.base import Tolerance


@dataclass
class OutputCheck:
    output: str
    shape: tuple[int, ...]
    max_abs: float
    max_abs_std: float
    rel_l2: float
    cosine: float
    finite: bool
    passed: bool
    reason: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def compare(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: Tolerance) -> OutputCheck:
    if tuple(actual.shape) != tuple(expected.shape):
        return OutputCheck(name, tuple(actual.shape), math.inf, math.inf, math.inf, -1.0, True, False,
                           f"shape {tuple(actual.shape)} != eager {tuple(expected.shape)}")
    a = actual.detach().to("cpu", torch.float64).flatten()
    e = expected.detach().to("cpu", torch.float64).flatten()
    finite = bool(torch.isfinite(a).all())
    eager_finite = bool(torch.isfinite(e).all())
    diff = a - e
    max_abs = float(diff.abs().max()) if diff.numel() else 0.0
    std = float(e.std()) if e.numel() > 1 else 0.0
    max_abs_std = max_abs / std if std > 0 else max_abs
    e_norm = float(e.norm())
    rel = float(diff.norm()) / e_norm if e_norm > 0 else float(diff.norm())
    denom = float(a.norm()) * e_norm
    cos = float(a @ e) / denom if denom > 0 else (1.0 if float(a.norm()) == e_norm else 0.0)
    reasons = []
    if not eager_finite:
        reasons.append("eager output has NaN/Inf")
    if not finite:
        reasons.append("engine output has NaN/Inf")
    if not rel <= tol.rel_l2:
        reasons.append(f"rel_l2 {rel:.3g} > {tol.rel_l2:g}")
    if not cos >= tol.cosine:
        reasons.append(f"cosine {cos:.6f} < {tol.cosine:g}")
    if tol.max_abs is not None and not max_abs <= tol.max_abs:
        reasons.append(f"max_abs {max_abs:.3g} > {tol.max_abs:g}")
    if tol.max_abs_std is not None and not max_abs_std <= tol.max_abs_std:
        reasons.append(f"max_abs {max_abs:.3g} is {max_abs_std:.3g} standard deviations of the "
                       f"eager output > {tol.max_abs_std:g} (a wrong region)")
    return OutputCheck(name, tuple(actual.shape), max_abs, max_abs_std, rel, cos, finite, not reasons,
                       "; ".join(reasons))
