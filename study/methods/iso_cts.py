"""Iso-CTS: isotropic merging with common and task-specific subspaces (Marczak et al., ICML 2025).

For a 2-D non-embedding tensor of rank bound r with T task vectors and f = ``common_space_fraction``:
k₀ = ⌊r·f⌋, s_total = round((r − k₀)/T)·T, k_c = r − s_total, d = s_total/T. The top k_c singular triplets of
Σ τᵢ span the common subspace; each τᵢ, with its component in that subspace removed, adds its top d triplets as
a task-specific block. The stacked U and Vᵀ (task blocks first, common block last) are orthogonalised as in
TSV-M and every singular value is set to the mean of the stacked ones. Every other tensor: mean of τᵢ.
θ = θ₀ + alpha · merged. Follows ``danielm1405/iso-merging`` ``iso_cts``; ``round`` is Python's (half to
even, as NumPy's). When rounding up would need more task-specific slots than r (tiny r, large T) the task
share is rounded down instead, so k_c is never negative (methods.md does not cover that case).
"""

from __future__ import annotations

import torch
from torch import Tensor

from study.methods.common import orthogonalise, stack_top_triplets, subspace_merge, svd, weighted_sum
from study.methods.schema import merge_method


def split_rank(r: int, t: int, fraction: float) -> tuple[int, int]:
    """``(k_c, d)``: the common subspace's size and each task's share of the rest."""
    k0 = int(r * fraction)
    s_total = round((r - k0) / t) * t
    if s_total > r:
        s_total = (r // t) * t
    return r - s_total, s_total // t


def iso_cts_delta(deltas: list[Tensor], fraction: float) -> Tensor:
    """Iso-CTS's merged task vector for one matrix."""
    rows, cols = deltas[0].shape
    r, t = min(rows, cols), len(deltas)
    k_c, d = split_rank(r, t, fraction)
    uc, sc, vhc = svd(weighted_sum(deltas, [1.0] * t))
    uc, sc, vhc = uc[:, :k_c], sc[:k_c], vhc[:k_c, :]
    u, s, vh = stack_top_triplets((tv - uc @ (uc.T @ tv) for tv in deltas), d, deltas[0])
    u[:, t * d :] = uc
    s[t * d :] = sc
    vh[t * d :, :] = vhc
    iso = torch.full_like(s, float(s.mean()))
    return (orthogonalise(u) * iso) @ orthogonalise(vh)  # scaling columns = @ diag(iso), exactly


@merge_method(
    "iso_cts",
    reference="Marczak et al. 2025, No Task Left Behind: Isotropic Model Merging with Common and "
    "Task-Specific Subspaces, https://arxiv.org/abs/2502.04959",
    version=1,
    ranges={
        "alpha": {"help": "scale of the merged task vector added to the base"},
        "common_space_fraction": {"low": 0.0, "high": 1.0,
                                  "help": "share f of the rank bound r given to the common subspace: k0 = "
                                          "floor(r*f), then rounded so each task gets an equal share of the rest"},
    },
    mergekit_note="Not in mergekit 0.1.5, nor one of the study fork's methods. Reference: danielm1405/iso-merging "
    "d34010a (iso_cts), matched to float32 precision, with the study's LLM scope and one guard the original "
    "lacks: the task share is rounded down when rounding up would leave the common subspace a negative size.",
)
def iso_cts(
    base: Tensor,
    tensors: list[Tensor],
    *,
    alpha: float = 1.0,
    common_space_fraction: float = 0.8,
    tensor_name: str | None = None,
) -> Tensor:
    """Common plus task-specific singular directions, decorrelated, with a flat spectrum."""
    return subspace_merge(base, tensors, tensor_name, alpha, lambda t: iso_cts_delta(t, common_space_fraction))
