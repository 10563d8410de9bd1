"""Task arithmetic: θ = θ₀ + λ · Σ wᵢ τᵢ on every tensor (Ilharco et al. 2023)."""

from __future__ import annotations

from torch import Tensor

from study.methods.common import task_vectors, weighted_sum
from study.methods.registry import merge_method


@merge_method(
    "task_arithmetic",
    reference="Ilharco et al. 2023, Editing models with task arithmetic, https://arxiv.org/abs/2212.04089",
)
def task_arithmetic(
    base: Tensor, tensors: list[Tensor], *, weight: list[float] = 1.0, lambda_: float = 1.0  # type: ignore[assignment]
) -> Tensor:
    """Add the scaled sum of task vectors to the base. ``lambda: "1/k"`` gives the mean of task vectors."""
    return base + lambda_ * weighted_sum(task_vectors(base, tensors), weight)
