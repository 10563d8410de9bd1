"""Karcher mean: the Riemannian centre of mass of the checkpoints on the unit sphere (mergekit 0.1.5's ``karcher``).

Per tensor, on the full weights (the base is unused): each θᵢ is split into its norm and direction uᵢ = θᵢ/‖θᵢ‖.
The mean direction m minimises Σ d(m, uᵢ)² over the sphere (geodesic distance), found by fixed-point iteration
from the normalised Euclidean mean of the directions: the tangent step v = Σ αᵢ · Ωᵢ/sin Ωᵢ · (uᵢ − cos Ωᵢ · m),
Ωᵢ = arccos⟨m, uᵢ⟩, moves m along the geodesic m cos‖v‖ + v/‖v‖ sin‖v‖, until ‖v‖ < ``tol`` or ``max_iter``
steps. The result is m times the mean of the norms. Weights are equal (αᵢ = 1/k), as in mergekit, which offers
none. Edge cases as mergekit: a checkpoint whose norm is at most ``tol`` has no direction and is left out of the
mean direction (its norm still counts in the scale); all of them that small gives zeros; a Euclidean mean of
the directions shorter than ``tol`` (opposite directions) starts from the first direction; a direction within
``tol`` radians of m adds no step. With k = 2 it is the geodesic midpoint: slerp of the two directions at
t = 0.5, times the mean norm.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from study.methods.schema import merge_method


def karcher_direction(units: list[Tensor], alphas: list[float], max_iter: int, tol: float) -> Tensor:
    """The weighted Karcher mean of unit vectors (``alphas`` sum to 1), by at most ``max_iter`` geodesic steps."""
    mean = torch.zeros_like(units[0])
    for alpha, unit in zip(alphas, units):
        mean += alpha * unit  # not a fused add_(unit, alpha): opposite directions must cancel exactly
    length = float(torch.linalg.vector_norm(mean))
    mean = units[0].clone() if length < tol else mean / length
    for _ in range(max_iter):
        step = torch.zeros_like(mean)
        for alpha, unit in zip(alphas, units):
            cos = float(torch.dot(mean.reshape(-1), unit.reshape(-1)).clamp(-1.0, 1.0))
            omega = math.acos(cos)
            if omega < tol:
                continue
            step.add_(unit - cos * mean, alpha=alpha * omega / math.sin(omega))
        size = float(torch.linalg.vector_norm(step))
        if size < tol:
            break
        mean = math.cos(size) * mean + (math.sin(size) / size) * step
        length = float(torch.linalg.vector_norm(mean))
        if length > tol:
            mean = mean / length
    return mean


@merge_method(
    "karcher",
    reference="Karcher 1977, Riemannian center of mass and mollifier smoothing, "
    "https://doi.org/10.1002/cpa.3160300502; mergekit's karcher, https://arxiv.org/abs/2603.04972",
    version=1,
    needs_base=False,
    min_k=1,
    ranges={
        "max_iter": {"low": 0, "help": "most fixed-point steps towards the mean direction (0: the normalised "
                                       "Euclidean mean of the directions)"},
        "tol": {"low": 0.0, "low_open": True,
                "help": "stop when the tangent step is shorter than this (radians); also the norm below which a "
                        "checkpoint has no direction and the angle below which a direction adds no step"},
    },
    mergekit_note="Same as mergekit's karcher (equal weights; mergekit has no per-model weight). mergekit treats no "
    "input as a base here but adds a configured base_model to the inputs, so a mergekit configuration with "
    "base_model averages k + 1 models; ours, like the mergekit:karcher adapter, averages the k checkpoints.",
)
def karcher(base: Tensor | None, tensors: list[Tensor], *, max_iter: int = 10, tol: float = 1e-5) -> Tensor:
    """Geodesic mean of the checkpoints' directions on the sphere, scaled by their mean norm."""
    if len(tensors) == 1:
        return tensors[0]
    alphas = [1.0 / len(tensors)] * len(tensors)
    norms = [torch.linalg.vector_norm(t) for t in tensors]
    scale = sum(alpha * norm for alpha, norm in zip(alphas, norms))
    kept = [i for i, norm in enumerate(norms) if float(norm) > tol]
    if not kept:
        return torch.zeros_like(tensors[0])
    total = sum(alphas[i] for i in kept)
    direction = karcher_direction([tensors[i] / norms[i] for i in kept], [alphas[i] / total for i in kept],
                                  max_iter, tol)
    return scale * direction
