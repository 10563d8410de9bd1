"""DARE + TIES' sign election and disjoint merge (Yu et al. 2024, arXiv 2311.03099).

The random drop-and-rescale of :mod:`study.methods.dare_linear` replaces TIES' magnitude trim; steps 2–4 of
TIES follow (elect γ = sign(Σ wᵢ τ̃ᵢ), average the agreeing non-zero entries over their weights, add λ times
the result).
"""

from __future__ import annotations

import torch
from torch import Tensor

from study.methods.common import dare_rescale, disjoint_merge, task_vectors
from study.methods.schema import merge_method


@merge_method(
    "dare_ties",
    reference="Yu et al. 2024, Language Models are Super Mario (DARE), https://arxiv.org/abs/2311.03099",
    version=1,
    ranges={"density": {"low": 0.0, "low_open": True, "high": 1.0}, "seed": {"low": 0}},
)
def dare_ties(
    base: Tensor,
    tensors: list[Tensor],
    *,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.7,
    lambda_: float = 1.0,
    seed: int = 0,
    tensor_name: str | None = None,
) -> Tensor:
    """Randomly drop and rescale task-vector entries, elect signs, average agreeing entries."""
    deltas = dare_rescale(task_vectors(base, tensors), density, seed, tensor_name)
    return base + lambda_ * disjoint_merge(torch.stack(deltas), weight)
