"""DARE + task arithmetic (Yu et al. 2024, "Language Models are Super Mario", arXiv 2311.03099).

Each entry of τᵢ is kept with probability ``density`` and survivors are divided by ``density`` (the paper's
rescale, which keeps the expectation; mergekit instead matches the L1 norm — methods.md follows the paper).
Masks come from a generator seeded by (seed, model index, tensor name) through a SHA-256 digest, so a merge is
reproducible across processes and devices. Then θ = θ₀ + λ Σ wᵢ τ̃ᵢ.
"""

from __future__ import annotations

from torch import Tensor

from study.methods.common import dare_rescale, task_vectors, weighted_sum
from study.methods.schema import merge_method


@merge_method(
    "dare_linear",
    reference="Yu et al. 2024, Language Models are Super Mario (DARE), https://arxiv.org/abs/2311.03099",
    version=1,
    ranges={"density": {"low": 0.0, "low_open": True, "high": 1.0}, "seed": {"low": 0}},
)
def dare_linear(
    base: Tensor,
    tensors: list[Tensor],
    *,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.7,
    lambda_: float = 1.0,
    seed: int = 0,
    tensor_name: str | None = None,
) -> Tensor:
    """Randomly drop task-vector entries, rescale the survivors, then task arithmetic."""
    deltas = dare_rescale(task_vectors(base, tensors), density, seed, tensor_name)
    return base + lambda_ * weighted_sum(deltas, weight)
