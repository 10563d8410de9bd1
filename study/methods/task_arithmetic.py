"""Task arithmetic: θ = θ₀ + λ · Σ wᵢ τᵢ on every tensor (Ilharco et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from study.methods.common import per_model
from study.methods.schema import merge_method


@merge_method(
    "task_arithmetic",
    reference="Ilharco et al. 2023, Editing models with task arithmetic, https://arxiv.org/abs/2212.04089",
    version=1,
    elementwise=True,
    ranges={"weight": {"help": "per-model weight w_i of model i's task vector in the sum"},
            "lambda": {"help": "scale of the summed task vectors added to the base; a sweep's \"1/k\" gives their "
                               "mean; negative subtracts"}},
    mergekit_note="Same as mergekit's task_arithmetic with normalize: false (its default), bit for bit. mergekit's "
    "normalize: true (divide by the sum of the weights) is not offered; a sweep's lambda \"1/k\" gives the mean.",
)
def task_arithmetic(
    base: Tensor, tensors: list[Tensor], *, weight: list[float] = 1.0, lambda_: float = 1.0  # type: ignore[assignment]
) -> Tensor:
    """Add the scaled sum of task vectors to the base. ``lambda: "1/k"`` gives the mean of task vectors."""
    # Same operations, in the same order, as ``base + lambda_ * Σ wᵢ (θᵢ − base)``, but accumulated in place:
    # one task vector alive at a time instead of k (one buffer, reused), and no temporaries for the last two steps.
    acc, task_vector = torch.zeros_like(base), torch.empty_like(base)
    for t, w in zip(tensors, per_model(weight, len(tensors))):
        acc.add_(torch.sub(t, base, out=task_vector), alpha=float(w))
    return acc.mul_(lambda_).add_(base)


def task_arithmetic_stored(out: Tensor, base: Tensor, tensors: list[Tensor], *, weight: list[float] = 1.0,  # type: ignore[assignment]
                           lambda_: float = 1.0) -> bool:
    """The same merge read straight from the stored (bf16 / float32) inputs into ``out`` in one fused CPU pass
    (``study.fused_cpu``, bit for bit the function above); False leaves it to the driver's block-wise path."""
    from study.fused_cpu import task_arithmetic_into

    return task_arithmetic_into(out, base, tensors, [float(w) for w in per_model(weight, len(tensors))], float(lambda_))


task_arithmetic.stored_kernel = task_arithmetic_stored  # type: ignore[attr-defined]
