"""DELLA-Merging (Deep et al. 2024, arXiv 2406.11617): MagPrune, then TIES' sign election and disjoint merge.

MagPrune keeps each entry of τᵢ with a probability that rises with its magnitude rank within its row (density − ε
for the smallest, density + ε for the largest) and rescales the survivors (by 1/p, as the paper and the
authors' code; ``rescale: l1`` is mergekit's norm matching). Then the elect-and-fuse steps of TIES: γ =
sign(Σ wᵢ τ̃ᵢ), the agreeing entries averaged over their weights (``normalize``), θ = θ₀ + λ · merged. The
pieces are :class:`study.methods.task_vector_family.MagPrune` and ``SignElection``.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from study.methods.schema import merge_method
from study.methods.task_vector_family import (
    MAGPRUNE_RANGES,
    MERGED_LAMBDA,
    MagPrune,
    Recipe,
    SignElection,
    election_weight,
    merge,
)

DELLA_NOTE = (
    "Equal to mergekit's {name} when rescale is l1 (mergekit's rescale: true, its default) or none (rescale: "
    "false) and the masks are the same: the keep probabilities are mergekit's bit for bit (per-row magnitude "
    "ranks, as the DELLA authors' code) except among equal magnitudes in a row, which ours ranks by position "
    "(mergekit's argsort is not stable). Differences: our default rescale: probability divides each kept entry "
    "by its keep probability (the paper and authors' code; mergekit matches the L1 norm instead); masks come from "
    "a generator seeded by (seed, tensor name, the model's own task vector), mergekit's from torch's global "
    "generator, so no mask is shared and ours do not depend on the checkpoint order; one density and epsilon for "
    "all models (mergekit's are per model, default density 1.0 = no drop); a row of one entry is kept with "
    "probability density (mergekit divides 0 by 0 there and fails)."
)


@merge_method(
    "della",
    reference="Deep et al. 2024, DELLA-Merging, https://arxiv.org/abs/2406.11617",
    version=1,
    ranges={
        **MAGPRUNE_RANGES,
        "weight": election_weight("pruned"),
        "lambda": MERGED_LAMBDA,
        "normalize": {"help": "divide each entry by the summed weights of the models that agree with its elected "
                              "sign (mergekit's della default, true); false keeps the agreeing weighted sum"},
    },
    mergekit_note=DELLA_NOTE.format(name="della") + " The sign is elected on the weighted deltas "
    "sum(w_i * pruned tau_i), as mergekit does; an entry counts as agreeing by the sign of tau_i, mergekit's by "
    "that of w_i * tau_i (the same unless a weight is negative).",
)
def della(
    base: Tensor,
    tensors: list[Tensor],
    *,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.7,
    epsilon: float = 0.15,
    lambda_: float = 1.0,
    seed: int = 0,
    rescale: Literal["probability", "l1", "none"] = "probability",
    normalize: bool = True,
    tensor_name: str | None = None,
) -> Tensor:
    """Prune task-vector entries with magnitude-ranked keep probabilities, rescale, elect signs, merge."""
    recipe = Recipe(MagPrune(density, epsilon, seed, rescale), SignElection(normalize))
    return merge(base, tensors, recipe, weight, lambda_, tensor_name)
