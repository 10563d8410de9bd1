"""Subspace Boosting (Skorobogat et al. 2025, arXiv 2506.16506).

Merging many experts makes the merged task vector's spectrum collapse onto a few directions (rank collapse).
Boosting raises the small singular values of each projection matrix: with Δ = U S Vᵀ, c is the first index
where cumsum(S)/ΣS ≥ ``beta`` (the last index if none) and S' = max(S, S[c]); other tensors keep Δ. Δ is the
base method's merged task vector before λ — Σ wᵢ τᵢ for ``task_arithmetic``, TIES' disjoint merge for
``ties`` — and θ = θ₀ + λ · Δ'. By default the finished TIES merge is boosted, as the study fork did at
3f031f3 (Oct 2025, before the paper's v1); ``boost_order: before_normalize`` boosts the unnormalised sum and
divides afterwards, as mergekit PR #639 does at 903c139 (Jan 2026).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from study.methods.common import is_projection, svd, task_vectors, weighted_sum
from study.methods.schema import merge_method
from study.methods.ties import TIES_RANGES, ties_delta, ties_parts, ties_prepass


def boost(delta: Tensor, beta: float) -> Tensor:
    """Clamp the singular values of ``delta`` from below at the one where the cumulative share reaches beta."""
    u, s, vh = svd(delta)
    share = torch.cumsum(s, 0) / s.sum().clamp(min=torch.finfo(s.dtype).tiny)
    reached = torch.nonzero(share >= beta)
    c = int(reached[0]) if len(reached) else len(s) - 1
    return (u * torch.clamp(s, min=float(s[c]))) @ vh


def boosting_prepass(inputs: Any, params: dict[str, Any]) -> dict[str, Any]:
    return ties_prepass(inputs, params) if params.get("base_method") == "ties" else {}


BOOST_ORDER_HELP = (
    "with base_method ties and normalize: after_normalize boosts the finished disjoint mean (the study fork at "
    "3f031f3, before the paper's v1); before_normalize boosts the agreeing entries' weighted sum, then divides "
    "per entry by the agreeing weights (mergekit PR #639 at 903c139). No effect otherwise"
)


@merge_method(
    "subspace_boosting",
    reference="Skorobogat et al. 2025, Subspace Boosting for Model Merging, https://arxiv.org/abs/2506.16506",
    version=2,
    ranges={
        **TIES_RANGES,
        "beta": {"low": 0.0, "high": 1.0, "help": "cumulative share of the singular values at which the clamp "
                 "value is read (the authors' svd_thresh, with cumsum)"},
        "boost_order": {"help": BOOST_ORDER_HELP},
        "base_method": {"help": "how the merged task vector is formed before boosting: task_arithmetic = "
                                "sum(w_i*tau_i); ties = TIES' disjoint merge (with density, trim_scope, normalize)"},
        "lambda": {"help": "scale of the boosted merged task vector added to the base"},
        "weight": {"help": "per-model weight w_i of model i's task vector in the base method"},
    },
    prepass=boosting_prepass,
    mergekit_note="Not in mergekit 0.1.5. Reference: the study fork (kaganhitit11/mergekit 3f031f3, and mergekit "
    "PR #639 at 903c139, subspace_helpers.py), matched to float32 precision: boost_order after_normalize is "
    "3f031f3's order, before_normalize 903c139's. Its ties step is our ties (see that method's note).",
)
def subspace_boosting(
    base: Tensor,
    tensors: list[Tensor],
    *,
    base_method: Literal["task_arithmetic", "ties"] = "task_arithmetic",
    beta: float = 0.01,
    lambda_: float = 1.0,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    density: float = 0.2,
    trim_scope: Literal["tensor", "global"] = "tensor",
    normalize: bool = True,
    boost_order: Literal["after_normalize", "before_normalize"] = "after_normalize",
    tensor_name: str | None = None,
    context: dict[str, Any] | None = None,
) -> Tensor:
    """Merge with the base method, then lift the small singular values of every projection's merged delta.

    ``density``, ``trim_scope``, ``normalize`` and ``boost_order`` only matter with ``base_method: ties``.
    """
    boosted = is_projection(tensor_name) and base.dim() == 2
    if base_method == "ties" and boosted and normalize and boost_order == "before_normalize":
        total, norm = ties_parts(base, tensors, weight, density, trim_scope, context, tensor_name)
        divisor = torch.where(norm == 0, torch.ones_like(norm), norm)  # mergekit's divisor: 1 where none agrees
        return base + lambda_ * (boost(total, beta).to(base.device) / divisor)
    if base_method == "ties":
        delta = ties_delta(base, tensors, weight, density, trim_scope, context, tensor_name, normalize)
    else:
        delta = weighted_sum(task_vectors(base, tensors), weight)
    if boosted:
        delta = boost(delta, beta).to(base.device)
    return base + lambda_ * delta
