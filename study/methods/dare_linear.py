"""DARE + task arithmetic (Yu et al. 2024, "Language Models are Super Mario", arXiv 2311.03099).

Each entry of τᵢ is kept with probability ``density`` and survivors are divided by ``density`` (the paper's
rescale, which keeps the expectation; mergekit instead matches the L1 norm — methods.md follows the paper).
Masks come from a generator seeded by (seed, model index, tensor name) through a SHA-256 digest, so a merge is
reproducible across processes and devices. Then θ = θ₀ + λ Σ wᵢ τ̃ᵢ.
"""

from __future__ import annotations

from torch import Tensor

from study.methods.schema import merge_method
from study.methods.task_vector_family import SUMMED_LAMBDA, RandomDrop, Recipe, Sum, merge, sum_weight

DROP_RANGES = {
    "density": {"low": 0.0, "low_open": True, "high": 1.0,
                "help": "probability that a task-vector entry is kept (1 - drop rate); survivors are "
                        "divided by density; 1 keeps all"},
    "seed": {"low": 0, "help": "seeds the drop masks, drawn per (seed, model index, tensor name): the same "
                               "masks in any process and on any device"},
}
"""The random drop's parameters, shared with ``dare_ties``."""
DROP_NOTE = (
    "Not mergekit's semantics: ours divides the kept entries by density (the paper's rescale, exact "
    "in expectation), mergekit (rescale: true, its default) multiplies them by |tau|_1 / |kept tau|_1 per tensor; "
    "ours draws each mask from a generator seeded by (seed, model index, tensor name), mergekit from torch's "
    "global generator, so no mask is shared; one density for all models (mergekit's is per model, default 1.0 = "
    "no drop)."
)
"""Where the drop differs from mergekit's (``dare_ties``' note starts with it too)."""


@merge_method(
    "dare_linear",
    reference="Yu et al. 2024, Language Models are Super Mario (DARE), https://arxiv.org/abs/2311.03099",
    version=1,
    ranges={**DROP_RANGES, "weight": sum_weight("dropped and rescaled"), "lambda": SUMMED_LAMBDA},
    mergekit_note=DROP_NOTE + " With normalize: false (mergekit's default) the combination is the same, "
    "theta_0 + lambda * sum(w_i * dropped tau_i).",
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
    return merge(base, tensors, Recipe(RandomDrop(density, seed), Sum()), weight, lambda_, tensor_name)
