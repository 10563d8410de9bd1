"""NuSLERP: spherical interpolation of two checkpoints set by their weights (mergekit 0.1.5's ``nuslerp``).

Unlike ``slerp``, the position comes from per-model weights, t = w₂ / (w₁ + w₂) (0.5 when |w₁ + w₂| < 1e-6, so
only the ratio matters and extrapolation is possible), the two vectors may be task vectors, and the
interpolation may run on each row or column instead of the whole tensor:

- ``use_base`` (default): interpolate τ₁ = θ₁ − θ₀ and τ₂ = θ₂ − θ₀ and add θ₀ back (mergekit given a
  ``base_model``); otherwise interpolate θ₁ and θ₂ themselves (mergekit without one);
- ``nuslerp_flatten`` (default): the whole tensor is one vector; otherwise each vector along the last
  dimension (each row of a matrix) is interpolated on its own, or with ``nuslerp_row_wise`` each vector along
  the first dimension (each column), mergekit's naming kept so its configurations read the same.

For each pair of vectors a, b: cos Ω = ⟨a/‖a‖, b/‖b‖⟩ with norms floored at 1e-7 and clamped to [−1, 1];
result = (sin((1 − t)Ω)·a + sin(tΩ)·b) / sin Ω, and (1 − t)·a + t·b only where the vectors are collinear to
float precision (1 − cos²Ω ≤ 1e-16; ``slerp`` falls back already at |cos Ω| > 0.9995).
"""

from __future__ import annotations

import torch
from torch import Tensor

from study.methods.common import USE_BASE_HELP, per_model
from study.methods.schema import merge_method

NORM_FLOOR = 1e-7
"""Norms below this are taken as this when making unit vectors: a zero vector stays zero (cos Ω = 0)."""
COLLINEAR = 1e-8
"""Vectors with 1 − cos²Ω ≤ COLLINEAR² are interpolated linearly (sin Ω would be 0)."""
ZERO_WEIGHTS = 1e-6
"""Weights whose sum is smaller than this in magnitude give t = 0.5 rather than a division by ~0."""


def interpolation_position(weight: list[float]) -> float:
    """t = w₂ / (w₁ + w₂), or 0.5 when the weights cancel."""
    w1, w2 = per_model(weight, 2)
    total = w1 + w2
    return 0.5 if abs(total) < ZERO_WEIGHTS else w2 / total


def slerp_last_dim(t: float, a: Tensor, b: Tensor) -> Tensor:
    """Spherical interpolation of each pair of vectors along the last dimension of ``a`` and ``b``."""
    ua = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp(min=NORM_FLOOR)
    ub = b / torch.linalg.vector_norm(b, dim=-1, keepdim=True).clamp(min=NORM_FLOOR)
    cos = (ua * ub).sum(dim=-1, keepdim=True).clamp(-1, 1)
    del ua, ub
    collinear = (1 - cos.square()) <= COLLINEAR**2
    omega = torch.acos(torch.where(collinear, torch.zeros_like(cos), cos))  # finite on the unused branch too
    spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return torch.where(collinear, (1 - t) * a + t * b, spherical)


@merge_method(
    "nuslerp",
    reference="mergekit's nuslerp (Goddard et al. 2024, Arcee's MergeKit, https://arxiv.org/abs/2403.13257); "
    "SLERP: Shoemake 1985, https://doi.org/10.1145/325165.325242",
    version=1,
    min_k=2,
    max_k=2,
    ranges={
        "weight": {"help": "per-model weight w_i: the position is t = w_2 / (w_1 + w_2) (0.5 when they sum to ~0), "
                           "so only the ratio matters"},
        "nuslerp_flatten": {"help": "true: the whole tensor is one vector; false: each row (or, with "
                                    "nuslerp_row_wise, each column) is interpolated on its own"},
        "nuslerp_row_wise": {"help": "with nuslerp_flatten false: interpolate the vectors along the first dimension "
                                     "(columns of a matrix) instead of along the last (rows); mergekit's name"},
        "use_base": {"help": USE_BASE_HELP},
    },
    mergekit_note="Same as mergekit's nuslerp, parameters included; mergekit interpolates task vectors exactly "
    "when its configuration has a base_model, which is use_base here (a merge here always has a base for the "
    "layout, so use_base: false stands for a configuration without one).",
)
def nuslerp(
    base: Tensor,
    tensors: list[Tensor],
    *,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    nuslerp_flatten: bool = True,
    nuslerp_row_wise: bool = False,
    use_base: bool = True,
) -> Tensor:
    """Interpolate along the great circle between the two checkpoints (or their task vectors), by weight."""
    t = interpolation_position(weight)
    a, b = tensors
    if use_base:
        a, b = a - base, b - base
    if nuslerp_flatten:
        out = slerp_last_dim(t, a.reshape(-1), b.reshape(-1)).view(a.shape)
    elif nuslerp_row_wise:
        out = slerp_last_dim(t, a.transpose(0, -1), b.transpose(0, -1)).transpose(0, -1)
    else:
        out = slerp_last_dim(t, a, b)
    return base + out if use_base else out
