"""DELLA's MagPrune, then task arithmetic (mergekit's ``della_linear``; Deep et al. 2024, arXiv 2406.11617).

The pruning of :mod:`study.methods.della` (magnitude-ranked keep probabilities density ± ε, survivors
rescaled) without the sign election: θ = θ₀ + λ Σ wᵢ τ̃ᵢ, as ``dare_linear`` with MagPrune for the random
drop.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from study.methods.della import DELLA_NOTE
from study.methods.schema import merge_method
from study.methods.task_vector_family import MAGPRUNE_RANGES, SUMMED_LAMBDA, MagPrune, Recipe, Sum, merge, sum_weight


@merge_method(
    "della_linear",
    reference="Deep et al. 2024, DELLA-Merging, https://arxiv.org/abs/2406.11617",
    version=1,
    ranges={
        **MAGPRUNE_RANGES,
        "weight": sum_weight("pruned and rescaled"),
        "lambda": SUMMED_LAMBDA,
    },
    mergekit_note=DELLA_NOTE.format(name="della_linear") + " The combination is mergekit's with normalize: "
    "false (its default), theta_0 + lambda * sum(w_i * pruned tau_i); mergekit's normalize: true (divide by the "
    "sum of the weights) is not offered.",
)
def della_linear(
    base: Tensor,
    tensors: list[Tensor],
    *,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.7,
    epsilon: float = 0.15,
    lambda_: float = 1.0,
    seed: int = 0,
    rescale: Literal["probability", "l1", "none"] = "probability",
    tensor_name: str | None = None,
) -> Tensor:
    """Prune task-vector entries with magnitude-ranked keep probabilities, rescale, then task arithmetic."""
    return merge(base, tensors, Recipe(MagPrune(density, epsilon, seed, rescale), Sum()), weight, lambda_, tensor_name)
