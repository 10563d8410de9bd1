"""An example plugin method: the element-wise median of task vectors.

θ = θ₀ + λ · median(τ₁, …, τ_T) per entry (for even T, the mean of the two middle values), a robust
alternative to the mean that ignores a single checkpoint's outlying update. It exists to show that a method
registered by an entry point is a first-class method: listed, validated, swept, and tested by the same
invariants as the built-ins.
"""

from __future__ import annotations

import torch
from torch import Tensor

from study.methods.registry import merge_method


@merge_method("median", reference="example plugin (merge-study examples/plugin)")
def median(base: Tensor, tensors: list[Tensor], *, lambda_: float = 1.0) -> Tensor:
    """Add λ times the element-wise median of the task vectors to the base."""
    deltas = torch.sort(torch.stack([t - base for t in tensors]), dim=0).values
    t = len(tensors)
    middle = deltas[t // 2] if t % 2 else (deltas[t // 2 - 1] + deltas[t // 2]) / 2
    return base + lambda_ * middle
