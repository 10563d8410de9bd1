"""Model Breadcrumbs' band with TIES' sign election (mergekit's ``breadcrumbs_ties``; Davari & Belilovsky 2024,
arXiv 2312.06795).

Per tensor of each τᵢ the band of :mod:`study.methods.breadcrumbs` (drop the top ``gamma`` outliers, keep the
next ``density``), then TIES steps 2–4: γ = sign(Σ wᵢ τ̃ᵢ), the agreeing non-zero entries summed (or averaged
over their weights with ``normalize``), θ = θ₀ + λ · merged. The paper has no TIES variant; the defaults are
mergekit's, its only reference.
"""

from __future__ import annotations

from torch import Tensor

from study.methods.schema import merge_method
from study.methods.task_vector_family import OutlierBand, Recipe, SignElection, merge


@merge_method(
    "breadcrumbs_ties",
    reference="Davari & Belilovsky 2024, Model Breadcrumbs, https://arxiv.org/abs/2312.06795 (TIES variant: "
    "mergekit's breadcrumbs_ties)",
    version=1,
    ranges={
        "density": {"low": 0.0, "low_open": True, "high": 1.0,
                    "help": "fraction of each tensor's task-vector entries kept: floor(density*n), the largest "
                            "below the outliers; 1 keeps all"},
        "gamma": {"low": 0.0, "high": 1.0,
                  "help": "fraction of each tensor's largest-magnitude entries dropped as outliers: floor(gamma*n), "
                          "fewer when they and the kept band do not both fit"},
        "weight": {"help": "per-model weight w_i: scales model i's banded task vector in the sign election, the "
                           "agreeing sum and the divisor"},
        "lambda": {"help": "scale of the merged task vector added to the base"},
        "normalize": {"help": "divide each entry by the summed weights of the models that agree with its elected "
                              "sign; false (mergekit's breadcrumbs_ties default) keeps the agreeing weighted sum"},
    },
    mergekit_note="Same as mergekit's breadcrumbs_ties (rescale false, its default; normalize true or false) "
    "except: equal magnitudes at the band's edges are ranked by position (a stable sort), mergekit's sort is not "
    "stable, so on ties (bf16 checkpoints) the entries kept may differ; one density and gamma for all models "
    "(mergekit's are per model, default density 1.0 = keep all). The sign is elected on the weighted deltas, as "
    "mergekit does; an entry counts as agreeing by the sign of tau_i, mergekit's by that of w_i * tau_i (the same "
    "unless a weight is negative). mergekit's rescale: true (L1-norm matching) is not offered.",
)
def breadcrumbs_ties(
    base: Tensor,
    tensors: list[Tensor],
    *,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.9,
    gamma: float = 0.01,
    lambda_: float = 1.0,
    normalize: bool = False,
) -> Tensor:
    """Keep a mid-magnitude band of each task vector, elect signs, merge the agreeing entries."""
    return merge(base, tensors, Recipe(OutlierBand(density, gamma), SignElection(normalize)), weight, lambda_)
