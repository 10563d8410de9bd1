"""DARE + TIES' sign election and disjoint merge (Yu et al. 2024, arXiv 2311.03099).

The random drop-and-rescale of :mod:`study.methods.dare_linear` replaces TIES' magnitude trim; steps 2–4 of
TIES follow (elect γ = sign(Σ wᵢ τ̃ᵢ), average the agreeing non-zero entries over their weights, add λ times
the result).
"""

from __future__ import annotations

from torch import Tensor

from study.methods.dare_linear import DROP_NOTE, DROP_RANGES
from study.methods.schema import merge_method
from study.methods.task_vector_family import MERGED_LAMBDA, RandomDrop, Recipe, SignElection, merge


@merge_method(
    "dare_ties",
    reference="Yu et al. 2024, Language Models are Super Mario (DARE), https://arxiv.org/abs/2311.03099",
    version=1,
    ranges={
        **DROP_RANGES,
        "weight": {"help": "per-model weight w_i of model i's dropped and rescaled task vector in the sign "
                           "election, the agreeing sum and the divisor"},
        "lambda": MERGED_LAMBDA,
    },
    mergekit_note=DROP_NOTE + " After the drop, ours is TIES' disjoint mean (the agreeing entries divided by their "
    "weights, as our ties and mergekit's ties with normalize: true); mergekit's dare_ties defaults to normalize: "
    "false (the agreeing sum, undivided). The sign is elected on the weighted deltas, as mergekit does.",
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
    return merge(base, tensors, Recipe(RandomDrop(density, seed), SignElection()), weight, lambda_, tensor_name)
