"""Fisher merging: a per-parameter average weighted by each model's diagonal Fisher information (Matena &
Raffel 2022, Merging Models with Fisher-Weighted Averaging, arXiv 2111.09832).

θ* = Σᵢ wᵢ(Fᵢ + ε)θᵢ / Σᵢ wᵢ(Fᵢ + ε), entry by entry, where Fᵢ is model i's diagonal empirical Fisher: the mean
over calibration sequences of the squared gradient of the sequence's mean token NLL (one sequence per backward
pass), and ε (``floor``) keeps the division defined where every model's Fisher is zero, as FusionBench's
``minimal_fisher_weight``. Equal Fishers give the w-weighted mean. A tensor the model has no gradient for (a
buffer, an output projection tied to the embedding and stored under the embedding's name) is the w-weighted
mean. The base only supplies the architecture and tokenizer the checkpoints are run with.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from study.methods.calibrated import CALIBRATION_RANGES, checkpoint_statistic, pass_statistics
from study.methods.schema import merge_method
from study.statistics.spec import StatisticRequest


def fisher_statistics(params: dict[str, Any]) -> list[StatisticRequest]:
    """Each checkpoint's diagonal Fisher per parameter."""
    return checkpoint_statistic(params, "fisher_diag", "fisher")


def fisher_average(tensors: list[Tensor], fishers: list[Tensor] | None, weight: list[float], floor: float) -> Tensor:
    """Σ wᵢ(Fᵢ+ε)θᵢ / Σ wᵢ(Fᵢ+ε); the w-weighted mean without Fishers."""
    w = torch.tensor(weight, dtype=torch.float32, device=tensors[0].device).view(-1, *[1] * tensors[0].dim())
    stacked = torch.stack(tensors)
    if fishers is None:
        return (w * stacked).sum(0) / w.sum()
    f = w * (torch.stack([x.to(stacked.device, torch.float32) for x in fishers]) + floor)
    return (f * stacked).sum(0) / f.sum(0)


@merge_method(
    "fisher",
    reference="Matena & Raffel 2022, Merging Models with Fisher-Weighted Averaging, https://arxiv.org/abs/2111.09832",
    version=1,
    ranges={
        **CALIBRATION_RANGES,
        "floor": {"low": 0.0, "low_open": True,
                  "help": "epsilon added to every Fisher value before weighting (FusionBench's minimal_fisher_weight, "
                          "1e-6): keeps entries no model's loss depends on defined (there: the w-weighted mean)"},
        "weight": {"low": 0.0, "low_open": True,
                   "help": "per-model scaling coefficient w_i of model i's Fisher (FusionBench's "
                           "fisher_scaling_coefficients); equal weights change nothing"},
    },
    statistics=fisher_statistics,
    mergekit_note="Not in mergekit 0.1.5. Reference: Matena & Raffel 2022 (arXiv 2111.09832), as FusionBench's "
    "fisher_merging with normalize_fisher_weight false (its per-model L2 normalisation of the Fishers is not "
    "offered) and an additive floor; the empirical Fisher uses the calibration text's own tokens as labels "
    "(not labels sampled from the model); one calibration set for every checkpoint.",
)
def fisher(
    base: Tensor,
    tensors: list[Tensor],
    *,
    calibration: str = "zoo",
    sequences: int = 64,
    floor: float = 1e-6,
    weight: list[float] = 1.0,  # type: ignore[assignment]
    tensor_name: str | None = None,
    context: dict[str, Any] | None = None,
) -> Tensor:
    """Each entry the average of the checkpoints' entries weighted by their Fisher information."""
    statistics = pass_statistics(context, "fisher", "Fisher diagonals", tensor_name)
    return fisher_average(tensors, statistics.checkpoints("fisher_diag", tensor_name or ""), weight, floor)
