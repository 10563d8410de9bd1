"""Model Breadcrumbs' band with TIES' sign election (mergekit's ``breadcrumbs_ties``; Davari & Belilovsky 2024,
arXiv 2312.06795).

Per tensor of each τᵢ the band of :mod:`study.methods.breadcrumbs` (drop the top ``gamma`` outliers, keep the
next ``density``), then TIES steps 2–4: γ = sign(Σ wᵢ τ̃ᵢ), the agreeing non-zero entries summed (or averaged
over their weights with ``normalize``), θ = θ₀ + λ · merged. The paper has no TIES variant; the defaults are
mergekit's, its only reference.
"""

from __future__ import annotations

from torch import Tensor

from study.methods.breadcrumbs import BAND_NOTE, BAND_RANGES
from study.methods.schema import merge_method
from study.methods.task_vector_family import MERGED_LAMBDA, OutlierBand, Recipe, SignElection, election_weight, merge


@merge_method(
    "breadcrumbs_ties",
    reference="Davari & Belilovsky 2024, Model Breadcrumbs, https://arxiv.org/abs/2312.06795 (TIES variant: "
    "mergekit's breadcrumbs_ties)",
    version=1,
    ranges={
        **BAND_RANGES,
        "weight": election_weight("banded"),
        "lambda": MERGED_LAMBDA,
        "normalize": {"help": "divide each entry by the summed weights of the models that agree with its elected "
                              "sign; false (mergekit's breadcrumbs_ties default) keeps the agreeing weighted sum"},
    },
    mergekit_note="Same as mergekit's breadcrumbs_ties (rescale false, its default; normalize true or false) "
    "except: " + BAND_NOTE + " The sign is elected on the weighted deltas, as mergekit does; an entry counts as "
    "agreeing by the sign of tau_i, mergekit's by that of w_i * tau_i (the same unless a weight is negative). "
    "mergekit's rescale: true (L1-norm matching) is not offered.",
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
