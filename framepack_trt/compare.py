"""Engine output vs eager output: max abs error (also in units of the eager output's standard
deviation), relative L2, cosine, NaN/Inf."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

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
    #: "eager", or "fp32": the numbers above are the engine's against float32, and these are
    #: eager's own in the engine's dtype against float32.
    reference: str = "eager"
    eager_rel_l2: float | None = None
    eager_max_abs_std: float | None = None

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


#: Floors for the fp32-reference rule, where eager's own error is (nearly) zero.
_FLOOR = Tolerance(rel_l2=1e-4, cosine=0.99999, max_abs_std=1e-2)


def compare_to_fp32(name: str, actual: torch.Tensor, eager: torch.Tensor, truth: torch.Tensor,
                    tol: Tolerance) -> OutputCheck:
    """The engine and eager (both in the engine's dtype) against the model in float32: the
    engine passes if its rel L2 and max_abs_std are at most ``tol.reference_factor`` times
    eager's own (or the float32 floors, whichever is larger), and its output is finite."""
    loose = Tolerance(rel_l2=math.inf, cosine=-1.0)
    mine = compare(name, actual, truth, loose)
    own = compare(name, eager, truth, loose)
    k = tol.reference_factor
    reasons = [mine.reason] if mine.reason else []  # shape, NaN/Inf
    if not reasons:
        allowed_rel = max(k * own.rel_l2, _FLOOR.rel_l2)
        allowed_std = max(k * own.max_abs_std, _FLOOR.max_abs_std)
        if not mine.rel_l2 <= allowed_rel:
            reasons.append(f"rel_l2 vs fp32 {mine.rel_l2:.3g} > {k:g} x eager's own {own.rel_l2:.3g}")
        if not mine.max_abs_std <= allowed_std:
            reasons.append(f"max_abs vs fp32 {mine.max_abs_std:.3g} standard deviations > {k:g} x "
                           f"eager's own {own.max_abs_std:.3g}")
    return replace(mine, passed=not reasons, reason="; ".join(reasons), reference="fp32",
                   eager_rel_l2=own.rel_l2, eager_max_abs_std=own.max_abs_std)
