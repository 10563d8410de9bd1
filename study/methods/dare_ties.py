"""DARE + TIES' sign election and disjoint merge (Yu et al. 2024, arXiv 2311.03099).

The random drop-and-rescale of :mod:`study.methods.dare_linear` replaces TIES' magnitude trim; steps 2–4 of
TIES follow (elect γ = sign(Σ wᵢ τ̃ᵢ), average the agreeing non-zero entries over their weights, add λ times
the result).
"""

from __future__ import annotations

from torch import Tensor

from study.methods.task_vector_family import RandomDrop, Recipe, SignElection, merge
from study.methods.schema import merge_method


@merge_method(
    "dare_ties",
    reference="Yu et al. 2024, Language Models are Super Mario (DARE), https://arxiv.org/abs/2311.03099",
    version=1,
    ranges={
        "density": {"low": 0.0, "low_open": True, "high": 1.0,
                    "help": "probability that a task-vector entry is kept (1 - drop rate); survivors are "
                            "divided by density; 1 keeps all"},
        "seed": {"low": 0, "help": "seeds the drop masks, drawn per (seed, model index, tensor name): the same "
                                   "masks in any process and on any device"},
        "weight": {"help": "per-model weight w_i of model i's dropped and rescaled task vector in the sign "
                           "election, the agreeing sum and the divisor"},
        "lambda": {"help": "scale of the merged task vector added to the base"},
    },
    mergekit_note="Not mergekit's semantics: ours divides the kept entries by density (the paper's rescale, exact "
    "in expectation), mergekit (rescale: true, its default) multiplies them by |tau|_1 / |kept tau|_1 per tensor; "
    "ours draws each mask from a generator seeded by (seed, model index, tensor name), mergekit from torch's "
    "global generator, so no mask is shared; one density for all models (mergekit's is per model, default 1.0 = "
    "no drop). After the drop, ours is TIES' disjoint mean (the agreeing entries divided by their "
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
