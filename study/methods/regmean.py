"""RegMean: regression mean of linear layers (Jin et al. 2023, Dataless Knowledge Fusion, arXiv 2212.09849).

For a linear layer y = Wx fine-tuned into Wᵢ, with Gᵢ = XᵢᵀXᵢ/Nᵢ the Gram matrix of that layer's inputs on
model i's calibration text, the merged W* minimises Σᵢ ‖XᵢW*ᵀ − XᵢWᵢᵀ‖², whose closed form is
W*ᵀ = (Σᵢ Gᵢ)⁻¹ Σᵢ Gᵢ Wᵢᵀ. The paper scales every off-diagonal entry of each Gᵢ by α (``off_diagonal_scale``):
α = 1 is the exact least-squares solution, α = 0 a per-input-channel weighted average, and anything below 1
keeps Σ Gᵢ invertible when the calibration text is short. Every other tensor (embeddings, ``lm_head``, norms)
is the plain average of the checkpoints, as in the paper. The base only supplies the architecture and the
tokenizer the checkpoints are run with; its weights do not enter the merge.

The Gram matrices come from the statistics pass (``study.statistics``, statistic ``gram``): each checkpoint is
run once per calibration set, its matrices cached on disk and read one layer at a time during the merge.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from study.errors import MethodError
from study.methods.calibrated import CALIBRATION_RANGES, checkpoint_statistic, pass_statistics
from study.methods.schema import merge_method
from study.statistics.spec import StatisticRequest


def regmean_statistics(params: dict[str, Any]) -> list[StatisticRequest]:
    """Each checkpoint's input Gram matrix per linear layer."""
    return checkpoint_statistic(params, "gram", "regmean")


def scale_off_diagonal(gram: Tensor, alpha: float) -> Tensor:
    """G with every off-diagonal entry multiplied by α (the diagonal kept)."""
    return gram * alpha + torch.diag_embed(torch.diagonal(gram)) * (1 - alpha)


def regmean_solve(weights: list[Tensor], grams: list[Tensor], alpha: float, name: str = "?") -> Tensor:
    """W* = ((Σ G̃ᵢ)⁻¹ Σ G̃ᵢ Wᵢᵀ)ᵀ with G̃ᵢ the α-scaled Grams, solved in float64."""
    scaled = [scale_off_diagonal(g.to(weights[0].device, torch.float64), alpha) for g in grams]
    lhs = sum(scaled)
    rhs = sum(g @ w.to(torch.float64).T for g, w in zip(scaled, weights))
    try:
        solution = torch.linalg.solve(lhs, rhs)
    except RuntimeError:
        raise MethodError(f"regmean: the summed Gram matrix of {name} is singular (too little calibration text "
                          f"for its {lhs.shape[0]} inputs): lower off_diagonal_scale below 1 or add sequences") from None
    return solution.T.to(weights[0].dtype)


@merge_method(
    "regmean",
    reference="Jin et al. 2023, Dataless Knowledge Fusion by Merging Weights of Language Models, "
    "https://arxiv.org/abs/2212.09849",
    version=1,
    min_k=1,
    ranges={
        **CALIBRATION_RANGES,
        "off_diagonal_scale": {"low": 0.0, "high": 1.0,
                               "help": "alpha: off-diagonal Gram entries are multiplied by it (1 = exact least "
                                       "squares, 0 = per-channel weighted mean); MergeBench's LLM runs use 0.1"},
    },
    statistics=regmean_statistics,
    mergekit_note="Not in mergekit 0.1.5. Reference: Jin et al. 2023 (arXiv 2212.09849) and FusionBench's / "
    "MergeBench's regmean (Gram = mean XᵀX over calibration tokens, off-diagonals times alpha). One calibration "
    "set for every checkpoint (the paper uses each model's own training data); lm_head is averaged with the "
    "embeddings, not solved.",
)
def regmean(
    base: Tensor,
    tensors: list[Tensor],
    *,
    calibration: str = "zoo",
    sequences: int = 64,
    off_diagonal_scale: float = 0.1,
    tensor_name: str | None = None,
    context: dict[str, Any] | None = None,
) -> Tensor:
    """Linear layers: the least-squares merge of their outputs on calibration inputs; other tensors: the mean."""
    statistics = pass_statistics(context, "regmean", "Gram matrices", tensor_name)
    grams = statistics.checkpoints("gram", tensor_name or "") if base.dim() == 2 else None
    if grams is None:
        return torch.stack(tensors).mean(0)
    if any(tuple(g.shape) != (base.shape[1],) * 2 for g in grams):
        raise MethodError(f"regmean: tensor {tensor_name} has {base.shape[1]} inputs but its Gram matrix is "
                          f"{tuple(grams[0].shape)}")
    return regmean_solve(tensors, grams, off_diagonal_scale, tensor_name or "?")
