"""Spherical linear interpolation of exactly two checkpoints (Shoemake 1985; mergekit's ``slerp``).

Per tensor, on the full weights (not task vectors; the base is unused): Ω is the angle between θ₁/‖θ₁‖ and
θ₂/‖θ₂‖ and the result is sin((1−t)Ω)/sinΩ · θ₁ + sin(tΩ)/sinΩ · θ₂, falling back to linear interpolation when
|cosΩ| > 0.9995 (nearly collinear or antipodal, where sinΩ ≈ 0). A zero-norm tensor is not normalised (its
norm is taken as 1), as in mergekit, so the result stays finite. Not applicable for k ≠ 2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from study.methods.schema import merge_method

DOT_THRESHOLD = 0.9995
EPS = 1e-8


@merge_method(
    "slerp",
    reference="Shoemake 1985, Animating rotation with quaternion curves, https://doi.org/10.1145/325165.325242",
    version=1,
    needs_base=False,
    min_k=2,
    max_k=2,
    ranges={"t": {"low": 0.0, "high": 1.0,
                  "help": "position on the great circle: 0 gives the first checkpoint, 1 the second"}},
    mergekit_note="Same as mergekit's slerp with base_model = the first checkpoint: mergekit goes from its "
    "base_model (t = 0) to its one other model (t = 1), ours from the first checkpoint to the second and takes no "
    "base (same 0.9995 linear fallback, same 1e-8 norm floor).",
)
def slerp(base: Tensor | None, tensors: list[Tensor], *, t: float = 0.5) -> Tensor:
    """Interpolate along the great circle between the two checkpoints' weights."""
    v0, v1 = tensors
    n0 = float(torch.linalg.vector_norm(v0))
    n1 = float(torch.linalg.vector_norm(v1))
    n0 = n0 if n0 > EPS else 1.0
    n1 = n1 if n1 > EPS else 1.0
    dot = max(-1.0, min(1.0, float(torch.sum((v0 / n0) * (v1 / n1)))))
    if abs(dot) > DOT_THRESHOLD:
        return (1 - t) * v0 + t * v1
    omega = math.acos(dot)
    sin_omega = math.sin(omega)
    return (math.sin((1 - t) * omega) / sin_omega) * v0 + (math.sin(t * omega) / sin_omega) * v1
