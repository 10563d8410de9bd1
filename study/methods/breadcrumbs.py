"""Model Breadcrumbs (Davari & Belilovsky 2024, arXiv 2312.06795).

Per tensor of each τᵢ: rank entries by |value|, drop the top ``gamma`` fraction (outliers), keep the next
``density`` fraction, zero the rest; then task arithmetic. Counts follow mergekit's ``magnitude_outliers``:
keep ⌊density·n⌋ entries and drop ⌊gamma·n⌋ outliers above them, fewer outliers when both do not fit, so
``density: 1`` keeps everything. Equal magnitudes are ranked by position, as a stable ascending sort (the order
mergekit's ``sort`` gives when it is stable); ``task_vector_family.outlier_band`` finds that band without sorting.
"""

from __future__ import annotations

from torch import Tensor

from study.methods.schema import merge_method
from study.methods.task_vector_family import SUMMED_LAMBDA, OutlierBand, Recipe, Sum, merge, outlier_band, sum_weight

__all__ = ["breadcrumbs", "outlier_band"]

BAND_RANGES = {
    "density": {"low": 0.0, "low_open": True, "high": 1.0,
                "help": "fraction of each tensor's task-vector entries kept: floor(density*n), the largest "
                        "below the outliers; 1 keeps all"},
    "gamma": {"low": 0.0, "high": 1.0,
              "help": "fraction of each tensor's largest-magnitude entries dropped as outliers: floor(gamma*n), "
                      "fewer when they and the kept band do not both fit"},
}
"""The band's parameters, shared with ``breadcrumbs_ties``."""
BAND_NOTE = (
    "equal magnitudes at the band's edges are ranked by position (a stable sort), mergekit's sort is not stable, "
    "so on ties (bf16 checkpoints) the entries kept may differ; one density and gamma for all models (mergekit's "
    "are per model, default density 1.0 = keep all)."
)
"""Where the band differs from mergekit's (``breadcrumbs_ties``' note says it too)."""


@merge_method(
    "breadcrumbs",
    reference="Davari & Belilovsky 2024, Model Breadcrumbs, https://arxiv.org/abs/2312.06795",
    version=1,
    ranges={**BAND_RANGES, "weight": sum_weight("banded"), "lambda": SUMMED_LAMBDA},
    mergekit_note="Same counts as mergekit's breadcrumbs (rescale and normalize false, its defaults) except: "
    + BAND_NOTE,
)
def breadcrumbs(
    base: Tensor,
    tensors: list[Tensor],
    *,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.9,
    gamma: float = 0.01,
    lambda_: float = 1.0,
) -> Tensor:
    """Keep a mid-magnitude band of each task vector (no outliers, no small noise), then task arithmetic."""
    return merge(base, tensors, Recipe(OutlierBand(density, gamma), Sum()), weight, lambda_)
