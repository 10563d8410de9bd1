"""Model Breadcrumbs (Davari & Belilovsky 2024, arXiv 2312.06795).

Per tensor of each τᵢ: rank entries by |value|, drop the top ``gamma`` fraction (outliers), keep the next
``density`` fraction, zero the rest; then task arithmetic. Counts follow mergekit's ``magnitude_outliers``:
keep ⌊density·n⌋ entries and drop ⌊gamma·n⌋ outliers above them, fewer outliers when both do not fit, so
``density: 1`` keeps everything. Equal magnitudes are ranked by position, as a stable ascending sort (the order
mergekit's ``sort`` gives when it is stable); ``common.ascending_rank_window`` finds that band without sorting.
"""

from __future__ import annotations

from torch import Tensor

from study.methods.common import ascending_rank_window, task_vectors, weighted_sum
from study.methods.schema import merge_method


def outlier_band(delta: Tensor, density: float, gamma: float) -> Tensor:
    """Zero the top-``gamma`` outliers and everything below the next ``density`` fraction."""
    n = delta.numel()
    keep = int(density * n)
    drop_top = min(int(gamma * n), n - keep)
    drop_bottom = n - keep - drop_top
    if drop_top == 0 and drop_bottom == 0:
        return delta
    mask = ascending_rank_window(delta.abs().flatten(), drop_bottom, drop_bottom + keep)
    return delta * mask.view_as(delta).to(delta.dtype)


@merge_method(
    "breadcrumbs",
    reference="Davari & Belilovsky 2024, Model Breadcrumbs, https://arxiv.org/abs/2312.06795",
    version=1,
    ranges={"density": {"low": 0.0, "low_open": True, "high": 1.0}, "gamma": {"low": 0.0, "high": 1.0}},
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
    deltas = [outlier_band(tv, density, gamma) for tv in task_vectors(base, tensors)]
    return base + lambda_ * weighted_sum(deltas, weight)
