"""Subspace Boosting (Skorobogat et al. 2025, arXiv 2506.16506).

Merging many experts makes the merged task vector's spectrum collapse onto a few directions (rank collapse).
Boosting raises the small singular values of each projection matrix: with Δ = U S Vᵀ, c is the first index
where cumsum(S)/ΣS ≥ ``beta`` (the last index if none) and S' = max(S, S[c]); other tensors keep Δ. Δ is the
base method's merged task vector before λ — Σ wᵢ τᵢ for ``task_arithmetic``, TIES' disjoint merge for
``ties`` — and θ = θ₀ + λ · Δ'. Following the paper (and methods.md), the finished TIES merge is boosted; the
study fork's Jan-2026 code normalises TIES after boosting instead.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from study.methods.common import is_projection, svd, task_vectors, weighted_sum
from study.methods.schema import merge_method
from study.methods.ties import ties_delta, ties_prepass


def boost(delta: Tensor, beta: float) -> Tensor:
    """Clamp the singular values of ``delta`` from below at the one where the cumulative share reaches beta."""
    u, s, vh = svd(delta)
    share = torch.cumsum(s, 0) / s.sum().clamp(min=torch.finfo(s.dtype).tiny)
    reached = torch.nonzero(share >= beta)
    c = int(reached[0]) if len(reached) else len(s) - 1
    return (u * torch.clamp(s, min=float(s[c]))) @ vh


def boosting_prepass(inputs: Any, params: dict[str, Any]) -> dict[str, Any]:
    return ties_prepass(inputs, params) if params.get("base_method") == "ties" else {}


@merge_method(
    "subspace_boosting",
    reference="Skorobogat et al. 2025, Subspace Boosting for Model Merging, https://arxiv.org/abs/2506.16506",
    version=1,
    ranges={"beta": {"low": 0.0, "high": 1.0}, "density": {"low": 0.0, "low_open": True, "high": 1.0}},
    prepass=boosting_prepass,
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
    tensor_name: str | None = None,
    context: dict[str, Any] | None = None,
) -> Tensor:
    """Merge with the base method, then lift the small singular values of every projection's merged delta.

    ``density`` and ``trim_scope`` only matter with ``base_method: ties``.
    """
    if base_method == "ties":
        delta = ties_delta(base, tensors, weight, density, trim_scope, context, tensor_name)
    else:
        delta = weighted_sum(task_vectors(base, tensors), weight)
    if is_projection(tensor_name) and delta.dim() == 2:
        delta = boost(delta, beta).to(base.device)
    return base + lambda_ * delta
